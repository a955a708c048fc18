//! One passt per VM: outbound NAT, DHCP, DNS and published ports, without
//! root.
//!
//! passt and QEMU talk over a socket pair that vgrid creates: passt gets
//! one end (`--fd`), QEMU the other (`-netdev stream,addr.type=fd`). No
//! socket is bound in the VM directory, so neither process needs to reach
//! the data directory by path after dropping to the VM user (a private,
//! 0700 data directory works), and passt ends by itself when QEMU closes
//! its end (`--fd` implies passt's `--one-off`).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::error::{FileError, LaunchError, ToolError};
use crate::fsutil;
use crate::host::{HostTools, RunAs};
use crate::layout::VmDir;
use crate::record::PortMap;

/// The passt arguments for a VM whose end of the socket pair is `fd`.
pub fn passt_args(fd: RawFd, publish: &[PortMap], run_as: &RunAs) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--foreground".into(),
        "--quiet".into(),
        // Log to standard error, which goes to a file vgrid opened: passt
        // drops its privileges before opening a log file, and the VM user
        // may not reach the data directory by path.
        "--stderr".into(),
        "--fd".into(),
        fd.to_string().into(),
    ];
    if !publish.is_empty() {
        let spec: Vec<String> = publish
            .iter()
            .map(|p| format!("{}:{}", p.host, p.guest))
            .collect();
        a.push("--tcp-ports".into());
        a.push(spec.join(",").into());
    }
    if let RunAs::User { uid, gid, .. } = run_as {
        a.push("--runas".into());
        a.push(format!("{uid}:{gid}").into());
    }
    a
}

/// A started passt and QEMU's end of the link to it.
pub struct Passt {
    pub child: Child,
    /// Given to QEMU (`-netdev stream,addr.type=fd`).
    pub qemu_end: OwnedFd,
}

/// Starts passt detached on a new socket pair and waits until it has
/// bound the published ports and dropped its privileges.
pub fn spawn(
    tools: &HostTools,
    dir: &VmDir,
    publish: &[PortMap],
    run_as: &RunAs,
) -> Result<Passt, LaunchError> {
    let passt = tools.passt()?;
    let (passt_end, qemu_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| FileError::new("create", "a socket pair for passt", e.into()))?;
    let lift = |fd| {
        crate::process::above_stdio(fd)
            .map_err(|e| FileError::new("duplicate", "a socket pair for passt", e))
    };
    let (passt_end, qemu_end) = (lift(passt_end)?, lift(qemu_end)?);
    let err_path = dir.passt_log();
    let err = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&err_path)
        .map_err(|e| FileError::new("open", &err_path, e))?;
    let mut cmd = Command::new(passt);
    // passt has no path argument left to recognise it by: its program
    // name names the VM directory (see `process::alive`).
    cmd.arg0(dir.passt_program_name());
    crate::process::detach(&mut cmd);
    crate::process::inherit_fd(&mut cmd, passt_end.as_raw_fd());
    let mut child = cmd
        .args(passt_args(passt_end.as_raw_fd(), publish, run_as))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: passt.to_path_buf(),
            source,
        })?;
    drop(passt_end);
    fsutil::write_atomic(
        &dir.passt_pid(),
        format!("{}\n", child.id()).as_bytes(),
        0o600,
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let why: Vec<String> = fsutil::tail_lines(&err_path, 20)
                .lines()
                .filter(|l| !l.contains("to syslog"))
                .map(str::to_string)
                .collect();
            let why = why.join("\n");
            return Err(LaunchError::PasstExited {
                status,
                log_tail: why,
            });
        }
        if set_up(child.id()) {
            return Ok(Passt { child, qemu_end });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Timeout {
                what: "passt to set up its network".into(),
                after: Duration::from_secs(30),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether passt is past its set-up: it binds the published ports (the
/// step that can fail), then enters a user namespace of its own, so a
/// namespace different from ours means the ports are bound. When the
/// namespace cannot be read (no permission), there is nothing to wait for
/// that can be observed: an exit is still seen later by QEMU.
fn set_up(pid: u32) -> bool {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/user"));
    let ours = std::fs::read_link("/proc/self/ns/user");
    match (theirs, ours) {
        (Ok(t), Ok(o)) => t != o,
        (Err(e), _) | (_, Err(e)) => e.kind() == std::io::ErrorKind::PermissionDenied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_user_and_descriptor_are_passed() {
        let args: Vec<String> = passt_args(
            7,
            &[
                PortMap {
                    host: 8080,
                    guest: 80,
                },
                PortMap {
                    host: 2222,
                    guest: 22,
                },
            ],
            &RunAs::User {
                name: "vgrid-vm".into(),
                uid: 999,
                gid: 995,
            },
        )
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let t = args.iter().position(|a| a == "--tcp-ports").unwrap();
        assert_eq!(args[t + 1], "8080:80,2222:22");
        let r = args.iter().position(|a| a == "--runas").unwrap();
        assert_eq!(args[r + 1], "999:995");
        let f = args.iter().position(|a| a == "--fd").unwrap();
        assert_eq!(args[f + 1], "7");
        // Nothing is bound by path.
        assert!(!args.iter().any(|a| a == "--socket"));
    }
}
