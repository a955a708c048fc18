//! One scheduling pass over a domain: reservations, then the normal queue
//! under the configured policy, then best-effort jobs on what is left.
//!
//! FCFS and EASY without reservations or borrowed nodes take a fast path:
//! the queue is scanned through its entries (no lookups per job) with the
//! classic shadow-time/extra-capacity form of EASY, and a pass caused only
//! by new arrivals looks only at them. Everything else goes through the
//! general time profile; a property test checks both give the same actions.

use std::ops::Bound;

use crate::config::Policy;
use crate::profile::Profile;
use crate::types::{JobId, Time};
use crate::view::WaitReason;

use super::Scheduler;
use super::place::{View, shape_feasibility};
use super::state::{Domain, POOLS, PoolKind, QKey, Shadow};

/// What a queue scan found for the caller to act on.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The job has requirements: check its feasibility the slow way.
    SlowCheck,
    /// The first waiting job fits in total: try to start it.
    Start,
    /// The first waiting job does not fit: it becomes the head.
    Head,
    /// A backfill candidate that passed the checks.
    Backfill {
        long: bool,
        need_c: i64,
        need_m: i64,
    },
}

impl Scheduler {
    pub(super) fn pass(&mut self, now: Time, d: usize) {
        let simple = self.simple_path(d);
        let dom = &self.domains[d];
        // A pass caused only by arrivals behind a blocked head needs to look
        // only at them: nothing that was refused before can fit now.
        // So does one after a pass that started every job it could (the
        // jobs left can never run on the current nodes).
        let arrivals_only = simple
            && !dom.rescan
            && !dom.head_fragmented
            && matches!(self.cfg.policy, Policy::Fcfs | Policy::Easy)
            && match dom.last_head {
                Some((head, sh)) => {
                    (self.cfg.policy == Policy::Fcfs || sh.at > now)
                        && dom.arrivals.iter().all(|&k| k > head)
                }
                None => dom.settled,
            };
        if !arrivals_only {
            self.domains[d].pass_gen += 1;
        }
        let pass_no = self.domains[d].pass_gen;

        // Placed jobs whose nodes have emptied (or whose window opened).
        if !self.domains[d].vacating.is_empty() {
            let vacating = std::mem::take(&mut self.domains[d].vacating);
            for id in vacating {
                if !self.try_start(now, id) && self.jobs.contains_key(&id) {
                    self.domains[d].vacating.push(id);
                }
            }
        }

        self.reservations_pass(now, d, pass_no);

        match self.cfg.policy {
            Policy::Fcfs | Policy::Easy if simple => {
                if arrivals_only {
                    self.arrivals_pass(now, d, pass_no);
                } else if self.cfg.policy == Policy::Fcfs {
                    self.fcfs_pass(now, d, pass_no);
                } else {
                    self.easy_pass(now, d, pass_no);
                }
                let dom = &mut self.domains[d];
                dom.settled = dom.last_head.is_none();
            }
            policy => {
                self.domains[d].last_head = None;
                self.domains[d].settled = false;
                self.profile_pass(now, d, pass_no, policy);
            }
        }

        self.best_effort_pass(now, d, pass_no);

        // When must the next reservation be placed ahead of its window?
        let dom = &mut self.domains[d];
        let lead = dom.be_lead();
        dom.prep_wakeup = dom
            .reservations
            .keys()
            .map(|&(start, _)| Time(start.0.saturating_sub(lead)))
            .find(|&t| t > now);
        dom.arrivals.clear();
        dom.rescan = false;
        dom.dirty = false;
        if dom.be_queue.is_empty() && dom.be_costs.is_empty() {
            self.set_best_effort_index(d, false);
        }
    }

    /// Whether the fast FCFS/EASY paths apply to the domain.
    fn simple_path(&self, d: usize) -> bool {
        let dom = &self.domains[d];
        let simple = dom.reservations.is_empty() && dom.pool(PoolKind::Borrowed).nodes == 0;
        #[cfg(test)]
        let simple = simple && !self.force_profile;
        simple
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
        if let Some(e) = self.entry_mut(id) {
            e.set(reason, planned, pass_no);
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
            None => q.keys().next().copied(),
            Some(k) => q
                .range((Bound::Excluded(k), Bound::Unbounded))
                .next()
                .map(|(k, _)| *k),
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
            (
                i64::try_from(j.spec.total_cores()).unwrap_or(i64::MAX),
                i64::try_from(j.spec.total_memory_mb()).unwrap_or(i64::MAX),
            )
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
        // (Most passes: every pass pays for what follows otherwise.)
        if self.domains[d].reservations.is_empty() {
            return;
        }
        let lead = self.domains[d].be_lead();
        let mut due = std::mem::take(&mut self.scratch.ids);
        due.clear();
        due.extend(
            self.domains[d]
                .reservations
                .keys()
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
                .is_some()
            {
                // Capacity was taken outside the normal queue's view.
                self.domains[d].rescan = true;
            } else {
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

    /// Scan the normal queue from `from` for the next job that needs the
    /// caller's attention, setting the reasons of the jobs it passes over.
    /// With `shadow` the scan looks for backfill candidates; without, for
    /// the first feasible job.
    fn scan(
        &mut self,
        now: Time,
        d: usize,
        from: Bound<QKey>,
        shadow: Option<Shadow>,
        pass_no: u64,
    ) -> Option<(QKey, Pick)> {
        let dom: &mut Domain = &mut self.domains[d];
        let version = dom.nodes_version;
        let least_need = dom.least_need();
        let Domain { queue, pools, .. } = dom;
        let free = (pools[0].free_c, pools[0].free_m);
        // Backfilling needs free cores, enough for some waiting job; none
        // are freed during the scan. (The jobs not looked at get no reason
        // from this pass, as when nothing is free.)
        if shadow.is_some() && (free.0 <= 0 || free.0 < least_need) {
            return None;
        }
        for (k, e) in queue.range_mut((from, Bound::Unbounded)) {
            if let Some(pick) = judge(e, now, version, pools, free, shadow, pass_no) {
                return Some((*k, pick));
            }
        }
        None
    }

    /// [`Scheduler::scan`] for one queued job only.
    fn judge_one(
        &mut self,
        now: Time,
        d: usize,
        key: QKey,
        shadow: Option<Shadow>,
        pass_no: u64,
    ) -> Option<Pick> {
        let dom: &mut Domain = &mut self.domains[d];
        let version = dom.nodes_version;
        let Domain { queue, pools, .. } = dom;
        let free = (pools[0].free_c, pools[0].free_m);
        let e = queue.get_mut(&key)?;
        judge(e, now, version, pools, free, shadow, pass_no)
    }

    /// Strict queue order: start jobs until the first that does not fit.
    fn fcfs_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        self.domains[d].head_fragmented = false;
        let mut from = Bound::Unbounded;
        let mut head = None;
        while let Some((key, pick)) = self.scan(now, d, from, None, pass_no) {
            from = Bound::Excluded(key);
            match pick {
                Pick::SlowCheck => {
                    let _ = self.infeasible(d, key.2);
                    from = Bound::Included(key);
                }
                Pick::Start if self.try_place_now(now, d, key.2, None).is_some() => {}
                _ => {
                    self.set_reason(key.2, WaitReason::Resources, pass_no);
                    let none = Shadow {
                        at: Time::MAX,
                        extra_c: 0,
                        extra_m: 0,
                    };
                    head = Some((key, none));
                    break;
                }
            }
        }
        self.domains[d].last_head = head;
    }

    /// EASY backfilling without reservations or borrowed nodes, in O(1)
    /// per queued job looked at (the classic shadow-time/extra-capacity
    /// form). The pass stops looking once no capacity is free.
    fn easy_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        self.domains[d].head_fragmented = false;
        let mut from = Bound::Unbounded;
        let mut head: Option<(QKey, Shadow)> = None;
        while let Some((key, pick)) = self.scan(now, d, from, head.map(|h| h.1), pass_no) {
            from = Bound::Excluded(key);
            let id = key.2;
            match pick {
                Pick::SlowCheck => {
                    let _ = self.infeasible(d, id);
                    from = Bound::Included(key);
                }
                Pick::Start | Pick::Head => {
                    if matches!(pick, Pick::Start) {
                        if self.try_place_now(now, d, id, None).is_some() {
                            continue;
                        }
                        self.domains[d].head_fragmented = true;
                    }
                    let (need_c, need_m) = self.job_need(id);
                    let sh = self.shadow(now, d, need_c, need_m);
                    head = Some((key, sh));
                    let planned = (sh.at != Time::MAX).then_some((sh.at, PoolKind::Own));
                    self.set_reason_planned(id, WaitReason::Resources, planned, pass_no);
                }
                Pick::Backfill {
                    long,
                    need_c,
                    need_m,
                } => self.backfill(now, d, id, long, need_c, need_m, &mut head, pass_no),
            }
        }
        self.domains[d].last_head = head;
    }

    /// Start a backfill candidate; a job running past the head's
    /// reservation uses up extra capacity.
    #[allow(clippy::too_many_arguments)]
    fn backfill(
        &mut self,
        now: Time,
        d: usize,
        id: JobId,
        long: bool,
        need_c: i64,
        need_m: i64,
        head: &mut Option<(QKey, Shadow)>,
        pass_no: u64,
    ) {
        if self.try_place_now(now, d, id, None).is_some() {
            if long && let Some((_, sh)) = head.as_mut() {
                sh.extra_c -= need_c;
                sh.extra_m -= need_m;
            }
        } else {
            self.set_reason(id, WaitReason::Resources, pass_no);
        }
    }

    /// FCFS or EASY when only new jobs arrived, behind the blocked head
    /// (they are backfill candidates against its unchanged reservation) or
    /// after a pass that left no head (the first of them that cannot start
    /// becomes the head).
    fn arrivals_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        let easy = self.cfg.policy == Policy::Easy;
        let mut head = self.domains[d].last_head;
        let mut arrivals = std::mem::take(&mut self.domains[d].arrivals);
        arrivals.sort_unstable();
        for &key in &arrivals {
            if head.is_some() && (!easy || self.domains[d].pool(PoolKind::Own).free_c <= 0) {
                break;
            }
            let mut pick = self.judge_one(now, d, key, head.map(|h| h.1), pass_no);
            if let Some(Pick::SlowCheck) = pick {
                let _ = self.infeasible(d, key.2);
                pick = self.judge_one(now, d, key, head.map(|h| h.1), pass_no);
            }
            let id = key.2;
            match pick {
                None | Some(Pick::SlowCheck) => {}
                Some(Pick::Backfill {
                    long,
                    need_c,
                    need_m,
                }) => self.backfill(now, d, id, long, need_c, need_m, &mut head, pass_no),
                Some(p @ (Pick::Start | Pick::Head)) => {
                    if matches!(p, Pick::Start) {
                        if self.try_place_now(now, d, id, None).is_some() {
                            continue;
                        }
                        self.domains[d].head_fragmented = true;
                    }
                    let sh = if easy {
                        let (need_c, need_m) = self.job_need(id);
                        self.shadow(now, d, need_c, need_m)
                    } else {
                        Shadow {
                            at: Time::MAX,
                            extra_c: 0,
                            extra_m: 0,
                        }
                    };
                    let planned = (easy && sh.at != Time::MAX).then_some((sh.at, PoolKind::Own));
                    self.set_reason_planned(id, WaitReason::Resources, planned, pass_no);
                    head = Some((key, sh));
                }
            }
        }
        arrivals.clear();
        self.domains[d].arrivals = arrivals;
        self.domains[d].last_head = head;
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
        for (&(end, _), &(jc, jm)) in &pool.running {
            let at = end.max(now.plus(1));
            if let Some(t) = found
                && at > t
            {
                break;
            }
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
            for (&(end, _), &(jc, jm)) in &pool.running {
                releases.push((end.max(now.plus(1)), jc, jm));
            }
            let (fc, fm) = (pool.free_c, pool.free_m);
            profiles[kind as usize].build(now, fc, fm, &mut releases);
        }
        // Reservations not yet placed keep their window's capacity (unless
        // they can never run here).
        let mut windows = std::mem::take(&mut self.scratch.ids);
        windows.clear();
        windows.extend(self.domains[d].reservations.keys().map(|&(_, id)| id));
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
            let (c, m) = self.job_need(id);
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
            let mut seen = 0u32;
            let limit = self
                .conservative_depth
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            while let Some(key) = self.next_in_queue(d, cursor, false) {
                cursor = Some(key);
                let id = key.2;
                seen += 1;
                if seen > limit {
                    // Jobs beyond the depth limit are not looked at.
                    break;
                }
                let Some(e) = self.domains[d].queue.get(&key) else {
                    continue;
                };
                let Some((t, kind)) = e.planned else {
                    continue;
                };
                if let Some(r) = self.infeasible(d, id) {
                    self.set_reason(id, r, pass_no);
                    continue;
                }
                if self.domains[d].pool(kind).nodes == 0 {
                    self.set_reason(id, WaitReason::Priority, pass_no);
                    continue;
                }
                let (c, m) = self.job_need(id);
                let dur = self.duration(now, id);
                if !profiles[kind as usize].fits_during(t.max(now), dur, c, m) {
                    // No longer valid (a job ran past its estimate, or the
                    // job was beyond the depth limit meanwhile): placed anew.
                    self.set_reason(id, WaitReason::Priority, pass_no);
                    continue;
                }
                if t <= now {
                    due_now += 1;
                }
                profiles[kind as usize].reserve(t.max(now), dur, c, m);
                if let Some(e) = self.domains[d].queue.get_mut(&key) {
                    e.profiled = pass_no;
                }
            }
        }

        let mut cursor = None;
        let mut blocked = false;
        let mut depth = 0u32;
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
                && let Some((t, kind)) = self.domains[d]
                    .queue
                    .get(&key)
                    .filter(|e| e.profiled == pass_no)
                    .and_then(|e| e.planned)
            {
                // Take its own reservation out before looking again.
                profiles[kind as usize].reserve(t.max(now), dur, -c, -m);
                if t <= now {
                    due_now -= 1;
                }
            }
            let may_start = policy != Policy::Fcfs || !blocked;
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
                if !self.domains[d].queue.contains_key(&key) {
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
                    self.set_reason_planned(id, reason, planned, pass_no);
                }
            }
        }
        self.scratch.profiles = profiles;
        self.scratch.releases = releases;
    }

    /// Best-effort jobs take whatever is physically free, in queue order.
    fn best_effort_pass(&mut self, now: Time, d: usize, pass_no: u64) {
        if self.domains[d].be_queue.is_empty() {
            return;
        }
        let mut after = Bound::Unbounded;
        loop {
            // The most cores free now in one pool: no job needing more
            // can start.
            let free = POOLS
                .iter()
                .map(|&k| self.domains[d].pool(k).be.count_cores())
                .max()
                .unwrap_or(0);
            if free == 0 {
                break;
            }
            let Some(key) = self.next_best_effort(d, after, free) else {
                break;
            };
            after = Bound::Excluded(key);
            let id = key.2;
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

    /// The first best-effort job after `after`, in queue order, needing at
    /// most `free` cores.
    fn next_best_effort(&self, d: usize, after: Bound<QKey>, free: i64) -> Option<QKey> {
        let dom = &self.domains[d];
        let mut best: Option<QKey> = None;
        for (b, bucket) in dom.be_buckets.iter().enumerate() {
            let smallest = 1i64 << b;
            if smallest > free {
                break;
            }
            let all_fit = (smallest << 1) - 1 <= free;
            for &k in bucket.range((after, Bound::Unbounded)) {
                if best.is_some_and(|bk| k >= bk) {
                    break;
                }
                if all_fit || dom.be_queue.get(&k).is_some_and(|e| e.need_c <= free) {
                    best = Some(k);
                    break;
                }
            }
        }
        best
    }
}

/// The per-job decision of a queue scan: `None` to pass over the job (its
/// reason set), or what the caller must do with it.
fn judge(
    e: &mut super::state::QEntry,
    now: Time,
    version: u64,
    pools: &[super::state::Pool; 2],
    (free_c, free_m): (i64, i64),
    shadow: Option<Shadow>,
    pass_no: u64,
) -> Option<Pick> {
    let feas = match e.feas {
        Some((v, r)) if v == version => r,
        _ if !e.simple => return Some(Pick::SlowCheck),
        _ => {
            let r = shape_feasibility(pools, e.cores, e.mem, u64::from(e.vms), false);
            e.feas = Some((version, r));
            r
        }
    };
    if let Some(r) = feas {
        e.set(r, None, pass_no);
        return None;
    }
    let Some(sh) = shadow else {
        let fits = e.need_c <= free_c && e.need_m <= free_m;
        return Some(if fits { Pick::Start } else { Pick::Head });
    };
    if e.need_c > free_c || e.need_m > free_m {
        e.set(WaitReason::Resources, None, pass_no);
        return None;
    }
    let long = now.plus(e.dur) > sh.at;
    if long && (e.need_c > sh.extra_c || e.need_m > sh.extra_m) {
        e.set(WaitReason::Priority, None, pass_no);
        return None;
    }
    Some(Pick::Backfill {
        long,
        need_c: e.need_c,
        need_m: e.need_m,
    })
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
