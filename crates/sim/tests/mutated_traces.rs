//! Mutated traces: a small valid trace with one field, header value or line
//! replaced by an extreme or malformed value (seeded, 300 traces, each
//! written to a file). Reading each, in strict and lenient mode, must give
//! either a clear error naming the file (and the line, for a bad line) or a
//! workload that simulates to the end with sane metrics: no panic, no abort,
//! no overflow, no utilization above 100%.

use vgrid_core::PreemptionMode;
use vgrid_sim::config::{DomainInput, Failures, SimConfig};
use vgrid_sim::driver::run;
use vgrid_sim::report::summaries;
use vgrid_sim::rng::Rng;
use vgrid_swf::{
    LoadError, MAX_MACHINE_PROCS, MAX_MEMORY_KB, MAX_TIME_S, Mode, SwfError, Workload,
};

const HEADER: [&str; 3] = ["; Version: 2.2", "; MaxProcs: 8", "; MaxNodes: 8"];
const JOBS: [&str; 8] = [
    "1 0 -1 100 2 -1 1024 2 200 2048 1 1 1 1 1 1 -1 -1",
    "2 10 -1 50 8 -1 -1 8 100 -1 1 2 1 1 1 1 -1 -1",
    "3 20 -1 30 2 -1 -1 -1 60 -1 1 3 1 1 1 1 -1 -1",
    "4 30 -1 10 1 -1 -1 1 -1 -1 1 1 1 1 1 1 -1 -1",
    "5 30 -1 500 4 -1 4096 4 600 -1 1 2 1 1 1 1 -1 -1",
    "6 45 -1 0 3 -1 -1 3 10 -1 1 3 1 1 1 1 -1 -1",
    "7 60 -1 3600 6 -1 -1 6 7200 -1 1 1 1 1 1 1 -1 -1",
    "8 61 -1 5 1 -1 -1 1 5 -1 1 2 1 1 1 1 -1 -1",
];

fn extremes() -> Vec<String> {
    let mut v: Vec<String> = [
        "-1",
        "0",
        "1",
        "-9223372036854775808",
        "9223372036854775807",
        "99999999999999999999",
        "1e300",
        "1.5",
        "4294967295",
        "4294967296",
        "abc",
        "--1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for x in [
        i64::from(MAX_MACHINE_PROCS),
        i64::from(MAX_MACHINE_PROCS) + 1,
        MAX_TIME_S,
        MAX_TIME_S + 1,
        MAX_MEMORY_KB,
        MAX_MEMORY_KB + 1,
    ] {
        v.push(x.to_string());
    }
    v
}

/// The base trace with one mutation chosen by `rng`.
fn mutate(rng: &mut Rng, values: &[String]) -> (Vec<String>, String) {
    let mut header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
    let mut jobs: Vec<String> = JOBS.iter().map(|s| s.to_string()).collect();
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    let value = values[pick(rng, values.len())].clone();
    let what = match rng.below(6) {
        // One field of one job (most mutations).
        0..=2 => {
            let (j, f) = (pick(rng, jobs.len()), pick(rng, 18));
            let mut fields: Vec<String> = jobs[j].split(' ').map(str::to_string).collect();
            fields[f] = value.clone();
            jobs[j] = fields.join(" ");
            format!("job line {} field {} = {value}", j + 1, f + 1)
        }
        // The same field of every job (a whole column).
        3 => {
            let f = pick(rng, 18);
            for line in &mut jobs {
                let mut fields: Vec<String> = line.split(' ').map(str::to_string).collect();
                fields[f] = value.clone();
                *line = fields.join(" ");
            }
            format!("field {} of every job = {value}", f + 1)
        }
        // A header value, or no size header at all.
        4 => match rng.below(3) {
            0 => {
                header[1] = format!("; MaxProcs: {value}");
                format!("MaxProcs = {value}")
            }
            1 => {
                header[2] = format!("; MaxNodes: {value}");
                header.remove(1);
                format!("only MaxNodes = {value}")
            }
            _ => {
                header.truncate(1);
                "no size header".to_string()
            }
        },
        // A line cut short or doubled.
        _ => {
            let j = pick(rng, jobs.len());
            if rng.chance(0.5) {
                let cut: Vec<&str> = jobs[j].split(' ').take(pick(rng, 18)).collect();
                jobs[j] = cut.join(" ");
                format!("job line {} cut", j + 1)
            } else {
                let extra = format!("{} {value}", jobs[j]);
                jobs[j] = extra;
                format!("job line {} with a 19th field", j + 1)
            }
        }
    };
    header.extend(jobs);
    (header, what)
}

fn configs(w: &Workload) -> Vec<SimConfig> {
    let mut v = vec![
        SimConfig::default(),
        SimConfig {
            best_effort_share: 0.5,
            preemption: PreemptionMode::Kill,
            ..SimConfig::default()
        },
    ];
    // Periodic checkpoints and failures make events in proportion to the
    // run time, and a checkpoint that takes longer than the time between
    // failures never completes (the job never ends): only for run times
    // and memory sizes (checkpoint costs) where neither happens.
    let max_run_s = w.jobs.iter().map(|j| j.run_s).max().unwrap_or(0);
    let max_mem_kb = w
        .jobs
        .iter()
        .filter_map(|j| j.mem_kb_per_proc)
        .max()
        .unwrap_or(0);
    if max_run_s <= 100_000 && max_mem_kb <= 64 << 20 {
        v.push(SimConfig {
            best_effort_share: 0.5,
            checkpoint_interval_ms: Some(20_000),
            failures: Some(Failures {
                mtbf_ms: 3_600_000.0,
                repair_ms: 600_000,
            }),
            ..SimConfig::default()
        });
    }
    v
}

#[test]
fn mutated_traces_give_a_clear_error_or_a_sane_simulation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = extremes();
    let mut rng = Rng::new(20_240_806, 3);
    let (mut refused, mut simulated) = (0, 0);
    for i in 0..300 {
        let (lines, what) = mutate(&mut rng, &values);
        let path = dir.path().join(format!("m{i}.swf"));
        std::fs::write(&path, lines.join("\n") + "\n").expect("write trace");
        let file = path.display().to_string();
        for mode in [Mode::Strict, Mode::Lenient] {
            let loaded = match Workload::read(&path, None, mode) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&file), "{what}: {msg}");
                    if let LoadError::Swf(SwfError::Line(le)) = &e {
                        assert!(le.location.line >= 1, "{what}: {msg}");
                        assert!(msg.starts_with(&format!("{file}:{}", le.location.line)));
                        assert_eq!(mode, Mode::Strict, "{what}: lenient refused a line: {msg}");
                    }
                    refused += 1;
                    continue;
                }
                Ok(l) => l,
            };
            let w = &loaded.workload;
            assert!(
                w.machine_procs >= 1 && w.machine_procs <= MAX_MACHINE_PROCS,
                "{what}"
            );
            for j in &w.jobs {
                assert!(j.procs >= 1 && j.procs <= w.machine_procs, "{what}");
                for t in [j.submit_s, j.run_s, j.estimate_s] {
                    assert!((0..=MAX_TIME_S).contains(&t), "{what}: {j:?}");
                }
            }
            if w.machine_procs > 4096 {
                // Valid, but a large machine per mutation is slow in a
                // debug build; the bound itself is tested elsewhere.
                continue;
            }
            for cfg in configs(w) {
                let domains = [DomainInput {
                    name: "m".into(),
                    workload: w.clone(),
                }];
                let r = run(&domains, &cfg);
                let r = match r {
                    Ok(r) => r,
                    Err(e) => panic!("{what} ({mode:?}): {e}"),
                };
                assert_eq!(r.rejected, 0, "{what}: {:?}", r.rejected_examples);
                let s = summaries(&r).total;
                assert_eq!(s.unfinished, 0, "{what}");
                assert_eq!(s.jobs as usize, w.jobs.len(), "{what}");
                assert!(
                    (0.0..=1.0 + 1e-9).contains(&s.utilization),
                    "{what}: utilization {}",
                    s.utilization
                );
                assert!(s.jobs == 0 || s.mean_bsld >= 1.0, "{what}");
                assert!(s.mean_wait_s >= 0.0 && s.makespan_s >= 0.0, "{what}");
                simulated += 1;
            }
        }
    }
    // The mutations reach both outcomes.
    assert!(
        refused > 50 && simulated > 300,
        "{refused} refused, {simulated} runs"
    );
}
