//! Item 8 of issue 8: `vgrid sim` aborted on an absurd machine size (one
//! node per processor, "memory allocation of 4831838208 bytes failed") and
//! reported a utilization of 125% for a run time of i64::MAX. Machines are
//! bounded before anything is allocated, and times never overflow: they
//! simulate exactly up to the bounds and give a clear error past them.

use vgrid_core::{CostModel, Policy};
use vgrid_sim::config::{DomainInput, Failures, SimConfig};
use vgrid_sim::driver::{SimError, run};
use vgrid_sim::report::summaries;
use vgrid_swf::{Dropped, Job, MAX_MACHINE_PROCS, MAX_TIME_S, MachineSource, Mode, Workload};

fn domain(text: &str) -> DomainInput {
    let loaded = Workload::parse(text.as_bytes(), "t.swf", None, Mode::Strict);
    DomainInput {
        name: "t".into(),
        workload: loaded.expect("a valid trace").workload,
    }
}

fn machine(procs: u32, jobs: Vec<Job>) -> DomainInput {
    DomainInput {
        name: "hand".into(),
        workload: Workload {
            jobs,
            machine_procs: procs,
            machine_source: MachineSource::Given,
            dropped: Dropped::default(),
        },
    }
}

fn job(id: i64, submit_s: i64, run_s: i64) -> Job {
    Job {
        id,
        submit_s,
        run_s,
        procs: 1,
        estimate_s: run_s,
        mem_kb_per_proc: None,
        user: 1,
        line: 7,
    }
}

#[test]
fn machines_beyond_the_bound_are_refused_before_anything_is_allocated() {
    // 4294967295 one-core nodes would need about 1.4 TB: the old driver
    // aborted the process allocating them.
    let err = run(
        &[machine(u32::MAX, vec![job(1, 0, 1)])],
        &SimConfig::default(),
    )
    .err();
    assert!(
        matches!(err, Some(SimError::TooManyNodes { nodes }) if nodes == u64::from(u32::MAX)),
        "{err:?}"
    );
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains(&MAX_MACHINE_PROCS.to_string()), "{msg}");
    // The bound holds for all domains of a run together.
    let half = MAX_MACHINE_PROCS / 2 + 1;
    let two = [
        machine(half, vec![job(1, 0, 1)]),
        machine(half, vec![job(2, 0, 1)]),
    ];
    let err = run(&two, &SimConfig::default()).err();
    assert!(
        matches!(err, Some(SimError::TooManyNodes { .. })),
        "{err:?}"
    );
}

#[test]
fn times_outside_the_bounds_are_refused_by_name() {
    for (submit, run_s, what) in [
        (0, i64::MAX, "run time"),
        (i64::MAX, 10, "submit time"),
        (MAX_TIME_S + 1, 10, "submit time"),
        (-5, 10, "submit time"),
    ] {
        let err = run(
            &[machine(2, vec![job(9, submit, run_s)])],
            &SimConfig::default(),
        )
        .err();
        match &err {
            Some(SimError::JobTime {
                job: 9,
                line: 7,
                what: w,
                ..
            }) if *w == what => {}
            other => panic!("{submit} {run_s}: {other:?}"),
        }
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("job 9 (line 7)") && msg.contains(what),
            "{msg}"
        );
    }
}

#[test]
fn times_at_the_bounds_simulate_exactly() {
    // Two one-processor jobs of MAX_TIME_S seconds submitted at MAX_TIME_S
    // on one processor: the second waits for the first. submit + wait + run
    // is 3 x 10^15 ms, far inside the clock; utilization is exactly 1.
    let t = MAX_TIME_S;
    let r = run(
        &[domain(&format!(
            "; MaxProcs: 1\n1 {t} -1 {t} 1 -1 -1 -1 {t} -1 1 1 1 1 1 1 -1 -1\n2 {t} -1 {t} 1 -1 -1 -1 {t} -1 1 1 1 1 1 1 -1 -1\n"
        ))],
        &SimConfig::default(),
    )
    .expect("simulates");
    let ms = 1000 * t as u64;
    let ends: Vec<Option<u64>> = r.jobs.iter().map(|j| j.end).collect();
    assert_eq!(ends, vec![Some(2 * ms), Some(3 * ms)]);
    let s = summaries(&r).total;
    assert_eq!(s.jobs, 2);
    assert_eq!(s.utilization, 1.0);
    assert!(s.mean_wait_s >= 0.0 && s.mean_bsld >= 1.0);
}

#[test]
fn a_clock_that_would_overflow_is_a_clear_error() {
    // 18,500 jobs of 10^12 s, one after the other on one processor, end
    // after 1.85 x 10^19 ms: past the end of the clock (2^64 ms).
    let t = MAX_TIME_S;
    let mut text = String::from("; MaxProcs: 1\n");
    for i in 1..=18_500 {
        text.push_str(&format!(
            "{i} 0 -1 {t} 1 -1 -1 -1 {t} -1 1 1 1 1 1 1 -1 -1\n"
        ));
    }
    let cfg = SimConfig {
        policy: Policy::Fcfs,
        ..SimConfig::default()
    };
    let err = run(&[domain(&text)], &cfg).err();
    match &err {
        Some(SimError::ClockOverflow { what, .. }) => {
            assert!(what.contains("job 18447"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn operation_costs_past_the_clock_are_a_clear_error() {
    let trace = "; MaxProcs: 1\n1 0 -1 100 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n2 50 -1 100 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n";
    // Every job best-effort and checkpointed with a cost of u64::MAX ms.
    let huge = CostModel {
        fixed_ms: u64::MAX,
        ms_per_gb: u64::MAX,
    };
    let cfg = SimConfig {
        best_effort_share: 1.0,
        checkpoint_interval_ms: Some(10_000),
        checkpoint_cost: huge,
        ..SimConfig::default()
    };
    let err = run(&[domain(trace)], &cfg).err();
    assert!(
        matches!(&err, Some(SimError::ClockOverflow { what, .. }) if what.contains("checkpoint")),
        "{err:?}"
    );
    // A node repair that never ends.
    let cfg = SimConfig {
        failures: Some(Failures {
            mtbf_ms: 1_000.0,
            repair_ms: u64::MAX,
        }),
        ..SimConfig::default()
    };
    let err = run(&[domain(trace)], &cfg).err();
    assert!(
        matches!(&err, Some(SimError::ClockOverflow { what, .. }) if what.contains("repair")),
        "{err:?}"
    );
}
