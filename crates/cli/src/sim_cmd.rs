//! `vgrid sim`: replay a trace through the scheduling core.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use vgrid_core::{BrokerConfig, CostModel, Policy, PreemptionMode, ReclaimPolicy};
use vgrid_sim::config::{CheckpointJobs, DomainInput, Failures, SimConfig, Trade};
use vgrid_sim::driver::{StreamRunError, StreamedRun};
use vgrid_sim::synthetic::{Shape, SyntheticSpec, generate};
use vgrid_swf::{
    JobStream, LoadError, MAX_MACHINE_PROCS, MachineSource, Mode, Opened, Workload, WorkloadError,
};

const CONVENTIONS: &str = "\
Conventions (Standard Workload Format, see docs/sim.md):
  - every SWF processor is a node with one core; a job needs `processors` one-core VMs;
  - processors = field 8 (requested) if > 0, else field 5 (allocated);
  - estimate = field 9 (requested time) if > 0, else the run time; the
    scheduler only sees the estimate, the simulator runs the real run time;
  - jobs with run time < 0, submit time < 0, processors < 1 or processors
    greater than the machine are dropped and counted;
  - arrivals are ordered by submit time, then job number; at equal times
    completions are processed before arrivals;
  - machine size: --procs, else the header's MaxProcs, else MaxNodes, else
    the largest job (with a warning); at most 1048576 processors (one
    simulated node each) for all traces together: a larger header is an
    error, a larger job is dropped;
  - submit, run and requested times above 10^12 s and memory sizes above
    2^40 KB make a line malformed;
  - gzip is detected by its magic bytes; a malformed line is an error naming
    file, line and field, unless --lenient (skipped, counted, reported);
  - wait = first start - submit; bounded slowdown = max(1, (end - submit) /
    max(run, 10 s)), i.e. max(1, (wait + run) / max(run, 10 s)) without
    preemption; percentiles are nearest-rank;
  - with two traces, each is shifted so that its first job arrives at 0.";

/// Replay a Standard Workload Format trace through the scheduling core.
#[derive(clap::Args)]
#[command(after_long_help = CONVENTIONS)]
pub struct SimArgs {
    /// The trace file (.swf, or gzipped .swf.gz).
    #[arg(long, value_name = "FILE", required_unless_present = "synthetic")]
    trace: Option<PathBuf>,
    /// Processors of the machine (overrides the trace header); at most
    /// 1048576 (one simulated node each).
    #[arg(long, value_name = "N", value_parser = machine_size)]
    procs: Option<u32>,
    /// Scheduling policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Easy)]
    policy: PolicyArg,
    /// With `--policy conservative`: reservations only for the first N
    /// waiting jobs of each pass (as Slurm's bf_max_job_test). Without it
    /// conservative backfilling is exact but a pass costs O(queue x
    /// profile): minutes for traces whose queue grows long.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    conservative_depth: Option<u32>,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
    /// Write one CSV line per job:
    /// job_id,submit_s,start_s,end_s,procs,wait_s,preemptions,domain.
    #[arg(long, value_name = "FILE.csv")]
    jobs_out: Option<PathBuf>,
    /// Write PNG and SVG charts (demand, utilization, completion time,
    /// borrowed nodes) into this directory.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Skip malformed trace lines (counted and reported) instead of failing.
    #[arg(long)]
    lenient: bool,
    /// Read the whole trace before simulating, instead of simulating while
    /// a thread reads it (the same results; for measuring the two).
    #[arg(long)]
    read_first: bool,
    /// Hours between two samples of the time series (default: about 2000
    /// samples over the trace).
    #[arg(long, value_name = "H", value_parser = positive)]
    sample_interval_h: Option<f64>,
    #[command(flatten)]
    model: Box<ModelArgs>,
    #[command(flatten)]
    domains: Box<TradeArgs>,
    #[command(flatten)]
    synth: Box<SyntheticArgs>,
}

/// Best-effort jobs, preemption, checkpoints and failures.
#[derive(clap::Args)]
#[command(next_help_heading = "Best-effort jobs, checkpoints and failures")]
struct ModelArgs {
    /// Share of jobs (chosen with --seed) that run as best-effort: only on
    /// idle capacity, preempted when normal jobs need the nodes.
    #[arg(long, value_name = "0..1", default_value_t = 0.0, value_parser = share)]
    best_effort: f64,
    /// What preemption (and the loss of a lent node) does to a job: `kill`
    /// (it restarts from zero, its work is lost) or `checkpoint` (it resumes
    /// later from its checkpoint).
    #[arg(long, value_enum, default_value_t = PreemptionArg::Checkpoint)]
    preemption: PreemptionArg,
    /// Periodic checkpoint interval in seconds of work (checkpoint mode).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval_s: Option<u64>,
    /// Which jobs take periodic checkpoints.
    #[arg(long, value_enum, default_value_t = CheckpointJobsArg::BestEffort)]
    checkpoint_jobs: CheckpointJobsArg,
    /// Checkpoint cost: fixed seconds per checkpoint.
    #[arg(long, value_name = "S", default_value_t = 2.0, value_parser = non_negative)]
    checkpoint_fixed_s: f64,
    /// Checkpoint cost: seconds per GiB of a VM's memory.
    #[arg(long, value_name = "S", default_value_t = 8.0, value_parser = non_negative)]
    checkpoint_s_per_gb: f64,
    /// Restore cost: fixed seconds per restore.
    #[arg(long, value_name = "S", default_value_t = 2.0, value_parser = non_negative)]
    restore_fixed_s: f64,
    /// Restore cost: seconds per GiB of a VM's memory.
    #[arg(long, value_name = "S", default_value_t = 8.0, value_parser = non_negative)]
    restore_s_per_gb: f64,
    /// Memory of one VM (processor) in MiB when the trace gives none
    /// (fields 7 and 10); used for checkpoint and restore costs.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    mem_mb: u64,

    /// Inject node failures (no notice): mean time between failures of one
    /// node, in hours.
    #[arg(long, value_name = "H", value_parser = positive)]
    mtbf_h: Option<f64>,
    /// Hours from a node's failure to its return.
    #[arg(long, value_name = "H", default_value_t = 1.0, value_parser = non_negative)]
    repair_h: f64,
    /// Seed of every random choice (best-effort jobs, failures, synthetic
    /// workload).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run the same workload with `--preemption kill` and compare
    /// (summary, JSON `baseline` and charts).
    #[arg(long)]
    compare_kill: bool,
}

/// A second domain and machine trading.
#[derive(clap::Args)]
#[command(next_help_heading = "Two domains and trading (VioCluster)")]
struct TradeArgs {
    /// A second trace: a second domain with its own nodes and queue.
    #[arg(long, value_name = "FILE")]
    trace2: Option<PathBuf>,
    /// Processors of the second domain's machine (at most 1048576 for both
    /// domains together).
    #[arg(long, value_name = "N", value_parser = machine_size)]
    procs2: Option<u32>,
    /// Domain names, comma-separated (default: from the file names).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    names: Vec<String>,
    /// Let the domains lend and borrow idle nodes (VioCluster brokers).
    #[arg(long, requires = "trace2")]
    trade: bool,
    /// How a lender gets its nodes back.
    #[arg(long, value_enum, default_value_t = ReclaimArg::Immediate)]
    reclaim: ReclaimArg,
    /// Loan length in hours for `--reclaim lease`.
    #[arg(long, value_name = "H", default_value_t = 6.0, value_parser = positive)]
    lease_h: f64,
    /// Minutes between two reclaimed nodes for `--reclaim gradual`.
    #[arg(long, value_name = "MIN", default_value_t = 5.0, value_parser = positive)]
    gradual_min: f64,
    /// Minutes between two broker evaluations (VioCluster: hourly).
    #[arg(long, value_name = "MIN", default_value_t = 60.0, value_parser = positive)]
    broker_interval_min: f64,
    /// At most this share of a domain's idle nodes is lent.
    #[arg(long, value_name = "0..1", default_value_t = 0.5, value_parser = share)]
    lend_fraction: f64,
    /// Seconds to boot the borrower's VM on a lent node (VioCluster: 40).
    #[arg(long, value_name = "S", default_value_t = 40.0, value_parser = non_negative)]
    boot_s: f64,
    /// Seconds to halt it when the node goes back (VioCluster: 16).
    #[arg(long, value_name = "S", default_value_t = 16.0, value_parser = non_negative)]
    halt_s: f64,
    /// Jobs on borrowed nodes run this much slower (they run in VMs;
    /// VioCluster measured 0.15 for HPL).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = non_negative)]
    borrowed_slowdown: f64,
    /// With --trade, do not also run the same workloads without trading
    /// (the comparison in the summary, JSON `baseline` and plots).
    #[arg(long)]
    no_baseline: bool,
}

/// A synthetic workload instead of a trace.
#[derive(clap::Args)]
#[command(next_help_heading = "Synthetic workload")]
struct SyntheticArgs {
    /// Instead of a trace, generate this many jobs (needs --procs).
    #[arg(long, value_name = "JOBS", conflicts_with = "trace")]
    synthetic: Option<u64>,
    /// Offered load of the synthetic workload.
    #[arg(long, default_value_t = 0.85, value_parser = positive)]
    load: f64,
    /// How the synthetic jobs' sizes are drawn.
    #[arg(long, value_enum, default_value_t = ShapeArg::Classic)]
    synthetic_shape: ShapeArg,
    /// Also write the synthetic workload as an SWF file.
    #[arg(long, value_name = "FILE.swf")]
    synthetic_out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ShapeArg {
    /// A quarter serial jobs, the rest powers of two up to a tenth of the
    /// machine.
    Classic,
    /// A modern large machine: powers of two from 1 to 4096 processors,
    /// 630 on average.
    Wide,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PolicyArg {
    Fcfs,
    Easy,
    Conservative,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PreemptionArg {
    Kill,
    Checkpoint,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CheckpointJobsArg {
    BestEffort,
    All,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReclaimArg {
    Immediate,
    Lease,
    Gradual,
}

/// A machine size: 1 to `MAX_MACHINE_PROCS` processors (the simulator holds
/// one node per processor).
fn machine_size(s: &str) -> Result<u32, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    match u32::try_from(v) {
        Ok(p) if (1..=MAX_MACHINE_PROCS).contains(&p) => Ok(p),
        _ => Err(format!(
            "{v} processors cannot be simulated: a machine has 1 to {MAX_MACHINE_PROCS} (one simulated node each)"
        )),
    }
}

fn parse_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not a finite number"))
    }
}

fn share(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is negative"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not positive"))
    }
}

/// Seconds (or hours, minutes: pass the factor) as whole milliseconds.
fn ms(value: f64, ms_per_unit: f64) -> u64 {
    let v = (value * ms_per_unit).round();
    if v <= 0.0 {
        0
    } else if v >= 1e18 {
        1_000_000_000_000_000_000
    } else {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let v = v as u64;
        v
    }
}

/// A short domain name from a trace file name: `CTC-SP2-1996-3.1-cln.swf.gz`
/// gives `CTC`.
fn name_from_path(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file.split(['-', '.', '_']).next().unwrap_or("");
    if stem.is_empty() {
        file
    } else {
        stem.to_string()
    }
}

/// Reads a trace and applies the conventions, printing warnings on stderr.
/// `procs_flag` names the option that sets this trace's machine size.
fn load(
    path: &Path,
    procs: Option<u32>,
    lenient: bool,
    procs_flag: &str,
) -> anyhow::Result<Workload> {
    let loaded =
        Workload::read(path, procs, mode(lenient)).map_err(|e| read_error(e, procs_flag))?;
    Ok(checked(path, loaded))
}

fn mode(lenient: bool) -> Mode {
    if lenient { Mode::Lenient } else { Mode::Strict }
}

/// A trace that cannot be read, with what to do about a machine too large.
fn read_error(e: LoadError, procs_flag: &str) -> anyhow::Error {
    match e {
        LoadError::Workload(e @ WorkloadError::MachineTooLarge { .. }) => anyhow::anyhow!(
            "{e}: run with {procs_flag} N (N at most {MAX_MACHINE_PROCS}) to simulate a smaller machine; jobs larger than it are dropped and counted"
        ),
        e => e.into(),
    }
}

/// The workload of a trace read whole, after warning of what the reader
/// had to guess or skip.
fn checked(path: &Path, loaded: vgrid_swf::Loaded) -> Workload {
    warn_skipped(path, &loaded.skipped);
    let w = loaded.workload;
    if w.machine_source == MachineSource::LargestJob {
        eprintln!(
            "vgrid sim: warning: {}: no --procs and no MaxProcs/MaxNodes header; using the largest job's {} processors as the machine size",
            path.display(),
            w.machine_procs
        );
    }
    w
}

fn warn_skipped(path: &Path, skipped: &vgrid_swf::Skipped) {
    if skipped.count > 0 {
        eprintln!(
            "vgrid sim: warning: {}: skipped {} malformed lines (--lenient); the first:",
            path.display(),
            skipped.count
        );
        for e in &skipped.examples {
            eprintln!("  {e}");
        }
    }
}

/// Progress on stderr for long runs: only when stderr is a terminal, first
/// after two seconds, then at most once a second, on one line.
fn progress_reporter() -> impl FnMut(vgrid_sim::driver::Progress) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = started;
    move |p| {
        if !tty || started.elapsed().as_secs_f64() < 2.0 || last.elapsed().as_secs_f64() < 1.0 {
            return;
        }
        last = Instant::now();
        #[allow(clippy::cast_precision_loss)]
        let days = p.virtual_ms as f64 / 86_400_000.0;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rvgrid sim: {}/{} jobs done, day {days:.0} of the trace   ",
            p.done, p.total
        );
        let _ = err.flush();
    }
}

/// One line naming what was run, for the charts' titles: the traces and
/// their machines, the policy and every option that changes the schedule.
fn about_run(args: &SimArgs, machines: &[(String, u32)]) -> String {
    let (m, t) = (&*args.model, &*args.domains);
    let mut parts: Vec<String> = machines
        .iter()
        .map(|(name, procs)| format!("{name} on {procs} processors"))
        .collect();
    if let Some(n) = args.synth.synthetic {
        parts[0] = format!(
            "synthetic {n} jobs (load {}, seed {}) on {} processors",
            args.synth.load,
            m.seed,
            machines.first().map_or(0, |(_, p)| *p)
        );
    }
    let policy = match args.policy {
        PolicyArg::Fcfs => "FCFS".to_string(),
        PolicyArg::Easy => "EASY".to_string(),
        PolicyArg::Conservative => match args.conservative_depth {
            Some(d) => format!("conservative (depth {d})"),
            None => "conservative".to_string(),
        },
    };
    parts.push(policy);
    if m.best_effort > 0.0 {
        let how = match m.preemption {
            PreemptionArg::Kill => "kill",
            PreemptionArg::Checkpoint => "checkpoint",
        };
        parts.push(format!(
            "{:.0}% best-effort (seed {}), preemption by {how}",
            m.best_effort * 100.0,
            m.seed
        ));
    }
    if let Some(s) = m.checkpoint_interval_s {
        parts.push(format!("checkpoints every {s} s"));
    }
    if let Some(h) = m.mtbf_h {
        parts.push(format!("node MTBF {h} h, repair {} h", m.repair_h));
    }
    if t.trade {
        let reclaim = match t.reclaim {
            ReclaimArg::Immediate => "immediate".to_string(),
            ReclaimArg::Lease => format!("lease {} h", t.lease_h),
            ReclaimArg::Gradual => format!("gradual every {} min", t.gradual_min),
        };
        parts.push(format!("trading, reclaim {reclaim}"));
    }
    parts.join(" · ")
}

/// Shifts the jobs so that the first arrives at time 0.
fn shift_to_zero(w: &mut Workload) {
    if let Some(first) = w.jobs.first().map(|j| j.submit_s) {
        for j in &mut w.jobs {
            j.submit_s -= first;
        }
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let t_read = Instant::now();
    let (m, t, y) = (&*args.model, &*args.domains, &*args.synth);
    let cost = |fixed: f64, per_gb: f64| CostModel {
        fixed_ms: ms(fixed, 1000.0),
        ms_per_gb: ms(per_gb, 1000.0),
    };
    let reclaim = match t.reclaim {
        ReclaimArg::Immediate => ReclaimPolicy::Immediate,
        ReclaimArg::Lease => ReclaimPolicy::Lease {
            period_ms: ms(t.lease_h, 3_600_000.0),
        },
        ReclaimArg::Gradual => ReclaimPolicy::Gradual {
            every_ms: ms(t.gradual_min, 60_000.0).max(1),
        },
    };
    let cfg = SimConfig {
        policy: match args.policy {
            PolicyArg::Fcfs => Policy::Fcfs,
            PolicyArg::Easy => Policy::Easy,
            PolicyArg::Conservative => Policy::Conservative,
        },
        preemption: match m.preemption {
            PreemptionArg::Kill => PreemptionMode::Kill,
            PreemptionArg::Checkpoint => PreemptionMode::Checkpoint,
        },
        conservative_depth: args.conservative_depth,
        best_effort_share: m.best_effort,
        checkpoint_interval_ms: m.checkpoint_interval_s.map(|s| s.saturating_mul(1000)),
        checkpoint_jobs: match m.checkpoint_jobs {
            CheckpointJobsArg::BestEffort => CheckpointJobs::BestEffort,
            CheckpointJobsArg::All => CheckpointJobs::All,
        },
        checkpoint_cost: cost(m.checkpoint_fixed_s, m.checkpoint_s_per_gb),
        restore_cost: cost(m.restore_fixed_s, m.restore_s_per_gb),
        default_mem_mb: m.mem_mb.max(1),
        failures: m.mtbf_h.map(|h| Failures {
            mtbf_ms: h * 3_600_000.0,
            repair_ms: ms(m.repair_h, 3_600_000.0),
        }),
        trade: t.trade.then(|| Trade {
            broker: BrokerConfig {
                interval_ms: ms(t.broker_interval_min, 60_000.0).max(1),
                lend_fraction: t.lend_fraction,
                lend: true,
                borrow: true,
                reclaim,
            },
            boot_ms: ms(t.boot_s, 1000.0),
            halt_ms: ms(t.halt_s, 1000.0),
            borrowed_slowdown_permille: ms(t.borrowed_slowdown, 1000.0),
        }),
        seed: m.seed,
        sample_interval_ms: args.sample_interval_h.map(|h| ms(h, 3_600_000.0).max(1)),
    };

    // One trace without a second run to compare with: simulate while it
    // is read (the same result, less wall time).
    let streamable = y.synthetic.is_none()
        && t.trace2.is_none()
        && !m.compare_kill
        && !t.trade
        && !args.read_first;
    let mut domains = Vec::new();
    let mut stream = None;
    if let Some(n) = y.synthetic {
        let Some(procs) = args.procs else {
            bail!("--synthetic needs --procs");
        };
        let w = generate(&SyntheticSpec {
            jobs: n,
            procs,
            load: y.load,
            seed: m.seed,
            shape: match y.synthetic_shape {
                ShapeArg::Classic => Shape::Classic,
                ShapeArg::Wide => Shape::Wide,
            },
        });
        if let Some(out) = &y.synthetic_out {
            let f = std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            vgrid_swf::write_swf(std::io::BufWriter::new(f), &w.jobs, procs)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        domains.push(DomainInput {
            name: "synthetic".into(),
            workload: w,
        });
    } else if let Some(path) = &args.trace {
        let opened = if streamable {
            JobStream::open(path, args.procs, mode(args.lenient))
                .map_err(|e| read_error(e, "--procs"))?
        } else {
            Opened::Whole(
                Workload::read(path, args.procs, mode(args.lenient))
                    .map_err(|e| read_error(e, "--procs"))?,
            )
        };
        match opened {
            Opened::Stream(s) => stream = Some((path, s)),
            Opened::Whole(loaded) => domains.push(DomainInput {
                name: name_from_path(path),
                workload: checked(path, loaded),
            }),
        }
    }
    if let Some(path) = &t.trace2 {
        let w = load(path, t.procs2, args.lenient, "--procs2")?;
        domains.push(DomainInput {
            name: name_from_path(path),
            workload: w,
        });
        for d in &mut domains {
            shift_to_zero(&mut d.workload);
        }
    }
    for (d, name) in domains.iter_mut().zip(&t.names) {
        d.name.clone_from(name);
    }
    let mut read_wall_s = t_read.elapsed().as_secs_f64();
    let mut streamed = None;
    if let Some((path, s)) = stream {
        let name = t
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| name_from_path(path));
        match vgrid_sim::driver::run_streamed(&name, s, &cfg, &mut progress_reporter()) {
            Ok(StreamedRun::Done { result, read }) => {
                warn_skipped(path, &read.skipped);
                read_wall_s = read.read_wall_s;
                streamed = Some((*result, path));
            }
            Ok(StreamedRun::ReadWhole) => {
                let w = load(path, args.procs, args.lenient, "--procs")?;
                domains.push(DomainInput { name, workload: w });
                read_wall_s = t_read.elapsed().as_secs_f64();
            }
            Err(StreamRunError::Read(e)) => return Err(read_error(e, "--procs")),
            Err(StreamRunError::Sim(e)) => return Err(e.into()),
        }
    }
    // The charts name each trace by its file, not the short domain name.
    let files = [args.trace.as_deref(), t.trace2.as_deref()];
    let mut machines: Vec<(String, u32)> = domains
        .iter()
        .zip(
            files
                .iter()
                .filter(|f| f.is_some() || y.synthetic.is_some()),
        )
        .map(|(d, f)| {
            let name = f
                .and_then(|f| f.file_name())
                .map_or_else(|| d.name.clone(), |n| n.to_string_lossy().into_owned());
            (name, d.workload.machine_procs)
        })
        .collect();

    let result = match streamed {
        Some((result, path)) => {
            let file = path.file_name().unwrap_or(path.as_os_str());
            let procs = result.procs.first().copied().unwrap_or(0);
            machines.push((file.to_string_lossy().into_owned(), procs));
            result
        }
        None => vgrid_sim::driver::run_with_progress(&domains, &cfg, &mut progress_reporter())?,
    };
    let summaries = vgrid_sim::report::summaries(&result);
    let base_cfg = if m.compare_kill {
        if cfg.preemption == PreemptionMode::Kill {
            bail!(
                "--compare-kill compares a checkpoint run with a kill run: leave --preemption at checkpoint"
            );
        }
        Some((
            SimConfig {
                preemption: PreemptionMode::Kill,
                ..cfg.clone()
            },
            vgrid_sim::report::CHECKPOINT_VS_KILL,
        ))
    } else if cfg.trade.is_some() && !t.no_baseline {
        Some((
            SimConfig {
                trade: None,
                ..cfg.clone()
            },
            vgrid_sim::report::TRADING,
        ))
    } else {
        None
    };
    let baseline = match base_cfg {
        Some((base_cfg, labels)) => {
            let r = vgrid_sim::driver::run_with_progress(
                &domains,
                &base_cfg,
                &mut progress_reporter(),
            )?;
            let s = vgrid_sim::report::summaries(&r);
            Some((r, s, labels))
        }
        None => None,
    };
    {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            // Clear the progress line, if one was printed.
            eprint!("\r\x1b[K");
        }
    }
    if result.rejected > 0 {
        eprintln!(
            "vgrid sim: warning: the core refused {} events (a driver/core mismatch); the first:",
            result.rejected
        );
        for e in &result.rejected_examples {
            eprintln!("  {e}");
        }
    }
    if let Some(path) = &args.jobs_out {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        vgrid_sim::report::write_jobs_csv(std::io::BufWriter::new(f), &result)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        let written = vgrid_sim::report::write_plots(
            dir,
            &result,
            baseline.as_ref().map(|(r, _, l)| (r, *l)),
            &about_run(&args, &machines),
        )?;
        eprintln!(
            "vgrid sim: wrote {} charts (PNG and SVG) to {}",
            written.len(),
            dir.display()
        );
    }
    if args.json {
        let mut v = vgrid_sim::report::json(
            &result,
            &summaries,
            baseline.as_ref().map(|(r, s, l)| (r, s, *l)),
        );
        if let Some(obj) = v.as_object_mut() {
            obj.insert("read_wall_s".into(), serde_json::json!(read_wall_s));
            obj.insert(
                "policy".into(),
                serde_json::json!(match cfg.policy {
                    Policy::Fcfs => "fcfs",
                    Policy::Easy => "easy",
                    Policy::Conservative => "conservative",
                }),
            );
        }
        println!("{v}");
    } else {
        print!(
            "{}",
            vgrid_sim::report::text(
                &result,
                &summaries,
                baseline.as_ref().map(|(_, s, l)| (s, *l))
            )
        );
        println!("workload(s) read in {read_wall_s:.3} s");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_from_trace_files() {
        assert_eq!(
            name_from_path(Path::new("/x/CTC-SP2-1996-3.1-cln.swf.gz")),
            "CTC"
        );
        assert_eq!(name_from_path(Path::new("lublin_256.swf")), "lublin");
        assert_eq!(name_from_path(Path::new("plain")), "plain");
    }

    #[test]
    fn unit_conversions_round_and_clamp() {
        assert_eq!(ms(1.5, 1000.0), 1500);
        assert_eq!(ms(-1.0, 1000.0), 0);
        assert_eq!(ms(1e30, 1000.0), 1_000_000_000_000_000_000);
    }

    #[test]
    fn machine_sizes_are_bounded() {
        assert_eq!(machine_size("1"), Ok(1));
        assert_eq!(machine_size("1048576"), Ok(MAX_MACHINE_PROCS));
        for bad in [
            "0",
            "1048577",
            "4294967295",
            "99999999999999999999",
            "-1",
            "x",
        ] {
            assert!(machine_size(bad).is_err(), "{bad}");
        }
        assert!(machine_size("4294967295").is_err_and(|e| e.contains("1048576")));
    }

    #[test]
    fn a_huge_header_names_the_option_to_use_instead() {
        let dir = std::env::temp_dir().join(format!("vgrid-sim-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("huge.swf");
        std::fs::write(
            &path,
            "; MaxProcs: 4294967295\n1 0 -1 10 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n",
        )
        .ok();
        let err = load(&path, None, false, "--procs2")
            .err()
            .map(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        let err = err.unwrap_or_default();
        assert!(err.contains("huge.swf:1: header MaxProcs"), "{err}");
        assert!(err.contains("run with --procs2 N"), "{err}");
    }

    #[test]
    fn shares_are_checked() {
        assert!(share("0.5").is_ok());
        assert!(share("1.5").is_err());
        assert!(share("nan").is_err());
        assert!(positive("0").is_err());
        assert!(non_negative("-1").is_err());
    }
}
