//! Any bytes, plain or gzip, go through the SWF reader in both modes and
//! through the workload conventions; nothing may panic, the two modes must
//! agree on well-formed input, and nothing beyond the limits of a
//! simulation (times, memory, machine size) gets through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgrid_swf::{MAX_MACHINE_PROCS, MAX_MEMORY_KB, MAX_TIME_S, Mode, Workload, parse};

fuzz_target!(|data: &[u8]| {
    let strict = parse(data, "fuzz.swf", Mode::Strict);
    let lenient = parse(data, "fuzz.swf", Mode::Lenient);
    if let Ok(trace) = &lenient {
        assert!(
            trace
                .records
                .iter()
                .all(|r| r.line >= 1 && r.line <= trace.lines)
        );
        assert!(trace.skipped.examples.len() as u64 <= trace.skipped.count);
        // A kept line is within the limits a simulation can take.
        assert!(trace.records.iter().all(|r| {
            [r.submit_s, r.run_s, r.req_time_s]
                .iter()
                .all(|&t| t <= MAX_TIME_S)
                && r.used_mem_kb <= MAX_MEMORY_KB
                && r.req_mem_kb <= MAX_MEMORY_KB
        }));
        // Reading straight into jobs gives what reading records first gives
        // (one machine size: the paths share the size logic).
        let direct = Workload::parse(data, "fuzz.swf", None, Mode::Lenient);
        let via = Workload::from_trace(trace, None);
        assert_eq!(direct.is_ok(), via.is_ok());
        if let (Ok(d), Ok(v)) = (&direct, &via) {
            assert_eq!(d.workload.jobs, v.jobs);
            assert_eq!(d.workload.dropped, v.dropped);
            assert_eq!(d.workload.machine_procs, v.machine_procs);
            assert_eq!(d.skipped, trace.skipped);
        }
        // A machine beyond the bound is refused, whoever gives it.
        assert!(Workload::from_trace(trace, Some(MAX_MACHINE_PROCS + 1)).is_err());
        for procs in [None, Some(1), Some(MAX_MACHINE_PROCS)] {
            if let Ok(w) = Workload::from_trace(trace, procs) {
                assert!(w.machine_procs >= 1 && w.machine_procs <= MAX_MACHINE_PROCS);
                assert!(w.jobs.len() as u64 + w.dropped.total() == trace.records.len() as u64);
                assert!(
                    w.jobs
                        .iter()
                        .all(|j| j.procs >= 1 && j.procs <= w.machine_procs)
                );
                assert!(
                    w.jobs
                        .windows(2)
                        .all(|p| (p[0].submit_s, p[0].id) <= (p[1].submit_s, p[1].id))
                );
                assert!(w.jobs.iter().all(|j| {
                    [j.submit_s, j.run_s, j.estimate_s]
                        .iter()
                        .all(|t| (0..=MAX_TIME_S).contains(t))
                }));
            }
        }
    }
    if let (Ok(s), Ok(l)) = (&strict, &lenient) {
        assert_eq!(s.records, l.records);
        assert_eq!(l.skipped.count, 0);
    }
    // Strict fails on a line exactly when lenient skips one (gzip errors
    // fail both).
    if strict.is_err() {
        assert!(lenient.as_ref().map_or(true, |l| l.skipped.count > 0));
    }
});
