//! The one error type of the QMP client.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("cannot connect to the QMP socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP socket input/output failed")]
    Io(#[from] std::io::Error),
    /// QEMU sent something that is not QMP as this client understands it.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU refused a command.
    #[error("QEMU refused `{command}`: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// No answer (or event) came in time.
    #[error("no answer from QEMU to {what} within {after:?}")]
    Timeout { what: String, after: Duration },
    /// QEMU closed the connection (it exited, or another client took over).
    #[error("QEMU closed the QMP connection")]
    Disconnected,
    /// An answer did not have the shape the command promises.
    #[error("unexpected answer to `{command}`: {reason}")]
    UnexpectedReply { command: String, reason: String },
}

impl QmpError {
    /// Whether QEMU refused the command (as opposed to a transport problem).
    pub fn is_command_error(&self) -> bool {
        matches!(self, QmpError::Command { .. })
    }
}
