//! Time series sampled during a run (queue demand, busy processors, borrowed
//! nodes) and derived from its job records (average completion time).

use crate::metrics::{JobRecord, Ms, ms_to_s};

/// What the driver knows about one domain at an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge {
    /// Processors requested by the domain's queued (submitted, not running)
    /// jobs: the VioCluster demand d.
    pub demand: u64,
    /// Processors running this domain's jobs (own and borrowed nodes).
    pub busy: u64,
    /// Nodes this domain has borrowed from others (ready or booting).
    pub borrowed: u64,
    /// Nodes this domain has lent to others.
    pub lent: u64,
}

/// One sample: the gauges of every domain at time `t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The sampling instant.
    pub t: Ms,
    /// One gauge per domain.
    pub domains: Vec<Gauge>,
}

/// Most samples a run keeps. When a run outlasts `MAX_SAMPLES` intervals
/// (a job far longer than the arrivals span, or a tiny interval asked for),
/// every other sample is dropped and the interval doubles, so that memory
/// stays bounded whatever the trace's times.
pub const MAX_SAMPLES: usize = 1 << 16;

/// Takes a sample every `interval` of virtual time. The state between two
/// events is constant, so the driver calls [`Sampler::advance`] before it
/// applies the events of a new instant: every boundary before that instant
/// sees the state left by the previous one. Sample `k` is at `start + k *
/// interval`, also after the interval doubled (see [`MAX_SAMPLES`]).
#[derive(Debug, Clone)]
pub struct Sampler {
    interval: Ms,
    next: Ms,
    /// The samples so far, in time order.
    pub samples: Vec<Sample>,
}

impl Sampler {
    /// A sampler starting at `start` with the given interval (at least 1 ms).
    pub fn new(start: Ms, interval: Ms) -> Sampler {
        Sampler {
            interval: interval.max(1),
            next: start,
            samples: Vec::new(),
        }
    }

    /// Records samples for every boundary strictly before `now`.
    pub fn advance(&mut self, now: Ms, gauges: &[Gauge]) {
        while self.next < now {
            if self.samples.len() >= MAX_SAMPLES {
                self.coarsen();
                continue;
            }
            self.samples.push(Sample {
                t: self.next,
                domains: gauges.to_vec(),
            });
            // At the end of the clock no boundary is before any `now`.
            self.next = self.next.checked_add(self.interval).unwrap_or(Ms::MAX);
        }
    }

    /// Keeps every other sample (those at even multiples of the interval)
    /// and doubles the interval: the next boundary is then again one
    /// interval after the last sample kept.
    fn coarsen(&mut self) {
        let mut k = 0usize;
        self.samples.retain(|_| {
            k += 1;
            k % 2 == 1
        });
        self.interval = self.interval.saturating_mul(2);
        if let Some(last) = self.samples.last() {
            self.next = last.t.saturating_add(self.interval);
        }
    }

    /// Keeps only the samples at multiples of `target` from `start` (the
    /// samples were taken at a finer interval because `target` was not
    /// known yet): the same samples a sampler of interval `target` would
    /// have taken, when `target` is a multiple of the interval (always,
    /// from an hourly start, unless the run outlasted [`MAX_SAMPLES`]
    /// hours; otherwise the next multiple of the interval above `target`).
    pub fn thin_to(&mut self, start: Ms, target: Ms) {
        let every = target.div_ceil(self.interval).max(1);
        if every == 1 {
            return;
        }
        let step = self.interval.saturating_mul(every);
        self.samples
            .retain(|s| s.t.saturating_sub(start).checked_rem(step) == Some(0));
        self.interval = step;
        self.next = self
            .samples
            .last()
            .map_or(start, |s| s.t.saturating_add(step));
    }

    /// The sampling interval.
    pub fn interval(&self) -> Ms {
        self.interval
    }
}

/// A sampling interval that gives about `points` samples over `span`,
/// rounded up to whole hours (the VioCluster brokers' period).
pub fn interval_for(span: Ms, points: u64) -> Ms {
    const HOUR: Ms = 3_600_000;
    let raw = span.div_ceil(points.max(1));
    raw.div_ceil(HOUR).max(1) * HOUR
}

/// Average completion (response) time of the jobs submitted in each bin of
/// width `bin` starting at `start`: (bin start in seconds, mean response in
/// seconds). Bins with no finished job are left out.
pub fn completion_by_submit(jobs: &[JobRecord], domain: u8, start: Ms, bin: Ms) -> Vec<(f64, f64)> {
    let bin = bin.max(1);
    let mut sums: std::collections::BTreeMap<u64, (f64, u64)> = std::collections::BTreeMap::new();
    for j in jobs.iter().filter(|j| j.domain == domain) {
        if let Some(end) = j.end {
            let k = j.submit.saturating_sub(start) / bin;
            let e = sums.entry(k).or_insert((0.0, 0));
            e.0 += ms_to_s(end.saturating_sub(j.submit));
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(k, (sum, n))| {
            #[allow(clippy::cast_precision_loss)]
            let mean = sum / n as f64;
            (ms_to_s(start + k * bin), mean)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_every_boundary_before_now() {
        let mut s = Sampler::new(0, 10);
        let g = |d| {
            vec![Gauge {
                demand: d,
                ..Gauge::default()
            }]
        };
        s.advance(0, &g(1)); // nothing before 0
        s.advance(25, &g(2)); // boundaries 0, 10, 20 see the state before 25
        s.advance(30, &g(3)); // nothing new: 30 is not before 30
        s.advance(31, &g(4)); // boundary 30
        let got: Vec<(Ms, u64)> = s
            .samples
            .iter()
            .map(|x| (x.t, x.domains[0].demand))
            .collect();
        assert_eq!(got, vec![(0, 2), (10, 2), (20, 2), (30, 4)]);
    }

    #[test]
    fn a_long_run_keeps_a_bounded_number_of_evenly_spaced_samples() {
        let mut s = Sampler::new(5, 10);
        let g = [Gauge::default()];
        // Far more boundaries than MAX_SAMPLES, in one step and then more.
        s.advance(5 + 10 * (3 * MAX_SAMPLES as u64), &g);
        s.advance(u64::MAX, &g);
        let n = s.samples.len();
        s.advance(u64::MAX, &g);
        assert_eq!(s.samples.len(), n);
        assert!(s.samples.len() <= MAX_SAMPLES, "{}", s.samples.len());
        assert!(s.samples.len() >= MAX_SAMPLES / 2, "{}", s.samples.len());
        let i = s.interval();
        assert!(i > 10 && (i / 10).is_power_of_two(), "{i}");
        for (k, x) in s.samples.iter().enumerate() {
            assert_eq!(x.t, 5 + k as u64 * i);
        }
    }

    #[test]
    fn interval_rounds_to_hours() {
        assert_eq!(interval_for(0, 100), 3_600_000);
        assert_eq!(interval_for(100 * 3_600_000, 100), 3_600_000);
        assert_eq!(interval_for(100 * 3_600_000 + 1, 100), 7_200_000);
    }

    #[test]
    fn completion_bins_by_submit_time() {
        let rec = |submit: Ms, end: Ms, domain: u8| JobRecord {
            id: 1,
            domain,
            best_effort: false,
            procs: 1,
            submit,
            run: 1,
            first_start: Some(submit),
            end: Some(end),
            preemptions: 0,
        };
        let jobs = [
            rec(0, 10_000, 0),
            rec(5_000, 35_000, 0),
            rec(25_000, 30_000, 0),
            rec(1_000, 999_000, 1),
        ];
        let got = completion_by_submit(&jobs, 0, 0, 20_000);
        assert_eq!(got, vec![(0.0, 20.0), (20.0, 5.0)]);
    }
}
