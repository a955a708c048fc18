//! The product's driver: job units as QEMU VMs through `vgrid-vm`.
//!
//! A unit's VMs are named `j<job>-a<attempt>-v<index>` so that a restarted
//! agent finds its units in the runtime's VM directory. Output is the
//! interleaved stdout and stderr frames of the unit's first VM.
//!
//! A checkpoint carries the guest agent's output up to the pause, so a VM
//! restored from it replays that output first. The job already has it (the
//! controller keeps the job's output), so the driver skips that prefix: the
//! unit's own output stream begins where the checkpoint left off, which is
//! the offset the agent writes it at.
//!
//! # VM modes
//!
//! `stop-start` jobs get a fresh VM each. A `persistent` or `save-restore`
//! job (one VM) runs in a *kept* VM (`k<entry>-<generation>`, see
//! [`crate::kept`]): the first job of an owner, image and shape boots one
//! whose guest agent stays up after the command; the next such job on the
//! node is sent to it as a run (`vgrid_vm::exec`), after restoring it when
//! it was saved. After a job, a `persistent` VM stays running, idle; a
//! `save-restore` VM is checkpointed and stopped. Idle kept VMs are stopped
//! after `VGRID_KEEP_IDLE_S` seconds (default 300) or when a job placed
//! here needs their CPUs or memory. A run's output and status are read from
//! its own frames, so each job sees exactly its own output, as with a fresh
//! VM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vgrid_api::types::VmStart;
use vgrid_guest_proto::GuestMessage;
use vgrid_model::VmMode;
use vgrid_vm::checkpoint::{CheckpointOptions, RestoreOptions};
use vgrid_vm::exec::{RunEnd, RunReader};
use vgrid_vm::output::OutputReader;
use vgrid_vm::{MountSpec, Runtime, StagingSpec, Task, VmSpec, VmState, fsutil};

use crate::driver::{
    DriverError, JobError, PoolError, SavedCheckpoint, StartRequest, Unit, UnitStatus, VmDriver,
};
use crate::kept::{Claim, Entry, KeepKey, KeptState, Pool, run_id};
use crate::state;

/// Images from the node's image store (`vgrid image build` / `import`).
pub use vgrid_vm::StoreImages;

/// How VMs are kept between jobs.
#[derive(Debug, Clone)]
pub struct KeepConfig {
    /// An idle kept VM (running or saved) is dropped after this long.
    pub idle_timeout: Duration,
    /// A `save-restore` VM is saved at most this many times (each save is
    /// a checkpoint chained to the previous one); then the next job boots
    /// a fresh VM and the chain is deleted.
    pub max_saves: u32,
    /// How long a job waits for a kept VM that is finishing (saving) the
    /// previous job before it boots its own.
    pub wait_for_release: Duration,
}

impl Default for KeepConfig {
    fn default() -> Self {
        KeepConfig {
            idle_timeout: Duration::from_secs(300),
            max_saves: 32,
            wait_for_release: Duration::from_secs(600),
        }
    }
}

impl KeepConfig {
    /// The defaults, with `VGRID_KEEP_IDLE_S` (seconds) when set.
    pub fn from_env() -> Result<KeepConfig, DriverError> {
        let mut cfg = KeepConfig::default();
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Overrides this configuration (e.g. read from a file) with
    /// `VGRID_KEEP_IDLE_S` when set.
    pub fn apply_env(&mut self) -> Result<(), DriverError> {
        if let Ok(v) = std::env::var("VGRID_KEEP_IDLE_S")
            && !v.is_empty()
        {
            let secs: u64 = v.parse().map_err(|_| DriverError::KeepIdle(v.clone()))?;
            self.idle_timeout = Duration::from_secs(secs);
        }
        Ok(())
    }
}

/// Where a unit's output comes from.
enum Source {
    /// The unit's own VM: every output frame of its first VM.
    Plain(OutputReader),
    /// A run in a kept VM: that run's frames only.
    Kept { vm: String, reader: RunReader },
}

struct UnitOutput {
    source: Source,
    /// stdout and stderr bytes in arrival order, after the skipped prefix.
    bytes: Vec<u8>,
    /// Bytes of replayed output still to drop (restored units).
    skip: u64,
    started: Instant,
    /// Work done before this unit started (from the checkpoint).
    prior_work_ms: i64,
    vms: u32,
    /// Staged outputs to collect when the command has exited: (path
    /// relative to the guest working directory, name in the job's
    /// outputs).
    outputs: Vec<(String, PathBuf)>,
}

impl UnitOutput {
    fn kept_vm(&self) -> Option<&str> {
        match &self.source {
            Source::Kept { vm, .. } => Some(vm),
            Source::Plain(_) => None,
        }
    }

    fn run_end(&self) -> Option<RunEnd> {
        match &self.source {
            Source::Kept { reader, .. } => reader.end().cloned(),
            Source::Plain(_) => None,
        }
    }

    fn take_in(&mut self, chunk: &[u8]) {
        let drop = (self.skip as usize).min(chunk.len());
        self.skip -= drop as u64;
        self.bytes.extend_from_slice(&chunk[drop..]);
    }
}

/// What the driver remembers of a unit across agent restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UnitMeta {
    skip: u64,
    prior_work_ms: i64,
    vms: u32,
    /// CPUs and MiB per VM (for the room kept VMs may take).
    cpus: u32,
    memory_mb: u64,
    /// (path relative to the guest working directory, name in the job's
    /// outputs).
    outputs: Vec<(String, PathBuf)>,
    #[serde(default)]
    owner: String,
    kept: Option<KeptRun>,
}

/// A unit's run in a kept VM; also written beside a checkpoint of it
/// ([`KEPT_RUN_FILE`]) so that a restore follows the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptRun {
    vm: String,
    run: u64,
    out_offset: u64,
}

/// Beside the VM's directory in a checkpoint of a kept VM's run.
const KEPT_RUN_FILE: &str = "kept-run.json";

/// In a save chain that a job's checkpoint builds on (the job ran in a VM
/// restored from the chain): the checkpoints that do, one per line. Such a
/// chain is never deleted.
const PINNED_FILE: &str = "pinned-by";

/// Runs units as QEMU VMs.
pub struct QemuDriver {
    rt: Arc<Runtime>,
    state_dir: PathBuf,
    units: Mutex<HashMap<Unit, UnitOutput>>,
    /// Units started and not yet removed, with (CPUs, MiB) they hold.
    active: Mutex<HashMap<Unit, (u64, u64)>>,
    pool: Mutex<Pool>,
    keep: KeepConfig,
    capacity: Mutex<Option<(u64, u64)>>,
    /// The node's images, where fetched images are installed.
    images: vgrid_image::ImageStore,
}

fn vm_name(unit: Unit, index: u32) -> String {
    format!("j{}-a{}-v{index}", unit.job, unit.attempt)
}

fn parse_vm_name(name: &str) -> Option<(Unit, u32)> {
    let rest = name.strip_prefix('j')?;
    let (job, rest) = rest.split_once("-a")?;
    let (attempt, index) = rest.split_once("-v")?;
    Some((
        Unit {
            job: job.parse().ok()?,
            attempt: attempt.parse().ok()?,
        },
        index.parse().ok()?,
    ))
}

/// What failed on VM `vm` while the driver tried to `action` it.
fn vm_err(action: &'static str, vm: &str) -> impl FnOnce(vgrid_vm::VmError) -> DriverError {
    let vm = vm.to_string();
    move |source| DriverError::Vm {
        action,
        vm,
        source: Box::new(source),
    }
}

fn poisoned<T>(_: T) -> DriverError {
    PoolError::Poisoned.into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A status from a VM's end, as a shell gives it.
fn exit_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    code.unwrap_or_else(|| 128 + signal.unwrap_or(0))
}

impl QemuDriver {
    /// A driver over `rt`; `state_dir` keeps what a restarted agent needs
    /// (how much replayed output each restored unit skips, the kept VMs).
    /// Kept VMs follow [`KeepConfig::from_env`].
    pub fn new(rt: Arc<Runtime>, state_dir: PathBuf) -> Result<QemuDriver, DriverError> {
        Self::with_keep(rt, state_dir, KeepConfig::from_env()?)
    }

    pub fn with_keep(
        rt: Arc<Runtime>,
        state_dir: PathBuf,
        keep: KeepConfig,
    ) -> Result<QemuDriver, DriverError> {
        let units_dir = state_dir.join("qemu-units");
        crate::private::create_dir_all(&units_dir)
            .map_err(|e| vgrid_vm::error::FileError::new("create directory", &units_dir, e))
            .map_err(state::StateError::from)?;
        let pool = Pool::load(&state_dir.join("kept.json"))?;
        let images =
            vgrid_image::ImageStore::open(&rt.config().data_dir).map_err(DriverError::Image)?;
        Ok(QemuDriver {
            images,
            rt,
            state_dir,
            units: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            pool: Mutex::new(pool),
            keep,
            capacity: Mutex::new(None),
        })
    }

    fn meta_path(&self, unit: Unit) -> PathBuf {
        self.state_dir
            .join("qemu-units")
            .join(format!("{}.{}", unit.job, unit.attempt))
    }

    fn save_meta(&self, unit: Unit, meta: &UnitMeta) -> Result<(), DriverError> {
        Ok(state::save(&self.meta_path(unit), meta)?)
    }

    /// Changes the pool and writes it.
    fn with_pool<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> Result<T, DriverError> {
        let mut pool = self.pool.lock().map_err(poisoned)?;
        let out = f(&mut pool);
        pool.save(&self.state_dir.join("kept.json"))?;
        Ok(out)
    }

    /// The directory of a kept VM's save chain.
    fn chain_dir(&self, id: u64) -> PathBuf {
        self.rt.config().data_dir.join("kept").join(id.to_string())
    }

    /// The unit's output state, loaded again after an agent restart.
    fn with_output<T>(
        &self,
        unit: Unit,
        f: impl FnOnce(&mut UnitOutput) -> T,
    ) -> Result<T, DriverError> {
        let mut units = self.units.lock().map_err(poisoned)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = units.entry(unit) {
            let meta: UnitMeta = state::load(&self.meta_path(unit))?.unwrap_or_default();
            let source = match &meta.kept {
                Some(k) => Source::Kept {
                    vm: k.vm.clone(),
                    reader: RunReader::new(
                        self.rt.output(&k.vm).map_err(vm_err("read", &k.vm))?.path(),
                        k.run,
                        k.out_offset,
                    ),
                },
                None => {
                    let vm = vm_name(unit, 0);
                    Source::Plain(self.rt.output(&vm).map_err(vm_err("read", &vm))?)
                }
            };
            if let Ok(mut active) = self.active.lock() {
                let vms = u64::from(meta.vms.max(1));
                active
                    .entry(unit)
                    .or_insert((u64::from(meta.cpus) * vms, meta.memory_mb * vms));
            }
            slot.insert(UnitOutput {
                source,
                bytes: Vec::new(),
                skip: meta.skip,
                started: Instant::now(),
                prior_work_ms: meta.prior_work_ms,
                vms: meta.vms.max(1),
                outputs: meta.outputs,
            });
        }
        let out = units.get_mut(&unit).ok_or(DriverError::UnknownUnit(unit))?;
        // Take in what the guest wrote since the last look.
        loop {
            let chunk = match &mut out.source {
                Source::Plain(reader) => {
                    let msgs = reader.poll().map_err(DriverError::Output)?;
                    if msgs.is_empty() {
                        break;
                    }
                    let mut chunk = Vec::new();
                    for m in msgs {
                        if let GuestMessage::Stdout(b) | GuestMessage::Stderr(b) = m {
                            chunk.extend_from_slice(&b);
                        }
                    }
                    chunk
                }
                Source::Kept { reader, .. } => {
                    let before = reader.end().is_some();
                    let chunk = reader.drain().map_err(DriverError::Output)?;
                    if chunk.is_empty() && reader.end().is_some() == before {
                        break;
                    }
                    chunk
                }
            };
            out.take_in(&chunk);
        }
        Ok(f(out))
    }

    /// The VM of `unit` at `index`: its own, or the kept VM it runs in.
    fn unit_vm(&self, unit: Unit, index: u32) -> Result<String, DriverError> {
        let kept = self.with_output(unit, |o| o.kept_vm().map(str::to_string))?;
        Ok(kept.unwrap_or_else(|| vm_name(unit, index)))
    }

    /// The VM of a job: its shape, mounts and owner, and the job's task.
    fn vm_spec(req: &StartRequest, name: String) -> Result<VmSpec, DriverError> {
        let spec = &req.spec;
        let mut vm = VmSpec::new(name, spec.image.clone(), Vec::new());
        vm.cpus = spec.cpus;
        vm.memory_mb = spec.memory_mb;
        vm.owner = Some(req.owner.clone());
        vm.mounts = spec
            .mounts
            .iter()
            .map(|m| MountSpec {
                host: m.host.clone(),
                guest: m.guest.display().to_string(),
                readonly: m.readonly,
            })
            .collect();
        vm.task = Self::task(req)?;
        Ok(vm)
    }

    /// What the job runs: its command, environment and user, and its
    /// staged files. A fresh VM runs it as its command, a kept VM as a run;
    /// the runtime turns it into what the guest agent reads.
    fn task(req: &StartRequest) -> Result<Task, DriverError> {
        let spec = &req.spec;
        let mut task = Task::new(spec.command.clone());
        task.env = spec.env.clone();
        task.user = spec.user.clone();
        if let Some(layout) = spec.staging().map_err(JobError::from)? {
            // The runtime copies inputs (exported by the agent into
            // `input_dir` under their guest names) into one working
            // directory and outputs back from paths relative to it.
            let inputs = match (&req.input_dir, layout.inputs.is_empty()) {
                (_, true) => Vec::new(),
                (Some(dir), false) => layout.inputs.iter().map(|n| dir.join(n)).collect(),
                (None, false) => return Err(JobError::InputsNotFetched.into()),
            };
            task.workdir = Some(layout.workdir.display().to_string());
            task.staging = Some(StagingSpec {
                inputs,
                outputs: layout.outputs.into_iter().map(|(rel, _)| rel).collect(),
                input_dir: req.input_dir.clone(),
            });
        }
        Ok(task)
    }

    /// Checks every host path of a job (its mounts) on this node before a
    /// VM boots, so that a bad mount fails the job at once with the field
    /// and why: first lexically (the check the controller makes at
    /// submit), then with links resolved inside the owner's directories.
    /// Makes the owner's directory in the first root when it is missing.
    fn check_host_paths(&self, req: &StartRequest) -> Result<(), JobError> {
        let spec = &req.spec;
        if !spec.has_host_paths() {
            return Ok(());
        }
        let cfg_roots = &self.rt.config().mount_roots;
        spec.check_host_paths(cfg_roots, &req.owner)?;
        let roots = self.rt.host_roots(Some(&req.owner))?;
        make_owner_dir(cfg_roots, &roots)?;
        for (i, m) in spec.mounts.iter().enumerate() {
            fsutil::open_dir_inside(&format!("mounts[{i}].host"), &m.host, &roots)?;
        }
        Ok(())
    }
}

/// Makes the owner's directory in the first allowed root (private to
/// vgrid) when that root exists and the directory does not.
fn make_owner_dir(cfg_roots: &[PathBuf], owner_dirs: &[PathBuf]) -> Result<(), JobError> {
    let (Some(root), Some(dir)) = (cfg_roots.first(), owner_dirs.first()) else {
        return Ok(());
    };
    if !root.is_dir() || dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(JobError::OwnerDir {
            dir: dir.clone(),
            source,
        }),
    }
}

/// Reads staged outputs from a VM's staging share `stage` into `cache`,
/// each as a file named as the job's output. The share is written by the
/// guest, so each output is opened there without following a link at any
/// component (regular files only) and read from that descriptor, never
/// past the length it had when it was opened; its mode is not kept (the
/// store's files are 0600).
fn collect_staged(
    stage: &Path,
    outputs: &[(String, PathBuf)],
    cache: &vgrid_cas::Store,
) -> Result<Vec<vgrid_cas::FileEntry>, JobError> {
    use std::io::Read;
    let mut files = Vec::with_capacity(outputs.len());
    for (rel, name) in outputs {
        let src = fsutil::open_beneath_nofollow(stage, Path::new(rel)).map_err(|source| {
            JobError::StagedOutput {
                rel: rel.clone(),
                source: Box::new(source),
            }
        })?;
        let len = src.metadata().map(|m| m.len()).unwrap_or(0);
        // A state file of an older agent named a host path: its file name.
        let name = if name.is_absolute() {
            name.file_name()
                .map_or_else(|| PathBuf::from(rel), PathBuf::from)
        } else {
            name.clone()
        };
        let entry = cache
            .import_reader(
                src.take(len),
                &stage.join(rel),
                &name.display().to_string(),
                0o600,
            )
            .map_err(|source| JobError::KeepOutput {
                rel: rel.clone(),
                source: Box::new(source),
            })?;
        files.push(entry);
    }
    Ok(files)
}

/// Each staged output of a job: (path relative to the guest working
/// directory, name in the job's outputs).
fn output_names(spec: &vgrid_model::JobSpec) -> Result<Vec<(String, PathBuf)>, JobError> {
    Ok(spec
        .staging()?
        .map(|l| {
            l.outputs
                .into_iter()
                .map(|(rel, name)| (rel, PathBuf::from(name)))
                .collect()
        })
        .unwrap_or_default())
}

/// The kept VMs.
impl QemuDriver {
    /// Starts `req` in a kept VM of `key`: reuses a running one, restores a
    /// saved one, or boots one; restores the job's own checkpoint when it
    /// resumes. Returns how, and the unit's run.
    async fn start_kept(
        &self,
        req: &StartRequest,
        key: &KeepKey,
    ) -> Result<(VmStart, KeptRun), DriverError> {
        let unit = req.unit;
        if let Some(c) = &req.restore {
            let Claim::Fresh { id } =
                self.with_pool(|p| p.new_entry(key.clone(), KeptState::Claimed { unit }))?
            else {
                return Err(PoolError::Inconsistent.into());
            };
            let result = self.restore_job_checkpoint(id, c).await;
            return match result {
                Ok(kept) => Ok((VmStart::RestoredCheckpoint, kept)),
                Err(e) => {
                    self.discard(id).await;
                    Err(e)
                }
            };
        }
        let run = run_id(unit);
        let deadline = Instant::now() + self.keep.wait_for_release;
        let claim = loop {
            match self.with_pool(|p| p.claim(key, unit))? {
                Claim::Wait if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Claim::Wait => {
                    break self
                        .with_pool(|p| p.new_entry(key.clone(), KeptState::Claimed { unit }))?;
                }
                other => break other,
            }
        };
        let id = match &claim {
            Claim::Running { id, .. } | Claim::Saved { id, .. } | Claim::Fresh { id } => *id,
            Claim::Wait => return Err(PoolError::Inconsistent.into()),
        };
        self.make_room(unit, id).await;
        let reused = match claim {
            Claim::Running { vm, .. } => Some(
                self.exec(req, run, &vm)
                    .await
                    .map(|k| (VmStart::ReusedRunning, k)),
            ),
            Claim::Saved { checkpoint, .. } => Some(
                self.restore_saved(req, run, id, &checkpoint)
                    .await
                    .map(|k| (VmStart::RestoredSaved, k)),
            ),
            Claim::Fresh { .. } | Claim::Wait => None,
        };
        let id = match reused {
            Some(Ok(done)) => return Ok(done),
            Some(Err(e)) => {
                tracing::warn!(error = %e, job = unit.job, "cannot reuse a kept VM; booting a fresh one");
                self.discard(id).await;
                match self.with_pool(|p| p.new_entry(key.clone(), KeptState::Claimed { unit }))? {
                    Claim::Fresh { id } => id,
                    _ => return Err(PoolError::Inconsistent.into()),
                }
            }
            None => id,
        };
        let vm = self
            .with_pool(|p| p.get(id).map(Entry::vm_name))?
            .ok_or(PoolError::LostEntry(id))?;
        match self
            .rt
            .start_kept(Self::vm_spec(req, vm.clone())?, run)
            .await
        {
            Ok(reader) => Ok((
                VmStart::Booted,
                KeptRun {
                    vm,
                    run,
                    out_offset: reader.start_offset(),
                },
            )),
            Err(source) => {
                self.discard(id).await;
                Err(DriverError::Start {
                    vm,
                    source: Box::new(source),
                })
            }
        }
    }

    /// Sends the job to the running kept VM `vm` as run `run`.
    async fn exec(&self, req: &StartRequest, run: u64, vm: &str) -> Result<KeptRun, DriverError> {
        let reader = self
            .rt
            .exec(vm, run, &Self::task(req)?)
            .await
            .map_err(|source| DriverError::Exec {
                vm: vm.to_string(),
                source: Box::new(source),
            })?;
        Ok(KeptRun {
            vm: vm.to_string(),
            run,
            out_offset: reader.start_offset(),
        })
    }

    /// Restores the saved kept VM of entry `id` and gives it the job.
    async fn restore_saved(
        &self,
        req: &StartRequest,
        run: u64,
        id: u64,
        checkpoint: &Path,
    ) -> Result<KeptRun, DriverError> {
        let vm = self
            .with_pool(|p| p.get(id).map(Entry::vm_name))?
            .ok_or(PoolError::LostEntry(id))?;
        self.rt
            .restore(checkpoint, &vm, RestoreOptions::default())
            .await
            .map_err(|source| DriverError::Restore {
                vm: vm.clone(),
                checkpoint: checkpoint.to_path_buf(),
                source: Box::new(source),
            })?;
        // Its clock stopped while it was saved.
        if let Err(e) = self.rt.set_guest_clock(&vm).await {
            tracing::warn!(error = %e, vm, "cannot set the clock of a restored VM");
        }
        self.exec(req, run, &vm).await
    }

    /// Restores the job's own checkpoint of its kept VM as entry `id`: the
    /// run goes on where the checkpoint left it.
    async fn restore_job_checkpoint(
        &self,
        id: u64,
        c: &vgrid_api::types::CheckpointRef,
    ) -> Result<KeptRun, DriverError> {
        let location = PathBuf::from(&c.location);
        let path = location.join(KEPT_RUN_FILE);
        let saved: KeptRun = std::fs::read(&path)
            .map_err(|e| vgrid_vm::error::FileError::new("read", &path, e).into())
            .and_then(|b| state::parse(&path, &b))
            .map_err(|source| DriverError::NotKeptRun { seq: c.seq, source })?;
        let vm = self
            .with_pool(|p| p.get(id).map(Entry::vm_name))?
            .ok_or(PoolError::LostEntry(id))?;
        self.rt
            .restore(&location.join("v0"), &vm, RestoreOptions::default())
            .await
            .map_err(|source| DriverError::RestoreCheckpoint {
                seq: c.seq,
                source: Box::new(source),
            })?;
        if let Err(e) = self.rt.set_guest_clock(&vm).await {
            tracing::warn!(error = %e, vm, "cannot set the clock of a restored VM");
        }
        Ok(KeptRun { vm, ..saved })
    }

    /// Stops idle kept VMs (oldest first) until `unit` fits on the node
    /// beside the other units; never entry `keep`, the one `unit` takes.
    async fn make_room(&self, unit: Unit, keep: u64) {
        let Some(capacity) = self.capacity.lock().ok().and_then(|c| *c) else {
            return;
        };
        let (need, busy) = {
            let Ok(active) = self.active.lock() else {
                return;
            };
            let need = active.get(&unit).copied().unwrap_or((0, 0));
            let busy = active
                .iter()
                .filter(|(u, _)| **u != unit)
                .fold((0, 0), |(c, m), (_, r)| (c + r.0, m + r.1));
            (need, busy)
        };
        let victims = self
            .pool
            .lock()
            .map(|p| p.to_evict(need, busy, capacity, Some(keep)))
            .unwrap_or_default();
        for id in victims {
            tracing::info!(
                entry = id,
                "stopping an idle kept VM to make room for a job"
            );
            self.discard(id).await;
        }
    }

    /// Drops a kept VM: ends its QEMU, removes its directory and its save
    /// chain (unless a job's checkpoint builds on it), forgets the entry.
    async fn discard(&self, id: u64) {
        let entry = self.with_pool(|p| p.remove(id)).ok().flatten();
        let vm = entry.as_ref().map_or_else(String::new, |e| {
            e.vm().map_or_else(|| e.vm_name(), str::to_string)
        });
        if !vm.is_empty() {
            let _ = self.rt.kill(&vm).await;
            let _ = self.rt.remove(&vm).await;
        }
        let chain = self.chain_dir(id);
        // A chain is kept while a job checkpoint that builds on it exists;
        // the controller deletes a job's checkpoints when the job ends.
        let pinned = std::fs::read_to_string(chain.join(PINNED_FILE)).unwrap_or_default();
        if pinned.lines().any(|dir| Path::new(dir).exists()) {
            tracing::info!(chain = %chain.display(), "keeping a save chain that job checkpoints build on");
        } else {
            let _ = std::fs::remove_dir_all(chain);
        }
    }

    /// Marks the save chain of `unit`'s kept VM as needed by the job
    /// checkpoint `dir` (it is the checkpoint's parent, or an ancestor).
    fn pin_chain(&self, unit: Unit, dir: &Path) -> Result<(), DriverError> {
        let saved = self
            .pool
            .lock()
            .ok()
            .and_then(|p| p.of_unit(unit).filter(|e| e.saves > 0).map(|e| e.id));
        let Some(id) = saved else {
            return Ok(());
        };
        use std::io::Write;
        let pins = self.chain_dir(id).join(PINNED_FILE);
        crate::private::append(&pins)
            .and_then(|mut f| writeln!(f, "{}", dir.display()))
            .map_err(|e| vgrid_vm::error::FileError::new("append to", &pins, e))
            .map_err(|e| state::StateError::from(e).into())
    }

    /// After `unit`'s run in kept VM `entry`: a clean end puts the VM back
    /// in the pool (running, or saved); anything else drops it.
    async fn release(&self, unit: Unit, entry: Entry) {
        let ended = self
            .with_output(unit, |o| o.run_end().is_some())
            .unwrap_or(false);
        let vm = entry.vm().map(str::to_string);
        let alive = vm
            .as_deref()
            .is_some_and(|vm| self.rt.qemu_alive(vm).unwrap_or(false));
        let (true, true, Some(vm)) = (ended, alive, vm) else {
            self.discard(entry.id).await;
            return;
        };
        match entry.key.mode {
            VmMode::SaveRestore if entry.saves >= self.keep.max_saves => {
                tracing::info!(
                    entry = entry.id,
                    saves = entry.saves,
                    "a saved VM's chain is full; dropping it"
                );
                self.discard(entry.id).await;
            }
            VmMode::SaveRestore => {
                let ck = self.chain_dir(entry.id).join((entry.saves + 1).to_string());
                let saved = self
                    .rt
                    .checkpoint(
                        &vm,
                        &ck,
                        CheckpointOptions {
                            stop: true,
                            ..CheckpointOptions::default()
                        },
                    )
                    .await;
                match saved {
                    Ok(_) => {
                        let _ = self.rt.remove(&vm).await;
                        let _ = self.with_pool(|p| {
                            if let Some(e) = p.get_mut(entry.id) {
                                e.saves += 1;
                                e.generation += 1;
                                e.state = KeptState::Saved {
                                    checkpoint: ck,
                                    since_ms: now_ms(),
                                };
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, vm, "cannot save a kept VM; dropping it");
                        self.discard(entry.id).await;
                    }
                }
            }
            _ => {
                let _ = self.with_pool(|p| {
                    if let Some(e) = p.get_mut(entry.id) {
                        e.state = KeptState::Idle {
                            vm,
                            since_ms: now_ms(),
                        };
                    }
                });
            }
        }
    }
}

impl VmDriver for QemuDriver {
    fn images(&self) -> Vec<String> {
        self.images
            .list()
            .map(|l| {
                l.into_iter()
                    .filter(|e| e.image.is_ok())
                    .map(|e| e.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn holds_image(&self, published: &vgrid_cas::Manifest) -> bool {
        self.images.holds(published)
    }

    async fn collect_outputs(
        &self,
        unit: Unit,
        cache: Option<&vgrid_cas::Store>,
    ) -> Result<Option<Vec<vgrid_cas::FileEntry>>, DriverError> {
        let outputs = self.with_output(unit, |o| o.outputs.clone())?;
        if outputs.is_empty() {
            return Ok(None);
        }
        let cache = cache.ok_or(JobError::NoCache)?;
        let vm = self.unit_vm(unit, 0)?;
        let stage = self.rt.stage_dir(&vm).map_err(vm_err("read", &vm))?;
        Ok(Some(collect_staged(&stage, &outputs, cache)?))
    }

    async fn install_image(
        &self,
        published: &vgrid_cas::Manifest,
        cache: &vgrid_cas::Store,
    ) -> Result<(), DriverError> {
        self.images
            .install_published(published, cache)
            .map(|_| ())
            .map_err(DriverError::Image)
    }

    async fn start(&self, req: StartRequest) -> Result<VmStart, DriverError> {
        let skip = req.restore.as_ref().map_or(0, |c| c.log_offset);
        let prior = req.restore.as_ref().map_or(0, |c| c.work_ms);
        let outputs = output_names(&req.spec)?;
        // Before anything is booted or claimed.
        self.check_host_paths(&req)?;
        let cpus = u64::from(req.spec.cpus) * u64::from(req.vms);
        let memory = req.spec.memory_mb * u64::from(req.vms);
        if let Ok(mut active) = self.active.lock() {
            active.insert(req.unit, (cpus, memory));
        }
        let mut meta = UnitMeta {
            skip,
            prior_work_ms: prior,
            vms: req.vms,
            cpus: req.spec.cpus,
            memory_mb: req.spec.memory_mb,
            outputs: outputs.clone(),
            owner: req.owner.clone(),
            kept: None,
        };
        self.save_meta(req.unit, &meta)?;

        let (how, source) = match KeepKey::of(&req.owner, &req.spec) {
            Some(key) => {
                let (how, kept) = self.start_kept(&req, &key).await?;
                let path = self
                    .rt
                    .output(&kept.vm)
                    .map_err(vm_err("read", &kept.vm))?
                    .path()
                    .to_path_buf();
                meta.kept = Some(kept.clone());
                self.save_meta(req.unit, &meta)?;
                self.with_pool(|p| {
                    let id = p.of_unit(req.unit).map(|e| e.id);
                    if let Some(e) = id.and_then(|id| p.get_mut(id)) {
                        e.state = KeptState::Busy {
                            vm: kept.vm.clone(),
                            unit: req.unit,
                            run: kept.run,
                            out_offset: kept.out_offset,
                        };
                    }
                })?;
                let reader = RunReader::new(path, kept.run, kept.out_offset);
                (
                    how,
                    Source::Kept {
                        vm: kept.vm,
                        reader,
                    },
                )
            }
            None => {
                for i in 0..req.vms {
                    match &req.restore {
                        Some(c) => {
                            let dir = PathBuf::from(&c.location).join(format!("v{i}"));
                            self.rt
                                .restore(&dir, &vm_name(req.unit, i), RestoreOptions::default())
                                .await
                                .map_err(|source| DriverError::RestoreCheckpoint {
                                    seq: c.seq,
                                    source: Box::new(source),
                                })?;
                        }
                        None => {
                            let spec = Self::vm_spec(&req, vm_name(req.unit, i))?;
                            let vm = spec.name.clone();
                            self.rt
                                .start(spec)
                                .await
                                .map_err(|source| DriverError::Start {
                                    vm,
                                    source: Box::new(source),
                                })?;
                        }
                    }
                }
                let how = if req.restore.is_some() {
                    VmStart::RestoredCheckpoint
                } else {
                    VmStart::Booted
                };
                let first = vm_name(req.unit, 0);
                let reader = self.rt.output(&first).map_err(vm_err("read", &first))?;
                (how, Source::Plain(reader))
            }
        };
        let mut units = self.units.lock().map_err(poisoned)?;
        units.insert(
            req.unit,
            UnitOutput {
                source,
                bytes: Vec::new(),
                skip,
                started: Instant::now(),
                prior_work_ms: prior,
                vms: req.vms,
                outputs,
            },
        );
        Ok(how)
    }

    async fn units(&self) -> Result<Vec<Unit>, DriverError> {
        let mut out: Vec<Unit> = self
            .rt
            .names()
            .map_err(|e| DriverError::List(Box::new(e)))?
            .iter()
            .filter_map(|n| parse_vm_name(n).map(|(u, _)| u))
            .collect();
        if let Ok(pool) = self.pool.lock() {
            out.extend(pool.entries().iter().filter_map(|e| match e.state {
                KeptState::Busy { unit, .. } | KeptState::Releasing { unit, .. } => Some(unit),
                _ => None,
            }));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn status(&self, unit: Unit) -> Result<UnitStatus, DriverError> {
        let (vms, kept) = self.with_output(unit, |o| (o.vms, o.kept_vm().map(str::to_string)))?;
        if let Some(vm) = kept {
            return self.kept_status(unit, &vm).await;
        }
        let mut first_exit = None;
        for i in 0..vms {
            let name = vm_name(unit, i);
            let mut info = self
                .rt
                .inspect(&name)
                .await
                .map_err(vm_err("inspect", &name))?;
            if matches!(info.state, VmState::PoweredOff) {
                // The runtime may read the agent's output just before the
                // guest writes its exit and powers off; a second look, with
                // QEMU gone, reads the whole output again.
                info = self
                    .rt
                    .inspect(&name)
                    .await
                    .map_err(vm_err("inspect", &name))?;
            }
            match info.state {
                VmState::Exited { code, signal } => {
                    if i == 0 {
                        first_exit = Some(exit_code(code, signal));
                    }
                }
                VmState::Failed { message } => return Ok(UnitStatus::Failed(message)),
                VmState::Crashed { console_tail } => {
                    return Ok(UnitStatus::Failed(format!(
                        "the VM crashed: {console_tail}"
                    )));
                }
                VmState::Stopped | VmState::Saved | VmState::PoweredOff => {
                    if i == 0 {
                        return Ok(UnitStatus::Failed(format!(
                            "the VM is {}",
                            info.state.word()
                        )));
                    }
                }
                _ => return Ok(UnitStatus::Running),
            }
        }
        let Some(code) = first_exit else {
            return Ok(UnitStatus::Running);
        };
        Ok(self.finish(code, None))
    }

    async fn output(&self, unit: Unit, from: u64) -> Result<Vec<u8>, DriverError> {
        self.with_output(unit, |o| {
            o.bytes.get(from as usize..).unwrap_or_default().to_vec()
        })
    }

    async fn checkpoint(
        &self,
        unit: Unit,
        dir: PathBuf,
        stop: bool,
    ) -> Result<SavedCheckpoint, DriverError> {
        let (vms, work_ms, kept) = self.with_output(unit, |o| {
            let kept = match &o.source {
                Source::Kept { vm, reader } => Some(KeptRun {
                    vm: vm.clone(),
                    run: reader.run(),
                    out_offset: reader.start_offset(),
                }),
                Source::Plain(_) => None,
            };
            (
                o.vms,
                o.prior_work_ms + o.started.elapsed().as_millis() as i64,
                kept,
            )
        })?;
        let group: Vec<(String, PathBuf)> = match &kept {
            Some(k) => vec![(k.vm.clone(), dir.join("v0"))],
            None => (0..vms)
                .map(|i| (vm_name(unit, i), dir.join(format!("v{i}"))))
                .collect(),
        };
        crate::private::create_dir_all(&dir)
            .map_err(|e| vgrid_vm::error::FileError::new("create directory", &dir, e))
            .map_err(state::StateError::from)?;
        // The group is paused, saved and resumed (or stopped) in this call.
        let paused = Instant::now();
        let result = self
            .rt
            .checkpoint_group(
                &group,
                CheckpointOptions {
                    stop,
                    ..CheckpointOptions::default()
                },
            )
            .await;
        let paused_ms = paused.elapsed().as_millis() as u64;
        // Everything the guest wrote before the pause is in the checkpoint.
        let output_bytes = self.with_output(unit, |o| o.bytes.len() as u64)?;
        if let Err(e) = result {
            // A failed checkpoint leaves nothing behind (the runtime wrote
            // into a temporary directory); only the empty target remains.
            let _ = std::fs::remove_dir(&dir);
            return Err(DriverError::Checkpoint(Box::new(e)));
        }
        if let Some(k) = &kept {
            // A restore follows the same run in the restored VM.
            state::save(&dir.join(KEPT_RUN_FILE), k)?;
            self.pin_chain(unit, &dir)?;
        }
        Ok(SavedCheckpoint {
            location: dir.display().to_string(),
            work_ms,
            output_bytes,
            paused_ms,
        })
    }

    async fn pause(&self, unit: Unit) -> Result<(), DriverError> {
        self.set_running(unit, false).await
    }

    async fn resume(&self, unit: Unit) -> Result<(), DriverError> {
        self.set_running(unit, true).await
    }

    async fn kill(&self, unit: Unit) -> Result<(), DriverError> {
        let kept = self
            .pool
            .lock()
            .ok()
            .and_then(|p| p.of_unit(unit).and_then(|e| e.vm().map(str::to_string)));
        if let Some(vm) = kept {
            // The job's task dies with its VM; the VM is not kept.
            let _ = self.rt.kill(&vm).await;
        }
        for name in self.own_vms(unit)? {
            let _ = self.rt.kill(&name).await;
        }
        Ok(())
    }

    async fn remove(&self, unit: Unit) -> Result<(), DriverError> {
        let entry = self.pool.lock().ok().and_then(|p| p.of_unit(unit).cloned());
        if let Some(entry) = entry {
            self.release(unit, entry).await;
        }
        for name in self.own_vms(unit)? {
            let _ = self.rt.kill(&name).await;
            self.rt
                .remove(&name)
                .await
                .map_err(vm_err("remove", &name))?;
        }
        if let Ok(mut units) = self.units.lock() {
            units.remove(&unit);
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&unit);
        }
        let _ = std::fs::remove_file(self.meta_path(unit));
        Ok(())
    }

    fn set_capacity(&self, cpus: u32, memory_mb: u64) {
        if let Ok(mut c) = self.capacity.lock() {
            *c = Some((u64::from(cpus), memory_mb));
        }
    }

    async fn housekeeping(&self) {
        let active: Vec<Unit> = self
            .active
            .lock()
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default();
        let now = now_ms();
        let idle_ms = self.keep.idle_timeout.as_millis() as u64;
        let (expired, stale) = match self.pool.lock() {
            Ok(p) => (
                p.expired(now, idle_ms),
                // A claim whose start is no longer in flight (the agent
                // restarted in the middle of it).
                p.entries()
                    .iter()
                    .filter(|e| {
                        matches!(e.state, KeptState::Claimed { unit } if !active.contains(&unit))
                    })
                    .map(|e| e.id)
                    .collect::<Vec<_>>(),
            ),
            Err(_) => return,
        };
        for id in expired {
            tracing::info!(entry = id, "dropping a VM kept idle for too long");
            self.discard(id).await;
        }
        for id in stale {
            self.discard(id).await;
        }
    }
}

/// The end of a unit's command: its outputs are delivered once, then the
/// status is final.
impl QemuDriver {
    /// The VMs of this node that belong to `unit` itself (not a kept VM
    /// it runs in).
    fn own_vms(&self, unit: Unit) -> Result<Vec<String>, DriverError> {
        let names = self
            .rt
            .names()
            .map_err(|e| DriverError::List(Box::new(e)))?;
        Ok(names
            .into_iter()
            .filter(|n| parse_vm_name(n).is_some_and(|(u, _)| u == unit))
            .collect())
    }

    /// Pauses (`run` false) or resumes the VMs of `unit`.
    async fn set_running(&self, unit: Unit, run: bool) -> Result<(), DriverError> {
        let vms = self.with_output(unit, |o| o.vms)?;
        for i in 0..vms {
            let vm = self.unit_vm(unit, i)?;
            let done = if run {
                self.rt.resume(&vm).await
            } else {
                self.rt.pause(&vm).await
            };
            done.map_err(vm_err(if run { "resume" } else { "pause" }, &vm))?;
        }
        Ok(())
    }

    /// The status of a unit whose command ended: its outputs stay in the
    /// VM's staging share until [`VmDriver::collect_outputs`] reads them.
    fn finish(&self, code: i32, error: Option<String>) -> UnitStatus {
        match error {
            Some(message) => UnitStatus::Failed(message),
            None => UnitStatus::Exited(code),
        }
    }

    /// A run in a kept VM: its end, or the VM's trouble.
    async fn kept_status(&self, unit: Unit, vm: &str) -> Result<UnitStatus, DriverError> {
        if let Some(end) = self.with_output(unit, |o| o.run_end())? {
            // The VM is the pool's again as soon as the run is over, so the
            // owner's next job waits for it instead of booting another.
            self.with_pool(|p| {
                let id = p.of_unit(unit).map(|e| e.id);
                if let Some(e) = id.and_then(|id| p.get_mut(id))
                    && matches!(e.state, KeptState::Busy { .. })
                {
                    e.state = KeptState::Releasing {
                        vm: vm.to_string(),
                        unit,
                    };
                }
            })?;
            let code = exit_code(end.status.code, end.status.signal);
            return Ok(self.finish(code, end.error));
        }
        // The cheap check first: `inspect` reads the VM's whole output.
        if self.rt.qemu_alive(vm).map_err(vm_err("inspect", vm))? {
            return Ok(UnitStatus::Running);
        }
        let info = self.rt.inspect(vm).await.map_err(vm_err("inspect", vm))?;
        Ok(match info.state {
            VmState::Crashed { console_tail } => {
                UnitStatus::Failed(format!("the VM crashed: {console_tail}"))
            }
            VmState::Failed { message } => UnitStatus::Failed(message),
            VmState::Stopped | VmState::Saved | VmState::PoweredOff | VmState::Exited { .. } => {
                UnitStatus::Failed(format!("the VM is {}", info.state.word()))
            }
            _ => UnitStatus::Running,
        })
    }
}

#[cfg(test)]
mod qemu_tests {
    use super::*;

    #[test]
    fn vm_names_round_trip() {
        let u = Unit {
            job: 42,
            attempt: 3,
        };
        assert_eq!(vm_name(u, 1), "j42-a3-v1");
        assert_eq!(parse_vm_name("j42-a3-v1"), Some((u, 1)));
        assert_eq!(parse_vm_name("web"), None);
        assert_eq!(parse_vm_name("j1-ax-v0"), None);
    }

    /// What a hostile guest can leave in its staging share: a link at an
    /// output's name, a link on the way to it, a FIFO, a directory. None is
    /// followed or read; a plain output is kept under its name, without
    /// the guest's mode bits.
    #[test]
    fn staged_outputs_are_never_read_through_links() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let tmp = tempfile::tempdir().expect("tmp");
        let secret_dir = tmp.path().join("secret");
        std::fs::create_dir(&secret_dir).expect("dir");
        std::fs::write(secret_dir.join("shadow"), "root-only").expect("secret");
        let stage = tmp.path().join("stage");
        std::fs::create_dir_all(stage.join("out")).expect("stage");
        std::fs::write(stage.join("out/good.txt"), "guest data").expect("good");
        std::fs::set_permissions(
            stage.join("out/good.txt"),
            std::fs::Permissions::from_mode(0o4777),
        )
        .expect("chmod");
        symlink(secret_dir.join("shadow"), stage.join("last.txt")).expect("link");
        symlink(&secret_dir, stage.join("mid")).expect("link");
        let made = std::process::Command::new("mkfifo")
            .arg(stage.join("fifo"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let cache = vgrid_cas::Store::open(&tmp.path().join("cache")).expect("cache");

        let files = collect_staged(
            &stage,
            &[("out/good.txt".into(), PathBuf::from("results/good.txt"))],
            &cache,
        )
        .expect("a plain output is kept");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "results/good.txt");
        assert_eq!(files[0].mode, 0o600);
        let mut m = vgrid_cas::Manifest::new(vgrid_cas::ManifestKind::Data);
        m.files = files;
        let out = tmp.path().join("exported");
        std::fs::create_dir(&out).expect("dir");
        cache.export(&m, &out).expect("export");
        assert_eq!(
            std::fs::read_to_string(out.join("results/good.txt")).expect("kept"),
            "guest data"
        );

        for (rel, why) in [
            ("last.txt", "symbolic link"),
            ("mid/shadow", "symbolic link"),
            ("fifo", "FIFO"),
            ("out", "directory"),
        ] {
            let e =
                collect_staged(&stage, &[(rel.into(), PathBuf::from("x"))], &cache).unwrap_err();
            let e = vgrid_vm::error::report(&e);
            assert!(e.contains(why) && e.contains("staged output"), "{rel}: {e}");
        }
    }

    #[test]
    fn a_jobs_task_stages_from_the_exported_inputs() {
        let spec = vgrid_jobfile::parse(
            "j.toml",
            "image = \"tiny\"\ncommand = [\"/bin/true\"]\n[[inputs]]\nfrom = \"local/a.txt\"\nto = \"/work/in.txt\"\n[[outputs]]\nfrom = \"/work/out/r.txt\"\nto = \"r.txt\"\n",
        )
        .expect("valid");
        let mut req = StartRequest {
            unit: Unit { job: 1, attempt: 1 },
            spec,
            vms: 1,
            restore: None,
            owner: "alice".into(),
            input_dir: None,
        };
        let e = QemuDriver::task(&req).expect_err("inputs not fetched");
        assert!(e.sentence().contains("not fetched"), "{}", e.sentence());
        req.input_dir = Some(PathBuf::from("/agent/inputs/1.1"));
        let task = QemuDriver::task(&req).expect("task");
        assert_eq!(task.workdir.as_deref(), Some("/work"));
        let st = task.staging.expect("staging");
        assert_eq!(st.inputs, vec![PathBuf::from("/agent/inputs/1.1/in.txt")]);
        assert_eq!(st.outputs, vec!["out/r.txt".to_string()]);
        assert_eq!(st.input_dir, req.input_dir);
        assert_eq!(
            output_names(&req.spec).expect("names"),
            vec![("out/r.txt".to_string(), PathBuf::from("r.txt"))]
        );
    }
}
