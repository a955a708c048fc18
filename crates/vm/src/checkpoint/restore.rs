//! Restoring a checkpoint into a new VM.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::manifest::{self, AGENT_OUT, CONSOLE};
use super::{migration_error, prepare_migration, wait_migration};
use crate::accel::Accel;
use crate::error::{CheckpointFileError, FileError, MigrationError, RestoreError};
use crate::fsutil;
use crate::layout::check_vm_name;
use crate::process::{self, Sig};
use crate::qemu::LaunchMode;
use crate::record::{Intent, VmRecord, new_vm_id, now_unix};
use crate::runtime::{Runtime, VmInfo};

/// How to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreOptions {
    /// Leave the restored VM paused.
    pub paused: bool,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub vm: VmInfo,
    /// Checkpoints in the chain (1 without ancestors).
    pub chain_len: usize,
    pub stream_bytes: u64,
    /// Time to verify every checksum of the chain.
    pub verify_ms: u64,
    /// Time from starting QEMU to the VM running.
    pub load_ms: u64,
    pub total_ms: u64,
}

impl Runtime {
    /// Restores the checkpoint in `dir` as a new VM `name`: verifies every
    /// checksum of the chain first, then starts a new QEMU that loads the
    /// memory stream and continues where the checkpoint was taken.
    pub async fn restore(
        &self,
        dir: &Path,
        name: &str,
        opts: RestoreOptions,
    ) -> Result<RestoreReport, RestoreError> {
        let started = Instant::now();
        check_vm_name(name)?;
        let vm_dir = self.vm_dir(name);
        vm_dir.check_socket_paths()?;
        if vm_dir.root().exists() {
            return Err(RestoreError::Exists(name.to_string()));
        }
        let ck_dir =
            fs::canonicalize(dir).map_err(|e| FileError::new("open checkpoint", dir, e))?;
        let chain = manifest::load_chain(&ck_dir)?;
        let Some(last) = chain.last() else {
            return Err(CheckpointFileError::Damaged {
                path: ck_dir,
                reason: "empty chain".into(),
            }
            .into());
        };
        let saved = last.manifest.vm.clone();
        // Every checkpoint of a chain must come from the same VM lineage:
        // the same machine and devices.
        for ck in &chain {
            let v = &ck.manifest.vm;
            if v.machine != saved.machine
                || v.memory_mb != saved.memory_mb
                || v.image.checksum != saved.image.checksum
            {
                return Err(RestoreError::Incompatible {
                    path: ck.dir.join(manifest::MANIFEST),
                    reason: "belongs to a different VM than the rest of the chain".into(),
                });
            }
        }
        let verify_start = Instant::now();
        let (locator, index) = manifest::verify_chain(&chain)?;
        let verify_ms = verify_start.elapsed().as_millis() as u64;

        let image = self.images.boot_image(&saved.image.name)?;
        if image.checksum != saved.image.checksum {
            return Err(RestoreError::Incompatible {
                path: ck_dir.join(manifest::MANIFEST),
                reason: format!(
                    "it was taken on image `{}` with checksum {}, but this node's image `{}` has checksum {}",
                    saved.image.name, saved.image.checksum, image.name, image.checksum
                ),
            });
        }
        let accel = self.accel();
        let cpu_model = if saved.cpu_model == Accel::Kvm.default_cpu_model()
            && accel.accel != Accel::Kvm
        {
            return Err(RestoreError::Incompatible {
                path: ck_dir.join(manifest::MANIFEST),
                reason: format!(
                    "it was taken under KVM with the host CPU model, and this node runs TCG ({})",
                    accel.reason
                ),
            });
        } else {
            saved.cpu_model.clone()
        };

        fsutil::create_private_dir_all(&self.cfg.data_dir.join("vms"))?;
        match fs::create_dir(vm_dir.root()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RestoreError::Exists(name.to_string()));
            }
            Err(e) => return Err(FileError::new("create directory", vm_dir.root(), e).into()),
        }
        let result = async {
            fsutil::create_dir_mode(vm_dir.root(), 0o700)?;
            let mut disks: Vec<PathBuf> = vec![image.disk.clone()];
            for ck in &chain {
                for layer in &ck.manifest.disk_layers {
                    disks.push(ck.dir.join(layer));
                }
            }
            let checkpointed_layers = disks.len() - 1;
            let top = vm_dir.disk_layer(0);
            self.create_overlay(&top, saved.disk_bytes)?;
            disks.push(top);
            for (file, dst) in [(AGENT_OUT, vm_dir.agent_out()), (CONSOLE, vm_dir.console())] {
                let src = last.dir.join(file);
                if src.exists() {
                    fsutil::copy_hashed(&src, &dst)?;
                }
            }
            if let Some(ctx) = &saved.context {
                let json = ctx.to_json().map_err(|source| RestoreError::Context {
                    path: ck_dir.join(manifest::MANIFEST),
                    source,
                })?;
                fsutil::write_atomic(&vm_dir.context(), json.as_bytes(), 0o600)?;
            }
            if saved.staging_tag.is_some() {
                fsutil::create_dir_mode(&vm_dir.stage(), 0o700)?;
            }
            let id = new_vm_id(name);
            let rec = VmRecord {
                id,
                name: name.to_string(),
                created_unix: now_unix(),
                image: image.clone(),
                accel: accel.accel,
                accel_reason: accel.reason.clone(),
                cpu_model,
                // The guest knows its MAC; it must not change.
                mac: saved.mac.clone(),
                disks,
                checkpointed_layers,
                last_checkpoint: Some(ck_dir.clone()),
                restored_from: Some(ck_dir.clone()),
                run_as: self.run_as.name(),
                qemu_version: self.qemu_info()?.version,
                intent: Intent::Run,
                ..saved.clone()
            };
            rec.save(&vm_dir.record())?;
            self.give_to_vm_user(&vm_dir)?;

            let load_start = Instant::now();
            let qmp = self
                .boot(&vm_dir, &rec, LaunchMode { incoming: true })
                .await?;
            prepare_migration(&qmp, name).await?;
            let (read_end, write_end) =
                rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| FileError::new("create", "a pipe", e.into()))?;
            let _ = rustix::pipe::fcntl_setpipe_size(&write_end, 1 << 20);
            qmp.getfd("vgrid-restore", read_end.as_fd())
                .await
                .map_err(|e| RestoreError::qmp(name, e))?;
            drop(read_end);
            let mut events = qmp.events();
            qmp.migrate_incoming("fd:vgrid-restore")
                .await
                .map_err(|e| RestoreError::qmp(name, e))?;
            let writer = tokio::task::spawn_blocking(move || {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, File::from(write_end));
                locator.write_stream(&index, &mut out)
            });
            let migrated = wait_migration(&qmp, &mut events, name, Duration::from_secs(3600)).await;
            let written = writer.await.map_err(|source| RestoreError::Writer {
                name: name.to_string(),
                source,
            })?;
            // A writer error explains a failed load better than QEMU does.
            let stream_bytes = written?;
            migrated.map_err(|e| match e {
                MigrationError::Failed { reason, .. } => migration_error(name, reason),
                other => other,
            })?;
            if !opts.paused {
                qmp.cont().await.map_err(|e| RestoreError::qmp(name, e))?;
            } else {
                let mut rec = rec.clone();
                rec.intent = Intent::Pause;
                rec.save(&vm_dir.record())?;
            }
            Ok::<_, RestoreError>((stream_bytes, load_start.elapsed().as_millis() as u64))
        }
        .await;
        let (stream_bytes, load_ms) = match result {
            Ok(v) => v,
            Err(e) => {
                // Nothing of value is in the new directory: end QEMU and
                // remove it, so the name can be used again.
                if let Some(pid) = self.qemu_pid(&vm_dir) {
                    process::signal(pid, Sig::KILL);
                    self.wait_gone(&vm_dir, Duration::from_secs(10)).await;
                }
                self.kill_passt(&vm_dir);
                let _ = fs::remove_dir_all(vm_dir.root());
                return Err(e);
            }
        };
        let vm = self.inspect(name).await?;
        Ok(RestoreReport {
            vm,
            chain_len: chain.len(),
            stream_bytes,
            verify_ms,
            load_ms,
            total_ms: started.elapsed().as_millis() as u64,
        })
    }
}
