//! The errors of the VM runtime: one enum per operation, built from a few
//! typed parts.
//!
//! | operation | error |
//! |---|---|
//! | [`Runtime::open`](crate::Runtime::open), [`RuntimeConfig::from_env`](crate::RuntimeConfig::from_env) | [`OpenError`] |
//! | [`Runtime::start`](crate::Runtime::start), [`Runtime::start_kept`](crate::Runtime::start_kept) | [`StartError`] |
//! | [`Runtime::exec`](crate::Runtime::exec) (a run in a kept VM) | [`ExecError`] |
//! | [`Runtime::checkpoint`](crate::Runtime::checkpoint), [`Runtime::checkpoint_group`](crate::Runtime::checkpoint_group) | [`CheckpointError`] |
//! | [`Runtime::restore`](crate::Runtime::restore) | [`RestoreError`] |
//! | [`Runtime::migrate`](crate::Runtime::migrate) | [`MigrateError`] |
//! | inspect, list, pause, resume, stop, kill, wait, remove, output | [`VmError`] |
//!
//! The parts: [`FileError`] (an IO error with the path), [`FsError`] (a
//! host path that escapes its root, or a file a guest can write that is
//! not what the host may touch), [`ToolError`] (`qemu-img`, QEMU, passt),
//! [`SpecError`] (a field of the request, named as in the request:
//! `cpus`, `mounts[0].host`, never a command-line flag), QMP errors,
//! [`RecordError`] (`vm.json`), [`CheckpointFileError`] (a checkpoint's
//! files) and [`MigrationError`] (QEMU's migration stream).
//!
//! Messages are sentences about what failed; a cause is a `source`, never
//! repeated in the message, so a reader prints the chain (`{:#}` of
//! anyhow, or [`report`]).

use std::path::PathBuf;
use std::time::Duration;

use vgrid_guest_proto::ContextError;
use vgrid_qmp::QmpError;

/// The error and its sources as one sentence (`vgrid_model::sentence`).
pub use vgrid_model::sentence as report;

/// Whether `err` or one of its sources is a full disk (or quota).
pub fn is_disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() || code == rustix::io::Errno::DQUOT.raw_os_error())
        {
            return true;
        }
        src = e.source();
    }
    false
}

/// A file operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct FileError {
    /// What was done: `read`, `create directory`, `rename into`, ...
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FileError {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A host path, or a file below a directory a guest can write, that the
/// host refuses to use.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// Not what the host may touch below a directory a guest (or another
    /// job) can write: a symbolic link on the way, or not a regular file.
    /// The host never follows a link there.
    #[error("{}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    /// A host path of the request leaves the directories it must stay in.
    #[error("{field} `{}` cannot be used", path.display())]
    Escape {
        /// The field of the request (`mounts[0].host`, `inputs[1].from`).
        field: String,
        path: PathBuf,
        #[source]
        why: Escape,
    },
}

/// Why a host path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Escape {
    /// The path is empty.
    #[error("the path is empty")]
    Empty,
    /// The path has a `..` component.
    #[error("`..` is not allowed")]
    ParentDir,
    /// No directory is allowed for host paths on this node.
    #[error("no directory is allowed for host paths")]
    NoRoots,
    /// The path does not resolve (missing, or unreadable on the way).
    #[error("cannot resolve it")]
    Unresolvable(#[source] std::io::Error),
    /// The resolved path lies outside every allowed directory.
    #[error("it resolves to {}, outside the allowed directories ({roots})", real.display())]
    Outside { real: PathBuf, roots: String },
    /// A directory on the way changed between the check and the open.
    #[error("its directory changed while it was checked")]
    Changed,
    /// Opening it without following a link failed.
    #[error("it cannot be opened without following a link")]
    Unsafe(#[source] Box<FsError>),
}

/// A host program is missing or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It is not installed (not in `PATH`).
    #[error("{tool} was not found; install it with `{install}`")]
    Missing {
        tool: &'static str,
        install: &'static str,
    },
    /// It could not be started.
    #[error("cannot run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed; its standard error follows.
    #[error("{} failed ({status}): {stderr}", program.display())]
    Failed {
        program: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// `qemu-img info` answered something that is not its JSON.
    #[error("`qemu-img info` gave an unreadable answer for {}", path.display())]
    Answer {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `qemu-img info` named no virtual size.
    #[error("`qemu-img info` gave no virtual size for {}", path.display())]
    NoVirtualSize { path: PathBuf },
    /// The QEMU binary cannot be looked at.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A field of a VM request is invalid. `field` is the request's own name
/// for it (`cpus`, `mounts[0].host`, `staging.inputs[1]`); a front end
/// that took it from a flag may say which.
#[derive(Debug, thiserror::Error)]
#[error("{field} `{value}`: {reason}")]
pub struct SpecError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        SpecError {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A VM name that cannot name a directory and a host.
#[derive(Debug, thiserror::Error)]
#[error(
    "VM name `{0}`: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
)]
pub struct BadVmName(pub String);

/// The data directory is so deep that a VM's sockets could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "the socket path {} is longer than {max} bytes; use a shorter data directory (VGRID_DATA_DIR)",
    path.display()
)]
pub struct SocketPathError {
    pub path: PathBuf,
    pub max: usize,
}

/// The image a VM needs is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum BootImageError {
    /// The fixed set of images has none of that name.
    #[error("no image named `{name}`")]
    NotFound { name: String },
    /// The image store cannot give the image.
    #[error("image `{name}` cannot be read from the image store")]
    Store {
        name: String,
        #[source]
        source: vgrid_image::ImageError,
    },
    /// The image is listed but some of its files are gone.
    #[error("image `{name}`: some of its files are missing; rebuild or re-import it")]
    FilesMissing { name: String },
    /// The image manifest does not identify its disk.
    #[error("image `{name}`: its manifest has no checksum for the disk `{disk}`")]
    NoChecksum { name: String, disk: String },
    /// The image store itself cannot be opened.
    #[error("the image store cannot be opened")]
    OpenStore(#[source] vgrid_image::ImageError),
}

/// The unprivileged user for QEMU and passt cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VmUserError {
    /// `useradd` could not be run.
    #[error(
        "VM user `{user}` does not exist and `useradd` could not be run; create it with `useradd --system --user-group {user}`"
    )]
    Useradd {
        user: String,
        #[source]
        source: std::io::Error,
    },
    /// `useradd` ran and failed.
    #[error("VM user `{user}` does not exist and `useradd` failed: {stderr}")]
    UseraddFailed { user: String, stderr: String },
    /// `useradd` reported success, but the user is still unknown.
    #[error("VM user `{user}`: `useradd` succeeded but the user is not in /etc/passwd")]
    Missing { user: String },
    /// `/etc/passwd` cannot be read.
    #[error(transparent)]
    Passwd(#[from] FileError),
}

/// A saved VM record (`vm.json`) cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is not JSON of the expected form.
    #[error("VM record {} cannot be parsed", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer vgrid: only that one (or a later one) reads it.
    #[error(
        "VM record {} has format {found}, newer than this vgrid reads ({supported}): manage the VM with the newer vgrid that wrote it",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Written by a vgrid older than any this one reads.
    #[error(
        "VM record {} has format {found}, older than this vgrid reads ({supported}): stop the VM with the vgrid that started it, or remove it with `vgrid vm rm`",
        path.display()
    )]
    Older {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The record names fewer than two disk layers.
    #[error("VM record {}: the disk chain needs a base and a writable layer", path.display())]
    NoDisks { path: PathBuf },
    /// The value cannot be written as JSON.
    #[error("VM record {} cannot be encoded", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A checkpoint's files are missing, damaged, incomplete, of another
/// format, or do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// A file is missing, truncated, altered or inconsistent.
    #[error("checkpoint {}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// The file is not JSON of the expected form.
    #[error("checkpoint {} cannot be parsed", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Taken by a newer vgrid.
    #[error(
        "checkpoint {} has format {found}, newer than this vgrid reads ({supported}): restore it with the newer vgrid that took it",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Taken by a vgrid older than any this one reads.
    #[error(
        "checkpoint {} has format {found}, older than this vgrid reads ({supported}): restore it with the vgrid that took it",
        path.display()
    )]
    Older {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A file the manifest lists cannot be looked at.
    #[error("checkpoint {}: listed in the manifest but unreadable", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A migration stream (checkpoint, restore or live migration) failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// QEMU cannot migrate a VM with a mounted virtio-9p share.
    #[error(
        "VM `{name}` cannot be saved: a virtio-9p share is mounted in the guest and QEMU cannot migrate it ({reason})"
    )]
    NinePShare { name: String, reason: String },
    /// QEMU's own reason.
    #[error("the migration of VM `{name}` failed in QEMU: {reason}")]
    Failed { name: String, reason: String },
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// The migration ran past its time limit (it is cancelled).
    #[error("the migration stream of VM `{name}` did not end within {after:?}")]
    Timeout { name: String, after: Duration },
    /// QEMU did not say where it listens for the migration stream.
    #[error("QEMU of VM `{name}` did not report its incoming migration port: {answer}")]
    NoPort { name: String, answer: String },
    /// The new QEMU is not running after the migration.
    #[error("VM `{name}` is `{state}` after the migration")]
    Destination { name: String, state: String },
}

/// Creating or sizing a disk layer failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A host program is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
}

/// passt or QEMU did not come up.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A host program is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// A share QEMU gets (a data repository, the staging share) cannot be
    /// opened safely.
    #[error(transparent)]
    Share(#[from] FsError),
    /// The record names a share QEMU cannot be given.
    #[error("VM record of `{name}`: {reason}")]
    BadShare { name: String, reason: String },
    /// QEMU exited while starting; its last log lines follow.
    #[error("QEMU for VM `{name}` failed to start: QEMU exited ({status}): {log_tail}")]
    QemuExited {
        name: String,
        status: std::process::ExitStatus,
        log_tail: String,
    },
    /// passt exited while starting; its last log lines follow.
    #[error("passt exited ({status}) while starting: {log_tail}")]
    PasstExited {
        status: std::process::ExitStatus,
        log_tail: String,
    },
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// passt did not set up its network, or QEMU did not open its QMP socket, in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

/// A message could not be sent to the guest agent's control port.
#[derive(Debug, thiserror::Error)]
pub enum ControlPortError {
    /// The control socket did not accept a connection in time.
    #[error("timed out after {after:?} connecting to {}", path.display())]
    Connect { path: PathBuf, after: Duration },
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
}

/// The VM is held by another vgrid, or its lock cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// Another vgrid holds the VM for too long.
    #[error("timed out after {after:?} waiting for another vgrid to finish with VM `{name}`")]
    Busy { name: String, after: Duration },
}

/// The command of a new VM (or a run of a kept one) did not start.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The guest agent reported that it could not set up the job.
    #[error("VM `{name}`: the guest agent failed: {message}")]
    Agent { name: String, message: String },
    /// QEMU died before the command started.
    #[error("VM `{name}` crashed; last console lines:\n{console_tail}")]
    Crashed { name: String, console_tail: String },
    /// The command did not start within the start timeout (TCG boots slowly).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// The guest agent's output cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Opening the runtime (or reading its configuration) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A host program is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The unprivileged VM user cannot be used.
    #[error(transparent)]
    VmUser(#[from] VmUserError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// `VGRID_ACCEL` names no accelerator.
    #[error("VGRID_ACCEL `{0}`: expected `kvm` or `tcg`")]
    Accel(String),
}

/// Looking at or acting on an existing VM (inspect, list, pause, resume,
/// stop, kill, wait, remove, output) failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// There is no VM of that name on this node.
    #[error("no VM named `{0}`")]
    NotFound(String),
    /// The VM is not in a state that allows the operation.
    #[error("VM `{name}` is {state}; cannot {action}")]
    WrongState {
        name: String,
        state: String,
        action: String,
    },
    /// The VM cannot be checkpointed (or migrated) in its current setup.
    #[error("VM `{name}` cannot be checkpointed: {reason}")]
    NotCheckpointable { name: String, reason: String },
    /// The VM's lock cannot be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The VM's record (`vm.json`) cannot be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// A message cannot be sent to the guest agent.
    #[error(transparent)]
    ControlPort(#[from] ControlPortError),
}

/// Starting a VM (for one command, or kept running for runs) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The VM name cannot name a directory and a host.
    #[error(transparent)]
    Name(#[from] BadVmName),
    /// A field of the request is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The data directory is too deep for the VM's sockets.
    #[error(transparent)]
    SocketPath(#[from] SocketPathError),
    /// The image is missing or unusable.
    #[error(transparent)]
    Image(#[from] BootImageError),
    /// A data repository, a staged input or the staging share.
    #[error(transparent)]
    HostPath(#[from] FsError),
    /// The job context the request makes is refused.
    #[error("the task of VM `{name}` is invalid")]
    Task {
        name: String,
        #[source]
        source: ContextError,
    },
    /// A VM of that name exists already.
    #[error("a VM named `{0}` already exists")]
    Exists(String),
    /// A host program is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A disk layer cannot be created or sized.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// The VM's record (`vm.json`) cannot be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// passt or QEMU did not come up.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The command did not start.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Reading the started VM's state failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// A run in a kept VM did not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The VM is missing, busy, not kept running or not running.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A field of the request is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A staged input, or the staging share.
    #[error(transparent)]
    HostPath(#[from] FsError),
    /// The guest agent would refuse the task.
    #[error("the task of run {run} is invalid")]
    Task {
        run: u64,
        #[source]
        source: ContextError,
    },
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// A message cannot be sent to the guest agent.
    #[error(transparent)]
    ControlPort(#[from] ControlPortError),
    /// The command did not start.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A checkpoint was not taken (the previous one, if any, is untouched).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The VM is missing, busy, not running or cannot be saved.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A field of the request is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// A disk layer cannot be created or sized.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// QEMU's migration stream failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The memory stream or a file of the new checkpoint.
    #[error(transparent)]
    Data(#[from] CheckpointFileError),
    /// The VM's record (`vm.json`) cannot be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The thread reading the memory stream failed.
    #[error("the memory stream reader of VM `{name}` failed")]
    Reader {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The VM's state was not saved (an earlier step failed).
    #[error("nothing of VM `{name}` was saved")]
    NothingSaved { name: String },
    /// The value cannot be written as JSON.
    #[error("checkpoint manifest {} cannot be encoded", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A checkpoint was not restored (nothing of the new VM is left).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The VM name cannot name a directory and a host.
    #[error(transparent)]
    Name(#[from] BadVmName),
    /// The data directory is too deep for the VM's sockets.
    #[error(transparent)]
    SocketPath(#[from] SocketPathError),
    /// A VM of that name exists already.
    #[error("a VM named `{0}` already exists")]
    Exists(String),
    /// The checkpoint's files.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointFileError),
    /// The checkpoint is whole but cannot run here.
    #[error("checkpoint {}: {reason}", path.display())]
    Incompatible { path: PathBuf, reason: String },
    /// The job context saved in the checkpoint is refused.
    #[error("checkpoint {}: its job context is invalid", path.display())]
    Context {
        path: PathBuf,
        #[source]
        source: ContextError,
    },
    /// The image is missing or unusable.
    #[error(transparent)]
    Image(#[from] BootImageError),
    /// A host program is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A disk layer cannot be created or sized.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// The VM's record (`vm.json`) cannot be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// passt or QEMU did not come up.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// QEMU's migration stream failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// The thread writing the memory stream failed.
    #[error("the memory stream writer for VM `{name}` failed")]
    Writer {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Reading the restored VM's state failed.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// A live migration did not happen (the VM runs on in its old QEMU).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The VM name cannot name a directory and a host.
    #[error(transparent)]
    Name(#[from] BadVmName),
    /// The data directory is too deep for the VM's sockets.
    #[error(transparent)]
    SocketPath(#[from] SocketPathError),
    /// A VM of that name exists already.
    #[error("a VM named `{0}` already exists")]
    Exists(String),
    /// The VM is missing, busy, not running or cannot be saved.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Published ports cannot move to a second QEMU on the same host.
    #[error(
        "VM `{name}` publishes host ports, which its network process holds until the VM ends; a migration on the same host could not take them over (checkpoint it, stopping it, and restore it instead)"
    )]
    PublishesPorts { name: String },
    /// A file operation failed (the path is in the error).
    #[error(transparent)]
    File(#[from] FileError),
    /// The VM's record (`vm.json`) cannot be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// passt or QEMU did not come up.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// QEMU's migration stream failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// QEMU did not answer, or refused a command.
    #[error("talking to QEMU of VM `{name}` failed")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
}

macro_rules! disk_full {
    ($($t:ty),*) => {$(
        impl $t {
            /// Whether the error comes from a full disk (or quota), so
            /// callers can say so.
            pub fn is_disk_full(&self) -> bool {
                is_disk_full(self)
            }
        }
    )*};
}
disk_full!(
    FileError,
    CheckpointFileError,
    CheckpointError,
    RestoreError,
    StartError,
    MigrateError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_every_cause_once() {
        let io = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let err = CheckpointError::from(CheckpointFileError::from(FileError::new(
            "write",
            "/ck/memory.pack",
            io,
        )));
        let text = report(&err);
        assert!(text.starts_with("cannot write /ck/memory.pack: "), "{text}");
        assert_eq!(text.matches("/ck/memory.pack").count(), 1, "{text}");
        assert!(err.is_disk_full());
        let spec = StartError::from(SpecError::new("cpus", "0", "use 1 to 255"));
        assert_eq!(report(&spec), "cpus `0`: use 1 to 255");
        assert!(!spec.is_disk_full());
    }
}

/// A `Result` whose error is by default [`VmError`] (the operations on an
/// existing VM).
pub type Result<T, E = VmError> = std::result::Result<T, E>;

macro_rules! qmp_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            pub(crate) fn qmp(name: &str, source: QmpError) -> Self {
                $t::Qmp {
                    name: name.to_string(),
                    source,
                }
            }
        }
    )*};
}
qmp_ctor!(
    VmError,
    CheckpointError,
    RestoreError,
    MigrateError,
    MigrationError
);
