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

/// What passt needs to be told on a host without a default route (an
/// air-gapped cluster, a test host): passt takes the guest's address and
/// gateway from the interface of the default route, and gives up without
/// one. Then the first interface with an IPv4 route is used, with a
/// gateway in its subnet that is not the host's own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub interface: String,
    pub gateway: std::net::Ipv4Addr,
}

/// `None` when the host has a default route (passt finds its way), else
/// the [`Uplink`] to name, from `/proc/net/route` and the interface's own
/// address.
pub fn uplink() -> Option<Uplink> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let own = |iface: &str| interface_ipv4(iface);
    uplink_from(&routes, own)
}

/// [`uplink`] over the text of `/proc/net/route` and a lookup of an
/// interface's address.
pub fn uplink_from(
    routes: &str,
    own: impl Fn(&str) -> Option<std::net::Ipv4Addr>,
) -> Option<Uplink> {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ... (hex, little-endian)
    let mut first = None;
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        if *dest == "00000000" {
            return None;
        }
        if *iface == "lo" || first.is_some() {
            continue;
        }
        // The hex is the address's network-order bytes read as a
        // little-endian number.
        let parse = |h: &str| {
            u32::from_str_radix(h, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_le_bytes()))
        };
        let (Some(dest), Some(mask)) = (parse(dest), parse(mask)) else {
            continue;
        };
        first = Some((iface.to_string(), dest, mask));
    }
    let (interface, net, mask) = first?;
    let own = own(&interface).map(u32::from);
    // The first address of the subnet that is not ours.
    let mut gateway = (net & mask) + 1;
    if Some(gateway) == own {
        gateway += 1;
    }
    Some(Uplink {
        interface,
        gateway: std::net::Ipv4Addr::from(gateway),
    })
}

/// The IPv4 address of interface `name`.
fn interface_ipv4(name: &str) -> Option<std::net::Ipv4Addr> {
    // SAFETY: getifaddrs gives a list that is read, then freed once with
    // freeifaddrs; every pointer is checked before use.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                && !ifa.ifa_name.is_null()
                && std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes()
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

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
    if let Some(up) = uplink() {
        a.push("--interface".into());
        a.push(up.interface.into());
        a.push("--gateway".into());
        a.push(up.gateway.to_string().into());
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
    fn a_host_without_a_default_route_names_its_uplink() {
        let head =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";
        let with_default = format!(
            "{head}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(uplink_from(&with_default, |_| None), None);
        let without = format!(
            "{head}lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
             eth0\t00584D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        let ours = std::net::Ipv4Addr::new(10, 77, 88, 2);
        assert_eq!(
            uplink_from(&without, |_| Some(ours)),
            Some(Uplink {
                interface: "eth0".into(),
                gateway: std::net::Ipv4Addr::new(10, 77, 88, 1),
            })
        );
        let first = std::net::Ipv4Addr::new(10, 77, 88, 1);
        assert_eq!(
            uplink_from(&without, |_| Some(first)).map(|u| u.gateway),
            Some(std::net::Ipv4Addr::new(10, 77, 88, 2)),
            "never the host's own address"
        );
    }

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
