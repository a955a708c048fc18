//! The VM-modes experiment (GridWay, seed 002, section 6): the same `n`
//! short tasks through `vgrid serve` in each VM mode (`persistent`,
//! `save-restore`, `stop-start`), on a node that runs one task at a time;
//! the system throughput P(n) = n / T(n), where T(n) is the time from the
//! first submission to the n-th task's end (server time stamps from the
//! jobs' histories). A run of the same task straight on the host (no VM, no
//! vgrid) gives the no-virtualization reference, as the paper's Test1.
//!
//! ```sh
//! cargo build --release -p vgrid
//! cargo run --release -p vgrid-agent --example vm_modes -- \
//!     --vgrid target/release/vgrid --tasks 20 --repeat 3 --out docs/experiments/vm-modes
//! ```
//!
//! Every job is checked: it must end with status 0, print the same digest
//! as the host, and its history must say how its VM came (booted, reused
//! running VM, restored saved VM); the counts are reported. Writes
//! `OUT/results.csv` (one line per task end), `OUT/throughput.{png,svg}`
//! and `OUT/time.{png,svg}`, and prints the tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vgrid_client::Client;
use vgrid_model::JobState;
use vgrid_sim::plot::{Chart, Line, write_chart};

/// The task: hash 4 MiB of zeros (CPU work), print the digest's start and
/// the task's own duration as the guest's uptime clock saw it.
const TASK: &str = "a=$(cut -d' ' -f1 /proc/uptime); \
    head -c 4194304 /dev/zero | sha256sum | cut -c1-16; \
    b=$(cut -d' ' -f1 /proc/uptime); echo \"in-guest $a $b\"";

const MODES: [&str; 3] = ["persistent", "save-restore", "stop-start"];

struct Args {
    vgrid: PathBuf,
    tasks: usize,
    repeat: usize,
    out: PathBuf,
    modes: Vec<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        vgrid: PathBuf::new(),
        tasks: 20,
        repeat: 1,
        out: PathBuf::from("docs/experiments/vm-modes"),
        modes: MODES.iter().map(|m| m.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--vgrid" => a.vgrid = PathBuf::from(value()?),
            "--tasks" => a.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--repeat" => a.repeat = value()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--out" => a.out = PathBuf::from(value()?),
            "--modes" => {
                a.modes = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = a.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
                    return Err(format!("--modes: `{bad}` is not one of {MODES:?}"));
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.vgrid.as_os_str().is_empty() {
        return Err("--vgrid PATH (the vgrid binary) is required".into());
    }
    if a.tasks == 0 || a.repeat == 0 {
        return Err("--tasks and --repeat must be at least 1".into());
    }
    Ok(a)
}

/// One mode's run: the end times of its tasks and what the jobs said.
struct ModeRun {
    mode: String,
    /// Seconds from the first submission to each task's end, ascending.
    ends: Vec<f64>,
    /// How the jobs' VMs came, counted by history text.
    starts: BTreeMap<String, usize>,
    /// Per job: placed -> command running, and running -> ended (seconds).
    start_s: Vec<f64>,
    run_s: Vec<f64>,
    /// The command's own time inside the guest (uptime clock).
    guest_s: Vec<f64>,
}

/// `vgrid serve` for one run; SIGKILLed with its VMs when dropped.
struct Serve {
    child: Child,
    data: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Ok(vms) = std::fs::read_dir(self.data.join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            for file in ["qemu.pid", "passt.pid"] {
                if let Ok(pid) = std::fs::read_to_string(vm.path().join(file)) {
                    let _ = Command::new("kill")
                        .args(["-KILL", pid.trim()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn serve(vgrid: &Path, data: &Path) -> Result<(Serve, Client), String> {
    let log = std::fs::File::create(data.join("serve.log")).map_err(|e| e.to_string())?;
    let child = Command::new(vgrid)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--cpus", "1", "--memory-mb", "1024"])
        .env("VGRID_DATA_DIR", data)
        .env("VGRID_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", vgrid.display()))?;
    let server = Serve {
        child,
        data: data.to_path_buf(),
    };
    vgrid_testkit::wait_for("vgrid serve to listen", Duration::from_secs(60), || {
        std::fs::read_to_string(data.join("url")).is_ok_and(|u| u.starts_with("http://"))
    })?;
    let url = std::fs::read_to_string(data.join("url")).map_err(|e| e.to_string())?;
    let token = std::fs::read_to_string(data.join("admin.token")).map_err(|e| e.to_string())?;
    let client = Client::new(url.trim(), token.trim()).map_err(|e| e.to_string())?;
    Ok((server, client))
}

async fn run_mode(
    vgrid: &Path,
    stock: &vgrid_testkit::StockImage,
    mode: &str,
    tasks: usize,
    digest: &str,
) -> Result<ModeRun, String> {
    let dir = vgrid_testkit::data_dir_with_stock_image(stock);
    let (_server, client) = serve(vgrid, dir.path())?;
    let job_file = format!(
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nmode = \"{mode}\"\ncommand = [\"/bin/sh\", \"-c\", {}]\n",
        toml_string(TASK)
    );
    let mut ids = Vec::new();
    for i in 0..tasks {
        let id = client
            .submit(&format!("{mode}-{i}.toml"), &job_file, false)
            .await
            .map_err(|e| format!("submit: {e}"))?;
        ids.push(id);
    }
    let mut run = ModeRun {
        mode: mode.to_string(),
        ends: Vec::new(),
        starts: BTreeMap::new(),
        start_s: Vec::new(),
        run_s: Vec::new(),
        guest_s: Vec::new(),
    };
    let mut first_submit = i64::MAX;
    let mut ends_ms = Vec::new();
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let w = client
                .wait(id, 30_000)
                .await
                .map_err(|e| format!("wait {id}: {e}"))?;
            if w.ended {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not end"));
            }
        }
        let detail = client
            .job(id)
            .await
            .map_err(|e| format!("show {id}: {e}"))?;
        let out = client
            .output(id, 0)
            .await
            .map_err(|e| format!("logs {id}: {e}"))?;
        let text = String::from_utf8_lossy(&out.data).into_owned();
        if detail.job.state != JobState::Done || !text.starts_with(digest) {
            let reasons: Vec<&str> = detail.history.iter().map(|h| h.reason.as_str()).collect();
            return Err(format!(
                "{mode} job {id} ended {:?} with output {text:?} (expected the digest {digest}); history: {reasons:?}",
                detail.job.state
            ));
        }
        let at = |state: JobState| {
            detail
                .history
                .iter()
                .find(|h| h.state == state)
                .map(|h| h.unix_ms)
        };
        let (Some(placed), Some(running), Some(done)) = (
            at(JobState::Staging),
            at(JobState::Running),
            at(JobState::Done),
        ) else {
            return Err(format!("job {id}: incomplete history {:?}", detail.history));
        };
        first_submit = first_submit.min(detail.job.submitted_unix_ms);
        ends_ms.push(done);
        run.start_s.push((running - placed) as f64 / 1000.0);
        run.run_s.push((done - running) as f64 / 1000.0);
        if let Some(g) = guest_seconds(&text) {
            run.guest_s.push(g);
        }
        let how = detail
            .history
            .iter()
            .filter(|h| h.state == JobState::Running)
            .find_map(|h| h.reason.strip_prefix("command running; "))
            .unwrap_or("(not said)")
            .to_string();
        *run.starts.entry(how).or_default() += 1;
    }
    ends_ms.sort_unstable();
    run.ends = ends_ms
        .iter()
        .map(|e| (e - first_submit) as f64 / 1000.0)
        .collect();
    Ok(run)
}

/// `in-guest A B` (uptime seconds) -> B - A.
fn guest_seconds(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with("in-guest "))?;
    let mut f = line.split_whitespace().skip(1).map(str::parse::<f64>);
    let (a, b) = (f.next()?.ok()?, f.next()?.ok()?);
    Some(b - a)
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The task run `tasks` times on the host, one after the other: (T, the
/// digest it printed).
fn host_reference(tasks: usize) -> Result<(Vec<f64>, String), String> {
    let started = Instant::now();
    let mut ends = Vec::new();
    let mut digest = String::new();
    for _ in 0..tasks {
        let out = Command::new("/bin/sh")
            .args(["-c", TASK])
            .output()
            .map_err(|e| format!("cannot run the task on the host: {e}"))?;
        if !out.status.success() {
            return Err(format!("the task failed on the host: {:?}", out.status));
        }
        digest = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        ends.push(started.elapsed().as_secs_f64());
    }
    Ok((ends, digest))
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm_modes: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let a = args()?;
    let stock = vgrid_testkit::stock_image().ok_or("no QEMU or stock image (see above)")?;
    let (host_ends, digest) = host_reference(a.tasks)?;
    eprintln!(
        "host: {} tasks in {:.2} s (digest {digest})",
        a.tasks,
        host_ends.last().copied().unwrap_or(0.0)
    );
    let mut runs: Vec<ModeRun> = Vec::new();
    for rep in 0..a.repeat {
        for mode in a.modes.iter().map(String::as_str) {
            let started = Instant::now();
            let r = run_mode(&a.vgrid, &stock, mode, a.tasks, &digest).await?;
            eprintln!(
                "repeat {}: {mode}: T({}) = {:.1} s (wall {:.1} s), VMs: {:?}",
                rep + 1,
                a.tasks,
                r.ends.last().copied().unwrap_or(0.0),
                started.elapsed().as_secs_f64(),
                r.starts
            );
            runs.push(r);
        }
    }

    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut csv = String::from("repeat,mode,n,t_s,p_per_s\n");
    for (i, r) in runs.iter().enumerate() {
        for (n, t) in r.ends.iter().enumerate() {
            csv.push_str(&format!(
                "{},{},{},{t:.3},{:.5}\n",
                i / a.modes.len() + 1,
                r.mode,
                n + 1,
                (n + 1) as f64 / t
            ));
        }
    }
    for (n, t) in host_ends.iter().enumerate() {
        csv.push_str(&format!(
            "1,host,{},{t:.3},{:.5}\n",
            n + 1,
            (n + 1) as f64 / t
        ));
    }
    let csv_path = a.out.join("results.csv");
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;

    // Mean T(n) over the repeats, per mode.
    let mean_ends = |mode: &str| -> Vec<f64> {
        let of_mode: Vec<&ModeRun> = runs.iter().filter(|r| r.mode == mode).collect();
        (0..a.tasks)
            .map(|n| mean(&of_mode.iter().map(|r| r.ends[n]).collect::<Vec<_>>()))
            .collect()
    };
    let about = format!(
        "modes {}, mean of {} runs, one node",
        a.modes.join(", "),
        a.repeat
    );
    let mut throughput = Chart {
        title: format!(
            "Throughput P(n) = n / T(n), {} short tasks, one node",
            a.tasks
        ),
        subtitle: about.clone(),
        x_label: "tasks completed n".into(),
        y_label: "P(n), tasks per second".into(),
        lines: Vec::new(),
    };
    let mut time = Chart {
        title: "Time to complete n tasks".into(),
        subtitle: about,
        x_label: "tasks completed n".into(),
        y_label: "T(n), seconds".into(),
        lines: Vec::new(),
    };
    for (i, mode) in a.modes.iter().enumerate() {
        let ends = mean_ends(mode);
        throughput.lines.push(Line {
            label: mode.clone(),
            points: ends
                .iter()
                .enumerate()
                .map(|(n, t)| ((n + 1) as f64, (n + 1) as f64 / t))
                .collect(),
            dashed: false,
            color: i,
        });
        time.lines.push(Line {
            label: mode.clone(),
            points: ends
                .iter()
                .enumerate()
                .map(|(n, t)| ((n + 1) as f64, *t))
                .collect(),
            dashed: false,
            color: i,
        });
    }
    write_chart(&throughput, &a.out, "throughput").map_err(|e| e.to_string())?;
    write_chart(&time, &a.out, "time").map_err(|e| e.to_string())?;

    println!(
        "| mode | T({n}) s, mean of {r} | min..max | P({n}) tasks/s | s per task | vs the first mode | VM start (placed to running) s | running to done s | command in guest s | how the VMs came |",
        n = a.tasks,
        r = a.repeat
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let reference = a.modes.first().map_or("persistent", String::as_str);
    let t_reference = mean_ends(reference).last().copied().unwrap_or(1.0);
    for mode in a.modes.iter().map(String::as_str) {
        let of_mode: Vec<&ModeRun> = runs.iter().filter(|r| r.mode == mode).collect();
        let totals: Vec<f64> = of_mode
            .iter()
            .filter_map(|r| r.ends.last().copied())
            .collect();
        let t = mean(&totals);
        let lo = totals.iter().copied().fold(f64::MAX, f64::min);
        let hi = totals.iter().copied().fold(f64::MIN, f64::max);
        let all = |f: fn(&ModeRun) -> &Vec<f64>| {
            mean(
                &of_mode
                    .iter()
                    .flat_map(|r| f(r).iter().copied())
                    .collect::<Vec<_>>(),
            )
        };
        let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &of_mode {
            for (k, v) in &r.starts {
                *starts.entry(k).or_default() += v;
            }
        }
        let starts: Vec<String> = starts.iter().map(|(k, v)| format!("{v}× {k}")).collect();
        println!(
            "| {mode} | {t:.1} | {lo:.1}..{hi:.1} | {:.4} | {:.2} | {:+.0}% | {:.2} | {:.2} | {:.2} | {} |",
            a.tasks as f64 / t,
            t / a.tasks as f64,
            (t / t_reference - 1.0) * 100.0,
            all(|r| &r.start_s),
            all(|r| &r.run_s),
            all(|r| &r.guest_s),
            starts.join(", ")
        );
    }
    let t_host = host_ends.last().copied().unwrap_or(0.0);
    println!(
        "| host, no VM, no vgrid | {t_host:.2} | | {:.3} | {:.3} | | | | | |",
        a.tasks as f64 / t_host,
        t_host / a.tasks as f64
    );
    println!();
    println!("| n | {} |", a.modes.join(" | "));
    println!("|---|{}", "---|".repeat(a.modes.len()));
    let ends: Vec<Vec<f64>> = a.modes.iter().map(|m| mean_ends(m)).collect();
    for n in [1, 2, 5, 10, a.tasks] {
        if n > a.tasks {
            continue;
        }
        let cells: Vec<String> = ends
            .iter()
            .map(|e| format!("{:.4}", n as f64 / e[n - 1]))
            .collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
    eprintln!(
        "wrote {}, throughput.{{png,svg}} and time.{{png,svg}} in {}",
        csv_path.display(),
        a.out.display()
    );
    Ok(())
}
