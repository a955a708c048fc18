//! Taking checkpoints of one VM or, coherently, of several.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use vgrid_qmp::{Qmp, RunState};

use super::chunks::{ChunkLocator, FilePack, MemoryIndex, StreamStages, save_stream};
use super::manifest::{
    self, AGENT_OUT, CHECKPOINT_FORMAT, CONSOLE, FileEntry, Loaded, MANIFEST, MEMORY_IDX,
    MEMORY_PACK, Manifest, MemoryInfo, ParentRef,
};
use super::{migration_error, prepare_migration, wait_migration};
use crate::error::MigrationError;
use crate::error::{CheckpointError, CheckpointFileError, FileError, SpecError, VmError};
use crate::fsutil;
use crate::layout::VmDir;
use crate::process::{self, Sig};
use crate::qemu::{file_node_name, node_name};
use crate::record::{Intent, VmRecord, now_unix};
use crate::runtime::{Runtime, VmLock};

/// How to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// End the VM after saving instead of resuming it.
    pub stop: bool,
    /// zstd-compress memory chunks (kept raw when that does not help).
    pub compress: bool,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            stop: false,
            compress: true,
        }
    }
}

/// What a checkpoint cost and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub name: String,
    pub dir: PathBuf,
    pub parent: Option<PathBuf>,
    /// Length of QEMU's migration stream (all of RAM plus device state).
    pub stream_bytes: u64,
    /// Bytes of new memory chunks stored in this checkpoint.
    pub pack_bytes: u64,
    /// Bytes of disk layers stored in this checkpoint.
    pub disk_bytes: u64,
    /// Every byte this checkpoint directory holds.
    pub stored_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// How long the vCPUs were stopped.
    pub paused_ms: u64,
    pub total_ms: u64,
    /// Where the memory stream's time went (reader, hasher, writer).
    pub memory_stages: StreamStages,
}

/// One VM being checkpointed.
struct Job {
    name: String,
    dir: VmDir,
    out: PathBuf,
    tmp: PathBuf,
    qmp: Qmp,
    was_running: bool,
    parent: Option<Loaded>,
    known: Option<ChunkLocator>,
    _lock: VmLock,
    saved: Option<Saved>,
}

/// What the paused phase produced for one VM.
struct Saved {
    index: MemoryIndex,
    stream_blake3: String,
    pack: (u64, String),
    idx: (u64, String),
    new_chunks: u64,
    outputs: Vec<FileEntry>,
    stages: StreamStages,
}

impl Runtime {
    /// Checkpoints one VM into `out` (which must not exist).
    pub async fn checkpoint(
        &self,
        name: &str,
        out: &Path,
        opts: CheckpointOptions,
    ) -> Result<CheckpointReport, CheckpointError> {
        let mut reports = self
            .checkpoint_group(&[(name.to_string(), out.to_path_buf())], opts)
            .await?;
        Ok(reports.remove(0))
    }

    /// Checkpoints several VMs coherently: all are paused, then all are
    /// saved, then all resume, so that their mutual state (e.g. TCP
    /// connections between them) is consistent in the checkpoints.
    pub async fn checkpoint_group(
        &self,
        vms: &[(String, PathBuf)],
        opts: CheckpointOptions,
    ) -> Result<Vec<CheckpointReport>, CheckpointError> {
        let started = Instant::now();
        let mut order: Vec<&(String, PathBuf)> = vms.iter().collect();
        // Locks are always taken in name order, so two groups never wait on
        // each other.
        order.sort_by(|a, b| a.0.cmp(&b.0));
        for w in order.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(SpecError::new("vms", &w[0].0, "named twice").into());
            }
        }
        let mut jobs = Vec::new();
        for (name, out) in order {
            jobs.push(self.prepare_job(name, out).await?);
        }
        for i in 0..jobs.len() {
            for j in i + 1..jobs.len() {
                if jobs[i].out == jobs[j].out {
                    return Err(SpecError::new(
                        "out",
                        jobs[i].out.display().to_string(),
                        "used for two VMs",
                    )
                    .into());
                }
            }
        }

        // Phase 1: pause everyone.
        let pause_start = Instant::now();
        let mut failure = None;
        for job in &mut jobs {
            match pause(job).await {
                Ok(()) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Phase 2: save everyone.
        if failure.is_none() {
            for job in &mut jobs {
                if let Err(e) = self.save_paused(job, opts).await {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Phase 3: resume (or end) everyone.
        let stop_all = opts.stop && failure.is_none();
        for job in &jobs {
            if stop_all {
                self.end_saved(job).await;
            } else if job.was_running
                && let Err(e) = job.qmp.cont().await
                && failure.is_none()
            {
                failure = Some(CheckpointError::qmp(&job.name, e));
            }
        }
        let paused_ms = pause_start.elapsed().as_millis() as u64;
        if let Some(e) = failure {
            for job in &jobs {
                let _ = fs::remove_dir_all(&job.tmp);
            }
            return Err(e);
        }

        // Phase 4: write the checkpoints (the VMs run again meanwhile).
        let mut reports = Vec::new();
        let mut failure = None;
        for job in &mut jobs {
            match self.finish(job, opts, paused_ms, started) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    let _ = fs::remove_dir_all(&job.tmp);
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }

    async fn prepare_job(&self, name: &str, out: &Path) -> Result<Job, CheckpointError> {
        let dir = self.existing(name)?;
        let out = absolute(out)?;
        if out.exists() {
            return Err(SpecError::new(
                "out",
                out.display().to_string(),
                "already exists; a checkpoint is written into a new directory",
            )
            .into());
        }
        let parent_dir = out.parent().unwrap_or(Path::new("/")).to_path_buf();
        fsutil::create_private_dir_all(&parent_dir)?;
        let lock = VmLock::acquire(&dir, name).await.map_err(VmError::from)?;
        let rec = self.live_and_saveable(&dir, name, "checkpoint it").await?;
        let (parent, known) = match &rec.last_checkpoint {
            Some(p) => match load_known(p) {
                Ok((l, k)) => (Some(l), Some(k)),
                Err(e) => {
                    tracing::warn!(vm = name, error = %e, "parent checkpoint unusable; writing a full checkpoint");
                    (None, None)
                }
            },
            None => (None, None),
        };
        let file_name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let tmp = parent_dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        // A checkpoint holds the guest's memory and the job's environment.
        fsutil::create_dir_mode(&tmp, 0o700)?;
        let qmp = match self.connect(&dir, name).await {
            Ok(q) => q,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        };
        Ok(Job {
            name: name.to_string(),
            dir,
            out,
            tmp,
            qmp,
            was_running: false,
            parent,
            known,
            _lock: lock,
            saved: None,
        })
    }

    /// Cuts the disk, streams memory and copies the outputs, VM paused.
    async fn save_paused(
        &self,
        job: &mut Job,
        opts: CheckpointOptions,
    ) -> Result<(), CheckpointError> {
        let name = job.name.clone();
        let mut rec = VmRecord::load(&job.dir.record())?;

        // The disk: a new empty top layer; the old top is frozen.
        let top = rec.disks.len() - 1;
        let mut k = rec.disks.len();
        while job.dir.disk_layer(k).exists() {
            k += 1;
        }
        let layer = job.dir.disk_layer(k);
        self.create_overlay(&layer, rec.disk_bytes)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&layer)
            .map_err(|e| FileError::new("open", &layer, e))?;
        // QEMU has dropped its privileges; it gets the file as a descriptor.
        let fdset = job
            .qmp
            .add_fd(file.as_fd(), None, Some("vgrid disk layer"))
            .await
            .map_err(|e| VmError::qmp(&name, e))?;
        drop(file);
        let new_node = node_name(top + 1);
        job.qmp
            .blockdev_add(json!({
                "driver": "qcow2",
                "node-name": new_node,
                "file": {"driver": "file", "node-name": file_node_name(top + 1),
                         "filename": format!("/dev/fdset/{}", fdset.fdset_id)},
                "backing": null,
            }))
            .await
            .map_err(|e| VmError::qmp(&name, e))?;
        job.qmp
            .blockdev_snapshot(&node_name(top), &new_node)
            .await
            .map_err(|e| VmError::qmp(&name, e))?;
        // The frozen layer stays open in QEMU (as the new layer's backing)
        // but is never written again. Other QEMUs open it read-only
        // without locks (see `qemu::qemu_args`).
        rec.disks.push(layer);
        rec.save(&job.dir.record())?;

        // The memory: QEMU writes its migration stream into a pipe.
        prepare_migration(&job.qmp, &name).await?;
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| FileError::new("create", "a pipe", e.into()))?;
        let _ = rustix::pipe::fcntl_setpipe_size(&read_end, 1 << 20);
        job.qmp
            .getfd("vgrid-ckpt", write_end.as_fd())
            .await
            .map_err(|e| VmError::qmp(&name, e))?;
        drop(write_end);
        let known = job.known.take().unwrap_or_default();
        let pack_path = job.tmp.join(MEMORY_PACK);
        let reader = tokio::task::spawn_blocking(move || {
            let result = FilePack::create(&pack_path).and_then(|mut sink| {
                let saved = save_stream(
                    File::from(read_end),
                    &known,
                    &mut sink,
                    &pack_path,
                    opts.compress,
                )?;
                Ok((saved, sink.digest()))
            });
            (known, result)
        });
        let mut events = job.qmp.events();
        let migrated = match job.qmp.migrate("fd:vgrid-ckpt").await {
            Ok(()) => wait_migration(&job.qmp, &mut events, &name, Duration::from_secs(3600)).await,
            Err(vgrid_qmp::QmpError::Command { desc, .. }) => Err(migration_error(&name, desc)),
            Err(e) => Err(MigrationError::qmp(&name, e)),
        };
        if migrated.is_err() {
            // Make QEMU drop its end so the reader sees the end of input.
            let _ = job.qmp.closefd("vgrid-ckpt").await;
        }
        let (known, saved) = reader.await.map_err(|source| CheckpointError::Reader {
            name: name.clone(),
            source,
        })?;
        job.known = Some(known);
        migrated?;
        let (saved, pack) = saved?;
        let idx_bytes = saved.index.encode();
        let idx_path = job.tmp.join(MEMORY_IDX);
        fsutil::write_atomic(&idx_path, &idx_bytes, 0o600)?;
        let idx = (
            idx_bytes.len() as u64,
            blake3::hash(&idx_bytes).to_hex().to_string(),
        );

        // The output so far, consistent with the memory just saved.
        let mut outputs = Vec::new();
        for (src, file) in [
            (job.dir.agent_out(), AGENT_OUT),
            (job.dir.console(), CONSOLE),
        ] {
            if src.exists() {
                let (bytes, blake3) = fsutil::copy_hashed(&src, &job.tmp.join(file))?;
                outputs.push(FileEntry {
                    name: file.into(),
                    bytes,
                    blake3,
                });
            }
        }
        job.saved = Some(Saved {
            index: saved.index,
            stream_blake3: saved.stream_blake3,
            pack,
            idx,
            new_chunks: saved.new_chunks,
            outputs,
            stages: saved.stages,
        });
        Ok(())
    }

    /// A checkpoint with `stop`: QEMU ends once the state is saved.
    async fn end_saved(&self, job: &Job) {
        if let Ok(mut rec) = VmRecord::load(&job.dir.record()) {
            rec.intent = Intent::Saved;
            let _ = rec.save(&job.dir.record());
        }
        let _ = job.qmp.quit().await;
        if !self.wait_gone(&job.dir, Duration::from_secs(30)).await
            && let Some(pid) = self.qemu_pid(&job.dir)
        {
            process::signal(pid, Sig::KILL);
            self.wait_gone(&job.dir, Duration::from_secs(10)).await;
        }
        self.kill_passt(&job.dir);
    }

    /// Stores the frozen disk layers, writes the manifest and moves the
    /// checkpoint into place.
    fn finish(
        &self,
        job: &mut Job,
        opts: CheckpointOptions,
        paused_ms: u64,
        started: Instant,
    ) -> Result<CheckpointReport, CheckpointError> {
        let Some(saved) = job.saved.take() else {
            return Err(CheckpointError::NothingSaved {
                name: job.name.clone(),
            });
        };
        let mut rec = VmRecord::load(&job.dir.record())?;
        let frozen_end = rec.disks.len() - 1;
        let first_own = if job.parent.is_some() {
            1 + rec.checkpointed_layers
        } else {
            1
        };
        let mut files = vec![
            FileEntry {
                name: MEMORY_IDX.into(),
                bytes: saved.idx.0,
                blake3: saved.idx.1.clone(),
            },
            FileEntry {
                name: MEMORY_PACK.into(),
                bytes: saved.pack.0,
                blake3: saved.pack.1.clone(),
            },
        ];
        files.extend(saved.outputs.iter().cloned());
        let mut disk_layers = Vec::new();
        let mut disk_bytes = 0;
        for (k, layer) in rec.disks[first_own.min(frozen_end)..frozen_end]
            .iter()
            .enumerate()
        {
            let name = format!("disk-{k}.qcow2");
            let dst = job.tmp.join(&name);
            // The layer is frozen (QEMU writes only the new top), so the
            // checkpoint can share it by hard link; else it is copied.
            let (bytes, blake3) = match fs::hard_link(layer, &dst) {
                Ok(()) => fsutil::hash_file(&dst)?,
                Err(_) => fsutil::copy_hashed(layer, &dst)?,
            };
            disk_bytes += bytes;
            files.push(FileEntry {
                name: name.clone(),
                bytes,
                blake3,
            });
            disk_layers.push(name);
        }
        let parent = job.parent.as_ref().map(|p| ParentRef {
            path: manifest::relative_path(&job.out, &p.dir)
                .to_string_lossy()
                .into_owned(),
            absolute: p.dir.clone(),
            manifest_blake3: p.manifest_blake3.clone(),
        });
        let mut snapshot = rec.clone();
        snapshot.intent = Intent::Run;
        let m = Manifest {
            format: CHECKPOINT_FORMAT,
            created_unix: now_unix(),
            qemu_version: rec.qemu_version.clone(),
            vm: snapshot,
            parent,
            disk_layers,
            memory: MemoryInfo {
                stream_bytes: saved.index.stream_len,
                stream_blake3: saved.stream_blake3.clone(),
                chunks: saved.index.order.len() as u64,
                new_chunks: saved.new_chunks,
                pack_bytes: saved.pack.0,
                compressed: opts.compress,
            },
            files,
        };
        let bytes = serde_json::to_vec_pretty(&m).map_err(|source| CheckpointError::Encode {
            path: job.tmp.join(MANIFEST),
            source,
        })?;
        fsutil::write_atomic(&job.tmp.join(MANIFEST), &bytes, 0o600)?;
        fsutil::fsync_dir(&job.tmp)?;
        fs::rename(&job.tmp, &job.out).map_err(|e| FileError::new("rename into", &job.out, e))?;
        if let Some(parent) = job.out.parent() {
            fsutil::fsync_dir(parent)?;
        }

        rec.last_checkpoint = Some(job.out.clone());
        rec.checkpointed_layers = frozen_end - 1;
        rec.save(&job.dir.record())?;
        Ok(CheckpointReport {
            name: job.name.clone(),
            dir: job.out.clone(),
            parent: job.parent.as_ref().map(|p| p.dir.clone()),
            stream_bytes: saved.index.stream_len,
            pack_bytes: saved.pack.0,
            disk_bytes,
            stored_bytes: m.stored_bytes() + bytes.len() as u64,
            chunks: saved.index.order.len() as u64,
            new_chunks: saved.new_chunks,
            paused_ms,
            total_ms: started.elapsed().as_millis() as u64,
            memory_stages: saved.stages,
        })
    }
}

async fn pause(job: &mut Job) -> Result<(), CheckpointError> {
    let status = job
        .qmp
        .query_status()
        .await
        .map_err(|e| CheckpointError::qmp(&job.name, e))?;
    job.was_running = status.status == RunState::Running;
    if job.was_running {
        job.qmp
            .stop()
            .await
            .map_err(|e| CheckpointError::qmp(&job.name, e))?;
    }
    Ok(())
}

/// The parent checkpoint and the chunks its chain stores (for dedup).
fn load_known(parent: &Path) -> Result<(Loaded, ChunkLocator), CheckpointFileError> {
    let chain = manifest::load_chain(parent)?;
    let mut known = ChunkLocator::new();
    for ck in &chain {
        let idx_path = ck.dir.join(MEMORY_IDX);
        let bytes = fs::read(&idx_path).map_err(|e| FileError::new("read", &idx_path, e))?;
        let index = MemoryIndex::decode(&bytes, &idx_path)?;
        known.add_pack(ck.dir.join(MEMORY_PACK), &index);
    }
    let last = chain
        .into_iter()
        .last()
        .ok_or_else(|| CheckpointFileError::Damaged {
            path: parent.to_path_buf(),
            reason: "empty chain".into(),
        })?;
    Ok((last, known))
}

fn absolute(p: &Path) -> Result<PathBuf, CheckpointError> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| FileError::new("read", "the current directory", e))?
            .join(p)
    };
    // Resolve the parent (it may contain symlinks); the last component is
    // the new directory's name.
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(
            SpecError::new("out", p.display().to_string(), "needs a directory name").into(),
        );
    };
    fsutil::create_private_dir_all(parent)?;
    let parent = fs::canonicalize(parent).map_err(|e| FileError::new("resolve", parent, e))?;
    Ok(parent.join(name))
}
