//! What the host provides: the QEMU, qemu-img and passt programs, the
//! unprivileged user VMs run as, and QEMU's machine type.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{FileError, ToolError, VmUserError};

/// The host programs the runtime uses.
#[derive(Debug, Clone)]
pub struct HostTools {
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    /// `None` when passt is missing; only VMs with networking need it.
    pub passt: Option<PathBuf>,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

impl HostTools {
    /// Finds the programs: the given QEMU path when set, else
    /// `qemu-system-x86_64` in `PATH`; `qemu-img` and `passt` in `PATH`.
    pub fn discover(qemu_override: Option<&Path>) -> Result<HostTools, ToolError> {
        let qemu = match qemu_override {
            Some(p) if p.is_file() => p.to_path_buf(),
            Some(_) => {
                return Err(ToolError::Missing {
                    tool: "qemu-system-x86_64",
                    install: "apt-get install qemu-system-x86",
                });
            }
            None => find_in_path("qemu-system-x86_64").ok_or(ToolError::Missing {
                tool: "qemu-system-x86_64",
                install: "apt-get install qemu-system-x86",
            })?,
        };
        let qemu_img = find_in_path("qemu-img").ok_or(ToolError::Missing {
            tool: "qemu-img",
            install: "apt-get install qemu-utils",
        })?;
        Ok(HostTools {
            qemu,
            qemu_img,
            passt: find_in_path("passt"),
        })
    }

    /// passt, or the error telling how to install it.
    pub fn passt(&self) -> Result<&Path, ToolError> {
        self.passt.as_deref().ok_or(ToolError::Missing {
            tool: "passt",
            install: "apt-get install passt",
        })
    }

    /// Runs a tool to completion; a non-zero exit becomes
    /// [`ToolError::Failed`] carrying its standard error.
    pub fn run(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Result<String, ToolError> {
        let out = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ToolError::Spawn {
                program: program.to_path_buf(),
                source,
            })?;
        if !out.status.success() {
            return Err(ToolError::Failed {
                program: program.to_path_buf(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The versioned name of the `q35` machine (e.g. `pc-q35-7.2`), so a
    /// restored VM gets exactly the machine it was saved on.
    pub fn q35_machine(&self) -> Result<String, ToolError> {
        let text = self.run(&self.qemu, &["-machine".as_ref(), "help".as_ref()])?;
        Ok(parse_q35_alias(&text).unwrap_or_else(|| "q35".to_string()))
    }

    /// `qemu-system-x86_64 --version`, first line.
    pub fn qemu_version_line(&self) -> Result<String, ToolError> {
        let text = self.run(&self.qemu, &["--version".as_ref()])?;
        Ok(text.lines().next().unwrap_or_default().trim().to_string())
    }
}

/// What vgrid needs to know about the QEMU binary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuInfo {
    /// `qemu-system-x86_64 --version`, first line.
    pub version: String,
    /// The versioned `q35` machine, e.g. `pc-q35-7.2`.
    pub q35_machine: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct QemuInfoCache {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    info: QemuInfo,
}

impl HostTools {
    /// [`QemuInfo`], read from `cache` when it describes this very binary
    /// (same path, size and modification time), else asked from QEMU (two
    /// runs of it) and cached: a VM start should not pay for them.
    pub fn qemu_info(&self, cache: &Path) -> Result<QemuInfo, ToolError> {
        let meta =
            std::fs::metadata(&self.qemu).map_err(|e| FileError::new("stat", &self.qemu, e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(-1);
        if let Ok(bytes) = std::fs::read(cache)
            && let Ok(c) = serde_json::from_slice::<QemuInfoCache>(&bytes)
            && c.path == self.qemu
            && c.size == meta.len()
            && c.mtime_ns == mtime_ns
        {
            return Ok(c.info);
        }
        let info = QemuInfo {
            version: self.qemu_version_line()?,
            q35_machine: self.q35_machine()?,
        };
        if let Some(dir) = cache.parent() {
            let _ = crate::fsutil::create_dir_mode(dir, 0o700);
        }
        let entry = QemuInfoCache {
            path: self.qemu.clone(),
            size: meta.len(),
            mtime_ns,
            info: info.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&entry) {
            let _ = crate::fsutil::write_atomic(cache, &bytes, 0o600);
        }
        Ok(info)
    }
}

fn parse_q35_alias(help: &str) -> Option<String> {
    help.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("q35")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let start = rest.find("(alias of ")? + "(alias of ".len();
        let end = rest[start..].find(')')? + start;
        Some(rest[start..end].to_string())
    })
}

/// Who QEMU and passt run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// vgrid is not root: everything runs as the invoking user.
    CurrentUser,
    /// vgrid is root: QEMU drops to this user before the guest runs
    /// (`-runas`), passt runs as it (`--runas`).
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    /// The default unprivileged user.
    pub const DEFAULT_USER: &'static str = "vgrid-vm";

    /// As root, looks `user` up and creates it (a system user without home
    /// or shell) when missing; otherwise [`RunAs::CurrentUser`].
    pub fn for_this_process(user: &str) -> Result<RunAs, VmUserError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(RunAs::CurrentUser);
        }
        if let Some((uid, gid)) = lookup_user(user)? {
            return Ok(RunAs::User {
                name: user.to_string(),
                uid,
                gid,
            });
        }
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .output()
            .map_err(|source| VmUserError::Useradd {
                user: user.to_string(),
                source,
            })?;
        // Another vgrid may have created it at the same moment (exit 9).
        if !out.status.success() && out.status.code() != Some(9) {
            return Err(VmUserError::UseraddFailed {
                user: user.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        match lookup_user(user)? {
            Some((uid, gid)) => Ok(RunAs::User {
                name: user.to_string(),
                uid,
                gid,
            }),
            None => Err(VmUserError::Missing {
                user: user.to_string(),
            }),
        }
    }

    /// The user's name, `None` for the invoking user.
    pub fn name(&self) -> Option<String> {
        match self {
            RunAs::User { name, .. } => Some(name.clone()),
            RunAs::CurrentUser => None,
        }
    }

    /// Gives the open file `f` (at `path`, for messages) to the VM user:
    /// through the descriptor, so a name swapped meanwhile is not touched.
    pub fn fchown(&self, f: &std::fs::File, path: &Path) -> Result<(), FileError> {
        if let RunAs::User { uid, gid, .. } = self {
            std::os::unix::fs::fchown(f, Some(*uid), Some(*gid))
                .map_err(|e| FileError::new("chown", path, e))?;
        }
        Ok(())
    }

    /// Gives `path` to the VM user (a no-op for [`RunAs::CurrentUser`]).
    /// Only for paths the guest cannot replace (it follows links).
    pub fn chown(&self, path: &Path) -> Result<(), FileError> {
        if let RunAs::User { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| FileError::new("chown", path, e))?;
        }
        Ok(())
    }
}

/// `(uid, gid)` of `user` from `/etc/passwd`.
fn lookup_user(user: &str) -> Result<Option<(u32, u32)>, FileError> {
    let text = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| FileError::new("read", "/etc/passwd", e))?;
    Ok(parse_passwd(&text, user))
}

fn parse_passwd(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q35_alias_is_found() {
        let help = "Supported machines are:\n\
            microvm              microvm (i386)\n\
            pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n\
            q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n\
            pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n";
        assert_eq!(parse_q35_alias(help).as_deref(), Some("pc-q35-7.2"));
        assert_eq!(parse_q35_alias("q35x  (alias of nope)"), None);
    }

    #[test]
    fn passwd_lines_are_parsed() {
        let text =
            "root:x:0:0:root:/root:/bin/bash\nvgrid-vm:x:999:995::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(parse_passwd(text, "vgrid-vm"), Some((999, 995)));
        assert_eq!(parse_passwd(text, "vgrid"), None);
        assert_eq!(parse_passwd("broken", "broken"), None);
    }

    #[test]
    fn a_missing_qemu_says_how_to_install_it() {
        let err = HostTools::discover(Some(Path::new("/nonexistent/qemu"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install qemu-system-x86"), "{msg}");
    }
}
