//! Processes vgrid started and later finds again by pid file: QEMU and
//! passt. A pid alone may be reused by an unrelated process, so a process
//! counts as ours only when its command line names our VM directory.

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
/// Ctrl-C nor the exit of vgrid reaches it.
pub fn detach(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2), which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
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
}
