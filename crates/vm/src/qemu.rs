//! The QEMU command line of a VM, and starting QEMU detached from vgrid.
//!
//! Every value goes into its own argv element; nothing passes through a
//! shell. Paths inside QEMU's `key=value,...` option strings have their
//! commas doubled (QEMU's escape), and block devices and most devices are
//! given as JSON, which needs no escaping at all.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use vgrid_qmp::Qmp;

use crate::error::{FileError, LaunchError, ToolError};
use crate::fsutil;
use crate::host::{HostTools, RunAs};
use crate::layout::VmDir;
use crate::record::{ImageKind, VmRecord};

/// How QEMU is to be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchMode {
    /// Wait for a migration stream (`-incoming defer`): restore and the
    /// destination of a live migration.
    pub incoming: bool,
}

/// The node name of the `index`-th disk layer (its qcow2 or raw node).
pub fn node_name(index: usize) -> String {
    format!("disk{index}")
}

/// The node name of the `index`-th disk layer's file.
pub fn file_node_name(index: usize) -> String {
    format!("file{index}")
}

/// Doubles commas, QEMU's escape inside `a=b,c=d` option strings.
pub fn escape_opt(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn opt(parts: &[&OsStr]) -> OsString {
    let mut s = OsString::new();
    for p in parts {
        s.push(p);
    }
    s
}

/// The kernel command line of the stock guest: the image's own (or a
/// serial console and "a panic ends QEMU"), plus `no_timer_check`: an
/// emulated CPU on a busy host can fail the kernel's IO-APIC timer check
/// and panic at boot.
pub fn kernel_append(rec: &VmRecord) -> String {
    let base = if rec.image.append.is_empty() {
        "console=ttyS0 panic=-1 quiet"
    } else {
        rec.image.append.as_str()
    };
    if base.split_whitespace().any(|w| w == "no_timer_check") {
        base.to_string()
    } else {
        format!("{base} no_timer_check")
    }
}

/// The host directories of a VM's 9p shares (its data repositories, then
/// its staging share), opened by vgrid without following any link. QEMU
/// opens a share's root by path, as root, before it drops to the VM user:
/// given `/proc/self/fd/N` of a descriptor it inherits, it opens exactly
/// the directory vgrid checked, even if a directory on the way was swapped
/// for a link in between (by another VM with a writable mount above it).
pub struct ShareDirs {
    fds: Vec<OwnedFd>,
}

impl ShareDirs {
    /// Opens the shares of `rec`: each data repository by walking its
    /// resolved path from `/`, the staging share from the VMs' directory.
    pub fn open(rec: &VmRecord, dir: &VmDir) -> Result<ShareDirs, LaunchError> {
        let mut fds = Vec::new();
        for m in &rec.mounts {
            let rel = m
                .host_path
                .strip_prefix("/")
                .map_err(|_| LaunchError::BadShare {
                    name: rec.name.clone(),
                    reason: format!(
                        "the data repository {} is not an absolute path",
                        m.host_path.display()
                    ),
                })?;
            fds.push(fsutil::open_dir_beneath_nofollow(Path::new("/"), rel)?);
        }
        if rec.staging_tag.is_some() {
            let root = dir.root();
            let (Some(vms), Some(name)) = (root.parent(), root.file_name()) else {
                return Err(LaunchError::BadShare {
                    name: rec.name.clone(),
                    reason: format!("the VM directory {} has no parent", root.display()),
                });
            };
            fds.push(fsutil::open_dir_beneath_nofollow(
                vms,
                &Path::new(name).join("stage"),
            )?);
        }
        Ok(ShareDirs { fds })
    }

    /// The paths QEMU opens, `/proc/self/fd/N`, in the order of the shares.
    pub fn paths(&self) -> Vec<OsString> {
        self.fds
            .iter()
            .map(|fd| OsString::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
            .collect()
    }

    fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(|fd| fd.as_raw_fd()).collect()
    }
}

/// Builds the argument list (without the program name). With `shares`,
/// QEMU opens the share roots through their descriptors (see
/// [`ShareDirs`]); without, by the paths in the record. `net_fd` is QEMU's
/// end of the socket pair to the VM's passt (see [`crate::passt`]); without
/// it the VM has no network card.
pub fn qemu_args(
    rec: &VmRecord,
    dir: &VmDir,
    run_as: &RunAs,
    mode: LaunchMode,
    shares: Option<&ShareDirs>,
    net_fd: Option<RawFd>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&OsStr]| a.extend(items.iter().map(|s| s.to_os_string()));
    let s = |x: &'static str| OsStr::new(x);

    push(&[s("-name"), OsStr::new(&format!("guest={}", rec.name))]);
    push(&[s("-machine"), OsStr::new(&rec.machine)]);
    push(&[s("-accel"), s(rec.accel.name())]);
    push(&[s("-cpu"), OsStr::new(&rec.cpu_model)]);
    push(&[s("-smp"), OsStr::new(&rec.cpus.to_string())]);
    push(&[s("-m"), OsStr::new(&format!("{}M", rec.memory_mb))]);
    push(&[
        s("-nodefaults"),
        s("-no-user-config"),
        s("-display"),
        s("none"),
    ]);
    // A guest reboot ends QEMU: a job's VM never reboots by itself.
    push(&[s("-no-reboot")]);
    if rec.image.kind == ImageKind::Imported && !rec.image.agent {
        // Without an agent, the guest powering off is the job's end; keep
        // QEMU so vgrid can tell that apart from a crash.
        push(&[s("-no-shutdown")]);
    }
    push(&[s("-msg"), s("timestamp=on")]);
    match run_as {
        RunAs::User { name, .. } => {
            // QEMU opens its files as root, then drops to the VM user
            // before the guest runs; seccomp forbids everything else.
            push(&[
                s("-sandbox"),
                s("on,obsolete=deny,spawn=deny,resourcecontrol=deny"),
            ]);
            push(&[s("-runas"), OsStr::new(name)]);
        }
        RunAs::CurrentUser => push(&[
            s("-sandbox"),
            s("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"),
        ]),
    }

    // Monitor.
    push(&[
        s("-chardev"),
        &opt(&[
            s("socket,id=qmp,server=on,wait=off,path="),
            &escape_opt(dir.qmp().as_os_str()),
        ]),
        s("-mon"),
        s("chardev=qmp,mode=control"),
    ]);
    // Serial console, appended to across restores.
    push(&[
        s("-chardev"),
        &opt(&[
            s("file,id=con0,append=on,path="),
            &escape_opt(dir.console().as_os_str()),
        ]),
        s("-serial"),
        s("chardev:con0"),
    ]);

    if rec.image.kind == ImageKind::Stock {
        if let Some(kernel) = &rec.image.kernel {
            push(&[s("-kernel"), kernel.as_os_str()]);
        }
        if let Some(initrd) = &rec.image.initrd {
            push(&[s("-initrd"), initrd.as_os_str()]);
        }
        push(&[s("-append"), OsStr::new(&kernel_append(rec))]);
    }
    if rec.image.agent {
        push(&[
            s("-fw_cfg"),
            &opt(&[
                OsStr::new(&format!(
                    "name={},file=",
                    vgrid_guest_proto::FW_CFG_CONTEXT_NAME
                )),
                &escape_opt(dir.context().as_os_str()),
            ]),
        ]);
        push(&[
            s("-device"),
            OsStr::new(&json!({"driver": "virtio-serial-pci", "id": "vser0"}).to_string()),
            s("-chardev"),
            &opt(&[
                s("file,id=vgout,append=on,path="),
                &escape_opt(dir.agent_out().as_os_str()),
            ]),
            s("-device"),
            OsStr::new(
                &json!({"driver": "virtserialport", "bus": "vser0.0", "chardev": "vgout",
                        "name": vgrid_guest_proto::OUT_PORT, "id": "vgout"})
                .to_string(),
            ),
            s("-chardev"),
            &opt(&[
                s("socket,id=vgctl,server=on,wait=off,path="),
                &escape_opt(dir.ctl().as_os_str()),
            ]),
            s("-device"),
            OsStr::new(
                &json!({"driver": "virtserialport", "bus": "vser0.0", "chardev": "vgctl",
                        "name": vgrid_guest_proto::CTL_PORT, "id": "vgctl"})
                .to_string(),
            ),
        ]);
    }

    // Entropy for the guest (its kernel and programs would block without).
    push(&[
        s("-device"),
        OsStr::new(&json!({"driver": "virtio-rng-pci", "id": "rng0"}).to_string()),
    ]);

    // The disk chain, bottom to top, with explicit backing links so that no
    // path stored inside an image file is ever followed.
    let top = rec.disks.len() - 1;
    for (i, path) in rec.disks.iter().enumerate() {
        let mut file = json!({"driver": "file", "node-name": file_node_name(i), "filename": path.to_string_lossy()});
        if i != top {
            // Lower layers are immutable (image bases, checkpoint layers,
            // frozen layers): many QEMUs may share them, including the one
            // that froze a layer and still holds it with write permission.
            file["locking"] = json!("off");
        }
        let driver = if i == 0 {
            rec.image.disk_format.as_str()
        } else {
            "qcow2"
        };
        let mut node = json!({
            "driver": driver,
            "node-name": node_name(i),
            "file": file,
            "read-only": i != top,
        });
        if i > 0 && driver == "qcow2" {
            node["backing"] = json!(node_name(i - 1));
        }
        if i == 0 && driver == "qcow2" {
            node["backing"] = serde_json::Value::Null;
        }
        if i == top {
            node["discard"] = json!("unmap");
        }
        push(&[s("-blockdev"), OsStr::new(&node.to_string())]);
    }
    push(&[
        s("-device"),
        OsStr::new(
            &json!({"driver": "virtio-blk-pci", "drive": node_name(top), "id": "vda"}).to_string(),
        ),
    ]);

    if let Some(fd) = net_fd {
        // A descriptor, not a socket path: QEMU connects to a path only
        // after dropping to the VM user, who may not reach the data
        // directory.
        push(&[
            s("-netdev"),
            OsStr::new(&format!(
                "stream,id=net0,server=off,addr.type=fd,addr.str={fd}"
            )),
            s("-device"),
            OsStr::new(
                &json!({"driver": "virtio-net-pci", "netdev": "net0", "mac": rec.mac, "id": "nic0"})
                    .to_string(),
            ),
        ]);
    }

    let share_dirs = shares;
    let mut shares: Vec<(String, OsString, bool)> = rec
        .mounts
        .iter()
        .map(|m| {
            (
                m.tag.clone(),
                m.host_path.clone().into_os_string(),
                m.readonly,
            )
        })
        .collect();
    if let Some(tag) = &rec.staging_tag {
        shares.push((tag.clone(), dir.stage().into_os_string(), false));
    }
    if let Some(dirs) = share_dirs {
        for ((_, host, _), path) in shares.iter_mut().zip(dirs.paths()) {
            *host = path;
        }
    }
    for (i, (tag, host, readonly)) in shares.iter().enumerate() {
        let mut fsdev = opt(&[
            OsStr::new(&format!("local,id=fs{i},security_model=none,path=")),
            &escape_opt(host),
        ]);
        if *readonly {
            fsdev.push(",readonly=on");
        }
        push(&[
            s("-fsdev"),
            &fsdev,
            s("-device"),
            OsStr::new(
                &json!({"driver": "virtio-9p-pci", "fsdev": format!("fs{i}"), "mount_tag": tag, "id": format!("p9_{i}")})
                    .to_string(),
            ),
        ]);
    }

    if mode.incoming {
        push(&[s("-incoming"), s("defer")]);
    }
    a
}

/// A started QEMU: its process handle (reaped by the runtime) and a QMP
/// connection.
pub struct Launched {
    pub child: Child,
    pub qmp: Qmp,
}

/// Starts QEMU in its own session (so a terminal's Ctrl-C or the
/// exit of vgrid does not reach it), with standard error going to
/// `qemu.log`, writes `qemu.pid`, and connects to QMP. `net` is QEMU's end
/// of the link to passt; QEMU inherits it and vgrid closes its copy.
pub async fn launch(
    tools: &HostTools,
    rec: &VmRecord,
    dir: &VmDir,
    run_as: &RunAs,
    mode: LaunchMode,
    net: Option<OwnedFd>,
) -> Result<Launched, LaunchError> {
    let log_path = dir.qemu_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| FileError::new("open", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| FileError::new("open", &log_path, e))?;
    let _ = std::fs::remove_file(dir.qmp());
    let shares = ShareDirs::open(rec, dir)?;
    let net_fd = net.as_ref().map(|fd| fd.as_raw_fd());
    let args = qemu_args(rec, dir, run_as, mode, Some(&shares), net_fd);
    tracing::debug!(vm = %rec.name, ?args, "starting QEMU");
    let mut cmd = Command::new(&tools.qemu);
    crate::process::detach(&mut cmd);
    // The share descriptors and QEMU's end of the link to passt stay open
    // in QEMU under the same numbers (and in no other child).
    for fd in shares.raw_fds().into_iter().chain(net_fd) {
        crate::process::inherit_fd(&mut cmd, fd);
    }
    let spawned = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn();
    // QEMU holds its own copies now (or failed to start): passt must see
    // the link close when QEMU ends, so vgrid keeps none.
    drop(shares);
    drop(net);
    let mut child = spawned.map_err(|source| ToolError::Spawn {
        program: tools.qemu.clone(),
        source,
    })?;
    fsutil::write_atomic(
        &dir.qemu_pid(),
        format!("{}\n", child.id()).as_bytes(),
        0o600,
    )?;

    // QEMU creates the QMP socket while it starts up; until then, or if it
    // exits, there is nothing to connect to.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::QemuExited {
                name: rec.name.clone(),
                status,
                log_tail: fsutil::tail_lines(&log_path, 10),
            });
        }
        if dir.qmp().exists() {
            match Qmp::connect(dir.qmp(), Duration::from_secs(30)).await {
                Ok(qmp) => return Ok(Launched { child, qmp }),
                Err(e) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LaunchError::Qmp {
                        name: rec.name.clone(),
                        source: e,
                    });
                }
                Err(_) => {}
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Timeout {
                what: format!("QEMU of VM `{}` to open its QMP socket", rec.name),
                after: Duration::from_secs(120),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;
    use crate::record::{BootImage, Intent, MountRecord, PortMap, RECORD_FORMAT};
    use std::path::PathBuf;

    pub(crate) fn sample_record() -> VmRecord {
        VmRecord {
            format: RECORD_FORMAT,
            id: "0123456789abcdef".into(),
            name: "job-1".into(),
            created_unix: 0,
            image: BootImage {
                name: "tiny".into(),
                kind: ImageKind::Stock,
                kernel: Some("/img/vmlinuz".into()),
                initrd: Some("/img/initrd.img".into()),
                append: String::new(),
                disk: "/img/disk.qcow2".into(),
                disk_format: "qcow2".into(),
                agent: true,
                checksum: "abc".into(),
            },
            cpus: 2,
            memory_mb: 256,
            disk_bytes: 1 << 30,
            accel: Accel::Tcg,
            accel_reason: String::new(),
            cpu_model: "max".into(),
            machine: "pc-q35-7.2".into(),
            mac: "52:54:00:01:02:03".into(),
            mounts: vec![MountRecord {
                tag: "data0".into(),
                host_path: PathBuf::from("/srv/data,evil=on"),
                guest_path: "/data".into(),
                readonly: true,
            }],
            staging_tag: None,
            publish: vec![PortMap {
                host: 8080,
                guest: 80,
            }],
            network: true,
            context: None,
            disks: vec!["/img/disk.qcow2".into(), "/vms/job-1/disk-0.qcow2".into()],
            checkpointed_layers: 0,
            last_checkpoint: None,
            restored_from: None,
            run_as: None,
            qemu_version: "7.2.0".into(),
            intent: Intent::Run,
            owner: None,
        }
    }

    fn args_text(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn qemu_opens_share_roots_through_descriptors_vgrid_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repos/alice/data");
        std::fs::create_dir_all(&repo).unwrap();
        let dir = VmDir::new(tmp.path().join("vms/job-1"));
        std::fs::create_dir_all(dir.stage()).unwrap();
        let mut rec = sample_record();
        rec.mounts[0].host_path = std::fs::canonicalize(&repo).unwrap();
        rec.staging_tag = Some("stage".into());
        let shares = ShareDirs::open(&rec, &dir).unwrap();
        let args = args_text(&qemu_args(
            &rec,
            &dir,
            &RunAs::CurrentUser,
            LaunchMode::default(),
            Some(&shares),
            Some(9),
        ));
        let paths: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("local,id=fs"))
            .collect();
        assert_eq!(paths.len(), 2);
        for (fsdev, want) in paths.iter().zip([repo.clone(), dir.stage()]) {
            let at = fsdev.find("path=").unwrap() + 5;
            let path = fsdev[at..].split(',').next().unwrap();
            assert!(path.starts_with("/proc/self/fd/"), "{fsdev}");
            assert_eq!(
                std::fs::canonicalize(path).unwrap(),
                std::fs::canonicalize(want).unwrap()
            );
        }
        // A directory swapped for a link since it was resolved.
        std::fs::rename(&repo, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/etc", &repo).unwrap();
        assert!(matches!(
            ShareDirs::open(&rec, &dir),
            Err(LaunchError::Share(crate::error::FsError::Unsafe { .. }))
        ));
    }

    #[test]
    fn commas_in_paths_cannot_inject_options() {
        let rec = sample_record();
        let dir = VmDir::new("/data/vms/job-1,x");
        let args = args_text(&qemu_args(
            &rec,
            &dir,
            &RunAs::CurrentUser,
            LaunchMode::default(),
            None,
            Some(9),
        ));
        let fsdev = args.iter().find(|a| a.starts_with("local,id=fs0")).unwrap();
        assert!(fsdev.contains("path=/srv/data,,evil=on"), "{fsdev}");
        assert!(fsdev.ends_with(",readonly=on"));
        let qmp = args
            .iter()
            .find(|a| a.starts_with("socket,id=qmp"))
            .unwrap();
        assert!(qmp.ends_with("path=/data/vms/job-1,,x/qmp.sock"), "{qmp}");
    }

    #[test]
    fn the_disk_chain_has_explicit_backing_links() {
        let mut rec = sample_record();
        rec.disks.insert(1, "/ckpt/a/disk-0.qcow2".into());
        let dir = VmDir::new("/data/vms/job-1");
        let args = qemu_args(
            &rec,
            &dir,
            &RunAs::CurrentUser,
            LaunchMode::default(),
            None,
            Some(9),
        );
        let nodes: Vec<serde_json::Value> = args
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1].to_string_lossy()).unwrap())
            .collect();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0]["backing"], serde_json::Value::Null);
        assert_eq!(nodes[0]["read-only"], true);
        assert_eq!(nodes[1]["backing"], "disk0");
        assert_eq!(nodes[2]["backing"], "disk1");
        assert_eq!(nodes[2]["read-only"], false);
        let text = args_text(&args);
        assert!(text.iter().any(|a| a.contains("\"drive\":\"disk2\"")));
    }

    #[test]
    fn privileges_and_modes() {
        let rec = sample_record();
        let dir = VmDir::new("/data/vms/job-1");
        let user = RunAs::User {
            name: "vgrid-vm".into(),
            uid: 999,
            gid: 999,
        };
        let text = args_text(&qemu_args(
            &rec,
            &dir,
            &user,
            LaunchMode { incoming: true },
            None,
            Some(9),
        ));
        let runas = text.iter().position(|a| a == "-runas").unwrap();
        assert_eq!(text[runas + 1], "vgrid-vm");
        assert!(text.iter().any(|a| a.starts_with("on,obsolete=deny")));
        assert!(text.ends_with(&["-incoming".to_string(), "defer".to_string()]));
        let plain = args_text(&qemu_args(
            &rec,
            &dir,
            &RunAs::CurrentUser,
            LaunchMode::default(),
            None,
            None,
        ));
        assert!(!plain.iter().any(|a| a == "-runas" || a == "-incoming"));
        // The network is a descriptor from vgrid, never a path QEMU would
        // open after dropping to the VM user; no descriptor, no card.
        assert!(text.contains(&"stream,id=net0,server=off,addr.type=fd,addr.str=9".to_string()));
        assert!(!text.iter().any(|a| a.contains("passt")));
        assert!(!plain.iter().any(|a| a == "-netdev"));
        assert!(plain.iter().any(|a| a.contains("elevateprivileges=deny")));
        // The stock image boots its kernel and gets the job context.
        assert!(plain.iter().any(|a| a == "-kernel"));
        assert!(
            plain
                .iter()
                .any(|a| a.starts_with("name=opt/org.vgrid/context,file="))
        );
    }
}
