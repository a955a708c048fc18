//! Thin safe wrappers over the few Linux system calls the agent needs that
//! the standard library does not offer.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let source = cstr(source.as_bytes())?;
    let target = cstr(target.as_os_str().as_bytes())?;
    let fstype = cstr(fstype.as_bytes())?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// `umount2(2)`.
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target.as_os_str().as_bytes())?;
    // SAFETY: `target` is a valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// Loads a kernel module from an open file (`finit_module(2)`).
pub fn finit_module(file: &std::fs::File) -> io::Result<()> {
    let params = cstr(b"")?;
    // SAFETY: the fd is open for the duration of the call and `params` is a
    // valid empty string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// Sends `signal` to a process (positive pid) or process group (negative).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::kill(pid, signal) })
}

/// Flushes every file system.
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() }
}

/// Powers the machine off. Returns only when the kernel refuses.
pub fn power_off() -> io::Error {
    // SAFETY: plain syscall; on success it does not return.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}

/// The outcome of one `waitpid`.
pub enum Waited {
    Exited { pid: i32, code: i32 },
    Signaled { pid: i32, signal: i32 },
    NoChildren,
}

/// Waits for any child (`waitpid(-1)`); as PID 1 this also reaps orphans.
/// With `nohang`, returns `None` when no child has changed state.
pub fn wait_any(nohang: bool) -> io::Result<Option<Waited>> {
    let mut status: libc::c_int = 0;
    loop {
        let flags = if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: `status` is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(Some(Waited::NoChildren)),
                _ => return Err(err),
            }
        }
        if pid == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(Waited::Exited {
                pid,
                code: libc::WEXITSTATUS(status),
            }));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(Waited::Signaled {
                pid,
                signal: libc::WTERMSIG(status),
            }));
        }
        // Stopped or continued: keep waiting.
    }
}

/// `chown(2)` without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// The size in bytes of a block device.
pub fn block_device_size(dev: &std::fs::File) -> io::Result<u64> {
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `size`.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// Grows a mounted ext4 file system to `blocks` blocks (EXT4_IOC_RESIZE_FS).
pub fn ext4_resize(mount_dir: &std::fs::File, blocks: u64) -> io::Result<()> {
    // EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64)
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    // SAFETY: the ioctl reads one u64 from the pointer.
    check(unsafe {
        libc::ioctl(
            mount_dir.as_raw_fd(),
            EXT4_IOC_RESIZE_FS,
            &blocks as *const u64,
        )
    })
}

/// Sets the wall clock (`CLOCK_REALTIME`) to `unix_ms` milliseconds since
/// the epoch.
pub fn set_wall_clock(unix_ms: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_ms / 1000) as libc::time_t,
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
}

/// Seconds since boot, from `/proc/uptime`.
pub fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
