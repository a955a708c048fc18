//! One passt per VM: outbound NAT, DHCP, DNS and published ports, without
//! root. QEMU connects to its unix socket with `-netdev stream`.

use std::fs::OpenOptions;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};
use crate::fsutil;
use crate::host::{HostTools, RunAs};
use crate::layout::VmDir;
use crate::record::PortMap;

/// The passt arguments for a VM.
pub fn passt_args(dir: &VmDir, publish: &[PortMap], run_as: &RunAs) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "--foreground".into(),
        "--quiet".into(),
        // Log to standard error, which goes to a file vgrid opened: passt
        // drops its privileges before opening a log file, and the VM user
        // may not reach the data directory by path.
        "--stderr".into(),
        "--socket".into(),
        dir.passt_sock().into(),
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

/// Starts passt detached and waits until its socket exists.
pub fn spawn(tools: &HostTools, dir: &VmDir, publish: &[PortMap], run_as: &RunAs) -> Result<Child> {
    let passt = tools.passt()?;
    let _ = std::fs::remove_file(dir.passt_sock());
    let err_path = dir.passt_log();
    let err = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&err_path)
        .map_err(|e| VmError::io("open", &err_path, e))?;
    let mut child = crate::process::detach(&mut Command::new(passt))
        .args(passt_args(dir, publish, run_as))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| VmError::io("run", passt, e))?;
    fsutil::write_replace(
        &dir.passt_pid(),
        format!("{}\n", child.id()).as_bytes(),
        0o644,
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if dir.passt_sock().exists() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let why: Vec<String> = fsutil::tail_lines(&err_path, 20)
                .lines()
                .filter(|l| !l.contains("to syslog"))
                .map(str::to_string)
                .collect();
            let why = why.join("\n");
            return Err(VmError::Tool {
                tool: "passt".into(),
                detail: format!("exited ({status}) before opening its socket: {why}"),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmError::Timeout {
                what: "passt to open its socket".into(),
                after: Duration::from_secs(30),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_user_are_passed() {
        let dir = VmDir::new("/d/vms/a");
        let args: Vec<String> = passt_args(
            &dir,
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
        assert!(args.contains(&"/d/vms/a/passt.sock".to_string()));
    }
}
