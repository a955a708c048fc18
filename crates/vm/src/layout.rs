//! Where a VM's files live: `$VGRID_DATA_DIR/vms/<name>/`.

use std::path::{Path, PathBuf};

use crate::error::{BadVmName, SocketPathError};

/// The files of one VM directory.
#[derive(Debug, Clone)]
pub struct VmDir {
    root: PathBuf,
}

/// Longest path a unix socket may have (`sun_path` minus its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl VmDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        VmDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The VM's record: spec, disks, intent.
    pub fn record(&self) -> PathBuf {
        self.root.join("vm.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn qmp(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }
    pub fn ctl(&self) -> PathBuf {
        self.root.join("ctl.sock")
    }
    /// passt's `argv[0]`: it names this directory, so that a restarted
    /// vgrid recognises the VM's passt (passt is given its socket as a
    /// descriptor and has no path argument). A passt started by an older
    /// vgrid (`--socket DIR/passt.sock`) matches it too.
    pub fn passt_program_name(&self) -> PathBuf {
        self.root.join("passt")
    }
    pub fn qemu_pid(&self) -> PathBuf {
        self.root.join("qemu.pid")
    }
    pub fn passt_pid(&self) -> PathBuf {
        self.root.join("passt.pid")
    }
    /// QEMU's own standard error (its error messages).
    pub fn qemu_log(&self) -> PathBuf {
        self.root.join("qemu.log")
    }
    pub fn passt_log(&self) -> PathBuf {
        self.root.join("passt.log")
    }
    /// The serial console.
    pub fn console(&self) -> PathBuf {
        self.root.join("console.log")
    }
    /// Frames from the guest agent (written by QEMU itself).
    pub fn agent_out(&self) -> PathBuf {
        self.root.join("agent.out")
    }
    pub fn context(&self) -> PathBuf {
        self.root.join("context.json")
    }
    /// The staging share (files copied in before and out after the job).
    pub fn stage(&self) -> PathBuf {
        self.root.join("stage")
    }
    /// The `index`-th disk layer created for this VM.
    pub fn disk_layer(&self, index: usize) -> PathBuf {
        self.root.join(format!("disk-{index}.qcow2"))
    }

    /// Refuses data directories so deep that the VM's sockets could not be
    /// bound (unix socket paths are limited to 107 bytes).
    pub fn check_socket_paths(&self) -> Result<(), SocketPathError> {
        for p in [self.qmp(), self.ctl()] {
            if p.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(SocketPathError {
                    path: p,
                    max: MAX_SOCKET_PATH,
                });
            }
        }
        Ok(())
    }
}

/// Checks a VM name: 1 to 63 letters, digits, `-`, `_` or `.`, starting
/// with a letter or digit (it becomes a directory name and a host name).
pub fn check_vm_name(name: &str) -> Result<(), BadVmName> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(BadVmName(name.to_string()))
    }
}

/// The guest host name for a VM name (host names allow only letters,
/// digits and '-').
pub fn hostname_for(name: &str) -> String {
    let h: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let h = h.trim_start_matches('-').to_string();
    if h.is_empty() { "vm".to_string() } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "job-42", "x.y_z", "A1"] {
            check_vm_name(good).unwrap();
        }
        for bad in ["", "-a", ".", "..", "a/b", "a b", &"x".repeat(64)] {
            assert!(check_vm_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostnames_are_derived() {
        assert_eq!(hostname_for("job_1.a"), "job-1-a");
        assert_eq!(hostname_for("web"), "web");
    }

    #[test]
    fn deep_data_dirs_are_refused() {
        let deep = VmDir::new(format!("/{}", "d".repeat(120)));
        let err = deep.check_socket_paths().unwrap_err();
        assert!(err.to_string().contains("longer than 107"), "{err}");
        VmDir::new("/var/lib/vgrid/vms/a")
            .check_socket_paths()
            .unwrap();
    }
}
