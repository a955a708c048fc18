//! Benchmark: one live scheduling pass over 50,000 waiting jobs and 10,000
//! nodes (target: at most 50 ms).
//!
//! Run: `cargo run --release -p vgrid-core --example pass_bench`
//! Options: `--jobs N --nodes N --cores C --reps R --only NAME` (NAME: one
//! policy row of the output, e.g. `conservative/1000`).
//!
//! Scenarios, for each policy:
//! - `cold`: every node idle, all jobs queued, one pass (fills the cluster,
//!   then scans the rest of the queue for backfill candidates);
//! - `busy`: the cluster is full and the jobs wait; one running job ends
//!   and one pass follows (the steady state of a loaded system).
//!
//! `conservative/1000` gives reservations to the first 1,000 waiting jobs
//! only (`Scheduler::set_conservative_depth`).
//!
//! Each measurement is the median over `--reps` fresh schedulers (the
//! setup is not timed). Jobs are seeded pseudo-random: 1-64 VMs of one
//! core (a few larger), estimates of 1 minute to 1 day.

use std::time::Instant;

use vgrid_core::{
    Action, Config, DomainId, Event, JobId, JobRequest, NodeId, NodeSpec, Policy, Scheduler, Time,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Opts {
    jobs: u64,
    nodes: u32,
    cores: u32,
    reps: usize,
    only: Option<String>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        jobs: 50_000,
        nodes: 10_000,
        cores: 1,
        reps: 5,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--only" {
            o.only = args.get(i + 1).cloned();
            i += 2;
            continue;
        }
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        let Some(v) = value else {
            eprintln!(
                "usage: pass_bench [--jobs N] [--nodes N] [--cores C] [--reps R] [--only POLICY]"
            );
            std::process::exit(2);
        };
        match args[i].as_str() {
            "--jobs" => o.jobs = v,
            "--nodes" => o.nodes = v as u32,
            "--cores" => o.cores = v as u32,
            "--reps" => o.reps = v.max(1) as usize,
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

fn job(rng: &mut Rng, id: u64) -> JobRequest {
    let vms = if rng.below(20) == 0 {
        1 + rng.below(512) as u32
    } else {
        1 + rng.below(64) as u32
    };
    let walltime = 60_000 + rng.below(86_400_000);
    JobRequest::simple(JobId(id), vms, walltime)
}

fn setup(o: &Opts, policy: Policy, depth: Option<u32>, seed: u64) -> Scheduler {
    let mut s = Scheduler::new(Config::with_policy(policy));
    s.set_conservative_depth(depth);
    for n in 0..o.nodes {
        s.handle(
            Time::ZERO,
            Event::NodeUp(NodeSpec::new(NodeId(n), DomainId(0), o.cores, 0)),
        )
        .expect("node");
    }
    let mut rng = Rng(seed);
    for id in 0..o.jobs {
        s.handle(Time::ZERO, Event::Submit(job(&mut rng, id)))
            .expect("submit");
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = parse_opts();
    println!(
        "one scheduling pass: {} waiting jobs, {} nodes x {} core(s), median of {} runs",
        o.jobs, o.nodes, o.cores, o.reps
    );
    println!(
        "{:<13} {:>6} {:>11} {:>9} {:>11}",
        "policy", "case", "pass_ms", "started", "still_queued"
    );
    let runs = [
        (Policy::Fcfs, None),
        (Policy::Easy, None),
        (Policy::Conservative, None),
        (Policy::Conservative, Some(1000)),
    ];
    for (policy, depth) in runs {
        let mut name = format!("{policy:?}").to_lowercase();
        if let Some(d) = depth {
            name = format!("{name}/{d}");
        }
        if o.only.as_ref().is_some_and(|only| *only != name) {
            continue;
        }
        let mut cold = Vec::new();
        let mut busy = Vec::new();
        let (mut cold_started, mut busy_started, mut queued) = (0, 0, 0);
        for rep in 0..o.reps {
            let mut s = setup(&o, policy, depth, 42 + rep as u64);
            let t = Instant::now();
            s.schedule(Time::ZERO);
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            let mut running = Vec::new();
            cold_started = 0;
            while let Some(a) = s.poll_action() {
                if let Action::Start { job, .. } = a {
                    cold_started += 1;
                    running.push(job);
                }
            }
            let now = Time::from_secs(1);
            for &job in &running {
                s.handle(now, Event::JobRunning { job }).expect("running");
            }
            s.schedule(now);
            while s.poll_action().is_some() {}
            // One running job ends; time the pass that follows.
            let now = Time::from_secs(2);
            s.handle(
                now,
                Event::JobFinished {
                    job: running[running.len() / 2],
                    exit_status: 0,
                },
            )
            .expect("finished");
            let t = Instant::now();
            s.schedule(now);
            busy.push(t.elapsed().as_secs_f64() * 1e3);
            busy_started = 0;
            while let Some(a) = s.poll_action() {
                if matches!(a, Action::Start { .. }) {
                    busy_started += 1;
                }
            }
            queued = s.queue(DomainId(0)).len();
        }
        println!(
            "{:<13} {:>6} {:>11.2} {:>9} {:>11}",
            name,
            "cold",
            median(cold),
            cold_started,
            ""
        );
        println!(
            "{:<13} {:>6} {:>11.2} {:>9} {:>11}",
            name,
            "busy",
            median(busy),
            busy_started,
            queued
        );
    }
}
