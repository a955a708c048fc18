//! A time profile of free capacity: how many cores and MiB are free from
//! each instant on, given running jobs' expected ends and the reservations
//! made so far in a scheduling pass. Used by backfilling.

use crate::types::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    at: Time,
    cores: i64,
    mem: i64,
}

/// Free capacity as a step function of time, starting at `now`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    steps: Vec<Step>,
}

impl Profile {
    /// A profile with `cores`/`mem` free now and the given releases
    /// `(time, cores, mem)` (unsorted; times before `now` count as `now`).
    pub(crate) fn build(
        &mut self,
        now: Time,
        cores: i64,
        mem: i64,
        releases: &mut [(Time, i64, i64)],
    ) {
        self.steps.clear();
        releases.sort_unstable_by_key(|r| r.0);
        let (mut c, mut m) = (cores, mem);
        self.steps.push(Step {
            at: now,
            cores: c,
            mem: m,
        });
        for &(at, dc, dm) in releases.iter() {
            c += dc;
            m += dm;
            let last = self.steps.len() - 1;
            if at <= self.steps[last].at {
                self.steps[last].cores = c;
                self.steps[last].mem = m;
            } else {
                self.steps.push(Step {
                    at,
                    cores: c,
                    mem: m,
                });
            }
        }
    }

    fn fits(step: &Step, cores: i64, mem: i64) -> bool {
        step.cores >= cores && step.mem >= mem
    }

    /// Whether `(cores, mem)` is free during all of `[from, from + dur)`.
    /// `from` must be one of the profile's instants or later than the first.
    pub(crate) fn fits_during(&self, from: Time, dur: u64, cores: i64, mem: i64) -> bool {
        let end = from.plus(dur.max(1));
        let start = self
            .steps
            .partition_point(|s| s.at <= from)
            .saturating_sub(1);
        self.steps[start..]
            .iter()
            .take_while(|s| s.at < end)
            .all(|s| Self::fits(s, cores, mem))
    }

    /// The earliest instant at or after `not_before` from which
    /// `(cores, mem)` stays free for `dur`, or `None` if never.
    pub(crate) fn earliest(
        &self,
        not_before: Time,
        dur: u64,
        cores: i64,
        mem: i64,
    ) -> Option<Time> {
        let dur = dur.max(1);
        let mut i = self
            .steps
            .partition_point(|s| s.at <= not_before)
            .saturating_sub(1);
        while i < self.steps.len() {
            let start = self.steps[i].at.max(not_before);
            let end = start.plus(dur);
            let mut j = i;
            let mut ok = true;
            while j < self.steps.len() && (j == i || self.steps[j].at < end) {
                if !Self::fits(&self.steps[j], cores, mem) {
                    ok = false;
                    break;
                }
                j += 1;
            }
            if ok {
                return Some(start);
            }
            // No start between steps i and j works: step j is in the way.
            i = j + 1;
        }
        None
    }

    /// Take `(cores, mem)` away during `[from, from + dur)`.
    pub(crate) fn reserve(&mut self, from: Time, dur: u64, cores: i64, mem: i64) {
        let end = from.plus(dur.max(1));
        let a = self.split_at(from);
        let b = if end == Time::MAX {
            self.steps.len()
        } else {
            self.split_at(end)
        };
        for s in &mut self.steps[a..b] {
            s.cores -= cores;
            s.mem -= mem;
        }
    }

    /// Make sure a step starts exactly at `at`; return its index.
    fn split_at(&mut self, at: Time) -> usize {
        let i = self.steps.partition_point(|s| s.at < at);
        if i < self.steps.len() && self.steps[i].at == at {
            return i;
        }
        // `at` falls inside step i-1 (there is always a first step at or
        // before any time we are asked about).
        let prev = self.steps[i.saturating_sub(1)];
        self.steps.insert(i, Step { at, ..prev });
        i
    }

    /// Free cores and memory at the profile's first instant (`now`).
    pub(crate) fn free_now(&self) -> (i64, i64) {
        self.steps.first().map_or((0, 0), |s| (s.cores, s.mem))
    }

    /// The first instant after `t` where the profile changes, if any.
    pub(crate) fn next_change_after(&self, t: Time) -> Option<Time> {
        let i = self.steps.partition_point(|s| s.at <= t);
        self.steps.get(i).map(|s| s.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time(ms)
    }

    #[test]
    fn earliest_waits_for_releases() {
        let mut p = Profile::default();
        let mut rel = vec![(t(50), 2, 0), (t(20), 1, 0)];
        p.build(t(10), 1, 0, &mut rel);
        assert_eq!(p.earliest(t(10), 5, 1, 0), Some(t(10)));
        assert_eq!(p.earliest(t(10), 5, 2, 0), Some(t(20)));
        assert_eq!(p.earliest(t(10), 5, 4, 0), Some(t(50)));
        assert_eq!(p.earliest(t(10), 5, 5, 0), None);
    }

    #[test]
    fn reservations_block_later_jobs_that_overlap() {
        let mut p = Profile::default();
        let mut rel = vec![(t(100), 4, 0)];
        p.build(t(0), 2, 0, &mut rel);
        // A 6-core job reserved at 100 for 50.
        assert_eq!(p.earliest(t(0), 50, 6, 0), Some(t(100)));
        p.reserve(t(100), 50, 6, 0);
        // A 2-core job of length 100 would overlap it: no.
        assert!(!p.fits_during(t(0), 101, 2, 0));
        // Length 100 ends exactly at 100: yes.
        assert!(p.fits_during(t(0), 100, 2, 0));
        // So its earliest start is after the reservation.
        assert_eq!(p.earliest(t(0), 101, 2, 0), Some(t(150)));
        assert_eq!(p.next_change_after(t(0)), Some(t(100)));
    }

    #[test]
    fn releases_in_the_past_count_as_now() {
        let mut p = Profile::default();
        let mut rel = vec![(t(3), 1, 0)];
        p.build(t(10), 0, 0, &mut rel);
        assert_eq!(p.earliest(t(10), 1, 1, 0), Some(t(10)));
    }

    #[test]
    fn memory_is_a_second_dimension() {
        let mut p = Profile::default();
        let mut rel = vec![(t(5), 0, 1000)];
        p.build(t(0), 4, 500, &mut rel);
        assert_eq!(p.earliest(t(0), 10, 1, 800), Some(t(5)));
    }
}
