//! Benchmark: what `vgrid sim --trace FILE --policy P --json` does (read
//! the trace, run the simulation, summarise), without building the whole
//! `vgrid` binary. Prints the times of each part and a fingerprint of the
//! schedule (every job's first start and end), so that two versions of the
//! core can be checked to make the same decisions.
//!
//! Run: `cargo run --release -p vgrid-sim --example sim_bench -- TRACE.swf[.gz] [fcfs|easy|conservative] [--procs N] [--depth N] [--csv FILE]`
//! or `... -- --synthetic JOBS PROCS [policy] [--shape wide]`.

use std::path::PathBuf;
use std::time::Instant;

use vgrid_core::Policy;
use vgrid_sim::config::{DomainInput, SimConfig};
use vgrid_sim::synthetic::{Shape, SyntheticSpec, generate};
use vgrid_swf::{Mode, Workload};

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn main() {
    let usage = "usage: sim_bench TRACE [policy] [--procs N] [--depth N] [--csv FILE] | --synthetic JOBS PROCS [policy] [--shape classic|wide]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut trace = None;
    let mut synthetic: Option<(u64, u32)> = None;
    let mut procs = None;
    let mut depth = None;
    let mut csv = None;
    let mut policy = Policy::Easy;
    let mut shape = Shape::Classic;
    let mut i = 0;
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail(usage))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--synthetic" => {
                synthetic = Some((num(i + 1), num(i + 2) as u32));
                i += 3;
                continue;
            }
            "--procs" => procs = Some(num(i + 1) as u32),
            "--depth" => depth = Some(num(i + 1) as u32),
            "--shape" => {
                shape = match args.get(i + 1).map(String::as_str) {
                    Some("classic") => Shape::Classic,
                    Some("wide") => Shape::Wide,
                    _ => fail(usage),
                }
            }
            "--csv" => csv = args.get(i + 1).map(PathBuf::from),
            "fcfs" | "easy" | "conservative" => {
                policy = match args[i].as_str() {
                    "fcfs" => Policy::Fcfs,
                    "easy" => Policy::Easy,
                    _ => Policy::Conservative,
                };
                i += 1;
                continue;
            }
            other => {
                trace = Some(PathBuf::from(other));
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let t0 = Instant::now();
    let workload = match (synthetic, &trace) {
        (Some((jobs, procs)), _) => generate(&SyntheticSpec {
            jobs,
            procs,
            load: 0.85,
            seed: 1,
            shape,
        }),
        (None, Some(path)) => match Workload::read(path, procs, Mode::Strict) {
            Ok(l) => l.workload,
            Err(e) => fail(&e.to_string()),
        },
        (None, None) => fail(usage),
    };
    let read_s = t0.elapsed().as_secs_f64();
    let domains = [DomainInput {
        name: "bench".into(),
        workload,
    }];
    let cfg = SimConfig {
        policy,
        conservative_depth: depth,
        ..SimConfig::default()
    };
    let t1 = Instant::now();
    let r = vgrid_sim::driver::run(&domains, &cfg).unwrap_or_else(|e| fail(&e.to_string()));
    let run_s = t1.elapsed().as_secs_f64();
    let s = vgrid_sim::report::summaries(&r);
    let total_s = t0.elapsed().as_secs_f64();
    // FNV-1a over (id, first start, end) of every job.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for j in &r.jobs {
        for v in [
            j.id as u64,
            j.first_start.unwrap_or(u64::MAX),
            j.end.unwrap_or(u64::MAX),
        ] {
            h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    if let Some(path) = csv {
        let f = std::fs::File::create(&path).unwrap_or_else(|e| fail(&e.to_string()));
        vgrid_sim::report::write_jobs_csv(std::io::BufWriter::new(f), &r)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    println!(
        "jobs={} policy={policy:?} mean_wait_s={:.1} mean_bsld={:.3} read_s={read_s:.4} sim_s={run_s:.4} total_s={total_s:.4} schedule={h:016x}",
        s.total.jobs, s.total.mean_wait_s, s.total.mean_bsld
    );
}
