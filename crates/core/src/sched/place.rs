//! Placement: finding nodes for a job, taking and giving back capacity,
//! and making room by preempting best-effort jobs.

use std::cmp::Reverse;

use crate::action::Action;
use crate::config::PreemptionMode;
use crate::index::slots;
use crate::types::{JobId, Time};
use crate::view::{NodeStatus, WaitReason};

use super::Scheduler;
use super::state::{LoanPhase, NodeAttrs, PoolKind, St, Usage};

/// Which free capacity a placement looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Capacity of best-effort jobs counts as free (they will be preempted).
    Normal,
    /// Only capacity that is free right now.
    BestEffort,
}

/// Whether VMs of `cores`/`mem` could ever fill `want` slots in one of a
/// domain's pools, judging by its node shapes alone.
pub(crate) fn shape_feasibility(
    pools: &[super::state::Pool; 2],
    cores: u32,
    mem: u64,
    want: u64,
    reservation: bool,
) -> Option<WaitReason> {
    let mut reason = Some(WaitReason::Requirements);
    for kind in super::state::POOLS {
        if reservation && kind == PoolKind::Borrowed {
            continue;
        }
        let s: u64 = pools[kind as usize]
            .kinds
            .iter()
            .map(|(&(nc, nm), &count)| slots(nc, nm, cores, mem) * u64::from(count))
            .sum();
        if s >= want {
            return None;
        }
        if s > 0 {
            reason = Some(WaitReason::TooLarge);
        }
    }
    reason
}

/// What the indexes know of a node's usage.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Free for normal jobs: `(has best-effort jobs, cores, MiB)`.
    normal: (bool, u32, u64),
    /// Physically free `(cores, MiB)`.
    physical: (u32, u64),
}

impl Shape {
    #[inline]
    fn of(u: &Usage) -> Shape {
        let (fc, fm) = u.free_normal();
        Shape {
            normal: (u.be_jobs > 0, fc, fm),
            physical: u.free_physical(),
        }
    }
}

/// Move a node whose usage went from `before` to `after` within its pool's
/// indexes and totals. A node is in an index only while it has free cores
/// there; nothing moves when its shape stays the same.
#[inline]
fn reindex(pool: &mut super::state::Pool, be_active: bool, ix: u32, before: &Shape, after: &Shape) {
    let (_, fc, fm) = before.normal;
    let (_, nfc, nfm) = after.normal;
    pool.free_c += i64::from(nfc) - i64::from(fc);
    pool.free_m += nfm as i64 - fm as i64;
    if before.normal != after.normal {
        if fc > 0 {
            pool.normal.remove(ix);
        }
        if nfc > 0 {
            pool.normal.insert(after.normal, ix);
        }
    }
    if be_active && before.physical != after.physical {
        if before.physical.0 > 0 {
            pool.be.remove(ix);
        }
        let (npc, npm) = after.physical;
        if npc > 0 {
            pool.be.insert((false, npc, npm), ix);
        }
    }
}

/// Put a node in its pool's indexes and totals, from its usage.
fn index_usage(pool: &mut super::state::Pool, be_active: bool, ix: u32, u: &Usage) {
    let (fc, fm) = u.free_normal();
    pool.free_c += i64::from(fc);
    pool.free_m += fm as i64;
    if fc > 0 {
        pool.normal.insert((u.be_jobs > 0, fc, fm), ix);
    }
    if be_active {
        let (pc, pm) = u.free_physical();
        if pc > 0 {
            pool.be.insert((false, pc, pm), ix);
        }
    }
}

impl Scheduler {
    /// Copy a node's pool membership into its usage record; call after
    /// changing `in_pool`, `serving` or `pool`.
    pub(super) fn sync_hot(&mut self, ix: u32) {
        let n = &self.nodes[ix as usize];
        let u = &mut self.usage[ix as usize];
        u.in_pool = n.in_pool;
        u.serving = n.serving.0;
        u.pool = n.pool as u8;
        u.id = n.spec.id.0;
    }

    /// Start or stop keeping the best-effort index of a domain's pools:
    /// it costs time on every placement, so it exists only while the
    /// domain has best-effort jobs.
    pub(super) fn set_best_effort_index(&mut self, d: usize, on: bool) {
        if self.domains[d].be_active == on {
            return;
        }
        self.domains[d].be_active = on;
        for p in &mut self.domains[d].pools {
            p.be.clear();
        }
        if !on {
            return;
        }
        for ix in 0..self.nodes.len() {
            let n = &self.nodes[ix];
            if usize::from(n.serving.0) != d || !n.in_pool {
                continue;
            }
            let (pc, pm) = self.usage[ix].free_physical();
            if pc > 0 {
                let kind = n.pool;
                self.domains[d]
                    .pool_mut(kind)
                    .be
                    .insert((false, pc, pm), ix as u32);
            }
        }
    }

    /// Take (`add`) or give back a job's VMs of `c` cores and `m` MiB on
    /// the nodes of `placement`, keeping the pools' indexes and totals in
    /// step. This is the per-VM hot path of placing and releasing jobs: a
    /// node moves between index shapes only when its shape changes.
    pub(super) fn charge(&mut self, placement: &[(u32, u32)], c: u32, m: u64, be: bool, add: bool) {
        let Scheduler { usage, domains, .. } = self;
        for &(ix, k) in placement {
            let u = &mut usage[ix as usize];
            let before = Shape::of(u);
            let (dc, dm) = (k * c, u64::from(k) * m);
            if be {
                if add {
                    u.be_c += dc;
                    u.be_m = u.be_m.saturating_add(dm);
                    u.be_jobs += 1;
                } else {
                    u.be_c -= dc;
                    u.be_m = u.be_m.saturating_sub(dm);
                    u.be_jobs -= 1;
                }
            } else if add {
                u.used_c += dc;
                u.used_m = u.used_m.saturating_add(dm);
            } else {
                u.used_c -= dc;
                u.used_m = u.used_m.saturating_sub(dm);
            }
            if add {
                u.jobs += 1;
            } else {
                u.jobs -= 1;
            }
            if !u.in_pool {
                continue;
            }
            let dom = &mut domains[usize::from(u.serving)];
            let be_active = dom.be_active;
            let pool = &mut dom.pools[usize::from(u.pool)];
            reindex(pool, be_active, ix, &before, &Shape::of(u));
        }
    }

    /// Add a node (already marked `in_pool`) to its pool's indexes and totals.
    fn index_node(&mut self, ix: u32) {
        let n = &self.nodes[ix as usize];
        let dom = &mut self.domains[usize::from(n.serving.0)];
        let be_active = dom.be_active;
        index_usage(
            dom.pool_mut(n.pool),
            be_active,
            ix,
            &self.usage[ix as usize],
        );
    }

    /// The node starts counting in the pool of the domain it serves.
    pub(super) fn join_pool(&mut self, ix: u32) {
        let n = &mut self.nodes[ix as usize];
        if n.in_pool {
            return;
        }
        n.in_pool = true;
        self.sync_hot(ix);
        let n = &self.nodes[ix as usize];
        let (cores, mem) = (n.spec.cores, n.spec.memory_mb);
        let d = usize::from(n.serving.0);
        let dom = &mut self.domains[d];
        let pool = dom.pool_mut(n.pool);
        pool.nodes += 1;
        pool.total_c += u64::from(cores);
        pool.total_m += mem;
        *pool.kinds.entry((cores, mem)).or_default() += 1;
        dom.nodes_version += 1;
        dom.rescan = true;
        dom.dirty = true;
        self.index_node(ix);
    }

    /// The node stops counting in its pool (its jobs, if any, stay on it
    /// until they are moved off).
    pub(super) fn leave_pool(&mut self, ix: u32) {
        let n = &mut self.nodes[ix as usize];
        if !n.in_pool {
            return;
        }
        n.in_pool = false;
        self.sync_hot(ix);
        let n = &self.nodes[ix as usize];
        let (fc, fm) = self.usage[ix as usize].free_normal();
        let (cores, mem) = (n.spec.cores, n.spec.memory_mb);
        let dom = &mut self.domains[usize::from(n.serving.0)];
        dom.nodes_version += 1;
        dom.rescan = true;
        dom.dirty = true;
        let pool = dom.pool_mut(n.pool);
        pool.free_c -= i64::from(fc);
        pool.free_m -= fm as i64;
        pool.normal.remove(ix);
        pool.be.remove(ix);
        pool.nodes -= 1;
        pool.total_c -= u64::from(cores);
        pool.total_m -= mem;
        if let Some(c) = pool.kinds.get_mut(&(cores, mem)) {
            *c -= 1;
            if *c == 0 {
                pool.kinds.remove(&(cores, mem));
            }
        }
    }

    /// The jobs with VMs on a node, by id. Found by looking through the
    /// jobs placed in the node's domain: only failures, reclaims and
    /// queries need this, so placements do not keep per-node lists.
    pub(super) fn jobs_on(&self, ix: u32) -> Vec<(JobId, u32)> {
        let d = &self.domains[usize::from(self.nodes[ix as usize].serving.0)];
        let mut out = Vec::new();
        let placed = d.pools[0]
            .running
            .keys()
            .chain(d.pools[1].running.keys())
            .map(|&(_, id)| id)
            .chain(d.be_placed.iter().copied());
        for id in placed {
            if let Some(j) = self.jobs.get(&id)
                && let Some(&(_, k)) = j.placement.iter().find(|&&(n, _)| n == ix)
            {
                out.push((id, k));
            }
        }
        out.sort_unstable();
        out
    }

    /// Find nodes for all of a job's VMs in one pool, into
    /// `scratch.placement`. Jobs without requirements or rank take the fast
    /// path (best fit over the free-capacity index); others evaluate their
    /// expressions on every node with free capacity.
    pub(super) fn find_placement(
        &mut self,
        d: usize,
        kind: PoolKind,
        id: JobId,
        view: View,
    ) -> bool {
        let Some(j) = self.jobs.get(&id) else {
            return false;
        };
        let (c, m, want) = (
            j.spec.cores_per_vm,
            j.spec.memory_mb_per_vm,
            u64::from(j.spec.vms),
        );
        let pool = self.domains[d].pool(kind);
        let index = match view {
            View::Normal => &pool.normal,
            View::BestEffort => &pool.be,
        };
        let out = &mut self.scratch.placement;
        out.clear();
        if !j.picky() {
            if index.count_slots(c, m, want) < want {
                return false;
            }
            let mut left = want;
            for (&(_, fc, fm), set) in index.iter() {
                let s = slots(fc, fm, c, m);
                if s == 0 {
                    continue;
                }
                // From the back of the bag: taking those nodes out is cheapest.
                for &node in set.iter().rev() {
                    let k = s.min(left);
                    out.push((node, k as u32));
                    left -= k;
                    if left == 0 {
                        return true;
                    }
                }
            }
            return false;
        }
        let domain_name = &self.cfg.domains[d].name;
        let cands = &mut self.scratch.candidates;
        cands.clear();
        let mut total = 0u64;
        for (&(_, fc, fm), set) in index.iter() {
            let s = slots(fc, fm, c, m);
            if s == 0 {
                continue;
            }
            for &node in set {
                if j.pin.as_ref().is_some_and(|p| !p.allows(node)) {
                    continue;
                }
                let attrs = NodeAttrs {
                    node: &self.nodes[node as usize],
                    domain_name,
                    free_cores: fc,
                    free_mem: fm,
                };
                if j.spec
                    .requirements
                    .as_ref()
                    .is_some_and(|r| !r.matches(&attrs))
                {
                    continue;
                }
                let rank = j.spec.rank.as_ref().map_or(0.0, |r| r.rank(&attrs));
                cands.push((rank, node, s as u32));
                total += s;
            }
        }
        if total < want {
            return false;
        }
        // Highest rank first; ties keep index order (best fit, then node).
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut left = want;
        for &(_, node, s) in cands.iter() {
            let k = u64::from(s).min(left);
            out.push((node, k as u32));
            left -= k;
            if left == 0 {
                break;
            }
        }
        true
    }

    /// Whether the job could ever run on the domain's current nodes; caches
    /// the answer until the node set changes. `Some(reason)` if not.
    pub(super) fn infeasible(&mut self, d: usize, id: JobId) -> Option<WaitReason> {
        let version = self.domains[d].nodes_version;
        let j = self.jobs.get(&id)?;
        let reason = self.feasibility(d, j);
        if let Some(e) = self.entry_mut(id) {
            e.feas = Some((version, reason));
        }
        reason
    }

    /// Like [`Scheduler::infeasible`], without updating the cache.
    pub(super) fn feasibility(&self, d: usize, j: &super::state::Job) -> Option<WaitReason> {
        if let Some((v, r)) = self.entry(j).and_then(|e| e.feas)
            && v == self.domains[d].nodes_version
        {
            return r;
        }
        let (c, m, want) = (
            j.spec.cores_per_vm,
            j.spec.memory_mb_per_vm,
            u64::from(j.spec.vms),
        );
        let reservation = j.window().is_some();
        let mut reason = Some(WaitReason::Requirements);
        if j.spec.requirements.is_some() || j.pin.is_some() {
            let domain_name = &self.cfg.domains[d].name;
            let mut per_pool = [0u64; 2];
            for (ix, n) in self.nodes.iter().enumerate() {
                if !n.in_pool || usize::from(n.serving.0) != d {
                    continue;
                }
                if j.pin.as_ref().is_some_and(|p| !p.allows(ix as u32)) {
                    continue;
                }
                let attrs = NodeAttrs {
                    node: n,
                    domain_name,
                    free_cores: n.spec.cores,
                    free_mem: n.spec.memory_mb,
                };
                let s = slots(n.spec.cores, n.spec.memory_mb, c, m);
                if s > 0
                    && j.spec
                        .requirements
                        .as_ref()
                        .is_none_or(|r| r.matches(&attrs))
                {
                    per_pool[n.pool as usize] += s;
                }
            }
            if per_pool.iter().any(|&s| s > 0) {
                reason = Some(WaitReason::TooLarge);
            }
            if per_pool[0] >= want || (!reservation && per_pool[1] >= want) {
                reason = None;
            }
        } else {
            reason = shape_feasibility(&self.domains[d].pools, c, m, want, reservation);
        }
        reason
    }

    /// Take the capacity in `scratch.placement` for the job, preempt
    /// best-effort jobs in the way (normal view), and start it if its nodes
    /// are free (else it waits in `Vacating`).
    pub(super) fn place(&mut self, now: Time, d: usize, kind: PoolKind, id: JobId) {
        let placement = std::mem::take(&mut self.scratch.placement);
        let Some(j) = self.jobs.get(&id) else {
            self.scratch.placement = placement;
            return;
        };
        let be = j.is_best_effort();
        let (c, m) = (j.spec.cores_per_vm, j.spec.memory_mb_per_vm);
        let need = (
            i64::try_from(j.spec.total_cores()).unwrap_or(i64::MAX),
            i64::try_from(j.spec.total_memory_mb()).unwrap_or(i64::MAX),
        );
        self.dequeue(id);
        self.charge(&placement, c, m, be, true);
        let end = self.expected_end_from(now, id, true);
        let cost = self.cfg.checkpoint_cost.cost_ms(m);
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.placement.clear();
        j.placement.extend_from_slice(&placement);
        j.pool = kind;
        j.expected_end = end;
        j.st = St::Vacating;
        j.not_before = j.window().map_or(Time::ZERO, |(start, _)| start);
        self.scratch.placement = placement;
        let dom = &mut self.domains[d];
        if be {
            *dom.be_costs.entry(cost).or_default() += 1;
            dom.be_placed.insert(id);
        } else {
            dom.pool_mut(kind).running.insert((end, id), need);
            // Only best-effort jobs can be in the way.
            if !dom.be_placed.is_empty() {
                for i in 0..self.scratch.placement.len() {
                    let ix = self.scratch.placement[i].0;
                    self.make_room(now, ix);
                }
            }
        }
        if !self.try_start(now, id) {
            self.domains[d].vacating.push(id);
        }
    }

    /// Preempt best-effort jobs on a node until what normal jobs hold there
    /// fits physically (counting jobs already on their way out).
    fn make_room(&mut self, now: Time, ix: u32) {
        loop {
            let u = self.usage[ix as usize];
            if u.be_jobs == 0 {
                return;
            }
            let (mut c, mut m) = (u.used_c + u.be_c, u.used_m.saturating_add(u.be_m));
            let mut victim: Option<(i32, Reverse<Time>, Reverse<JobId>)> = None;
            let d = &self.domains[usize::from(self.nodes[ix as usize].serving.0)];
            for &jid in &d.be_placed {
                let Some(j) = self.jobs.get(&jid) else {
                    continue;
                };
                let Some(&(_, k)) = j.placement.iter().find(|&&(n, _)| n == ix) else {
                    continue;
                };
                if j.st == St::Preempting {
                    c -= k * j.spec.cores_per_vm;
                    m = m.saturating_sub(u64::from(k) * j.spec.memory_mb_per_vm);
                    continue;
                }
                let key = (
                    j.spec.priority,
                    Reverse(j.run_since.unwrap_or(Time::MAX)),
                    Reverse(jid),
                );
                if victim.is_none_or(|v| key < v) {
                    victim = Some(key);
                }
            }
            if c <= u.cores && m <= u.mem {
                return;
            }
            let Some((_, _, Reverse(jid))) = victim else {
                return;
            };
            let mode = self.stop_mode(jid);
            self.stop_job(now, jid, mode);
        }
    }

    /// Issue `Start` if the job's nodes are physically free and its time
    /// has come. Returns whether it started.
    pub(super) fn try_start(&mut self, now: Time, id: JobId) -> bool {
        let Some(j) = self.jobs.get(&id) else {
            return false;
        };
        if j.st != St::Vacating || now < j.not_before {
            return false;
        }
        // Only best-effort jobs on their way out can over-commit a node.
        let serving = j
            .placement
            .first()
            .map(|&(ix, _)| usize::from(self.usage[ix as usize].serving));
        let be_here = serving.is_some_and(|d| !self.domains[d].be_placed.is_empty());
        if be_here
            && j.placement
                .iter()
                .any(|&(ix, _)| self.usage[ix as usize].overcommitted())
        {
            return false;
        }
        let placement = j
            .placement
            .iter()
            .map(|&(ix, k)| (crate::types::NodeId(self.usage[ix as usize].id), k))
            .collect();
        let resume = j.has_ckpt && self.cfg.preemption == PreemptionMode::Checkpoint;
        let end = now.plus(self.remaining_ms(now, j, true));
        if let Some(j) = self.jobs.get_mut(&id) {
            j.st = St::Starting;
            j.pin = None;
        }
        self.set_expected_end(id, end);
        self.actions.push_back(Action::Start {
            job: id,
            placement,
            resume,
        });
        true
    }

    /// Give back everything a job holds on nodes.
    pub(super) fn release(&mut self, _now: Time, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let placement = std::mem::take(&mut j.placement);
        let be = j.is_best_effort();
        let (c, m) = (j.spec.cores_per_vm, j.spec.memory_mb_per_vm);
        let (d, kind, end) = (usize::from(j.spec.domain.0), j.pool, j.expected_end);
        let was_vacating = j.st == St::Vacating;
        self.charge(&placement, c, m, be, false);
        let dom = &mut self.domains[d];
        dom.dirty = true;
        dom.rescan = true;
        if be {
            let cost = self.cfg.checkpoint_cost.cost_ms(m);
            if let Some(n) = dom.be_costs.get_mut(&cost) {
                *n -= 1;
                if *n == 0 {
                    dom.be_costs.remove(&cost);
                }
            }
            dom.be_placed.remove(&id);
        } else {
            dom.pool_mut(kind).running.remove(&(end, id));
        }
        if was_vacating && let Some(p) = dom.vacating.iter().position(|&v| v == id) {
            dom.vacating.swap_remove(p);
        }
        for &(ix, _) in &placement {
            // Only nodes on their way out of a pool wait for their last job.
            if self.usage[ix as usize].in_pool {
                continue;
            }
            self.node_emptied(ix);
        }
    }

    /// Finish draining or reclaiming a node once its last job has left.
    fn node_emptied(&mut self, ix: u32) {
        // Only nodes on their way out of a pool wait for their last job.
        let u = &self.usage[ix as usize];
        if u.in_pool || !u.is_empty() {
            return;
        }
        let n = &self.nodes[ix as usize];
        if n.status == NodeStatus::Draining {
            self.set_down(ix);
            return;
        }
        if let Some(loan) = n.loan
            && let LoanPhase::Draining(why) = loan.phase
        {
            self.finish_loan_drain(ix, why);
        }
    }
}
