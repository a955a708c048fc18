//! One scheduling pass over a domain: reservations, then the normal queue
//! under the configured policy, then best-effort jobs on what is left.

use std::ops::Bound;

use crate::config::Policy;
use crate::profile::Profile;
use crate::types::{JobId, Time};
use crate::view::WaitReason;

use super::Scheduler;
use super::place::View;
use super::state::{POOLS, PoolKind, QKey};

/// The EASY head job's reservation in the fast path: when it can start,
/// and the capacity left over at that time for jobs that run past it.
#[derive(Debug, Clone, Copy)]
struct Shadow {
    at: Time,
    extra_c: i64,
    extra_m: i64,
}

impl Scheduler {
    pub(super) fn pass(&mut self, now: Time, d: usize) {
        self.domains[d].pass_gen += 1;
        let pass_no = self.domains[d].pass_gen;

        // Placed jobs whose nodes have emptied (or whose window opened).
        let vacating = std::mem::take(&mut self.domains[d].vacating);
        for id in vacating {
            if !self.try_start(now, id) && self.jobs.contains_key(&id) {
                self.domains[d].vacating.push(id);
            }
        }

        self.reservations_pass(now, d, pass_no);

        self.domains[d].plan_wakeup = None;
        let dom = &self.domains[d];
        let simple = dom.reservations.is_empty() && dom.pool(PoolKind::Borrowed).nodes == 0;
        #[cfg(test)]
        let simple = simple && !self.force_profile;
        match self.cfg.policy {
            Policy::Fcfs if simple => self.fcfs_pass(now, d, pass_no),
            Policy::Easy if simple => self.easy_pass(now, d, pass_no),
            policy => self.profile_pass(now, d, pass_no, policy),
        }

        self.best_effort_pass(now, d, pass_no);

        // When must the next reservation be placed ahead of its window?
        let dom = &mut self.domains[d];
        let lead = dom.be_lead();
        dom.prep_wakeup = dom
            .reservations
            .iter()
            .map(|&(start, _)| Time(start.0.saturating_sub(lead)))
            .find(|&t| t > now);
        dom.dirty = false;
    }

    fn set_reason(&mut self, id: JobId, reason: WaitReason, pass_no: u64) {
        self.set_reason_planned(id, reason, None, pass_no);
    }

    fn set_reason_planned(
        &mut self,
        id: JobId,
        reason: WaitReason,
        planned: Option<(Time, PoolKind)>,
        pass_no: u64,
    ) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.reason = reason;
            j.planned = planned;
            j.reason_gen = pass_no;
        }
    }

    /// The next key after `cursor` in a domain's normal (or best-effort)
    /// queue. Walking by key stays valid while jobs leave the queue.
    fn next_in_queue(&self, d: usize, cursor: Option<QKey>, best_effort: bool) -> Option<QKey> {
        let dom = &self.domains[d];
        let q = if best_effort {
            &dom.be_queue
        } else {
            &dom.queue
        };
        match cursor {
            None => q.first().copied(),
            Some(k) => q
                .range((Bound::Excluded(k), Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    /// Place a job now in its own pool, else in the borrowed one (never
    /// across both; reservations only on own nodes). Returns the pool.
    fn try_place_now(
        &mut self,
        now: Time,
        d: usize,
        id: JobId,
        only: Option<PoolKind>,
    ) -> Option<PoolKind> {
        let reservation = self.jobs.get(&id)?.window().is_some();
        for kind in POOLS {
            if only.is_some_and(|o| o != kind) || (reservation && kind == PoolKind::Borrowed) {
                continue;
            }
            if self.domains[d].pool(kind).nodes == 0 {
                continue;
            }
            if self.find_placement(d, kind, id, View::Normal) {
                self.place(now, d, kind, id);
                return Some(kind);
            }
        }
        None
    }

    fn job_need(&self, id: JobId) -> (i64, i64) {
        self.jobs.get(&id).map_or((0, 0), |j| {
            (j.spec.total_cores() as i64, j.spec.total_memory_mb() as i64)
        })
    }

    /// Estimated run time of a waiting job if it started now.
    fn duration(&self, now: Time, id: JobId) -> u64 {
        self.jobs
            .get(&id)
            .map_or(0, |j| self.remaining_ms(now, j, true))
    }

    /// Place reservations whose window is open, or opens within the time
    /// it takes to checkpoint the best-effort jobs that may be in the way.
    fn reservations_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        let lead = self.domains[d].be_lead();
        let mut due = std::mem::take(&mut self.scratch.ids);
        due.clear();
        due.extend(
            self.domains[d]
                .reservations
                .iter()
                .take_while(|&&(start, _)| start.0.saturating_sub(lead) <= now.0)
                .map(|&(_, id)| id),
        );
        for &id in &due {
            if let Some(r) = self.infeasible(d, id) {
                self.set_reason(id, r, pass_no);
                continue;
            }
            if self
                .try_place_now(now, d, id, Some(PoolKind::Own))
                .is_none()
            {
                let open = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.window())
                    .is_some_and(|(s, _)| s <= now);
                let reason = if open {
                    WaitReason::Resources
                } else {
                    WaitReason::Reservation
                };
                self.set_reason(id, reason, pass_no);
            }
        }
        self.scratch.ids = due;
    }

    /// Strict queue order: start jobs until the first that does not fit.
    fn fcfs_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        let mut cursor = None;
        while let Some(key) = self.next_in_queue(d, cursor, false) {
            cursor = Some(key);
            let id = key.2;
            if let Some(r) = self.infeasible(d, id) {
                self.set_reason(id, r, pass_no);
                continue;
            }
            if self.try_place_now(now, d, id, None).is_none() {
                self.set_reason(id, WaitReason::Resources, pass_no);
                break;
            }
        }
    }

    /// EASY backfilling without reservations or borrowed nodes, in O(1)
    /// per queued job looked at (the classic shadow-time/extra-capacity
    /// form). The pass stops looking once no capacity is free.
    fn easy_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        let mut cursor = None;
        let mut shadow: Option<Shadow> = None;
        while let Some(key) = self.next_in_queue(d, cursor, false) {
            cursor = Some(key);
            let id = key.2;
            let pool = self.domains[d].pool(PoolKind::Own);
            let (free_c, free_m) = (pool.free_c, pool.free_m);
            if shadow.is_some() && free_c <= 0 {
                break;
            }
            if let Some(r) = self.infeasible(d, id) {
                self.set_reason(id, r, pass_no);
                continue;
            }
            let (need_c, need_m) = self.job_need(id);
            let Some(sh) = shadow else {
                if need_c <= free_c
                    && need_m <= free_m
                    && self.try_place_now(now, d, id, None).is_some()
                {
                    continue;
                }
                let sh = self.shadow(now, d, need_c, need_m);
                shadow = Some(sh);
                let planned = (sh.at != Time::MAX).then_some((sh.at, PoolKind::Own));
                self.set_reason_planned(id, WaitReason::Resources, planned, pass_no);
                continue;
            };
            if need_c > free_c || need_m > free_m {
                self.set_reason(id, WaitReason::Resources, pass_no);
                continue;
            }
            let end = now.plus(self.duration(now, id));
            let long = end > sh.at;
            if long && (need_c > sh.extra_c || need_m > sh.extra_m) {
                self.set_reason(id, WaitReason::Priority, pass_no);
                continue;
            }
            if self.try_place_now(now, d, id, None).is_some() {
                if long {
                    shadow = Some(Shadow {
                        extra_c: sh.extra_c - need_c,
                        extra_m: sh.extra_m - need_m,
                        ..sh
                    });
                }
            } else {
                self.set_reason(id, WaitReason::Resources, pass_no);
            }
        }
    }

    /// When the head job (needing `need_c`/`need_m`) can start, given the
    /// expected ends of placed jobs; jobs past their estimate are taken to
    /// end just after `now`. Releases at the same instant count together.
    /// If the head fits in total now but not on the nodes (fragmented),
    /// the earliest candidate is the next release.
    fn shadow(&self, now: Time, d: usize, need_c: i64, need_m: i64) -> Shadow {
        let pool = self.domains[d].pool(PoolKind::Own);
        let (mut c, mut m) = (pool.free_c, pool.free_m);
        let mut found: Option<Time> = None;
        for &(end, jid) in &pool.running {
            let at = end.max(now.plus(1));
            if let Some(t) = found
                && at > t
            {
                break;
            }
            let (jc, jm) = self.job_need(jid);
            c += jc;
            m += jm;
            if found.is_none() && c >= need_c && m >= need_m {
                found = Some(at);
            }
        }
        Shadow {
            at: found.unwrap_or(Time::MAX),
            extra_c: c - need_c,
            extra_m: m - need_m,
        }
    }

    /// The general form: a time profile of free capacity per pool, with
    /// pending reservations carved out; used for conservative backfilling
    /// and whenever reservations or borrowed nodes are present.
    fn profile_pass(&mut self, now: Time, d: usize, pass_no: u64, policy: Policy) {
        let mut profiles = std::mem::take(&mut self.scratch.profiles);
        let mut releases = std::mem::take(&mut self.scratch.releases);
        for kind in POOLS {
            let pool = self.domains[d].pool(kind);
            releases.clear();
            for &(end, jid) in &pool.running {
                let (jc, jm) = self.job_need(jid);
                releases.push((end.max(now.plus(1)), jc, jm));
            }
            let (fc, fm) = (pool.free_c, pool.free_m);
            profiles[kind as usize].build(now, fc, fm, &mut releases);
        }
        // Reservations not yet placed keep their window's capacity (unless
        // they can never run here).
        let mut windows = std::mem::take(&mut self.scratch.ids);
        windows.clear();
        windows.extend(self.domains[d].reservations.iter().map(|&(_, id)| id));
        for &id in &windows {
            if self.infeasible(d, id).is_some() {
                continue;
            }
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            let Some((start, end)) = j.window() else {
                continue;
            };
            let from = start.max(now);
            let (c, m) = (j.spec.total_cores() as i64, j.spec.total_memory_mb() as i64);
            profiles[PoolKind::Own as usize].reserve(from, end.since(from), c, m);
        }
        self.scratch.ids = windows;

        // Jobs whose reservation is due now: their capacity shows as taken
        // in the profile until they are looked at.
        let mut due_now = 0u32;
        if policy == Policy::Conservative {
            // Reservations from earlier passes stay in the profile while
            // each job is placed again, so a job only ever moves earlier
            // (compression): nobody can take the slot it was promised.
            let mut cursor = None;
            while let Some(key) = self.next_in_queue(d, cursor, false) {
                cursor = Some(key);
                let id = key.2;
                let Some((t, kind)) = self.jobs.get(&id).and_then(|j| j.planned) else {
                    continue;
                };
                if let Some(r) = self.infeasible(d, id) {
                    self.set_reason(id, r, pass_no);
                    continue;
                }
                if t <= now {
                    due_now += 1;
                }
                if self.domains[d].pool(kind).nodes == 0 {
                    self.set_reason_planned(id, WaitReason::Priority, None, pass_no);
                    continue;
                }
                let (c, m) = self.job_need(id);
                let dur = self.duration(now, id);
                profiles[kind as usize].reserve(t.max(now), dur, c, m);
            }
        }

        let mut cursor = None;
        let mut blocked = false;
        let mut depth = 0u32;
        // A conservative reservation must start on time even if no event
        // happens then (a job ending early moved it, for example).
        let mut next_planned: Option<Time> = None;
        let max_depth = self.conservative_depth.unwrap_or(u32::MAX);
        while let Some(key) = self.next_in_queue(d, cursor, false) {
            cursor = Some(key);
            let id = key.2;
            // Once nothing is free now, no later job can start in this
            // pass, whatever reservations it would get.
            if blocked && due_now == 0 && profiles.iter().all(|p| p.free_now().0 <= 0) {
                break;
            }
            if policy == Policy::Conservative && blocked {
                depth += 1;
                if depth > max_depth {
                    break;
                }
            }
            if let Some(r) = self.infeasible(d, id) {
                self.set_reason(id, r, pass_no);
                continue;
            }
            let (c, m) = self.job_need(id);
            let dur = self.duration(now, id);
            if policy == Policy::Conservative
                && let Some((t, kind)) = self.jobs.get(&id).and_then(|j| j.planned)
            {
                // Take its own reservation out before looking again.
                profiles[kind as usize].reserve(t.max(now), dur, -c, -m);
                if t <= now {
                    due_now -= 1;
                }
            }
            let may_start = match policy {
                Policy::Fcfs | Policy::Conservative => !blocked || policy == Policy::Conservative,
                Policy::Easy => true,
            };
            let mut placement_failed = false;
            if may_start {
                for kind in POOLS {
                    if self.domains[d].pool(kind).nodes == 0
                        || !profiles[kind as usize].fits_during(now, dur, c, m)
                    {
                        continue;
                    }
                    if self.try_place_now(now, d, id, Some(kind)).is_some() {
                        profiles[kind as usize].reserve(now, dur, c, m);
                        break;
                    }
                    placement_failed = true;
                }
                if !self
                    .jobs
                    .get(&id)
                    .is_some_and(|j| j.st == super::state::St::Queued)
                {
                    continue;
                }
            }
            let first_blocked = !blocked;
            blocked = true;
            match policy {
                Policy::Fcfs => {
                    self.set_reason(id, WaitReason::Resources, pass_no);
                    break;
                }
                Policy::Easy if !first_blocked => {
                    let free_now = self.domains[d].pool(PoolKind::Own).free_c
                        + self.domains[d].pool(PoolKind::Borrowed).free_c;
                    let reason = if c <= free_now {
                        WaitReason::Priority
                    } else {
                        WaitReason::Resources
                    };
                    self.set_reason(id, reason, pass_no);
                }
                _ => {
                    // The head (EASY) or every job (conservative) gets the
                    // earliest reservation that fits in the profile.
                    let planned = reserve_earliest(
                        &mut profiles,
                        now,
                        dur,
                        c,
                        m,
                        placement_failed,
                        &self.domains[d].pools,
                    );
                    let reason = if first_blocked {
                        WaitReason::Resources
                    } else {
                        WaitReason::Priority
                    };
                    if policy == Policy::Conservative
                        && let Some((t, _)) = planned
                        && t > now
                    {
                        next_planned = Some(next_planned.map_or(t, |n: Time| n.min(t)));
                    }
                    self.set_reason_planned(id, reason, planned, pass_no);
                }
            }
        }
        self.scratch.profiles = profiles;
        self.scratch.releases = releases;
        self.domains[d].plan_wakeup = next_planned;
    }

    /// Best-effort jobs take whatever is physically free, in queue order.
    fn best_effort_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        let mut cursor = None;
        while let Some(key) = self.next_in_queue(d, cursor, true) {
            cursor = Some(key);
            let id = key.2;
            if POOLS.iter().all(|&k| self.domains[d].pool(k).be.is_empty()) {
                break;
            }
            if let Some(r) = self.infeasible(d, id) {
                self.set_reason(id, r, pass_no);
                continue;
            }
            let mut placed = false;
            for kind in POOLS {
                if self.domains[d].pool(kind).nodes > 0
                    && self.find_placement(d, kind, id, View::BestEffort)
                {
                    self.place(now, d, kind, id);
                    placed = true;
                    break;
                }
            }
            if !placed {
                self.set_reason(id, WaitReason::BestEffortNoIdle, pass_no);
            }
        }
    }
}

/// Reserve the earliest slot over both pools (own first on ties). If the
/// profile said "now" but no nodes could be found (fragmentation), look
/// from the profile's next change on.
fn reserve_earliest(
    profiles: &mut [Profile; 2],
    now: Time,
    dur: u64,
    c: i64,
    m: i64,
    placement_failed: bool,
    pools: &[super::state::Pool; 2],
) -> Option<(Time, PoolKind)> {
    let mut best: Option<(Time, usize)> = None;
    for kind in POOLS {
        let k = kind as usize;
        if pools[k].nodes == 0 {
            continue;
        }
        let from = if placement_failed {
            profiles[k].next_change_after(now).unwrap_or(Time::MAX)
        } else {
            now
        };
        if from == Time::MAX {
            continue;
        }
        if let Some(t) = profiles[k].earliest(from, dur, c, m)
            && best.is_none_or(|(b, _)| t < b)
        {
            best = Some((t, k));
        }
    }
    let (t, k) = best?;
    profiles[k].reserve(t, dur, c, m);
    Some((t, POOLS[k]))
}
