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
//! See `docs/jobs.md` for every field. The result is `vgrid-model`'s
//! [`JobSpec`]; this crate only reads TOML into it. Where host paths may be
//! (each user's own directory of the node's allowed roots) is checked
//! apart, with `JobSpec::check_host_paths`, since it depends on who
//! submits.

mod error;
mod raw;
mod suggest;
mod time;

use std::path::Path;

pub use error::{Diagnostic, JobFileError};
use vgrid_model::JobSpec;

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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn examples() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    fn toml_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("examples directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_example_job_file_is_valid() {
        let files = toml_files(&examples());
        assert!(files.len() >= 4, "examples missing: {files:?}");
        for f in files {
            if let Err(e) = super::read(&f) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn every_bad_example_is_refused_where_its_comment_says() {
        let expected = [
            ("bad-expression.toml", 4, "requirements"),
            ("escape.toml", 7, "outputs[0].to"),
            ("impossible.toml", 6, "end"),
            ("unknown-field.toml", 4, "memory"),
            ("wrong-type.toml", 4, "cpus"),
        ];
        let files = toml_files(&examples().join("bad"));
        assert_eq!(files.len(), expected.len());
        for (file, (name, line, field)) in files.iter().zip(expected) {
            assert!(file.ends_with(name), "{}", file.display());
            let err = super::read(file).expect_err("refused");
            let d = err.diagnostic().expect("diagnostic");
            assert_eq!((d.line, d.field.as_deref()), (line, Some(field)), "{d}");
        }
    }
}
