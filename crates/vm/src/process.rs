//! Processes vgrid started and later finds again by pid file: QEMU and
//! passt. A pid alone may be reused by an unrelated process, so a process
//! counts as ours only when its command line names our VM directory.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::process::{Pid, Signal};

/// Reads a pid file (`None` when absent or not a pid).
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process whose command line
/// contains `marker`.
pub fn alive(pid: i32, marker: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself
    // contain spaces or parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let marker = marker.as_os_str().as_encoded_bytes();
    !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

pub use rustix::process::Signal as Sig;

/// Makes `cmd` start its program in a new session: no controlling
/// terminal, its own process group, so neither a terminal's hang-up or
/// Ctrl-C nor the exit of vgrid reaches it. The program also gets the
/// file creation mask 077: what QEMU creates (its QMP and control sockets)
/// is vgrid's alone, whatever the invoking shell's mask.
pub fn detach(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2) and umask(2), which are async-signal-safe and
    // allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
            rustix::process::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        })
    }
}

/// `fd` under a number above standard input, output and error (where it
/// can land when vgrid runs with one of them closed): a child's standard
/// streams are set up before it would inherit it, and would replace it.
pub fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// Makes the program `cmd` starts inherit `fd` under the same number.
/// Descriptors vgrid opens are close-on-exec; the flag is cleared in the
/// forked child only, so no other program vgrid starts inherits it. The
/// caller keeps `fd` open until `spawn` returns; it must not be 0, 1 or 2
/// (see [`above_stdio`]).
pub fn inherit_fd(cmd: &mut std::process::Command, fd: RawFd) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl(2), which is async-signal-safe and allocates nothing;
    // `fd` is open in the child because the caller keeps it open in the
    // parent until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let fd = BorrowedFd::borrow_raw(fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).map_err(std::io::Error::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn liveness_needs_the_marker_and_ignores_zombies() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker-arg");
        std::fs::write(&marker, b"").unwrap();
        struct Guard(std::process::Child);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Guard(Command::new("tail").arg("-f").arg(&marker).spawn().unwrap());
        let pid = child.0.id() as i32;
        // The new program may take a moment to replace the forked image.
        let mut seen = false;
        for _ in 0..500 {
            if alive(pid, &marker) {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(seen);
        assert!(!alive(pid, Path::new("/some/other/vm")));
        signal(pid, Signal::KILL);
        // Not yet reaped: a zombie does not count as alive.
        for _ in 0..500 {
            if !alive(pid, &marker) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid, &marker));
        drop(child);

        let pid_file = dir.path().join("x.pid");
        std::fs::write(&pid_file, "1234\n").unwrap();
        assert_eq!(read_pid(&pid_file), Some(1234));
        std::fs::write(&pid_file, "junk").unwrap();
        assert_eq!(read_pid(&pid_file), None);
    }

    #[test]
    fn a_descriptor_above_the_standard_streams_stays_where_it_is() {
        // (One on 0, 1 or 2 cannot be made here without closing the test
        // process's own standard streams.)
        let (_read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let number = write.as_raw_fd();
        assert!(number > 2);
        assert_eq!(above_stdio(write).unwrap().as_raw_fd(), number);
    }

    #[test]
    fn only_the_chosen_child_inherits_a_descriptor() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let run = |inherit: bool| {
            let (read_end, write_end) =
                rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
            let fd = write_end.as_raw_fd();
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("echo ok >&{fd}"));
            cmd.stderr(std::process::Stdio::null());
            if inherit {
                inherit_fd(&mut cmd, fd);
            }
            let status = cmd.status().unwrap();
            drop(write_end);
            let mut got = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut got)
                .unwrap();
            (status.success(), got)
        };
        assert_eq!(run(true), (true, "ok\n".to_string()));
        // Without it the descriptor is closed at exec: the shell cannot
        // write to it.
        assert_eq!(run(false), (false, String::new()));
    }
}
