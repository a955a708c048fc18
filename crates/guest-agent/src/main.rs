//! The guest agent: PID 1 of the stock vgrid guest.
//!
//! It mounts the basic file systems, loads the kernel modules listed by the
//! image builder, reads the job context from fw_cfg, prepares the guest
//! (host name, scratch disk, network, user, data repositories, staged
//! inputs), runs the command while streaming its output to the host over
//! the `org.vgrid.out` virtio-serial port, stages outputs out, and powers
//! the VM off. The protocol is `vgrid-guest-proto`.
//!
//! With `keep` in the context the VM stays up after the command: the agent
//! runs the host's `Run` requests one after the other (the persistent and
//! save-restore VM modes) until the host sends `Stop`.
//!
//! It never exits (PID 1 exiting panics the kernel): every path, including
//! errors and panics, ends in a power-off.

mod report;
mod run;
mod setup;
mod staging;
mod sys;

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vgrid_guest_proto::{
    CTL_PORT, ExitStatus, FW_CFG_CONTEXT_PATH, GuestMessage, JobContext, OUT_PORT,
    PROTOCOL_VERSION, RunRequest,
};

use report::{Reporter, console};
use run::{Control, Task};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() {
    if std::process::id() != 1 {
        let arg = std::env::args().nth(1).unwrap_or_default();
        if arg == "--version" {
            println!("vgrid-guest-agent {VERSION} (protocol {PROTOCOL_VERSION})");
            return;
        }
        eprintln!(
            "vgrid-guest-agent {VERSION}: this is the init of a vgrid guest; it runs as PID 1 \
             inside a VM built by `vgrid image build`, not on a host"
        );
        std::process::exit(2);
    }
    // SAFETY: still single-threaded here. The kernel starts init with no
    // PATH, and the agent runs busybox tools (ip, udhcpc) by name.
    unsafe { std::env::set_var("PATH", run::DEFAULT_PATH) };
    std::panic::set_hook(Box::new(|info| console(&format!("panic: {info}"))));
    let reporter = Arc::new(Reporter::console_only());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot(&reporter)));
    if outcome.is_err() {
        reporter.error("the guest agent panicked (see the console log)");
    }
    shutdown()
}

/// Everything from the first mount to the end of the job.
fn boot(reporter: &Arc<Reporter>) {
    if let Err(e) = setup::base_filesystems() {
        console(&format!("cannot mount the basic file systems: {e}"));
        return;
    }
    setup::load_modules(setup::MODULE_LIST, reporter);
    match report::find_port(OUT_PORT, Duration::from_secs(5)) {
        Some(path) => match OpenOptions::new().write(true).open(&path) {
            Ok(file) => reporter.attach(file),
            Err(e) => console(&format!("cannot open {}: {e}", path.display())),
        },
        None => console(&format!(
            "no virtio-serial port named {OUT_PORT}: output goes to the console only"
        )),
    }
    reporter.send(&GuestMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: VERSION.to_string(),
    });
    let control = Arc::new(Control::default());
    if let Some(path) = report::find_port(CTL_PORT, Duration::from_secs(1)) {
        let (c, r) = (Arc::clone(&control), Arc::clone(reporter));
        std::thread::spawn(move || run::listen_control(&path, c, r));
    } else {
        reporter.log(&format!(
            "no virtio-serial port named {CTL_PORT}: the host cannot stop the job gracefully"
        ));
    }

    let ctx = match read_context() {
        Ok(ctx) => ctx,
        Err(msg) => {
            reporter.error(&msg);
            return;
        }
    };
    if let Err(msg) = job(&ctx, &control, reporter) {
        reporter.error(&msg);
    }
}

fn read_context() -> Result<JobContext, String> {
    let bytes = std::fs::read(FW_CFG_CONTEXT_PATH).map_err(|e| {
        format!(
            "no job context at {FW_CFG_CONTEXT_PATH} ({e}): this VM was booted without \
             `-fw_cfg name={},file=context.json`; nothing to run, powering off",
            vgrid_guest_proto::FW_CFG_CONTEXT_NAME
        )
    })?;
    JobContext::from_json(&bytes).map_err(|e| e.to_string())
}

/// Sets the job up, runs it and stages its outputs out; with `keep`, goes
/// on with the host's runs until it is told to stop.
fn job(ctx: &JobContext, control: &Arc<Control>, reporter: &Arc<Reporter>) -> Result<(), String> {
    setup::hostname(&ctx.hostname).map_err(|e| format!("set the host name: {e}"))?;
    setup::scratch_disk(reporter)?;
    if ctx.network {
        if let Err(e) = setup::network(reporter) {
            reporter.error(&format!("network: {e}"));
        }
    }
    if let Some(user) = &ctx.user {
        setup::user(user)?;
    }
    // Mounts first: the working directory may lie inside a data repository.
    setup::data_repositories(&ctx.mounts, reporter)?;
    if ctx.keep {
        serve_runs(ctx, control, reporter);
        return Ok(());
    }
    let workdir = setup::workdir(&ctx.effective_workdir(), ctx.user.as_ref())?;
    let owner = ctx.user.as_ref().map(|u| staging::Owner {
        uid: u.effective_uid(),
        gid: u.effective_gid(),
    });
    if let Some(stage) = &ctx.staging {
        staging::stage_in(stage, Path::new(&workdir), owner, reporter)?;
    }
    if control.stop_requested() {
        return Err("stopped by the host before the command started".into());
    }
    let task = Task {
        argv: &ctx.argv,
        env: &ctx.env,
        user: ctx.user.as_ref(),
        hostname: &ctx.hostname,
        run: None,
    };
    let status = run::run_command(&task, &workdir, control, reporter);
    // The host copies the outputs out of the share as soon as it reads the
    // exit, so they must all be there first; the exit status is reported
    // even when some could not be staged out. Nothing the command started
    // may still run while they are copied.
    if let Some(stage) = &ctx.staging
        && let Err(e) = stage_out_alone(stage, &workdir, reporter)
    {
        reporter.error(&e);
    }
    reporter.send(&GuestMessage::Exited(status));
    Ok(())
}

/// The loop of a VM kept running: the context's command as its first run,
/// then every run the host sends, until a stop. Runs that arrive after the
/// stop are answered as not run.
fn serve_runs(ctx: &JobContext, control: &Arc<Control>, reporter: &Arc<Reporter>) {
    reporter.log("this VM is kept running after its command: it serves runs until stopped");
    let mut next = Some(ctx.first_run());
    while let Some(run) = next {
        one_run(&run, &ctx.hostname, control, reporter);
        next = control.next_run();
    }
    for run in control.take_queued() {
        reporter.send(&GuestMessage::RunExited {
            run: run.id,
            status: ExitStatus {
                code: None,
                signal: None,
            },
            error: Some("the VM is stopping; the run did not start".into()),
        });
    }
}

/// One run in a kept VM: set up, stage in, run, stage out, and report its
/// end last (`RunExited`), with what went wrong around the command.
fn one_run(run: &RunRequest, hostname: &str, control: &Arc<Control>, reporter: &Arc<Reporter>) {
    let none = ExitStatus {
        code: None,
        signal: None,
    };
    let (status, error) = match prepare_run(run, control, reporter) {
        Err(message) => (none, Some(message)),
        Ok(workdir) => {
            let task = Task {
                argv: &run.argv,
                env: &run.env,
                user: run.user.as_ref(),
                hostname,
                run: Some(run.id),
            };
            let status = run::run_command(&task, &workdir, control, reporter);
            // A kept VM's next run must not meet this one's processes
            // either, so they end whether or not there are outputs.
            let error = match &run.staging {
                Some(stage) => stage_out_alone(stage, &workdir, reporter).err(),
                None if !run::end_leftovers(reporter) => {
                    Some("processes left behind by the command could not be ended".into())
                }
                None => None,
            };
            (status, error)
        }
    };
    reporter.send(&GuestMessage::RunExited {
        run: run.id,
        status,
        error,
    });
}

/// Ends every process the command left behind, then stages the outputs
/// out; when some process cannot be ended, stages nothing.
fn stage_out_alone(
    stage: &vgrid_guest_proto::Staging,
    workdir: &str,
    reporter: &Reporter,
) -> Result<(), String> {
    if !run::end_leftovers(reporter) {
        return Err(
            "processes left behind by the command could not be ended; outputs were not staged out"
                .into(),
        );
    }
    staging::stage_out(stage, Path::new(workdir), reporter)
}

/// Checks a run and prepares its user, working directory and inputs;
/// returns the working directory.
fn prepare_run(
    run: &RunRequest,
    control: &Arc<Control>,
    reporter: &Arc<Reporter>,
) -> Result<String, String> {
    run.validate().map_err(|e| format!("run {}: {e}", run.id))?;
    if let Some(user) = &run.user {
        setup::user(user)?;
    }
    let workdir = setup::workdir(&run.effective_workdir(), run.user.as_ref())?;
    if let Some(stage) = &run.staging {
        let owner = run.user.as_ref().map(|u| staging::Owner {
            uid: u.effective_uid(),
            gid: u.effective_gid(),
        });
        staging::stage_in(stage, Path::new(&workdir), owner, reporter)?;
    }
    if control.stop_requested() {
        return Err("stopped by the host before the command started".into());
    }
    Ok(workdir)
}

/// Ends every process, flushes and unmounts the disks, and powers off.
fn shutdown() -> ! {
    let _ = sys::kill(-1, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(50));
    let _ = sys::kill(-1, libc::SIGKILL);
    while let Ok(Some(w)) = sys::wait_any(true) {
        if matches!(w, sys::Waited::NoChildren) {
            break;
        }
    }
    sys::sync();
    unmount_all();
    sys::sync();
    console("powering off");
    let err = sys::power_off();
    console(&format!("power-off refused: {err}; halting"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Unmounts the job's file systems (9p shares, the scratch disk), deepest
/// first, so the disk is clean when the VM stops.
fn unmount_all() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let keep = [
        "/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp",
    ];
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| !keep.contains(t))
        .collect();
    targets.reverse();
    for t in targets {
        if sys::umount(Path::new(t), 0).is_err() {
            let _ = sys::umount(Path::new(t), libc::MNT_DETACH);
        }
    }
}
