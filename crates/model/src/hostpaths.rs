//! Where a job's host paths may be: each user's files are theirs. A job's
//! mounts (data repositories, the only host paths a job names; inputs and
//! outputs travel through the controller's store, see [`crate::staging`])
//! lie in its owner's directory of one of the node's allowed roots,
//! `<root>/<owner>/`.
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
    /// The field, as `mounts[0].host` (`owner` when the owner's name
    /// cannot name a directory).
    pub field: String,
    pub path: PathBuf,
    pub reason: String,
}

/// The directories a job of `owner` may use: `<root>/<owner>` for each of
/// `roots`. The owner must be a user name ([`crate::names::is_user_name`]),
/// so never empty, `.`, `..` or with `/`.
pub fn owner_dirs(roots: &[PathBuf], owner: &str) -> Result<Vec<PathBuf>, HostPathError> {
    if !crate::names::is_user_name(owner) {
        return Err(HostPathError {
            field: "owner".into(),
            path: PathBuf::from(owner),
            reason: format!(
                "not a user name ({}), so it has no host directory",
                crate::names::plain_name_rule(crate::limits::MAX_USER_NAME)
            ),
        });
    }
    Ok(roots.iter().map(|r| normal(r).join(owner)).collect())
}

/// `path` without `.` components (lexically: roots come from the
/// configuration, which callers make absolute).
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl JobSpec {
    /// Whether the job has any host path (mounts).
    pub fn has_host_paths(&self) -> bool {
        !self.mounts.is_empty()
    }

    /// Checks, without looking at any file (a relative root is taken from
    /// the working directory), that every host path of the job (each
    /// mount's `host`) lies in its owner's directory of one of `roots`,
    /// `<root>/<owner>/`, or below it. The first path that does not is
    /// returned with its field (`mounts[0].host`) and why. A job without
    /// host paths passes whatever the owner.
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
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("mounts[{i}].host"), &m.host));
        for (field, path) in paths {
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
            if !dirs.iter().any(|d| path.starts_with(d)) {
                let names: Vec<String> = dirs.iter().map(|d| format!("{}/", d.display())).collect();
                return Err(refuse(format!(
                    "outside the allowed directories: a directory of user `{owner}` must be in {}",
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

    use crate::Mount;

    /// A job with these mounts (`host`).
    fn job(mounts: &[&str]) -> JobSpec {
        let mut spec = JobSpec::minimal("j", "tiny", vec!["/bin/true".into()]);
        spec.mounts = mounts
            .iter()
            .map(|p| Mount {
                host: PathBuf::from(p),
                guest: PathBuf::from("/data"),
                readonly: false,
            })
            .collect();
        spec
    }

    fn roots() -> Vec<PathBuf> {
        vec![
            PathBuf::from("/srv/repos"),
            PathBuf::from("/data/./shared/"),
        ]
    }

    #[test]
    fn paths_in_the_owners_directory_pass() {
        let spec = job(&["/srv/repos/alice", "/data/shared/alice/genome"]);
        assert_eq!(spec.check_host_paths(&roots(), "alice"), Ok(()));
        // No host paths: nothing to check, whoever owns the job.
        assert_eq!(job(&[]).check_host_paths(&[], ""), Ok(()));
    }

    #[test]
    fn other_users_directories_and_the_roots_themselves_are_refused() {
        let cases = [
            job(&["/srv/repos"]),
            job(&["/srv/repos/admin/data"]),
            job(&["/srv/repos/alice", "/srv/repos/alice2/x"]),
            job(&["/etc"]),
        ];
        for spec in cases {
            let err = spec.check_host_paths(&roots(), "alice").unwrap_err();
            assert!(err.field.starts_with("mounts["), "{spec:?}");
            let msg = err.to_string();
            assert!(msg.contains("outside the allowed directories"), "{msg}");
            assert!(msg.contains("/srv/repos/alice/"), "{msg}");
        }
        let err = job(&["relative"])
            .check_host_paths(&roots(), "alice")
            .unwrap_err();
        assert!(err.reason.contains("absolute"), "{err}");
    }

    #[test]
    fn an_owner_must_be_a_plain_name() {
        let spec = job(&["/srv/repos/x"]);
        for bad in ["", ".", "..", "a/b", "Alice", "-x", &"a".repeat(33)] {
            let err = spec.check_host_paths(&roots(), bad).unwrap_err();
            assert_eq!(err.field, "owner", "{bad}");
        }
    }
}
