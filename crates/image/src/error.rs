//! Errors of the image store.

use std::path::PathBuf;

use crate::modules::ModuleError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "bad image name {name:?}: {why} (a name is 1 to 64 characters from [a-z0-9._-], starting with a letter or digit)"
    )]
    BadName { name: String, why: &'static str },
    #[error("no image named `{0}` (see `vgrid image ls`)")]
    NotFound(String),
    #[error("an image named `{0}` already exists (remove it first with `vgrid image rm {0}`)")]
    Exists(String),
    #[error("image `{name}` is used by VM `{vm}` ({vm_json}); remove that VM first")]
    InUse {
        name: String,
        vm: String,
        vm_json: PathBuf,
    },
    #[error(
        "`{tool}` was not found: it is needed to {purpose}; install it with `apt-get install {package}`"
    )]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
        purpose: &'static str,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The I/O error is part of the message (not a `source`), so that
    /// `to_string()` alone names both the file and the reason.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {why}")]
    BadFile { path: PathBuf, why: String },
    #[error("the content-addressed store: {0}")]
    Store(String),
    #[error("Debian package `{package}`: {why}")]
    Package { package: String, why: String },
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(
        "the static guest agent is not available: {0}. Set VGRID_GUEST_AGENT to a static vgrid-guest-agent binary, or rebuild vgrid (its build script builds the agent; it needs the static C library from libc6-dev)"
    )]
    NoAgent(String),
    #[error("{file}: unsupported disk format `{format}` (vgrid imports qcow2 and raw disks)")]
    UnsupportedFormat { file: PathBuf, format: String },
    #[error(
        "{file}: the qcow2 disk has a backing file ({backing}); flatten it first with `qemu-img convert -O qcow2 {file} NEW.qcow2`"
    )]
    HasBackingFile { file: PathBuf, backing: String },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |cause| ImageError::Io { path, cause }
    }
}
