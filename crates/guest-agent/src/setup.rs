//! Preparing the guest for the job: file systems, kernel modules, host name,
//! scratch disk, network, user, data repositories.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vgrid_guest_proto::{Mount, SCRATCH_DIR, User};

use crate::report::Reporter;
use crate::sys;

/// The modules to load at boot, in order, written by the image builder.
pub const MODULE_LIST: &str = "/etc/vgrid/modules";

/// The modules to load before the first virtio-9p mount.
pub const MODULE_LIST_9P: &str = "/etc/vgrid/modules-9p";

/// The DHCP client hook shipped in the image.
pub const UDHCPC_SCRIPT: &str = "/etc/vgrid/udhcpc.script";

/// Options of every virtio-9p mount.
const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=262144";

/// Mounts /proc, /sys, /dev and the tmpfs directories PID 1 needs.
pub fn base_filesystems() -> io::Result<()> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
    ] {
        fs::DirBuilder::new().recursive(true).create(dir)?;
        match sys::mount(src, Path::new(dir), fstype, flags, data) {
            Ok(()) => {}
            // The kernel may have mounted devtmpfs already.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("mount {dir}: {e}"))),
        }
    }
    let _ = fs::create_dir_all("/dev/pts");
    let _ = sys::mount(
        "devpts",
        Path::new("/dev/pts"),
        "devpts",
        libc::MS_NOSUID,
        "",
    );
    let _ = fs::create_dir_all("/dev/shm");
    let _ = sys::mount(
        "tmpfs",
        Path::new("/dev/shm"),
        "tmpfs",
        libc::MS_NOSUID,
        "mode=1777",
    );
    Ok(())
}

/// Loads the modules listed in `list_path`, in order; failures are logged,
/// not fatal (a module for absent hardware may refuse to load).
pub fn load_modules(list_path: &str, reporter: &Reporter) {
    let list = match fs::read_to_string(list_path) {
        Ok(list) => list,
        Err(e) => {
            reporter.log(&format!("no module list {list_path}: {e}"));
            return;
        }
    };
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let result = File::open(line).and_then(|f| sys::finit_module(&f));
        match result {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => reporter.log(&format!("module {line}: {e}")),
        }
    }
}

/// Sets the host name and writes /etc/hostname and /etc/hosts.
pub fn hostname(name: &str) -> io::Result<()> {
    sys::sethostname(name)?;
    fs::write("/etc/hostname", format!("{name}\n"))?;
    fs::write(
        "/etc/hosts",
        format!("127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost\n"),
    )
}

/// Mounts the VM's disk at [`SCRATCH_DIR`] and grows its file system to the
/// disk's size. Without a disk, a tmpfs takes its place.
pub fn scratch_disk(reporter: &Reporter) -> Result<(), String> {
    let dir = Path::new(SCRATCH_DIR);
    fs::create_dir_all(dir).map_err(|e| format!("create {SCRATCH_DIR}: {e}"))?;
    let dev = Path::new("/dev/vda");
    if !wait_for(dev, Duration::from_secs(5)) {
        reporter.log("no disk /dev/vda: using a tmpfs for /work");
        return sys::mount("tmpfs", dir, "tmpfs", libc::MS_NOSUID, "mode=0755")
            .map_err(|e| format!("mount tmpfs on {SCRATCH_DIR}: {e}"));
    }
    // `noinit_itable`: do not zero inode tables in the background, which
    // would dirty the overlay (and every checkpoint) for nothing.
    sys::mount("/dev/vda", dir, "ext4", 0, "noinit_itable")
        .map_err(|e| format!("mount /dev/vda (ext4) on {SCRATCH_DIR}: {e}"))?;
    match grow_ext4(dev, dir) {
        Ok(Some((old, new))) => reporter.log(&format!(
            "grew the file system on /dev/vda from {old} to {new} blocks"
        )),
        Ok(None) => {}
        Err(e) => reporter.log(&format!("cannot grow the file system on /dev/vda: {e}")),
    }
    Ok(())
}

/// The block count and block size of an ext2/3/4 super block.
pub fn ext4_geometry(superblock: &[u8]) -> Option<(u64, u64)> {
    if superblock.len() < 0x154 {
        return None;
    }
    let u32_at = |o: usize| {
        u32::from_le_bytes([
            superblock[o],
            superblock[o + 1],
            superblock[o + 2],
            superblock[o + 3],
        ])
    };
    let magic = u16::from_le_bytes([superblock[0x38], superblock[0x39]]);
    if magic != 0xEF53 {
        return None;
    }
    let log_block = u32_at(0x18);
    if log_block > 6 {
        return None;
    }
    let block_size = 1024u64 << log_block;
    let incompat = u32_at(0x60);
    let mut blocks = u64::from(u32_at(0x04));
    if incompat & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    Some((blocks, block_size))
}

fn grow_ext4(dev: &Path, mount_dir: &Path) -> io::Result<Option<(u64, u64)>> {
    let mut device = File::open(dev)?;
    let dev_bytes = sys::block_device_size(&device)?;
    let mut sb = vec![0u8; 1024];
    device.seek(SeekFrom::Start(1024))?;
    device.read_exact(&mut sb)?;
    let (blocks, block_size) = ext4_geometry(&sb)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an ext4 super block"))?;
    let wanted = dev_bytes / block_size;
    if wanted <= blocks {
        return Ok(None);
    }
    sys::ext4_resize(&File::open(mount_dir)?, wanted)?;
    Ok(Some((blocks, wanted)))
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !path.exists() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Brings up the loopback and the first Ethernet interface with DHCP.
pub fn network(reporter: &Reporter) -> Result<(), String> {
    run_quiet("ip", &["link", "set", "lo", "up"])?;
    let iface = wait_first_ethernet(Duration::from_secs(5))
        .ok_or_else(|| "no network interface (was the VM given a NIC?)".to_string())?;
    run_quiet("ip", &["link", "set", &iface, "up"])?;
    // -n: give up when no lease is offered; -q: exit once bound;
    // -f: stay in the foreground so we can wait for it.
    let status = Command::new("udhcpc")
        .args([
            "-i",
            &iface,
            "-f",
            "-q",
            "-n",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            UDHCPC_SCRIPT,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run udhcpc: {e}"))?;
    if !status.success() {
        return Err(format!("udhcpc on {iface} got no lease ({status})"));
    }
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &iface])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(3)
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    reporter.log(&format!("network: {iface} has {addr}"));
    Ok(())
}

fn wait_first_ethernet(timeout: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/net") {
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect();
            names.sort();
            if let Some(first) = names.into_iter().next() {
                return Some(first);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_quiet(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates the user's passwd and group entries and home directory. A user
/// already in /etc/passwd (an earlier run of a kept VM) is left as is.
pub fn user(user: &User) -> Result<(), String> {
    let uid = user.effective_uid();
    let gid = user.effective_gid();
    let home = user.home();
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if user.name != "root" && !has_entry(&passwd, &user.name) {
        append_line(
            "/etc/passwd",
            &format!("{}:x:{uid}:{gid}:{}:{home}:/bin/sh", user.name, user.name),
        )?;
        append_line("/etc/group", &format!("{}:x:{gid}:", user.name))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&home)
        .map_err(|e| format!("create home {home}: {e}"))?;
    sys::lchown(Path::new(&home), uid, gid).map_err(|e| format!("chown {home}: {e}"))?;
    Ok(())
}

/// Whether a passwd or group text has an entry named `name`.
fn has_entry(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.split(':').next().is_some_and(|n| n == name))
}

fn append_line(path: &str, line: &str) -> Result<(), String> {
    let mut text = fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    fs::write(path, text).map_err(|e| format!("write {path}: {e}"))
}

/// Creates the working directory `dir` when missing, owned by the
/// command's user; returns it.
pub fn workdir(dir: &str, user: Option<&User>) -> Result<String, String> {
    let dir = dir.to_string();
    if !Path::new(&dir).is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| format!("create the working directory {dir}: {e}"))?;
        if let Some(user) = user {
            sys::lchown(Path::new(&dir), user.effective_uid(), user.effective_gid())
                .map_err(|e| format!("chown {dir}: {e}"))?;
        }
    }
    Ok(dir)
}

/// Mounts one virtio-9p share (loading the 9p modules the first time).
pub fn mount_9p(tag: &str, dir: &Path, readonly: bool, reporter: &Reporter) -> Result<(), String> {
    static NINEP_LOADED: std::sync::Once = std::sync::Once::new();
    NINEP_LOADED.call_once(|| load_modules(MODULE_LIST_9P, reporter));
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let flags = if readonly { libc::MS_RDONLY } else { 0 };
    sys::mount(tag, dir, "9p", flags, NINEP_OPTIONS)
        .map_err(|e| format!("mount the 9p share `{tag}` on {}: {e}", dir.display()))
}

/// Mounts the job's data repositories.
pub fn data_repositories(mounts: &[Mount], reporter: &Reporter) -> Result<(), String> {
    for m in mounts {
        mount_9p(&m.tag, Path::new(&m.guest_path), m.readonly, reporter)?;
        let mode = if m.readonly {
            "read-only"
        } else {
            "read-write"
        };
        reporter.log(&format!(
            "mounted data repository `{}` on {} ({mode})",
            m.tag, m.guest_path
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_entries_are_found_by_exact_name() {
        let text = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/work/home/alice:/bin/sh\n";
        assert!(has_entry(text, "alice"));
        assert!(has_entry(text, "root"));
        assert!(!has_entry(text, "ali"));
        assert!(!has_entry(text, "bob"));
        assert!(!has_entry("", "alice"));
    }

    #[test]
    fn ext4_geometry_reads_block_count_and_size() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        sb[0x04..0x08].copy_from_slice(&262_144u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_geometry(&sb), Some((262_144, 4096)));
        // 64-bit feature: the high word counts.
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_geometry(&sb), Some(((1 << 32) + 262_144, 4096)));
        sb[0x38] = 0;
        assert_eq!(ext4_geometry(&sb), None);
        assert_eq!(ext4_geometry(&[0u8; 10]), None);
    }
}
