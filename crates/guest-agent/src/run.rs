//! Running the command: spawn it as the job's user, stream its output as
//! frames, reap it (and, as PID 1, every orphan), and obey the host's
//! control messages (graceful stop, ping, runs for a VM kept running).

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vgrid_guest_proto::{ExitStatus, FrameDecoder, GuestMessage, HostMessage, RunRequest, User};

use crate::report::Reporter;
use crate::sys;

/// The `PATH` the command starts with (unless the context sets one).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output readers may lag behind the command's exit before the
/// processes still holding its pipes are killed.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How often the control listener looks again while no host is connected
/// to the control port (reads return 0 then).
const CONTROL_POLL: Duration = Duration::from_millis(50);

/// State shared between the main thread and the control listener.
#[derive(Default)]
pub struct Control {
    /// The running command's process group, if any.
    running: Mutex<Option<i32>>,
    stop_requested: AtomicBool,
    /// Runs received and not yet started, in arrival order.
    runs: Mutex<VecDeque<RunRequest>>,
    /// Signalled when a run arrives or a stop is requested.
    wake: Condvar,
}

impl Control {
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Queues a run for the main thread.
    pub fn push_run(&self, run: RunRequest) {
        if let Ok(mut q) = self.runs.lock() {
            q.push_back(run);
            self.wake.notify_all();
        }
    }

    /// The next run, waiting for one; `None` once a stop is requested.
    pub fn next_run(&self) -> Option<RunRequest> {
        let mut q = self.runs.lock().ok()?;
        loop {
            if self.stop_requested() {
                return None;
            }
            if let Some(run) = q.pop_front() {
                return Some(run);
            }
            // The timeout only guards against a missed wake-up.
            q = self.wake.wait_timeout(q, Duration::from_secs(1)).ok()?.0;
        }
    }

    /// Runs queued but never started (the VM is powering off).
    pub fn take_queued(&self) -> Vec<RunRequest> {
        self.runs
            .lock()
            .map(|mut q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// A graceful stop: SIGTERM now, SIGKILL after `grace`.
    pub fn request_stop(self: &Arc<Self>, grace: Duration, reporter: &Reporter) {
        self.stop_requested.store(true, Ordering::SeqCst);
        if let Ok(_q) = self.runs.lock() {
            self.wake.notify_all();
        }
        let Some(pgid) = self.running.lock().ok().and_then(|g| *g) else {
            reporter.log("stop requested before the command started: it will not run");
            return;
        };
        reporter.log(&format!(
            "stop requested: SIGTERM to the command, SIGKILL after {} s",
            grace.as_secs()
        ));
        let _ = sys::kill(-pgid, libc::SIGTERM);
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            if me.running.lock().ok().and_then(|g| *g) == Some(pgid) {
                let _ = sys::kill(-pgid, libc::SIGKILL);
            }
        });
    }

    fn set_running(&self, pgid: Option<i32>) {
        if let Ok(mut g) = self.running.lock() {
            *g = pgid;
        }
    }
}

/// Reads host messages from the control port forever. The host connects
/// only when it has something to say: while it is away, reads return 0 and
/// the listener polls again a little later.
pub fn listen_control(port: &Path, control: Arc<Control>, reporter: Arc<Reporter>) {
    let mut file = match OpenOptions::new().read(true).write(true).open(port) {
        Ok(f) => f,
        Err(e) => {
            reporter.log(&format!(
                "cannot open the control port {}: {e}",
                port.display()
            ));
            return;
        }
    };
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => std::thread::sleep(CONTROL_POLL),
            Ok(n) => {
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => match HostMessage::from_frame(&frame) {
                            Ok(HostMessage::Stop { grace_secs }) => control.request_stop(
                                Duration::from_secs(u64::from(grace_secs)),
                                &reporter,
                            ),
                            Ok(HostMessage::Ping { id }) => {
                                reporter.send(&GuestMessage::Pong { id });
                            }
                            Ok(HostMessage::SetClock { unix_ms }) => {
                                match sys::set_wall_clock(unix_ms) {
                                    Ok(()) => reporter.log(&format!(
                                        "wall clock set to {unix_ms} ms after the epoch"
                                    )),
                                    Err(e) => reporter.error(&format!("cannot set the clock: {e}")),
                                }
                            }
                            Ok(HostMessage::Run(run)) => control.push_run(run),
                            Err(e) => reporter.log(&format!("control port: {e}")),
                        },
                        Ok(None) => break,
                        Err(e) => reporter.log(&format!("control port: {e}")),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                reporter.log(&format!("control port: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// One command to run: the context's, or a run's.
pub struct Task<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub user: Option<&'a User>,
    pub hostname: &'a str,
    /// The run id, for a VM kept running: reported in `RunStarted`.
    pub run: Option<u64>,
}

/// Runs the command to its end and returns how it ended. It reports the
/// start (`Started`, or `RunStarted` for a run) and the output; the caller
/// reports the end. A command that cannot be executed is reported and ends
/// with code 127.
pub fn run_command(
    task: &Task,
    workdir: &str,
    control: &Arc<Control>,
    reporter: &Arc<Reporter>,
) -> ExitStatus {
    let Some((program, args)) = task.argv.split_first() else {
        reporter.error("the command is empty");
        return ExitStatus {
            code: Some(127),
            signal: None,
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOSTNAME", task.hostname)
        .env("SHELL", "/bin/sh")
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match task.user {
        Some(user) => {
            cmd.env("HOME", user.home())
                .env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .uid(user.effective_uid())
                .gid(user.effective_gid());
        }
        None => {
            cmd.env("HOME", "/root")
                .env("USER", "root")
                .env("LOGNAME", "root");
        }
    }
    cmd.envs(task.env);

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot execute `{program}`: {e}");
            match task.run {
                // A run's end says it all; an error would fail the run
                // instead of giving it status 127 like a fresh VM's.
                Some(_) => reporter.log(&message),
                None => reporter.error(&message),
            }
            return ExitStatus {
                code: Some(127),
                signal: None,
            };
        }
    };
    let pid = child.id() as i32;
    control.set_running(Some(pid));
    reporter.send(&match task.run {
        Some(run) => GuestMessage::RunStarted {
            run,
            pid: pid as u32,
        },
        None => GuestMessage::Started { pid: pid as u32 },
    });
    reporter.log(&format!(
        "command started as pid {pid} at {:.3} s after boot",
        sys::uptime().unwrap_or(0.0)
    ));
    if control.stop_requested() {
        let _ = sys::kill(-pid, libc::SIGKILL);
    }

    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_pump(out, true, Arc::clone(reporter), done_tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_pump(
            err,
            false,
            Arc::clone(reporter),
            done_tx.clone(),
        ));
    }
    drop(done_tx);

    let status = wait_for(pid, reporter);
    control.set_running(None);

    // Output still buffered in the pipes is read before the exit status is
    // sent. Processes the command left behind that keep its pipes open are
    // killed after a short drain.
    let mut finished = 0;
    while finished < readers.len() {
        match done_rx.recv_timeout(OUTPUT_DRAIN) {
            Ok(()) => finished += 1,
            Err(_) => {
                reporter
                    .log("processes left behind by the command hold its output open: killing them");
                let _ = sys::kill(-1, libc::SIGKILL);
                break;
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    reporter.log(&format!(
        "command exited: {}",
        match (status.code, status.signal) {
            (Some(c), _) => format!("code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown".into(),
        }
    ));
    status
}

/// How long the processes the command left behind get to die after
/// SIGKILL (one stuck in the kernel, on 9p say, takes a while).
const LEFTOVERS_DEADLINE: Duration = Duration::from_secs(10);

/// Ends every process but this one (PID 1): SIGKILL to all (`kill(-1)`),
/// then reaps them until none is left. Called after the command and before
/// its outputs are staged out, so that nothing the job started (a
/// background process that escaped into its own session, say) can change
/// the staging share while the agent and the host read it. The agent needs
/// no other process (udhcpc runs in the foreground and has exited).
/// Returns false, having said why, when some process outlived the deadline.
pub fn end_leftovers(reporter: &Reporter) -> bool {
    // ESRCH: there was nothing left to signal.
    let _ = sys::kill(-1, libc::SIGKILL);
    let deadline = std::time::Instant::now() + LEFTOVERS_DEADLINE;
    loop {
        match sys::wait_any(true) {
            Ok(Some(sys::Waited::NoChildren)) => return true,
            Ok(Some(_)) => {}
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                reporter.log(&format!(
                    "processes left behind by the command are still alive {} s after SIGKILL",
                    LEFTOVERS_DEADLINE.as_secs()
                ));
                return false;
            }
            Err(e) => {
                reporter.log(&format!("waitpid: {e}"));
                return false;
            }
        }
    }
}

fn spawn_pump(
    mut src: impl Read + Send + 'static,
    stdout: bool,
    reporter: Arc<Reporter>,
    done: mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    reporter.send(&if stdout {
                        GuestMessage::Stdout(chunk)
                    } else {
                        GuestMessage::Stderr(chunk)
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    })
}

/// Waits for `pid`, reaping any other child on the way (PID 1 inherits
/// every orphan).
fn wait_for(pid: i32, reporter: &Reporter) -> ExitStatus {
    loop {
        match sys::wait_any(false) {
            Ok(Some(sys::Waited::Exited { pid: p, code })) if p == pid => {
                return ExitStatus {
                    code: Some(code),
                    signal: None,
                };
            }
            Ok(Some(sys::Waited::Signaled { pid: p, signal })) if p == pid => {
                return ExitStatus {
                    code: None,
                    signal: Some(signal),
                };
            }
            Ok(Some(sys::Waited::NoChildren)) => {
                reporter.error("the command vanished without an exit status");
                return ExitStatus {
                    code: None,
                    signal: None,
                };
            }
            Ok(_) => {}
            Err(e) => {
                reporter.error(&format!("waitpid: {e}"));
                return ExitStatus {
                    code: None,
                    signal: None,
                };
            }
        }
    }
}
