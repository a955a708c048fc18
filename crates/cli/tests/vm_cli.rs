//! `vgrid vm` end to end through the binary, on real QEMU, with an imported
//! blank disk (the firmware runs; no guest OS is needed to exercise the
//! commands). The stock guest's behaviour is tested in `crates/vm/tests`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn have_qemu() -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and qemu-system-x86_64 is missing: run scripts/install-deps.sh");
        }
        eprintln!("SKIPPED: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
    }
    found
}

/// A data directory with the `blank` image imported; kills its VMs on drop.
/// It is private (0700, like `mktemp -d` makes it): QEMU and passt run as
/// the unprivileged VM user, who cannot enter it, and VMs must work there.
struct Node {
    data: tempfile::TempDir,
}

impl Node {
    fn new(disk: &Path) -> Node {
        use std::os::unix::fs::PermissionsExt;
        let node = Node {
            data: tempfile::Builder::new()
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .unwrap(),
        };
        let out = node.vgrid(&[
            "image".as_ref(),
            "import".as_ref(),
            "blank".as_ref(),
            disk.as_os_str(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        node
    }

    fn vgrid(&self, args: &[&std::ffi::OsStr]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vgrid"))
            .args(args)
            .env("VGRID_DATA_DIR", self.data.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.vgrid(&args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.data.path().join("vms")) else {
            return;
        };
        for e in entries.flatten() {
            for pid_file in ["qemu.pid", "passt.pid"] {
                if let Ok(pid) = std::fs::read_to_string(e.path().join(pid_file)) {
                    let _ = Command::new("kill")
                        .arg("-9")
                        .arg(pid.trim())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn blank_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("blank.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .unwrap()
            .success()
    );
    disk
}

fn state_of(node: &Node, name: &str) -> String {
    let out = node.run(&["vm", "ls", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    vms.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn the_vm_commands_drive_a_real_qemu() {
    if !have_qemu() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let disk = blank_disk(scratch.path());
    let a = Node::new(&disk);
    let b = Node::new(&disk);

    // A networked VM (the default) in a private data directory: QEMU and
    // passt reach each other through descriptors, not a socket path.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.data.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let out = a.run(&[
        "vm",
        "start",
        "fw",
        "--image",
        "blank",
        "--memory-mb",
        "128",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("VM fw started"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(state_of(&a, "fw"), "running");
    // Its passt runs, linked to QEMU by a descriptor.
    let passt = std::fs::read_to_string(a.data.path().join("vms/fw/passt.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", passt.trim())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--fd"), "{cmdline}");
    let table = text(&a.run(&["vm", "ls"]).stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("fw "), "{table}");

    assert_eq!(text(&a.run(&["vm", "pause", "fw"]).stdout).trim(), "paused");
    assert_eq!(state_of(&a, "fw"), "paused");
    assert_eq!(
        text(&a.run(&["vm", "resume", "fw"]).stdout).trim(),
        "running"
    );

    let ck = scratch.path().join("ck");
    let ck_arg = ck.to_str().unwrap();
    let out = a.run(&["vm", "checkpoint", "fw", "--out", ck_arg, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["name"], "fw");
    assert!(ck.join("manifest.json").is_file());

    // Restore on the other node; then a corrupt copy is refused by name.
    let out = b.run(&["vm", "restore", ck_arg, "--name", "fw2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state_of(&b, "fw2"), "running");
    let pack = ck.join("memory.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let out = b.run(&["vm", "restore", ck_arg, "--name", "fw3"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("memory.pack"),
        "{}",
        text(&out.stderr)
    );

    let out = a.run(&["vm", "migrate", "fw", "--to", "fw-moved"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(state_of(&a, "fw-moved"), "running");
    assert_eq!(state_of(&a, "fw"), "");

    assert_eq!(
        text(&a.run(&["vm", "kill", "fw-moved"]).stdout).trim(),
        "stopped"
    );
    // `wait` on a VM that was killed has no exit status to give.
    let out = a.run(&["vm", "wait", "fw-moved"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("stopped"),
        "{}",
        text(&out.stderr)
    );
    assert!(a.run(&["vm", "rm", "fw-moved"]).status.success());
    assert_eq!(state_of(&a, "fw-moved"), "");
}

#[test]
fn bad_requests_get_clear_errors() {
    if !have_qemu() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let disk = blank_disk(scratch.path());
    let a = Node::new(&disk);

    let out = a.run(&["vm", "start", "x", "--image", "blank", "--", "echo", "hi"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no guest agent"),
        "{}",
        text(&out.stderr)
    );

    let out = a.run(&["vm", "start", "x", "--image", "blank", "--publish", "80"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--publish `80`"),
        "{}",
        text(&out.stderr)
    );

    let out = a.run(&["vm", "start", "../x", "--image", "blank"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("VM name"),
        "{}",
        text(&out.stderr)
    );

    let out = a.run(&["vm", "start", "x", "--image", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    let out = a.run(&["vm", "pause", "ghost"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no VM named `ghost`"),
        "{}",
        text(&out.stderr)
    );

    let out = a.run(&[
        "vm",
        "restore",
        scratch.path().to_str().unwrap(),
        "--name",
        "r",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("manifest.json"),
        "{}",
        text(&out.stderr)
    );

    // QEMU missing: the error says how to install it.
    let out = Command::new(env!("CARGO_BIN_EXE_vgrid"))
        .args(["vm", "ls"])
        .env("VGRID_DATA_DIR", a.data.path())
        .env("VGRID_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("apt-get install qemu-system-x86"),
        "{}",
        text(&out.stderr)
    );
    assert!(a.run(&["vm", "ls"]).status.success());
}
