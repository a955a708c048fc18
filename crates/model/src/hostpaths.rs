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

    use crate::{Mount, Transfer};

    /// A job with these host paths: inputs (`from`), outputs (`to`),
    /// mounts (`host`).
    fn job(inputs: &[&str], outputs: &[&str], mounts: &[&str]) -> JobSpec {
        let mut spec = JobSpec::minimal("j", "tiny", vec!["/bin/true".into()]);
        spec.inputs = inputs
            .iter()
            .map(|p| Transfer {
                from: PathBuf::from(p),
                to: PathBuf::from("/work/a.txt"),
            })
            .collect();
        spec.outputs = outputs
            .iter()
            .map(|p| Transfer {
                from: PathBuf::from("/work/r.txt"),
                to: PathBuf::from(p),
            })
            .collect();
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
        let spec = job(
            &["/srv/repos/alice/in/a.txt"],
            &["/data/shared/alice/r.txt"],
            &["/srv/repos/alice"],
        );
        assert_eq!(spec.check_host_paths(&roots(), "alice"), Ok(()));
        // No host paths: nothing to check, whoever owns the job.
        assert_eq!(job(&[], &[], &[]).check_host_paths(&[], ""), Ok(()));
    }

    #[test]
    fn other_users_files_and_the_roots_themselves_are_refused() {
        let cases: [(JobSpec, &str); 6] = [
            (job(&["/srv/repos/bob/a.txt"], &[], &[]), "inputs[0].from"),
            (
                job(&["/srv/repos/alice/a.txt"], &["/srv/repos/r.txt"], &[]),
                "outputs[0].to",
            ),
            (job(&[], &["/srv/repos/alice2/r.txt"], &[]), "outputs[0].to"),
            (job(&[], &["/etc/passwd"], &[]), "outputs[0].to"),
            (job(&[], &[], &["/srv/repos"]), "mounts[0].host"),
            (job(&[], &[], &["/srv/repos/admin/data"]), "mounts[0].host"),
        ];
        for (spec, field) in cases {
            let err = spec.check_host_paths(&roots(), "alice").unwrap_err();
            assert_eq!(err.field, field, "{spec:?}");
            let msg = err.to_string();
            assert!(msg.starts_with(field), "{msg}");
            assert!(msg.contains("outside the allowed directories"), "{msg}");
            assert!(msg.contains("/srv/repos/alice/"), "{msg}");
        }
        // An output may not be the owner's directory itself.
        let spec = job(&[], &["/srv/repos/alice"], &[]);
        assert!(spec.check_host_paths(&roots(), "alice").is_err());
    }

    #[test]
    fn an_owner_must_be_a_plain_name() {
        let spec = job(&[], &["/srv/repos/x/r.txt"], &[]);
        for bad in ["", ".", "..", "a/b", "Alice", "-x", &"a".repeat(33)] {
            let err = spec.check_host_paths(&roots(), bad).unwrap_err();
            assert_eq!(err.field, "owner", "{bad}");
        }
    }
}
