//! A seeded synthetic workload for scale tests (`vgrid sim --synthetic N`).
//!
//! The model is simple on purpose (it exists to load the scheduler, not to
//! imitate a site). Job sizes follow a [`Shape`]: in the classic shape a
//! quarter of the jobs are serial and the rest ask for a power of two of
//! processors up to a tenth of the machine; in the wide shape (a modern
//! large machine, jobs of several hundred processors on average) every job
//! asks for 2^e processors, e uniform in 0..=12, capped at the machine. Run
//! times are log-uniform between 10 s and 36 h; estimates are the run time
//! times a factor uniform in [1, 3), rounded up to a minute; arrivals are a
//! Poisson process whose rate gives the requested offered load.

use vgrid_swf::{Dropped, Job, MachineSource, Workload};

use crate::rng::Rng;

/// How job sizes are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// A quarter serial, the rest powers of two up to a tenth of the
    /// machine: the mean grows with the machine (85 processors on 10,000,
    /// about 950 on 90,000).
    #[default]
    Classic,
    /// Powers of two from 1 to 4096 processors, exponent uniform (mean
    /// 8191/13 = 630 processors): a modern large machine, whose jobs are
    /// wide whatever the machine size.
    Wide,
}

/// The largest exponent of the wide shape: jobs of up to 2^12 = 4096
/// processors.
const WIDE_MAX_EXP: u64 = 12;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    /// Number of jobs.
    pub jobs: u64,
    /// Processors of the machine.
    pub procs: u32,
    /// Offered load: total work / (procs x arrival span). Above 1 the queue
    /// grows without bound.
    pub load: f64,
    /// PRNG seed.
    pub seed: u64,
    /// How job sizes are drawn.
    pub shape: Shape,
}

/// Generates the workload; the same spec always gives the same jobs.
pub fn generate(spec: &SyntheticSpec) -> Workload {
    let mut rng = Rng::new(spec.seed, 7);
    let procs = spec.procs.max(1);
    let max_exp = (procs / 10).max(1).ilog2();
    let n = usize::try_from(spec.jobs).unwrap_or(usize::MAX);
    let mut jobs = Vec::with_capacity(n);
    let mut work = 0.0f64;
    let (lo, hi) = (10f64.ln(), (36.0f64 * 3600.0).ln());
    for i in 0..spec.jobs {
        let p = match spec.shape {
            Shape::Classic if rng.chance(0.25) || max_exp == 0 => 1,
            // max_exp <= 31, so the shift fits.
            Shape::Classic => 1u32 << (1 + rng.below(u64::from(max_exp))),
            Shape::Wide => 1u32 << rng.below(WIDE_MAX_EXP + 1),
        };
        let p = p.min(procs);
        // ln-uniform; at least 1 s after rounding.
        #[allow(clippy::cast_possible_truncation)]
        let run = (lo + (hi - lo) * rng.next_f64()).exp().round().max(1.0) as i64;
        #[allow(clippy::cast_possible_truncation)]
        let estimate = ((run as f64 * (1.0 + 2.0 * rng.next_f64())) / 60.0).ceil() as i64 * 60;
        #[allow(clippy::cast_precision_loss)]
        {
            work += f64::from(p) * run as f64;
        }
        jobs.push(Job {
            id: i64::try_from(i + 1).unwrap_or(i64::MAX),
            submit_s: 0,
            run_s: run,
            procs: p,
            estimate_s: estimate,
            mem_kb_per_proc: None,
            user: i64::try_from(rng.below(1000)).unwrap_or(0),
            line: 0,
        });
    }
    // Arrival span for the requested load, then exponential gaps with the
    // matching mean.
    let load = if spec.load > 0.0 { spec.load } else { 1.0 };
    let span = work / (load * f64::from(procs));
    #[allow(clippy::cast_precision_loss)]
    let mean_gap = span / spec.jobs.max(1) as f64;
    let mut t = 0.0f64;
    for j in &mut jobs {
        #[allow(clippy::cast_possible_truncation)]
        {
            j.submit_s = t as i64;
        }
        t += rng.exponential(mean_gap);
    }
    Workload {
        jobs,
        machine_procs: procs,
        machine_source: MachineSource::Given,
        dropped: Dropped::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sorted_and_within_the_machine() {
        let spec = SyntheticSpec {
            jobs: 5000,
            procs: 1000,
            load: 0.8,
            seed: 3,
            shape: Shape::Classic,
        };
        let a = generate(&spec);
        let b = generate(&spec);
        assert_eq!(a.jobs, b.jobs);
        assert_eq!(a.jobs.len(), 5000);
        assert!(a.jobs.windows(2).all(|w| w[0].submit_s <= w[1].submit_s));
        assert!(a.jobs.iter().all(|j| j.procs >= 1 && j.procs <= 100));
        assert!(
            a.jobs
                .iter()
                .all(|j| j.estimate_s >= j.run_s && j.run_s >= 1)
        );
        let other = generate(&SyntheticSpec { seed: 4, ..spec });
        assert_ne!(a.jobs, other.jobs);
    }

    #[test]
    fn offered_load_is_close_to_the_request() {
        let spec = SyntheticSpec {
            jobs: 20_000,
            procs: 1000,
            load: 0.7,
            seed: 1,
            shape: Shape::Classic,
        };
        let w = generate(&spec);
        #[allow(clippy::cast_precision_loss)]
        let work: f64 = w
            .jobs
            .iter()
            .map(|j| f64::from(j.procs) * j.run_s as f64)
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let span = w.jobs.last().map_or(1.0, |j| j.submit_s as f64);
        let load = work / (1000.0 * span);
        assert!((load - 0.7).abs() < 0.05, "load {load}");
    }

    #[test]
    fn wide_jobs_average_several_hundred_processors() {
        let spec = SyntheticSpec {
            jobs: 20_000,
            procs: 90_000,
            load: 0.85,
            seed: 1,
            shape: Shape::Wide,
        };
        let w = generate(&spec);
        assert_eq!(w.machine_procs, 90_000);
        assert!(w.jobs.iter().all(|j| (1..=4096).contains(&j.procs)));
        assert!(w.jobs.iter().all(|j| j.procs.is_power_of_two()));
        #[allow(clippy::cast_precision_loss)]
        let mean = w.jobs.iter().map(|j| f64::from(j.procs)).sum::<f64>() / w.jobs.len() as f64;
        // 8191 / 13 = 630 in expectation.
        assert!((500.0..760.0).contains(&mean), "mean {mean}");
        let classic = generate(&SyntheticSpec {
            shape: Shape::Classic,
            ..spec
        });
        assert_ne!(classic.jobs, w.jobs);
    }

    #[test]
    fn wide_jobs_never_exceed_a_small_machine() {
        let w = generate(&SyntheticSpec {
            jobs: 2000,
            procs: 100,
            load: 0.85,
            seed: 2,
            shape: Shape::Wide,
        });
        assert!(w.jobs.iter().all(|j| (1..=100).contains(&j.procs)));
        assert!(w.jobs.iter().any(|j| j.procs == 100));
    }
}
