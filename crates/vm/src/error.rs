//! The error type of the VM runtime.

use std::path::PathBuf;
use std::time::Duration;

use vgrid_qmp::QmpError;

/// Everything that can go wrong running VMs. Messages name the VM, file or
/// field concerned and say why.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A host program is missing.
    #[error("{tool} was not found; install it with `{install}`")]
    ToolMissing {
        tool: &'static str,
        install: &'static str,
    },
    /// A host program ran and failed.
    #[error("{tool} failed: {detail}")]
    Tool { tool: String, detail: String },
    /// A field of a VM request is invalid.
    #[error("{field} `{value}`: {reason}")]
    BadSpec {
        field: String,
        value: String,
        reason: String,
    },
    /// A host path given for a mount or staging leaves the directory it
    /// must stay in.
    #[error("{field} `{path}`: {reason}")]
    PathEscape {
        field: String,
        path: PathBuf,
        reason: String,
    },
    /// A file below a directory that a guest (or another job) can write is
    /// not what the host may touch: a symbolic link on the way, or not a
    /// regular file. The host never follows a link there.
    #[error("{path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("a VM named `{0}` already exists")]
    Exists(String),
    #[error("no VM named `{0}`")]
    NotFound(String),
    /// The VM is not in a state that allows the operation.
    #[error("VM `{name}` is {state}; cannot {action}")]
    WrongState {
        name: String,
        state: String,
        action: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Talking to a VM's QEMU failed.
    #[error("VM `{name}`: {source}")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    /// QEMU exited while starting; its own message and the console's last
    /// lines follow.
    #[error("QEMU for VM `{name}` failed to start: {detail}")]
    StartFailed { name: String, detail: String },
    /// QEMU died under a running VM.
    #[error("VM `{name}` crashed; last console lines:\n{console_tail}")]
    Crashed { name: String, console_tail: String },
    /// The guest agent reported that it could not set up the job.
    #[error("VM `{name}`: the guest agent failed: {message}")]
    Agent { name: String, message: String },
    /// The VM cannot be checkpointed (or migrated) in its current setup.
    #[error("VM `{name}` cannot be checkpointed: {reason}")]
    NotCheckpointable { name: String, reason: String },
    /// A checkpoint is damaged, incomplete or does not fit this host.
    #[error("checkpoint {path}: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    /// A saved VM record (`vm.json`) cannot be read.
    #[error("VM record {path}: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    /// The image a VM needs is missing or unusable.
    #[error("image `{name}`: {reason}")]
    Image { name: String, reason: String },
    /// The unprivileged user for QEMU and passt cannot be used.
    #[error("VM user `{user}`: {reason}")]
    VmUser { user: String, reason: String },
    /// A migration (checkpoint, restore or live) failed inside QEMU.
    #[error("VM `{name}`: migration failed: {reason}")]
    Migration { name: String, reason: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

impl VmError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VmError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn qmp(name: &str, source: QmpError) -> Self {
        VmError::Qmp {
            name: name.to_string(),
            source,
        }
    }

    pub(crate) fn bad_spec(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        VmError::BadSpec {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error is a full disk (or quota), so callers can say so.
    pub fn is_disk_full(&self) -> bool {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = src {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(io.raw_os_error(), Some(code) if code == libc_enospc() || code == libc_edquot())
            {
                return true;
            }
            src = e.source();
        }
        false
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

fn libc_edquot() -> i32 {
    rustix::io::Errno::DQUOT.raw_os_error()
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;
