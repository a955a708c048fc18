//! Per-job outcomes and the summary metrics computed from them.
//!
//! Definitions (also in `docs/sim.md`):
//! - wait = first start - submit;
//! - bounded slowdown = max(1, (end - submit) / max(run, 10 s)), which is
//!   the usual max(1, (wait + run) / max(run, 10 s)) when a job is never
//!   preempted, and also charges time lost to preemption otherwise;
//! - percentiles are nearest-rank: the value at rank ceil(p * n);
//! - makespan = last end - first submit;
//! - utilization = useful core-seconds (procs x real run time of finished
//!   jobs) / (processors x makespan).

use serde::Serialize;

/// Milliseconds of virtual time (the core's unit).
pub type Ms = u64;

/// What happened to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRecord {
    /// SWF job number.
    pub id: i64,
    /// Index of the domain (0 for the first trace, 1 for `--trace2`).
    pub domain: u8,
    /// Whether the job ran in the best-effort class.
    pub best_effort: bool,
    /// Processors (one-core nodes) it needs.
    pub procs: u32,
    /// Submit time.
    pub submit: Ms,
    /// Real run time (from the trace).
    pub run: Ms,
    /// When it first started running (after any boot/restore delay).
    pub first_start: Option<Ms>,
    /// When it finished.
    pub end: Option<Ms>,
    /// How many times it was preempted or lost its nodes.
    pub preemptions: u32,
}

impl JobRecord {
    /// Wait before the first start, if it started.
    pub fn wait(&self) -> Option<Ms> {
        self.first_start.map(|s| s.saturating_sub(self.submit))
    }

    /// Bounded slowdown with the 10 s threshold, if it finished.
    pub fn bsld(&self) -> Option<f64> {
        let end = self.end?;
        let response = ms_to_s(end.saturating_sub(self.submit));
        let run = ms_to_s(self.run).max(10.0);
        Some((response / run).max(1.0))
    }
}

/// Milliseconds to seconds.
pub fn ms_to_s(ms: Ms) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    s
}

/// Core-time accounting kept by the driver while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accounting {
    /// Core-milliseconds of work thrown away by kills, node losses and
    /// reclaimed loans (work not saved by a checkpoint).
    pub wasted_core_ms: u128,
    /// The part of `wasted_core_ms` lost by best-effort jobs.
    pub wasted_best_effort_core_ms: u128,
    /// Core-milliseconds spent checkpointing and restoring.
    pub checkpoint_core_ms: u128,
    /// Core-milliseconds spent booting and halting borrowed nodes.
    pub boot_core_ms: u128,
    /// Node failures injected.
    pub failures: u64,
    /// Loans made (nodes lent from one domain to another).
    pub loans: u64,
}

/// The summary of one domain (or of a whole single-domain run).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Jobs simulated to completion.
    pub jobs: u64,
    /// Jobs dropped by the trace conventions.
    pub dropped: u64,
    /// Jobs still unfinished when the simulation stopped (0 normally).
    pub unfinished: u64,
    /// Processors of the domain's own machine.
    pub procs: u32,
    /// Last end - first submit, seconds.
    pub makespan_s: f64,
    /// Useful core-seconds / (procs x makespan).
    pub utilization: f64,
    /// Mean wait before first start, seconds.
    pub mean_wait_s: f64,
    /// Median wait, seconds.
    pub p50_wait_s: f64,
    /// 95th percentile wait, seconds.
    pub p95_wait_s: f64,
    /// Mean bounded slowdown.
    pub mean_bsld: f64,
    /// 95th percentile bounded slowdown.
    pub p95_bsld: f64,
    /// Mean response time (end - submit), seconds.
    pub mean_response_s: f64,
    /// Core-seconds lost to kills, failures and reclaims.
    pub wasted_core_s: f64,
    /// Core-seconds spent checkpointing and restoring.
    pub checkpoint_core_s: f64,
    /// Preemptions (including losses of nodes) over all jobs.
    pub preemptions: u64,
    /// Mean wait of normal (not best-effort) jobs, seconds.
    pub normal_mean_wait_s: f64,
    /// Mean response time of normal jobs, seconds.
    pub normal_mean_response_s: f64,
    /// Best-effort jobs among `jobs`.
    pub best_effort_jobs: u64,
    /// Mean wait of best-effort jobs before their first start, seconds.
    pub best_effort_mean_wait_s: f64,
    /// Mean response time of best-effort jobs, seconds (0 if none).
    pub best_effort_mean_response_s: f64,
    /// Useful core-seconds of best-effort jobs (procs x run time).
    pub best_effort_useful_core_s: f64,
    /// Core-seconds best-effort jobs lost to kills and failures.
    pub best_effort_wasted_core_s: f64,
    /// best_effort_wasted / (best_effort_wasted + best_effort_useful): the
    /// share of best-effort CPU time thrown away (VMdeploy measured 43%).
    pub best_effort_waste_share: f64,
}

/// The value at rank ceil(p * n) (nearest-rank) of the values, 0 when
/// empty. Reorders `values` (a selection, not a full sort: O(n)).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = (p * values.len() as f64).ceil() as usize;
    let ix = rank.clamp(1, values.len()) - 1;
    *values.select_nth_unstable_by(ix, f64::total_cmp).1
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        sum / n
    }
}

/// Summarises the jobs of one domain.
pub fn summarize(jobs: &[&JobRecord], dropped: u64, procs: u32, acct: &Accounting) -> Summary {
    let done: Vec<&JobRecord> = jobs.iter().copied().filter(|j| j.end.is_some()).collect();
    let first_submit = jobs.iter().map(|j| j.submit).min().unwrap_or(0);
    let last_end = done
        .iter()
        .filter_map(|j| j.end)
        .max()
        .unwrap_or(first_submit);
    let makespan = ms_to_s(last_end.saturating_sub(first_submit));
    // Folds from +0.0: `sum()` of no floats is -0.0, which would print so.
    let useful = done
        .iter()
        .map(|j| f64::from(j.procs) * ms_to_s(j.run))
        .fold(0.0, |a, b| a + b);
    let utilization = if makespan > 0.0 && procs > 0 {
        useful / (f64::from(procs) * makespan)
    } else {
        0.0
    };
    let mut waits: Vec<f64> = done.iter().filter_map(|j| j.wait()).map(ms_to_s).collect();
    let mut bslds: Vec<f64> = done.iter().filter_map(|j| j.bsld()).collect();
    let be_useful = done
        .iter()
        .filter(|j| j.best_effort)
        .map(|j| f64::from(j.procs) * ms_to_s(j.run))
        .fold(0.0, |a, b| a + b);
    #[allow(clippy::cast_precision_loss)]
    let be_wasted = acct.wasted_best_effort_core_ms as f64 / 1000.0;
    let response = |j: &&JobRecord| ms_to_s(j.end.unwrap_or(j.submit).saturating_sub(j.submit));
    #[allow(clippy::cast_precision_loss)]
    Summary {
        jobs: done.len() as u64,
        dropped,
        unfinished: (jobs.len() - done.len()) as u64,
        procs,
        makespan_s: makespan,
        utilization,
        mean_wait_s: mean(waits.iter().copied()),
        p50_wait_s: percentile(&mut waits, 0.50),
        p95_wait_s: percentile(&mut waits, 0.95),
        mean_bsld: mean(bslds.iter().copied()),
        p95_bsld: percentile(&mut bslds, 0.95),
        mean_response_s: mean(done.iter().map(response)),
        wasted_core_s: acct.wasted_core_ms as f64 / 1000.0,
        checkpoint_core_s: acct.checkpoint_core_ms as f64 / 1000.0,
        preemptions: done.iter().map(|j| u64::from(j.preemptions)).sum(),
        normal_mean_wait_s: mean(
            done.iter()
                .filter(|j| !j.best_effort)
                .filter_map(|j| j.wait())
                .map(ms_to_s),
        ),
        normal_mean_response_s: mean(done.iter().filter(|j| !j.best_effort).map(response)),
        best_effort_jobs: done.iter().filter(|j| j.best_effort).count() as u64,
        best_effort_mean_wait_s: mean(
            done.iter()
                .filter(|j| j.best_effort)
                .filter_map(|j| j.wait())
                .map(ms_to_s),
        ),
        best_effort_mean_response_s: mean(done.iter().filter(|j| j.best_effort).map(response)),
        best_effort_useful_core_s: be_useful,
        best_effort_wasted_core_s: be_wasted,
        best_effort_waste_share: if be_wasted + be_useful > 0.0 {
            be_wasted / (be_wasted + be_useful)
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(submit: Ms, start: Ms, run: Ms, procs: u32) -> JobRecord {
        JobRecord {
            id: 0,
            domain: 0,
            best_effort: false,
            procs,
            submit,
            run,
            first_start: Some(start),
            end: Some(start + run),
            preemptions: 0,
        }
    }

    #[test]
    fn bsld_uses_the_ten_second_bound() {
        // 1 s job that waited 9 s: (9 + 1) / max(1, 10) = 1.
        assert_eq!(job(0, 9_000, 1_000, 1).bsld(), Some(1.0));
        // 100 s job that waited 100 s: 200 / 100 = 2.
        assert_eq!(job(0, 100_000, 100_000, 1).bsld(), Some(2.0));
        // 5 s job that waited 45 s: 50 / 10 = 5.
        assert_eq!(job(0, 45_000, 5_000, 1).bsld(), Some(5.0));
        // Never below 1.
        assert_eq!(job(0, 0, 3_000, 1).bsld(), Some(1.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        // Shuffled 1..=20: the selection must not rely on input order.
        let mut v: Vec<f64> = (1..=20).map(|i| f64::from((i * 7) % 20 + 1)).collect();
        assert_eq!(percentile(&mut v, 0.5), 10.0);
        assert_eq!(percentile(&mut v, 0.95), 19.0);
        assert_eq!(percentile(&mut v, 1.0), 20.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn summary_by_hand() {
        // Machine of 4: A (4 procs, 0..100), B (2 procs, waits to 100, runs
        // 50), C (2 procs, waits to 100, runs 100).
        let jobs = [
            job(0, 0, 100_000, 4),
            job(10_000, 100_000, 50_000, 2),
            job(20_000, 100_000, 100_000, 2),
        ];
        let refs: Vec<&JobRecord> = jobs.iter().collect();
        let s = summarize(&refs, 3, 4, &Accounting::default());
        assert_eq!(s.jobs, 3);
        assert_eq!(s.dropped, 3);
        assert_eq!(s.makespan_s, 200.0);
        // Useful: 400 + 100 + 200 = 700 core-s of 800.
        assert_eq!(s.utilization, 700.0 / 800.0);
        assert_eq!(s.mean_wait_s, (0.0 + 90.0 + 80.0) / 3.0);
        assert_eq!(s.p50_wait_s, 80.0);
        assert_eq!(s.p95_wait_s, 90.0);
        // bsld: 1, 140/50 = 2.8, 180/100 = 1.8.
        assert!((s.mean_bsld - (1.0 + 2.8 + 1.8) / 3.0).abs() < 1e-12);
        assert_eq!(s.p95_bsld, 2.8);
    }

    #[test]
    fn unfinished_jobs_are_counted_not_averaged() {
        let mut j = job(0, 0, 10_000, 1);
        j.end = None;
        j.first_start = None;
        let done = job(0, 0, 10_000, 1);
        let s = summarize(&[&j, &done], 0, 1, &Accounting::default());
        assert_eq!((s.jobs, s.unfinished), (1, 1));
        assert_eq!(s.mean_wait_s, 0.0);
        // No best-effort job: +0, not -0 (which JSON would print as -0.0).
        assert!(s.best_effort_useful_core_s.is_sign_positive());
    }
}
