//! The node-local VM runtime: start, inspect, pause, resume, stop, kill,
//! wait, remove. Checkpoint, restore and migration live in their own
//! modules but are methods of the same [`Runtime`].
//!
//! Nothing essential lives in memory: every VM is described by its
//! directory (record, pid files, sockets, output), so a new `Runtime` (a
//! restarted vgrid, or the next CLI invocation) finds running VMs and
//! carries on with them. Dropping a `Runtime` never stops a VM.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use vgrid_guest_proto::{ExitStatus, HostMessage, JobContext, Mount, RunRequest, Staging, User};
use vgrid_qmp::{Qmp, RunState};

use crate::accel::{self, Accel, AccelChoice};
use crate::error::{
    CommandError, ControlPortError, DiskError, FileError, FsError, LaunchError, LockError,
    OpenError, Result, SpecError, StartError, ToolError, VmError,
};
use crate::fsutil;
use crate::host::{HostTools, QemuInfo, RunAs};
use crate::images::ImageSource;
use crate::layout::{VmDir, check_vm_name, hostname_for};
use crate::output::{OutputReader, read_report};
use crate::passt;
use crate::process::{self, Sig};
use crate::qemu::{self, LaunchMode};
use crate::record::{
    ImageKind, Intent, MountRecord, PortMap, RECORD_FORMAT, VmRecord, mac_for, new_vm_id, now_unix,
};

/// How the runtime is set up on this node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `$VGRID_DATA_DIR`: VMs live in `vms/` below it.
    pub data_dir: PathBuf,
    /// The QEMU binary; `qemu-system-x86_64` from `PATH` when `None`.
    pub qemu: Option<PathBuf>,
    /// Force an accelerator instead of probing.
    pub accel: Option<Accel>,
    /// The unprivileged user QEMU and passt run as when vgrid is root.
    pub vm_user: String,
    /// Host directories that data repositories (`mounts`) and staged
    /// inputs may come from.
    /// A job's host paths lie in its owner's directory inside them,
    /// `<root>/<owner>/` (see [`Runtime::host_roots`]).
    pub mount_roots: Vec<PathBuf>,
    /// How long `start` waits for the command to start (TCG boots slowly).
    pub start_timeout: Duration,
    /// How long one QMP command may take.
    pub qmp_timeout: Duration,
}

impl RuntimeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        RuntimeConfig {
            mount_roots: vec![data_dir.join("repos")],
            data_dir,
            qemu: None,
            accel: None,
            vm_user: RunAs::DEFAULT_USER.to_string(),
            start_timeout: Duration::from_secs(600),
            qmp_timeout: Duration::from_secs(60),
        }
    }

    /// [`RuntimeConfig::new`] with overrides from the environment:
    /// `VGRID_QEMU`, `VGRID_ACCEL` (`kvm`|`tcg`), `VGRID_VM_USER`,
    /// `VGRID_MOUNT_ROOTS` (colon-separated directories).
    pub fn from_env(data_dir: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let mut cfg = Self::new(data_dir);
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Overrides this configuration (e.g. read from a file) with the
    /// environment variables [`RuntimeConfig::from_env`] reads.
    pub fn apply_env(&mut self) -> Result<(), OpenError> {
        let cfg = self;
        if let Some(q) = std::env::var_os("VGRID_QEMU").filter(|v| !v.is_empty()) {
            cfg.qemu = Some(PathBuf::from(q));
        }
        if let Ok(a) = std::env::var("VGRID_ACCEL")
            && !a.is_empty()
        {
            cfg.accel = Some(Accel::parse(&a).ok_or_else(|| OpenError::Accel(a.clone()))?);
        }
        if let Ok(u) = std::env::var("VGRID_VM_USER")
            && !u.is_empty()
        {
            cfg.vm_user = u;
        }
        if let Some(roots) = std::env::var_os("VGRID_MOUNT_ROOTS").filter(|v| !v.is_empty()) {
            cfg.mount_roots = std::env::split_paths(&roots).collect();
        }
        Ok(())
    }
}

/// A data repository: host directory `host` mounted at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub host: PathBuf,
    pub guest: String,
    pub readonly: bool,
}

impl MountSpec {
    /// Parses `HOSTDIR:GUESTDIR[:ro]` (an entry of the request's
    /// `mounts`).
    pub fn parse(s: &str) -> Result<MountSpec, SpecError> {
        let bad = |why: &str| SpecError::new("mounts", s, why);
        let mut parts = s.split(':');
        let host = parts.next().filter(|h| !h.is_empty());
        let guest = parts.next().filter(|g| !g.is_empty());
        let (Some(host), Some(guest)) = (host, guest) else {
            return Err(bad("expected HOSTDIR:GUESTDIR[:ro]"));
        };
        let readonly = match parts.next() {
            None => false,
            Some("ro") => true,
            Some("rw") => false,
            Some(_) => return Err(bad("the third field may only be `ro` or `rw`")),
        };
        if parts.next().is_some() {
            return Err(bad("expected HOSTDIR:GUESTDIR[:ro]"));
        }
        Ok(MountSpec {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            readonly,
        })
    }
}

/// Files copied into the VM before the command and out after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagingSpec {
    /// Host files (inside the mount roots, or inside `input_dir`) copied
    /// into the working directory under their file names.
    pub inputs: Vec<PathBuf>,
    /// Paths relative to the working directory copied back into the VM's
    /// `stage/` directory.
    pub outputs: Vec<String>,
    /// A directory the caller filled with the inputs (the node agent's
    /// export of a job's input data): inputs are resolved inside it, not
    /// inside the owner's directories of the allowed roots.
    pub input_dir: Option<PathBuf>,
}

impl StagingSpec {
    /// Where the inputs are resolved: `input_dir`, or else `roots`.
    pub(crate) fn input_roots(&self, roots: &[PathBuf]) -> Vec<PathBuf> {
        match &self.input_dir {
            Some(dir) => vec![dir.clone()],
            None => roots.to_vec(),
        }
    }
}

/// What runs in a VM: one command with its environment and the files
/// staged in and out. A fresh VM runs the task of its [`VmSpec`]; a VM
/// kept running runs later tasks through [`Runtime::exec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    /// The command and its arguments (empty for images without the agent).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub staging: Option<StagingSpec>,
}

impl Task {
    /// A task running `command` as root, nothing staged.
    pub fn new(command: Vec<String>) -> Self {
        Task {
            command,
            ..Task::default()
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub image: String,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Disk size in GiB; the image's size when `None`.
    pub disk_gb: Option<u64>,
    pub mounts: Vec<MountSpec>,
    pub publish: Vec<PortMap>,
    pub network: bool,
    /// The (first) command and what it needs.
    pub task: Task,
    /// The job's owner: host paths resolve inside `<root>/<owner>/` of
    /// each allowed root. `None` (`vgrid vm start` by an administrator):
    /// the whole roots.
    pub owner: Option<String>,
}

impl VmSpec {
    /// Whether the VM uses host paths of the allowed roots (data
    /// repositories, or staged inputs not in an `input_dir`).
    pub fn has_host_paths(&self) -> bool {
        !self.mounts.is_empty()
            || self
                .task
                .staging
                .as_ref()
                .is_some_and(|s| !s.inputs.is_empty() && s.input_dir.is_none())
    }

    pub fn new(name: impl Into<String>, image: impl Into<String>, command: Vec<String>) -> Self {
        VmSpec {
            name: name.into(),
            image: image.into(),
            cpus: 1,
            memory_mb: 256,
            disk_gb: None,
            mounts: Vec::new(),
            publish: Vec::new(),
            network: true,
            task: Task::new(command),
            owner: None,
        }
    }
}

/// The tag of the staging share (`stage/` of the VM directory).
pub(crate) const STAGE_TAG: &str = "stage";

/// A task as the guest agent gets it: the part a job context (the first
/// command of a VM) and a `Run` request (a later one in a kept VM) share.
/// [`guest_task`] is the one place that makes it.
pub(crate) struct GuestTask {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    user: Option<User>,
    workdir: Option<String>,
    staging: Option<Staging>,
}

/// The guest's view of `task`, whose inputs were opened as `inputs` and
/// go through the share tagged `staging_tag`.
pub(crate) fn guest_task(task: &Task, staging_tag: &str, inputs: &[StagedInput]) -> GuestTask {
    GuestTask {
        argv: task.command.clone(),
        env: task.env.clone(),
        user: task.user.as_ref().map(|u| User {
            name: u.clone(),
            uid: None,
            gid: None,
        }),
        workdir: task.workdir.clone(),
        staging: task.staging.as_ref().map(|st| Staging {
            tag: staging_tag.to_string(),
            inputs: inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: st.outputs.clone(),
        }),
    }
}

impl GuestTask {
    /// The job context of a VM whose first command this is.
    pub(crate) fn context(
        self,
        hostname: String,
        mounts: &[MountRecord],
        network: bool,
    ) -> JobContext {
        let mut ctx = JobContext::new(self.argv, hostname);
        ctx.env = self.env;
        ctx.user = self.user;
        ctx.workdir = self.workdir;
        ctx.staging = self.staging;
        ctx.network = network;
        ctx.mounts = mounts
            .iter()
            .map(|m| Mount {
                tag: m.tag.clone(),
                guest_path: m.guest_path.clone(),
                readonly: m.readonly,
            })
            .collect();
        ctx
    }

    /// The `Run` request of run `id` in a kept VM.
    pub(crate) fn run(self, id: u64) -> RunRequest {
        let mut run = RunRequest::new(id, self.argv);
        run.env = self.env;
        run.user = self.user;
        run.workdir = self.workdir;
        run.staging = self.staging;
        run
    }
}

/// A staged input, opened once when its path was checked and copied from
/// that open file, so the path cannot be redirected in between.
#[derive(Debug)]
pub(crate) struct StagedInput {
    pub(crate) file: File,
    /// The resolved host path (for messages).
    pub(crate) host: PathBuf,
    /// Its name in the staging share.
    pub(crate) name: String,
}

/// Whether `owner` can name a directory below a root: a user name
/// (`vgrid_model::names::is_user_name`), so never empty, `.`, `..` or with
/// a `/`.
pub fn check_owner_name(owner: &str) -> Result<(), SpecError> {
    if vgrid_model::names::is_user_name(owner) {
        Ok(())
    } else {
        Err(SpecError::new(
            "owner",
            owner,
            format!(
                "not a user name ({}), so it has no host directory",
                vgrid_model::names::plain_name_rule(vgrid_model::limits::MAX_USER_NAME)
            ),
        ))
    }
}

/// The state of a VM as seen now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum VmState {
    /// QEMU runs; the agent has not started the command yet.
    Starting,
    Running,
    Paused,
    /// QEMU waits for a migration stream (restore or live migration).
    Incoming,
    /// The command ended with this status.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The guest powered off (images without the agent).
    PoweredOff,
    /// Stopped or killed by vgrid.
    Stopped,
    /// Stopped after a checkpoint.
    Saved,
    /// The agent could not set up or run the job.
    Failed {
        message: String,
    },
    /// QEMU died, or the guest hit an internal error.
    Crashed {
        console_tail: String,
    },
    /// Another vgrid is operating on the VM right now.
    Busy,
}

impl VmState {
    /// A short word for listings.
    pub fn word(&self) -> String {
        match self {
            VmState::Starting => "starting".into(),
            VmState::Running => "running".into(),
            VmState::Paused => "paused".into(),
            VmState::Incoming => "incoming".into(),
            VmState::Exited { code, signal } => match (code, signal) {
                (Some(c), _) => format!("exited({c})"),
                (None, Some(s)) => format!("killed(signal {s})"),
                _ => "exited".into(),
            },
            VmState::PoweredOff => "powered-off".into(),
            VmState::Stopped => "stopped".into(),
            VmState::Saved => "saved".into(),
            VmState::Failed { .. } => "failed".into(),
            VmState::Crashed { .. } => "crashed".into(),
            VmState::Busy => "busy".into(),
        }
    }

    /// Whether QEMU is (meant to be) alive in this state.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Paused
                | VmState::Incoming
                | VmState::Busy
        )
    }

    /// The exit status, when the command exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            VmState::Exited { code, signal } => Some(ExitStatus {
                code: *code,
                signal: *signal,
            }),
            _ => None,
        }
    }
}

/// One VM as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmInfo {
    pub name: String,
    pub id: String,
    #[serde(flatten)]
    pub state: VmState,
    pub image: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub accel: Accel,
    pub accel_reason: String,
    pub pid: Option<i32>,
    pub created_unix: u64,
    pub dir: PathBuf,
    pub last_checkpoint: Option<PathBuf>,
    /// Why the VM cannot be checkpointed, if it cannot.
    pub checkpoint_blocker: Option<String>,
    pub publish: Vec<PortMap>,
}

/// What [`Runtime::create`] worked out for a new VM directory.
struct Prepared {
    image: crate::record::BootImage,
    context: Option<JobContext>,
    mounts: Vec<MountRecord>,
    staging_tag: Option<&'static str>,
    staged_inputs: Vec<StagedInput>,
    accel: AccelChoice,
    machine: String,
    qemu_version: String,
    disk_bytes: u64,
}

/// An exclusive hold on one VM directory (an advisory file lock), so two
/// vgrid processes never drive the same QEMU at once.
pub(crate) struct VmLock {
    _file: File,
}

impl VmLock {
    pub(crate) fn try_acquire(dir: &VmDir) -> Result<Option<VmLock>, LockError> {
        let path = dir.lock();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| FileError::new("open", &path, e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(VmLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(FileError::new("lock", &path, e.into()).into()),
        }
    }

    /// Like `try_acquire`, but keeps trying for a quarter of a second: a
    /// lock can be held for an instant by no vgrid at all (a child that
    /// another thread of this process forked holds a copy of the lock's
    /// descriptor until it execs), and that is not "busy".
    pub(crate) async fn try_acquire_soon(dir: &VmDir) -> Result<Option<VmLock>, LockError> {
        for _ in 0..25 {
            if let Some(lock) = Self::try_acquire(dir)? {
                return Ok(Some(lock));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self::try_acquire(dir)
    }

    pub(crate) async fn acquire(dir: &VmDir, name: &str) -> Result<VmLock, LockError> {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            if let Some(lock) = Self::try_acquire(dir)? {
                return Ok(lock);
            }
            if Instant::now() > deadline {
                return Err(LockError::Busy {
                    name: name.to_string(),
                    after: Duration::from_secs(1800),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The runtime of one node.
pub struct Runtime {
    pub(crate) cfg: RuntimeConfig,
    pub(crate) tools: HostTools,
    pub(crate) images: Arc<dyn ImageSource>,
    pub(crate) run_as: RunAs,
    /// QEMU and passt processes this runtime started, reaped when they exit
    /// (processes started by an earlier vgrid were reparented and are not
    /// ours to reap).
    children: Mutex<Vec<Child>>,
    accel: OnceLock<AccelChoice>,
    qemu_info: OnceLock<QemuInfo>,
}

impl Runtime {
    /// Opens the runtime: finds the host programs and, as root, the VM user.
    pub fn open(cfg: RuntimeConfig, images: Arc<dyn ImageSource>) -> Result<Runtime, OpenError> {
        let tools = HostTools::discover(cfg.qemu.as_deref())?;
        let run_as = RunAs::for_this_process(&cfg.vm_user)?;
        // Private: no other local user, nor the VM user (one VM's QEMU),
        // reaches a VM directory; QEMU and passt get what they need as
        // descriptors or open it before dropping privileges.
        fsutil::create_private_dir_all(&cfg.data_dir)?;
        fsutil::create_dir_mode(&cfg.data_dir.join("vms"), 0o700)?;
        Ok(Runtime {
            cfg,
            tools,
            images,
            run_as,
            children: Mutex::new(Vec::new()),
            accel: OnceLock::new(),
            qemu_info: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The host directories a job of `owner` may use: `<root>/<owner>` for
    /// each allowed root; the whole roots for `None` (an administrator's
    /// VM started by hand).
    pub fn host_roots(&self, owner: Option<&str>) -> Result<Vec<PathBuf>, SpecError> {
        self.host_roots_if(owner, true)
    }

    /// [`Runtime::host_roots`] when `needed` (the VM has host paths); none
    /// otherwise, so that a VM without host paths starts whatever its owner.
    pub(crate) fn host_roots_if(
        &self,
        owner: Option<&str>,
        needed: bool,
    ) -> Result<Vec<PathBuf>, SpecError> {
        if !needed {
            return Ok(Vec::new());
        }
        match owner {
            None => Ok(self.cfg.mount_roots.clone()),
            Some(o) => {
                check_owner_name(o)?;
                Ok(self.cfg.mount_roots.iter().map(|r| r.join(o)).collect())
            }
        }
    }

    pub fn tools(&self) -> &HostTools {
        &self.tools
    }

    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    pub(crate) fn vm_dir(&self, name: &str) -> VmDir {
        VmDir::new(self.cfg.data_dir.join("vms").join(name))
    }

    /// The directory of an existing VM.
    pub(crate) fn existing(&self, name: &str) -> Result<VmDir> {
        check_vm_name(name).map_err(|_| VmError::NotFound(name.to_string()))?;
        let dir = self.vm_dir(name);
        if !dir.record().exists() {
            return Err(VmError::NotFound(name.to_string()));
        }
        Ok(dir)
    }

    /// KVM or TCG for this node (probed once, then cached).
    pub fn accel(&self) -> AccelChoice {
        self.accel
            .get_or_init(|| match self.cfg.accel {
                Some(a) => AccelChoice {
                    accel: a,
                    reason: "chosen by configuration (VGRID_ACCEL)".into(),
                },
                None => accel::choose(
                    &self.tools,
                    &self.qemu_info().map(|i| i.version).unwrap_or_default(),
                    &accel::cache_dir(&self.cfg.data_dir).join("accel.json"),
                    self.images.probe_kernel().as_deref(),
                ),
            })
            .clone()
    }

    /// QEMU's version and machine type (cached per binary).
    pub fn qemu_info(&self) -> Result<QemuInfo, ToolError> {
        if let Some(info) = self.qemu_info.get() {
            return Ok(info.clone());
        }
        let info = self
            .tools
            .qemu_info(&accel::cache_dir(&self.cfg.data_dir).join("qemu-info.json"))?;
        Ok(self.qemu_info.get_or_init(|| info).clone())
    }

    pub(crate) fn adopt(&self, child: Child) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        children.push(child);
    }

    fn reap(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// The pid of the VM's QEMU when it is alive.
    pub(crate) fn qemu_pid(&self, dir: &VmDir) -> Option<i32> {
        self.reap();
        process::read_pid(&dir.qemu_pid()).filter(|pid| process::alive(*pid, &dir.qmp()))
    }

    pub(crate) fn passt_pid(&self, dir: &VmDir) -> Option<i32> {
        process::read_pid(&dir.passt_pid())
            .filter(|pid| process::alive(*pid, &dir.passt_program_name()))
    }

    pub(crate) async fn connect(&self, dir: &VmDir, name: &str) -> Result<Qmp> {
        Qmp::connect(dir.qmp(), self.cfg.qmp_timeout)
            .await
            .map_err(|e| VmError::qmp(name, e))
    }

    /// Validates the request, creates the VM's directory, disk, context and
    /// record, and starts passt and QEMU. Returns once the command has
    /// started (images with the agent) or QEMU runs (images without).
    pub async fn start(&self, spec: VmSpec) -> Result<VmInfo, StartError> {
        let (dir, rec) = self.create(&spec, None).await?;
        self.wait_started(&dir, &rec).await?;
        Ok(self.inspect(&spec.name).await?)
    }

    /// The one start path of [`Runtime::start`] and
    /// [`Runtime::start_kept`]: validates the request, creates the VM's
    /// directory, disk, context and record, and starts passt and QEMU.
    /// `keep` is the run id of the first command of a VM kept running for
    /// later runs (such a VM always gets a staging share, so that any
    /// later run can stage files); `None` for a VM of one command.
    pub(crate) async fn create(
        &self,
        spec: &VmSpec,
        keep: Option<u64>,
    ) -> Result<(VmDir, VmRecord), StartError> {
        check_vm_name(&spec.name)?;
        // The model's bounds, the same the job file is checked against.
        use vgrid_model::limits::{MAX_CPUS, MAX_MEMORY_MB, MIN_MEMORY_MB, out_of_range};
        if spec.cpus == 0 || spec.cpus > MAX_CPUS {
            let why = out_of_range("cpus", spec.cpus, 1, MAX_CPUS);
            return Err(SpecError::new("cpus", spec.cpus.to_string(), why).into());
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&spec.memory_mb) {
            let why = out_of_range("memory_mb", spec.memory_mb, MIN_MEMORY_MB, MAX_MEMORY_MB);
            return Err(SpecError::new("memory_mb", spec.memory_mb.to_string(), why).into());
        }
        let image = self.images.boot_image(&spec.image)?;
        let task = &spec.task;
        if keep.is_some() && !image.agent {
            return Err(SpecError::new(
                "image",
                image.name.clone(),
                "has no guest agent, so it cannot keep a VM running between tasks",
            )
            .into());
        }
        if image.agent && task.command.is_empty() {
            return Err(SpecError::new(
                "command",
                "",
                format!(
                    "image `{}` runs a command, and the request gives none",
                    image.name
                ),
            )
            .into());
        }
        if !image.agent && !task.command.is_empty() {
            return Err(SpecError::new(
                "command",
                task.command.join(" "),
                format!(
                    "image `{}` has no guest agent, so it cannot run a command; the job is the VM's lifetime",
                    image.name
                ),
            )
            .into());
        }
        if !image.agent && (!spec.mounts.is_empty() || task.staging.is_some()) {
            return Err(SpecError::new(
                if spec.mounts.is_empty() {
                    "staging"
                } else {
                    "mounts"
                },
                "",
                format!(
                    "image `{}` has no guest agent to mount data repositories or stage files",
                    image.name
                ),
            )
            .into());
        }
        let dir = self.vm_dir(&spec.name);
        dir.check_socket_paths()?;

        let roots = self.host_roots_if(spec.owner.as_deref(), spec.has_host_paths())?;
        let mounts = resolve_mounts(&spec.mounts, &roots)?;
        let staged_inputs = match &task.staging {
            Some(st) => {
                open_inputs::<StartError>("staging.inputs", &st.inputs, &st.input_roots(&roots))?
            }
            None => Vec::new(),
        };
        let staging_tag = (task.staging.is_some() || keep.is_some()).then_some(STAGE_TAG);

        let context = if image.agent {
            let mut ctx = guest_task(task, STAGE_TAG, &staged_inputs).context(
                hostname_for(&spec.name),
                &mounts,
                spec.network,
            );
            ctx.keep = keep.is_some();
            ctx.run = keep;
            ctx.validate().map_err(|source| StartError::Task {
                name: spec.name.clone(),
                source,
            })?;
            Some(ctx)
        } else {
            None
        };

        let accel = self.accel();
        let QemuInfo {
            version: qemu_version,
            q35_machine: machine,
        } = self.qemu_info()?;
        let base_bytes = match self.images.disk_bytes(&spec.image) {
            Some(b) => b,
            None => self.virtual_size(&image.disk)?,
        };
        let disk_bytes = match spec.disk_gb {
            None => base_bytes,
            Some(g) => {
                let want = g
                    .checked_mul(1 << 30)
                    .ok_or_else(|| SpecError::new("disk_gb", g.to_string(), "too large"))?;
                if want < base_bytes {
                    return Err(SpecError::new(
                        "disk_gb",
                        g.to_string(),
                        format!("smaller than the image's disk ({base_bytes} bytes)"),
                    )
                    .into());
                }
                want
            }
        };

        fsutil::create_private_dir_all(&self.cfg.data_dir.join("vms"))?;
        match fs::create_dir(dir.root()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StartError::Exists(spec.name.clone()));
            }
            Err(e) => return Err(FileError::new("create directory", dir.root(), e).into()),
        }
        let prepared = self.prepare_dir(
            &dir,
            spec,
            Prepared {
                image,
                context,
                mounts,
                staging_tag,
                staged_inputs,
                accel,
                machine,
                qemu_version,
                disk_bytes,
            },
        );
        let rec = match prepared {
            Ok(rec) => rec,
            Err(e) => {
                let _ = fs::remove_dir_all(dir.root());
                return Err(e);
            }
        };
        self.boot(&dir, &rec, LaunchMode::default()).await?;
        Ok((dir, rec))
    }

    /// Fills the new directory of a VM: its disk layer, job context,
    /// staging share and record.
    fn prepare_dir(&self, dir: &VmDir, spec: &VmSpec, p: Prepared) -> Result<VmRecord, StartError> {
        fsutil::create_dir_mode(dir.root(), 0o700)?;
        let top = dir.disk_layer(0);
        self.create_overlay(&top, p.disk_bytes)?;
        if let Some(ctx) = &p.context {
            let json = ctx.to_json().map_err(|source| StartError::Task {
                name: spec.name.clone(),
                source,
            })?;
            fsutil::write_atomic(&dir.context(), json.as_bytes(), 0o600)?;
        }
        if p.staging_tag.is_some() {
            self.fill_stage(dir, p.staged_inputs)?;
        }
        let id = new_vm_id(&spec.name);
        let rec = VmRecord {
            format: RECORD_FORMAT,
            mac: mac_for(&id),
            id,
            name: spec.name.clone(),
            created_unix: now_unix(),
            disks: vec![p.image.disk.clone(), top.clone()],
            image: p.image,
            cpus: spec.cpus,
            memory_mb: spec.memory_mb,
            disk_bytes: p.disk_bytes,
            cpu_model: p.accel.accel.default_cpu_model().to_string(),
            accel: p.accel.accel,
            accel_reason: p.accel.reason,
            machine: p.machine,
            mounts: p.mounts,
            staging_tag: p.staging_tag.map(str::to_string),
            publish: spec.publish.clone(),
            network: spec.network,
            context: p.context,
            checkpointed_layers: 0,
            last_checkpoint: None,
            restored_from: None,
            run_as: self.run_as.name(),
            qemu_version: p.qemu_version,
            intent: Intent::Run,
            owner: spec.owner.clone(),
        };
        rec.save(&dir.record())?;
        self.give_to_vm_user(dir)?;
        Ok(rec)
    }

    /// The VM directory and the files QEMU writes belong to the VM user.
    pub(crate) fn give_to_vm_user(&self, dir: &VmDir) -> Result<(), FileError> {
        for p in [dir.console(), dir.agent_out()] {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| FileError::new("create", &p, e))?;
        }
        let entries =
            fs::read_dir(dir.root()).map_err(|e| FileError::new("read", dir.root(), e))?;
        for entry in entries.flatten() {
            self.run_as.chown(&entry.path())?;
        }
        self.run_as.chown(dir.root())
    }

    /// Starts passt (when networked) and QEMU for a prepared directory.
    pub(crate) async fn boot(
        &self,
        dir: &VmDir,
        rec: &VmRecord,
        mode: LaunchMode,
    ) -> Result<Qmp, LaunchError> {
        let net = if rec.network {
            let passt = passt::spawn(&self.tools, dir, &rec.publish, &self.run_as)?;
            self.adopt(passt.child);
            Some(passt.qemu_end)
        } else {
            None
        };
        match qemu::launch(&self.tools, rec, dir, &self.run_as, mode, net).await {
            Ok(launched) => {
                self.adopt(launched.child);
                Ok(launched.qmp)
            }
            Err(e) => {
                self.kill_passt(dir);
                Err(e)
            }
        }
    }

    pub(crate) fn kill_passt(&self, dir: &VmDir) {
        if let Some(pid) = self.passt_pid(dir) {
            process::signal(pid, Sig::TERM);
        }
    }

    /// Waits for the agent's `Started` (or QEMU running, without agent).
    async fn wait_started(&self, dir: &VmDir, rec: &VmRecord) -> Result<(), CommandError> {
        if !rec.image.agent {
            return Ok(());
        }
        let mut reader = OutputReader::new(dir.agent_out());
        let deadline = Instant::now() + self.cfg.start_timeout;
        loop {
            reader.drain()?;
            let report = reader.report();
            if report.started {
                return Ok(());
            }
            if let Some(message) = report.errors.first() {
                return Err(CommandError::Agent {
                    name: rec.name.clone(),
                    message: message.clone(),
                });
            }
            if self.qemu_pid(dir).is_none() {
                // One last read: the agent may have written just before
                // powering off.
                reader.drain()?;
                if reader.report().started {
                    return Ok(());
                }
                if let Some(message) = reader.report().errors.first() {
                    return Err(CommandError::Agent {
                        name: rec.name.clone(),
                        message: message.clone(),
                    });
                }
                self.kill_passt(dir);
                return Err(CommandError::Crashed {
                    name: rec.name.clone(),
                    console_tail: self.crash_detail(dir),
                });
            }
            if Instant::now() > deadline {
                return Err(CommandError::Timeout {
                    what: format!(
                        "the command of VM `{}` to start (it keeps booting; see `vgrid vm console {}`)",
                        rec.name, rec.name
                    ),
                    after: self.cfg.start_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn crash_detail(&self, dir: &VmDir) -> String {
        let console = fsutil::tail_lines(&dir.console(), 20);
        let qemu = fsutil::tail_lines(&dir.qemu_log(), 5);
        match (console.is_empty(), qemu.is_empty()) {
            (_, true) => console,
            (true, false) => format!("(QEMU) {qemu}"),
            (false, false) => format!("{console}\n(QEMU) {qemu}"),
        }
    }

    pub(crate) fn virtual_size(&self, disk: &Path) -> Result<u64, ToolError> {
        let out = self.tools.run(
            &self.tools.qemu_img,
            &[
                "info".as_ref(),
                "--output=json".as_ref(),
                "-U".as_ref(),
                disk.as_os_str(),
            ],
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|source| ToolError::Answer {
                path: disk.to_path_buf(),
                source,
            })?;
        v.get("virtual-size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| ToolError::NoVirtualSize {
                path: disk.to_path_buf(),
            })
    }

    /// Creates an empty qcow2 layer; its backing is given to QEMU
    /// explicitly, never read from the file.
    pub(crate) fn create_overlay(&self, path: &Path, bytes: u64) -> Result<(), DiskError> {
        self.tools.run(
            &self.tools.qemu_img,
            &[
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                path.as_os_str(),
                bytes.to_string().as_ref(),
            ],
        )?;
        self.run_as.chown(path)?;
        let perm = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        fs::set_permissions(path, perm).map_err(|e| FileError::new("chmod", path, e).into())
    }

    /// Names of all VMs on this node.
    pub fn names(&self) -> Result<Vec<String>> {
        let vms = self.cfg.data_dir.join("vms");
        let mut names = Vec::new();
        let entries = match fs::read_dir(&vms) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(FileError::new("read", &vms, e).into()),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_vm_name(&name).is_ok() && entry.path().join("vm.json").exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every VM with its current state.
    pub async fn list(&self) -> Result<Vec<VmInfo>> {
        let mut out = Vec::new();
        for name in self.names()? {
            match self.inspect(&name).await {
                Ok(info) => out.push(info),
                Err(VmError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn record(&self, name: &str) -> Result<VmRecord> {
        let dir = self.existing(name)?;
        Ok(VmRecord::load(&dir.record())?)
    }

    /// The VM's current state, read from QEMU, its pid and the agent output.
    /// Tidies up after a finished VM (stops a leftover passt, ends a QEMU
    /// whose guest powered off).
    pub async fn inspect(&self, name: &str) -> Result<VmInfo> {
        let dir = self.existing(name)?;
        let Some(lock) = VmLock::try_acquire_soon(&dir).await? else {
            let rec = VmRecord::load(&dir.record())?;
            let pid = self.qemu_pid(&dir);
            return Ok(self.info(&dir, &rec, VmState::Busy, pid));
        };
        let state = self.state_locked(&dir, name).await?;
        drop(lock);
        let rec = VmRecord::load(&dir.record())?;
        let pid = self.qemu_pid(&dir);
        Ok(self.info(&dir, &rec, state, pid))
    }

    /// Empties the VM's staging share and fills it with `inputs`. The guest
    /// may have written there (a kept VM between runs): whatever it left is
    /// removed without following links, and each input is created with
    /// `O_EXCL|O_NOFOLLOW` and copied from the input opened when it was
    /// checked. The directory itself stays: QEMU holds it open as the
    /// share's root.
    pub(crate) fn fill_stage(&self, dir: &VmDir, inputs: Vec<StagedInput>) -> Result<(), FsError> {
        let stage = dir.stage();
        fsutil::create_dir_mode(&stage, 0o700)?;
        let entries = fs::read_dir(&stage).map_err(|e| FileError::new("read", &stage, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FileError::new("read", &stage, e))?;
            fsutil::remove_entry_nofollow(&stage, &entry.file_name())?;
        }
        let stage_fd = fsutil::open_dir_beneath_nofollow(&stage, Path::new(""))?;
        for mut input in inputs {
            let name = std::ffi::OsStr::new(&input.name);
            let dst_path = stage.join(name);
            let mut out = fsutil::create_new_in(&stage_fd, &stage, name, 0o644)?;
            fsutil::copy_open_hashed(&mut input.file, &input.host, &mut out, &dst_path)?;
            out.sync_all()
                .map_err(|e| FileError::new("fsync", &dst_path, e))?;
            self.run_as.fchown(&out, &dst_path)?;
        }
        Ok(self.run_as.chown(&stage)?)
    }

    /// The record of VM `name` (whose lock the caller holds) when its
    /// state can be saved: it runs (or starts, or is paused) and nothing
    /// in it blocks a checkpoint. `action` completes "cannot ..." errors.
    pub(crate) async fn live_and_saveable(
        &self,
        dir: &VmDir,
        name: &str,
        action: &str,
    ) -> Result<VmRecord> {
        let state = self.state_locked(dir, name).await?;
        if !matches!(
            state,
            VmState::Running | VmState::Starting | VmState::Paused
        ) {
            return Err(VmError::WrongState {
                name: name.to_string(),
                state: state.word(),
                action: action.into(),
            });
        }
        let rec = VmRecord::load(&dir.record())?;
        if let Some(reason) = rec.checkpoint_blocker() {
            return Err(VmError::NotCheckpointable {
                name: name.to_string(),
                reason,
            });
        }
        Ok(rec)
    }

    pub(crate) async fn state_locked(&self, dir: &VmDir, name: &str) -> Result<VmState> {
        let mut rec = VmRecord::load(&dir.record())?;
        let report = if rec.image.agent {
            read_report(&dir.agent_out())?
        } else {
            Default::default()
        };
        if self.qemu_pid(dir).is_some() {
            let qmp = match Qmp::connect(dir.qmp(), Duration::from_secs(10)).await {
                Ok(q) => q,
                // It exited between the two checks, or hangs: decide below
                // from liveness again.
                Err(_) if self.qemu_pid(dir).is_none() => {
                    return Ok(self.dead_state(dir, &rec, &report));
                }
                Err(e) => return Err(VmError::qmp(name, e)),
            };
            let status = match qmp.query_status().await {
                Ok(s) => s,
                // A guest that powers off closes QMP while QEMU exits: that
                // is an end, not a failure, once the process is gone.
                Err(_) if self.wait_gone(dir, Duration::from_secs(5)).await => {
                    self.kill_passt(dir);
                    return Ok(self.dead_state(dir, &rec, &report));
                }
                Err(e) => return Err(VmError::qmp(name, e)),
            };
            return Ok(match status.status {
                RunState::Running => {
                    if let Some(s) = report.exit {
                        VmState::Exited {
                            code: s.code,
                            signal: s.signal,
                        }
                    } else if rec.image.agent && !report.started {
                        VmState::Starting
                    } else {
                        VmState::Running
                    }
                }
                RunState::InMigrate => VmState::Incoming,
                RunState::Shutdown => {
                    // The guest powered off and QEMU was told to stay
                    // (`-no-shutdown`): that is the end of the job.
                    rec.intent = Intent::GuestOff;
                    rec.save(&dir.record())?;
                    let _ = qmp.quit().await;
                    self.wait_gone(dir, Duration::from_secs(30)).await;
                    self.kill_passt(dir);
                    match report.exit {
                        Some(s) => VmState::Exited {
                            code: s.code,
                            signal: s.signal,
                        },
                        None => VmState::PoweredOff,
                    }
                }
                RunState::GuestPanicked | RunState::InternalError | RunState::IoError => {
                    VmState::Crashed {
                        console_tail: format!(
                            "QEMU reports `{}`\n{}",
                            status.status.name(),
                            self.crash_detail(dir)
                        ),
                    }
                }
                _ => VmState::Paused,
            });
        }
        self.kill_passt(dir);
        Ok(self.dead_state(dir, &rec, &report))
    }

    fn dead_state(
        &self,
        dir: &VmDir,
        rec: &VmRecord,
        report: &crate::output::AgentReport,
    ) -> VmState {
        if let Some(s) = report.exit {
            return VmState::Exited {
                code: s.code,
                signal: s.signal,
            };
        }
        match rec.intent {
            Intent::Stop | Intent::Kill => VmState::Stopped,
            Intent::Saved => VmState::Saved,
            Intent::GuestOff => VmState::PoweredOff,
            Intent::Run | Intent::Pause => match report.errors.first() {
                Some(message) => VmState::Failed {
                    message: message.clone(),
                },
                None => VmState::Crashed {
                    console_tail: self.crash_detail(dir),
                },
            },
        }
    }

    fn info(&self, dir: &VmDir, rec: &VmRecord, state: VmState, pid: Option<i32>) -> VmInfo {
        VmInfo {
            name: rec.name.clone(),
            id: rec.id.clone(),
            state,
            image: rec.image.name.clone(),
            cpus: rec.cpus,
            memory_mb: rec.memory_mb,
            accel: rec.accel,
            accel_reason: rec.accel_reason.clone(),
            pid,
            created_unix: rec.created_unix,
            dir: dir.root().to_path_buf(),
            last_checkpoint: rec.last_checkpoint.clone(),
            checkpoint_blocker: rec.checkpoint_blocker(),
            publish: rec.publish.clone(),
        }
    }

    pub(crate) async fn wait_gone(&self, dir: &VmDir, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.qemu_pid(dir).is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.qemu_pid(dir).is_none()
    }

    /// Pauses the VM's vCPUs.
    pub async fn pause(&self, name: &str) -> Result<VmInfo> {
        self.set_running(name, false).await
    }

    /// Resumes a paused VM.
    pub async fn resume(&self, name: &str) -> Result<VmInfo> {
        self.set_running(name, true).await
    }

    async fn set_running(&self, name: &str, run: bool) -> Result<VmInfo> {
        let dir = self.existing(name)?;
        {
            let _lock = VmLock::acquire(&dir, name).await?;
            let state = self.state_locked(&dir, name).await?;
            let ok = matches!(
                state,
                VmState::Running | VmState::Starting | VmState::Paused
            );
            if !ok {
                return Err(VmError::WrongState {
                    name: name.to_string(),
                    state: state.word(),
                    action: if run { "resume it" } else { "pause it" }.into(),
                });
            }
            let qmp = self.connect(&dir, name).await?;
            if run {
                qmp.cont().await.map_err(|e| VmError::qmp(name, e))?;
            } else {
                qmp.stop().await.map_err(|e| VmError::qmp(name, e))?;
            }
            let mut rec = VmRecord::load(&dir.record())?;
            rec.intent = if run { Intent::Run } else { Intent::Pause };
            rec.save(&dir.record())?;
        }
        self.inspect(name).await
    }

    /// Stops the VM gracefully: the agent stops the command (SIGTERM, then
    /// SIGKILL after `grace`) and powers off; without the agent, the ACPI
    /// power button. After `grace` plus a margin QEMU is ended by force.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<VmInfo> {
        let dir = self.existing(name)?;
        {
            let _lock = VmLock::acquire(&dir, name).await?;
            let mut rec = VmRecord::load(&dir.record())?;
            if self.qemu_pid(&dir).is_some() {
                rec.intent = Intent::Stop;
                rec.save(&dir.record())?;
                let qmp = self.connect(&dir, name).await?;
                let status = qmp
                    .query_status()
                    .await
                    .map_err(|e| VmError::qmp(name, e))?;
                if matches!(status.status, RunState::Paused) {
                    // A paused guest cannot act on the request.
                    let _ = qmp.cont().await;
                }
                let asked = if rec.image.agent {
                    self.send_control(
                        &dir,
                        &HostMessage::Stop {
                            grace_secs: grace.as_secs().min(u32::MAX as u64) as u32,
                        },
                    )
                    .await
                    .is_ok()
                } else {
                    qmp.system_powerdown().await.is_ok()
                };
                // Leave QMP free while waiting; QEMU exits on power-off.
                drop(qmp);
                let margin = Duration::from_secs(if asked { 30 } else { 0 });
                if !self.wait_gone(&dir, grace + margin).await {
                    if let Ok(qmp) = self.connect(&dir, name).await {
                        let _ = qmp.quit().await;
                    }
                    if !self.wait_gone(&dir, Duration::from_secs(10)).await
                        && let Some(pid) = self.qemu_pid(&dir)
                    {
                        process::signal(pid, Sig::KILL);
                        self.wait_gone(&dir, Duration::from_secs(10)).await;
                    }
                }
            }
            self.kill_passt(&dir);
        }
        self.inspect(name).await
    }

    /// Ends QEMU at once (SIGKILL).
    pub async fn kill(&self, name: &str) -> Result<VmInfo> {
        let dir = self.existing(name)?;
        {
            // A kill must work even while another vgrid is stuck on the VM,
            // so it does not wait for the lock.
            let mut rec = VmRecord::load(&dir.record())?;
            if let Some(pid) = self.qemu_pid(&dir) {
                rec.intent = Intent::Kill;
                rec.save(&dir.record())?;
                process::signal(pid, Sig::KILL);
                self.wait_gone(&dir, Duration::from_secs(30)).await;
            }
            self.kill_passt(&dir);
        }
        self.inspect(name).await
    }

    /// Deletes a VM that is not running, with its directory.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let dir = self.existing(name)?;
        let _lock = VmLock::acquire(&dir, name).await?;
        if self.qemu_pid(&dir).is_some() {
            return Err(VmError::WrongState {
                name: name.to_string(),
                state: "running".into(),
                action: "remove it (stop or kill it first)".into(),
            });
        }
        self.kill_passt(&dir);
        fs::remove_dir_all(dir.root()).map_err(|e| FileError::new("remove", dir.root(), e).into())
    }

    /// Waits until the VM has ended (the command exited and QEMU is gone, or
    /// QEMU died) and returns its final state. A guest that does not power
    /// off within a minute of its command's exit is ended by force.
    pub async fn wait(&self, name: &str) -> Result<VmInfo> {
        let mut exited_at: Option<Instant> = None;
        loop {
            let info = self.inspect(name).await?;
            if !info.state.is_live() {
                let dir = self.existing(name)?;
                if self.qemu_pid(&dir).is_none() {
                    return Ok(info);
                }
                let since = *exited_at.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    if let Some(pid) = self.qemu_pid(&dir) {
                        process::signal(pid, Sig::KILL);
                    }
                    self.wait_gone(&dir, Duration::from_secs(10)).await;
                    self.kill_passt(&dir);
                    return self.inspect(name).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A reader of the command's output frames.
    pub fn output(&self, name: &str) -> Result<OutputReader> {
        let dir = self.existing(name)?;
        Ok(OutputReader::new(dir.agent_out()))
    }

    /// The serial console log's path.
    pub fn console_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.existing(name)?.console())
    }

    /// The staging directory (outputs land there after the command).
    pub fn stage_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.existing(name)?.stage())
    }

    /// Sends one message to the agent's control port.
    pub(crate) async fn send_control(
        &self,
        dir: &VmDir,
        msg: &HostMessage,
    ) -> Result<(), ControlPortError> {
        let path = dir.ctl();
        let mut sock = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::UnixStream::connect(&path),
        )
        .await
        .map_err(|_| ControlPortError::Connect {
            path: path.clone(),
            after: Duration::from_secs(10),
        })?
        .map_err(|e| FileError::new("connect", &path, e))?;
        sock.write_all(&msg.encode())
            .await
            .map_err(|e| FileError::new("write", &path, e))?;
        sock.flush()
            .await
            .map_err(|e| FileError::new("write", &path, e))?;
        // Give QEMU a moment to move the bytes to the guest before the
        // connection closes (it reads the socket asynchronously).
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }

    /// True when the VM's image boots with the stock kernel.
    pub fn is_stock(rec: &VmRecord) -> bool {
        rec.image.kind == ImageKind::Stock
    }
}

/// Data repositories to share with the guest: each host directory
/// resolved inside `roots`, tagged `data0`, `data1`, ...
pub(crate) fn resolve_mounts(
    mounts: &[MountSpec],
    roots: &[PathBuf],
) -> Result<Vec<MountRecord>, FsError> {
    let mut out = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let (_dir, host) = fsutil::open_dir_inside(&format!("mounts[{i}].host"), &m.host, roots)?;
        out.push(MountRecord {
            tag: format!("data{i}"),
            host_path: host,
            guest_path: m.guest.clone(),
            readonly: m.readonly,
        });
    }
    Ok(out)
}

/// Host files for staging, resolved inside `roots` and opened there
/// (regular files only, no link followed after the check), with the file
/// name they get in the share. `field` names the list in the request
/// (`staging.inputs`): an input is named `field[i]` in errors.
pub(crate) fn open_inputs<E>(
    field: &str,
    inputs: &[PathBuf],
    roots: &[PathBuf],
) -> Result<Vec<StagedInput>, E>
where
    E: From<FsError> + From<SpecError>,
{
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let (file, host) = fsutil::open_file_inside(&field, input, roots)?;
        let Some(name) = host.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Err(
                SpecError::new(field, input.display().to_string(), "has no file name").into(),
            );
        };
        if out.iter().any(|i: &StagedInput| i.name == name) {
            return Err(SpecError::new(
                field,
                input.display().to_string(),
                format!("another input has the file name `{name}` too"),
            )
            .into());
        }
        out.push(StagedInput { file, host, name });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_specs_parse() {
        let m = MountSpec::parse("data/genome:/data:ro").unwrap();
        assert_eq!(m.host, PathBuf::from("data/genome"));
        assert_eq!(m.guest, "/data");
        assert!(m.readonly);
        assert!(!MountSpec::parse("/srv:/mnt").unwrap().readonly);
        for bad in ["/srv", ":/mnt", "/srv:", "/a:/b:rx", "/a:/b:ro:x"] {
            let err = MountSpec::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("mounts `"), "{err}");
        }
    }

    #[test]
    fn state_words() {
        assert_eq!(
            VmState::Exited {
                code: Some(3),
                signal: None
            }
            .word(),
            "exited(3)"
        );
        assert!(VmState::Busy.is_live());
        assert!(!VmState::Saved.is_live());
        let json = serde_json::to_value(VmState::Exited {
            code: Some(0),
            signal: None,
        })
        .unwrap();
        assert_eq!(json["state"], "exited");
    }
}
