//! Where a job's host paths may be: each user's files are theirs. A job's
//! inputs, outputs and mounts lie in its owner's directory of one of the
//! node's allowed roots, `<root>/<owner>/`.
//!
//! The check here is lexical (no file is looked at), so that the
//! controller can refuse a job at submit time, before it waits in the
//! queue. The node agent checks again with every symbolic link resolved,
//! inside the owner's directory only, when the job starts.

use std::path::{Component, Path, PathBuf};

use crate::spec::JobSpec;

/// A host path of a job that is not in its owner's directories.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} `{}`: {reason}", path.display())]
pub struct HostPathError {
    /// The field, as `inputs[0].from`, `outputs[1].to` or `mounts[0].host`
    /// (`owner` when the owner's name cannot name a directory).
    pub field: String,
    pub path: PathBuf,
    pub reason: String,
}

/// Whether `owner` can name a directory below a root: a user name as the
/// controller allows them (a lower-case letter, then lower-case letters,
/// digits, `_` and `-`, at most 64), so never empty, `.`, `..` or with `/`.
pub fn is_owner_name(owner: &str) -> bool {
    let mut chars = owner.chars();
    owner.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The directories a job of `owner` may use: `<root>/<owner>` for each of
/// `roots`.
pub fn owner_dirs(roots: &[PathBuf], owner: &str) -> Result<Vec<PathBuf>, HostPathError> {
    if !is_owner_name(owner) {
        return Err(HostPathError {
            field: "owner".into(),
            path: PathBuf::from(owner),
            reason: "not a user name (a lower-case letter, then lower-case letters, digits, `_`, `-`), so it has no host directory".into(),
        });
    }
    Ok(roots.iter().map(|r| normal(r).join(owner)).collect())
}

/// `path` made absolute (against the working directory, lexically) and
/// without `.` components: job file paths are already so; roots from the
/// configuration (`VGRID_DATA_DIR=state`) may not be.
fn normal(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl JobSpec {
    /// Whether the job has any host path (inputs, outputs or mounts).
    pub fn has_host_paths(&self) -> bool {
        !(self.inputs.is_empty() && self.outputs.is_empty() && self.mounts.is_empty())
    }

    /// Checks, without looking at any file (a relative root is taken from
    /// the working directory), that every host path of the job
    /// (each input's `from`, output's `to` and mount's `host`) lies in its
    /// owner's directory of one of `roots`, `<root>/<owner>/`: inputs and
    /// outputs strictly below it, a mount there or below. The first path
    /// that does not is returned with its field (`outputs[0].to`) and why.
    /// A job without host paths passes whatever the owner.
    ///
    /// Symbolic links are not seen here: the node agent resolves every
    /// path again when the job starts, following links only inside the
    /// owner's directory.
    pub fn check_host_paths(&self, roots: &[PathBuf], owner: &str) -> Result<(), HostPathError> {
        if !self.has_host_paths() {
            return Ok(());
        }
        let dirs = owner_dirs(roots, owner)?;
        let paths = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("inputs[{i}].from"), &t.from, false))
            .chain(
                self.outputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("outputs[{i}].to"), &t.to, false)),
            )
            .chain(
                self.mounts
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("mounts[{i}].host"), &m.host, true)),
            );
        for (field, path, may_be_the_dir) in paths {
            let refuse = |reason: String| HostPathError {
                field: field.clone(),
                path: path.clone(),
                reason,
            };
            if !path.is_absolute() {
                return Err(refuse("must be an absolute path".into()));
            }
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(refuse("`..` is not allowed".into()));
            }
            let path = normal(path);
            let inside = dirs
                .iter()
                .any(|d| path.starts_with(d) && (may_be_the_dir || path != *d));
            if !inside {
                let names: Vec<String> = dirs.iter().map(|d| format!("{}/", d.display())).collect();
                let what = if may_be_the_dir {
                    "a directory"
                } else {
                    "a file"
                };
                return Err(refuse(format!(
                    "outside the allowed directories: {what} of user `{owner}` must be in {}",
                    names.join(" or ")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: &str) -> JobSpec {
        crate::parse(
            "j.toml",
            &format!("image = \"tiny\"\ncommand = [\"/bin/true\"]\n{extra}"),
        )
        .expect("valid")
    }

    fn roots() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/srv/repos"),
            PathBuf::from("/data/./shared/"),
        ]
    }

    #[test]
    fn paths_in_the_owners_directory_pass() {
        let spec = job(
            "[[inputs]]\nfrom = \"/srv/repos/alice/in/a.txt\"\nto = \"/work/a.txt\"\n\
             [[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/data/shared/alice/r.txt\"\n\
             [[mounts]]\nhost = \"/srv/repos/alice\"\nguest = \"/data\"\n",
        );
        assert_eq!(spec.check_host_paths(&roots(), "alice"), Ok(()));
        // No host paths: nothing to check, whoever owns the job.
        assert_eq!(job("").check_host_paths(&[], ""), Ok(()));
    }

    #[test]
    fn other_users_files_and_the_roots_themselves_are_refused() {
        let cases = [
            (
                "[[inputs]]\nfrom = \"/srv/repos/bob/a.txt\"\nto = \"/work/a.txt\"\n",
                "inputs[0].from",
            ),
            (
                "[[inputs]]\nfrom = \"/srv/repos/alice/a.txt\"\nto = \"/work/a.txt\"\n\
                 [[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/srv/repos/r.txt\"\n",
                "outputs[0].to",
            ),
            (
                "[[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/srv/repos/alice2/r.txt\"\n",
                "outputs[0].to",
            ),
            (
                "[[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/etc/passwd\"\n",
                "outputs[0].to",
            ),
            (
                "[[mounts]]\nhost = \"/srv/repos\"\nguest = \"/data\"\n",
                "mounts[0].host",
            ),
            (
                "[[mounts]]\nhost = \"/srv/repos/admin/data\"\nguest = \"/data\"\n",
                "mounts[0].host",
            ),
        ];
        for (text, field) in cases {
            let err = job(text).check_host_paths(&roots(), "alice").unwrap_err();
            assert_eq!(err.field, field, "{text}");
            let msg = err.to_string();
            assert!(msg.starts_with(field), "{msg}");
            assert!(msg.contains("outside the allowed directories"), "{msg}");
            assert!(msg.contains("/srv/repos/alice/"), "{msg}");
        }
        // An output may not be the owner's directory itself.
        let spec = job("[[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/srv/repos/alice\"\n");
        assert!(spec.check_host_paths(&roots(), "alice").is_err());
    }

    #[test]
    fn an_owner_must_be_a_plain_name() {
        let spec = job("[[outputs]]\nfrom = \"/work/r.txt\"\nto = \"/srv/repos/x/r.txt\"\n");
        for bad in ["", ".", "..", "a/b", "Alice", "-x", &"a".repeat(65)] {
            let err = spec.check_host_paths(&roots(), bad).unwrap_err();
            assert_eq!(err.field, "owner", "{bad}");
        }
        assert!(is_owner_name("admin") && is_owner_name("bob_2-x"));
    }
}
