//! The system calls under the topology: entering a host's namespaces in a
//! forked child, finding the processes of a network namespace, and who
//! owns a leftover.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Whether this process runs as root (namespaces, mounts and links need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// When `pid` started, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`): with the pid, it names a process for good, even
/// after the pid is reused. `None` when there is no such process or it has
/// ended (a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything:
    // the fields that follow are counted from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (the state): field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

/// The identity of a namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`):
/// the device and inode of the nsfs inode the link leads to.
pub fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Every live process whose network namespace is `ns` (what `ip netns
/// pids` does, without running a program). Processes that have ended have
/// no namespaces any more and are not listed.
pub fn pids_in_netns(ns: (u64, u64)) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            ns_identity(&Path::new("/proc").join(pid.to_string()).join("ns/net")) == Some(ns)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// SIGKILL to one process; one that is already gone is not an error.
pub fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a positive pid signals only that process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// SIGKILL to a process group.
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

fn path_c(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

fn open_c(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = path_c(path)?;
    // SAFETY: `c` is a NUL-terminated path; the descriptor returned is
    // owned by nobody else.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a child needs to enter a host: the host's network namespace, and
/// a mount namespace of its own in which `hide` (the directory under which
/// every host's data directory and the shared test state lie) is an empty,
/// read-only tmpfs with only the host's own directory bound back at its
/// usual path.
///
/// The namespace descriptor must stay open until the command has been
/// spawned: keep this value alive across `spawn`.
pub struct Entry {
    netns: OwnedFd,
    hide: CString,
    /// The directories to create in the tmpfs, parents first, down to the
    /// host's directory (`target`).
    mkdirs: Vec<CString>,
    target: CString,
    cwd: CString,
}

impl Entry {
    pub fn new(netns: &Path, hide: &Path, own_dir: &Path, cwd: &Path) -> io::Result<Entry> {
        let rel = own_dir.strip_prefix(hide).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not under {}", own_dir.display(), hide.display()),
            )
        })?;
        let mut mkdirs = Vec::new();
        let mut at = hide.to_path_buf();
        for part in rel.components() {
            at.push(part);
            mkdirs.push(path_c(&at)?);
        }
        Ok(Entry {
            netns: open_c(netns, libc::O_RDONLY)?,
            hide: path_c(hide)?,
            mkdirs,
            target: path_c(own_dir)?,
            cwd: path_c(cwd)?,
        })
    }

    /// Makes `cmd` enter the host before it runs its program.
    pub fn install(&self, cmd: &mut Command) {
        let netns: RawFd = self.netns.as_raw_fd();
        let hide = self.hide.clone();
        let mkdirs = self.mkdirs.clone();
        let target = self.target.clone();
        let cwd = self.cwd.clone();
        // SAFETY: the closure runs in the forked child before exec. It only
        // makes system calls (setns, unshare, mount, mkdir, chdir), which
        // are async-signal-safe, on data prepared before the fork; it
        // allocates nothing (`last_os_error` does not allocate). The
        // namespace descriptor is open in the child because `self` outlives
        // the spawn; it is close-on-exec, so the program does not keep it.
        unsafe {
            cmd.pre_exec(move || enter(netns, &hide, &mkdirs, &target, &cwd));
        }
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child: see [`Entry`].
fn enter(
    netns: RawFd,
    hide: &CString,
    mkdirs: &[CString],
    target: &CString,
    cwd: &CString,
) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY (every call below): the pointers are NUL-terminated strings
    // that live until the calls return, or null where the call allows it.
    unsafe {
        check(libc::setns(netns, libc::CLONE_NEWNET))?;
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Nothing mounted here leaks to the machine, nor back.
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // A sysfs of the host's network namespace over /sys, as `ip netns
        // exec` does, so that /sys/class/net shows the host's interfaces.
        // Only a view: where the kernel refuses, the machine's stays.
        let _ = libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        );
        // The host's directory, held open (in this mount namespace: a bind
        // takes its source from the caller's namespace only) to be bound
        // back once the tmpfs hides its path.
        let own = libc::open(
            target.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        check(own)?;
        let mut source = [0u8; 32];
        fd_path(own, &mut source);
        check(libc::mount(
            c"vgrid-host".as_ptr(),
            hide.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0700,size=64k".as_ptr().cast(),
        ))?;
        for dir in mkdirs {
            check(libc::mkdir(dir.as_ptr(), 0o700))?;
        }
        check(libc::mount(
            source.as_ptr().cast(),
            target.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // Read-only: a host that writes beside its own directory fails
        // loudly instead of writing where no other host would see it.
        check(libc::mount(
            none,
            hide.as_ptr(),
            none,
            libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ))?;
        libc::close(own);
        check(libc::chdir(cwd.as_ptr()))?;
    }
    Ok(())
}

/// Writes `/proc/self/fd/<fd>` and a NUL into `buf`, without allocating
/// (it runs between fork and exec).
fn fd_path(fd: RawFd, buf: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
}

#[cfg(test)]
mod tests {
    #[test]
    fn fd_paths_are_written_in_place() {
        for (fd, text) in [(0, "0"), (7, "7"), (12, "12"), (i32::MAX, "2147483647")] {
            let mut buf = [0xffu8; 32];
            super::fd_path(fd, &mut buf);
            let c = std::ffi::CStr::from_bytes_until_nul(&buf).expect("a NUL");
            assert_eq!(c.to_str().expect("ascii"), format!("/proc/self/fd/{text}"));
        }
    }
}
