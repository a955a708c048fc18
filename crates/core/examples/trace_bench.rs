//! Benchmark: the core alone replaying a workload trace, to see what the
//! scheduling decisions cost per job (the full simulator, `vgrid sim`,
//! adds parsing, metrics and plots on top).
//!
//! Run: `cargo run --release -p vgrid-core --example trace_bench -- FILE.swf[.gz] PROCS [fcfs|easy|conservative] [kill|checkpoint]`
//! or `... -- --synthetic JOBS PROCS [policy]` for seeded random jobs.
//! With `kill` or `checkpoint`, every third job is best-effort and
//! checkpointable (checkpoints cost 1 s and are instant in this driver's
//! accounting of work: it only measures the core).
//!
//! Conventions as in the simulator: one one-core node per processor; a job
//! needs `procs` one-core VMs (field 8 if > 0, else field 5); its estimate is
//! field 9 if > 0, else its run time; jobs with run time < 0, or too few or
//! too many processors, are skipped; completions before arrivals at equal
//! times; VMs start instantly. Prints the time spent in the core (all
//! `handle`/`schedule`/`poll_action` calls) and the mean wait as a check.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;
use std::time::Instant;

use vgrid_core::{
    Action, Config, DomainId, Event, JobId, JobRequest, NodeId, NodeSpec, Policy, Scheduler, Time,
};

struct Job {
    id: u64,
    submit: u64,
    run: u64,
    procs: u32,
    estimate: u64,
}

fn read_swf(path: &str, procs_limit: u32) -> Result<Vec<Job>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .map_err(|e| format!("{path}: {e}"))?;
    } else {
        text = String::from_utf8(raw).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let f: Vec<i64> = line
            .split_whitespace()
            .map(|x| x.parse::<f64>().map(|v| v as i64))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        if f.len() < 18 {
            return Err(format!("{path}:{}: fewer than 18 fields", n + 1));
        }
        let procs = if f[7] > 0 { f[7] } else { f[4] };
        let run = f[3];
        if run < 0 || procs < 1 || procs > i64::from(procs_limit) {
            continue;
        }
        let estimate = if f[8] > 0 { f[8] } else { run };
        jobs.push(Job {
            id: f[0] as u64,
            submit: f[1].max(0) as u64 * 1000,
            run: run as u64 * 1000,
            procs: procs as u32,
            estimate: estimate as u64 * 1000,
        });
    }
    jobs.sort_by_key(|j| (j.submit, j.id));
    Ok(jobs)
}

fn synthetic(count: u64, procs: u32) -> Vec<Job> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    // Sizes: 3 in 4 jobs take 1-16 VMs, the rest up to an eighth of the
    // machine; run times 1 s to 10 min, estimates up to 10 min longer.
    // The mean inter-arrival time is set for an offered load of about 0.9.
    let big = u64::from(procs / 8).max(1);
    let mean_procs = 0.75 * 8.5 + 0.25 * (big as f64 + 1.0) / 2.0;
    let mean_run_ms = 1_000.0 + 300_000.0;
    let gap_ms = (mean_procs * mean_run_ms / (0.9 * f64::from(procs))) as u64;
    let mut t = 0u64;
    (0..count)
        .map(|id| {
            t += next() % (2 * gap_ms).max(1);
            let p = if next() % 4 == 0 {
                1 + (next() % big) as u32
            } else {
                1 + (next() % 16) as u32
            };
            let run = 1_000 + next() % 600_000;
            let estimate = run + next() % 600_000;
            Job {
                id,
                submit: t,
                run,
                procs: p.min(procs),
                estimate,
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: trace_bench FILE.swf[.gz] PROCS [policy] | --synthetic JOBS PROCS [policy] [kill|checkpoint]";
    let (jobs, procs, policy_arg, read_s) = if args.first().map(String::as_str)
        == Some("--synthetic")
    {
        let (Some(n), Some(p)) = (
            args.get(1).and_then(|v| v.parse().ok()),
            args.get(2).and_then(|v| v.parse().ok()),
        ) else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        (synthetic(n, p), p, args.get(3), 0.0)
    } else {
        let (Some(path), Some(p)) = (args.first(), args.get(1).and_then(|v| v.parse().ok())) else {
            eprintln!("{usage}");
            std::process::exit(2);
        };
        let t = Instant::now();
        match read_swf(path, p) {
            Ok(j) => (j, p, args.get(2), t.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    };
    let policy = match policy_arg.map(String::as_str) {
        None | Some("easy") => Policy::Easy,
        Some("fcfs") => Policy::Fcfs,
        Some("conservative") => Policy::Conservative,
        Some(other) => {
            eprintln!("unknown policy {other}");
            std::process::exit(2);
        }
    };
    let synthetic = args.first().map(String::as_str) == Some("--synthetic");
    let best_effort = match args.get(if synthetic { 4 } else { 3 }).map(String::as_str) {
        None => None,
        Some("kill") => Some(vgrid_core::PreemptionMode::Kill),
        Some("checkpoint") => Some(vgrid_core::PreemptionMode::Checkpoint),
        Some(other) => {
            eprintln!("unknown preemption mode {other}");
            std::process::exit(2);
        }
    };
    let mut cfg = Config::with_policy(policy);
    cfg.keep_finished_jobs = false;
    if let Some(mode) = best_effort {
        cfg.preemption = mode;
        cfg.checkpoint_cost = vgrid_core::CostModel {
            fixed_ms: 1_000,
            ms_per_gb: 0,
        };
    }
    let mut core = Scheduler::new(cfg);
    // VGRID_CONSERVATIVE_DEPTH=N limits conservative backfilling to the
    // first N waiting jobs per pass (see Scheduler::set_conservative_depth).
    if let Some(depth) = std::env::var("VGRID_CONSERVATIVE_DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        core.set_conservative_depth(Some(depth));
    }
    let runs: std::collections::HashMap<u64, (u64, u64)> =
        jobs.iter().map(|j| (j.id, (j.run, j.submit))).collect();

    let started = Instant::now();
    for n in 0..procs {
        let spec = NodeSpec::new(NodeId(n), DomainId(0), 1, 0);
        let _ = core.handle(Time::ZERO, Event::NodeUp(spec));
    }
    // (time, job, generation): stale completions of preempted runs are skipped.
    let mut done: BinaryHeap<Reverse<(u64, u64, u64)>> = BinaryHeap::new();
    let mut generation: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut ckpt_done: Vec<(u64, u64)> = Vec::new();
    let mut preemptions = 0u64;
    let mut next = 0usize;
    let mut total_wait = 0u128;
    let mut finished = 0u64;
    loop {
        let t_arrival = jobs.get(next).map(|j| j.submit);
        let t_done = done.peek().map(|Reverse((t, _, _))| *t);
        let t_ckpt = ckpt_done.iter().map(|&(t, _)| t).min();
        let t_wake = core.next_wakeup().map(|t| t.0);
        let Some(now) = [t_arrival, t_done, t_wake, t_ckpt]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        let time = Time(now);
        ckpt_done.retain(|&(t, id)| {
            if t == now {
                let _ = core.handle(
                    time,
                    Event::CheckpointFinished {
                        job: JobId(id),
                        ok: true,
                    },
                );
                false
            } else {
                true
            }
        });
        while let Some(Reverse((t, id, g))) = done.peek().copied() {
            if t != now {
                break;
            }
            done.pop();
            if generation.get(&id).copied().unwrap_or(0) != g {
                continue;
            }
            let _ = core.handle(
                time,
                Event::JobFinished {
                    job: JobId(id),
                    exit_status: 0,
                },
            );
            finished += 1;
        }
        while let Some(j) = jobs.get(next) {
            if j.submit != now {
                break;
            }
            let mut spec = JobRequest::simple(JobId(j.id), j.procs, j.estimate);
            if best_effort.is_some() && j.id % 3 == 0 {
                spec.class = vgrid_core::Class::BestEffort;
                spec.checkpointable = true;
            }
            let _ = core.handle(time, Event::Submit(spec));
            next += 1;
        }
        core.schedule(time);
        while let Some(a) = core.poll_action() {
            match a {
                Action::Start { job, .. } => {
                    let _ = core.handle(time, Event::JobRunning { job });
                    if let Some(&(run, submit)) = runs.get(&job.0) {
                        total_wait += u128::from(now - submit);
                        let g = generation.get(&job.0).copied().unwrap_or(0);
                        done.push(Reverse((now + run, job.0, g)));
                    }
                }
                Action::Preempt { job, mode } => {
                    preemptions += 1;
                    *generation.entry(job.0).or_default() += 1;
                    if mode == vgrid_core::StopMode::Checkpoint {
                        ckpt_done.push((now + 1_000, job.0));
                    }
                }
                _ => {}
            }
        }
    }
    let core_s = started.elapsed().as_secs_f64();
    println!(
        "jobs={} finished={} procs={} policy={:?} preemptions={} read_s={:.3} core_s={:.3} us_per_job={:.2} mean_wait_s={:.1}",
        jobs.len(),
        finished,
        procs,
        policy,
        preemptions,
        read_s,
        core_s,
        core_s * 1e6 / jobs.len().max(1) as f64,
        total_wait as f64 / 1000.0 / jobs.len().max(1) as f64
    );
}
