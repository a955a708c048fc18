//! The TOML job file of vgrid.
//!
//! [`parse`] turns the text of a job file into a validated [`JobSpec`], or
//! refuses it with a [`Diagnostic`] that names the file, the line, the column,
//! the field and why. Nothing is created for a refused file: callers only act
//! on a `JobSpec`.
//!
//! ```toml
//! name = "hello"
//! image = "tiny"
//! cpus = 1
//! memory_mb = 256
//! command = ["/bin/echo", "hello"]
//! class = "best-effort"
//! checkpoint_interval_s = 60
//! ```
//!
//! See `docs/jobs.md` for every field.

mod error;
mod lifecycle;
mod raw;
mod spec;
mod time;

use std::path::Path;

pub use error::{Diagnostic, JobFileError};
pub use lifecycle::JobState;
pub use raw::{MAX_CPUS, MAX_MEMORY_MB, MAX_VMS, MIN_MEMORY_MB, PRIORITY_LIMIT};
pub use spec::{JobClass, JobSpec, Mount, Transfer, VmMode};

/// Reads and validates the job file at `path`.
pub fn read(path: &Path) -> Result<JobSpec, JobFileError> {
    let source = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&path.display().to_string(), &source)
}

/// Validates the text of a job file. `file` names it in error messages.
pub fn parse(file: &str, source: &str) -> Result<JobSpec, JobFileError> {
    raw::parse(file, source)
}
