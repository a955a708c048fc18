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

/// The bulk form of [`Scheduler::charge`] for a job on identical nodes
/// that it fills (one-core VMs on one-core nodes: every SWF job of the
/// simulator). Placing: each node has exactly the VMs' cores free and
/// leaves the normal index. Releasing: each node was full and goes back
/// under one shared shape, all in one insertion. A first pass only checks
/// that this applies (all nodes in `serving`'s pool `kind`, no saturated
/// arithmetic), so the second does the least per node: the same moves, in
/// the same order, as node by node. Returns false, having changed nothing,
/// when it does not apply.
#[allow(clippy::too_many_arguments)]
fn take_whole_nodes(
    usage: &mut [Usage],
    pool: &mut super::state::Pool,
    placement: &[(u32, u32)],
    c: u32,
    m: u64,
    serving: u16,
    kind: u8,
    add: bool,
) -> bool {
    let (mut sum_c, mut sum_m) = (0i64, 0i64);
    let in_pool = |u: &Usage| u.in_pool && u.serving == serving && u.pool == kind;
    if add {
        for &(ix, k) in placement {
            let Some(u) = usage.get(ix as usize) else {
                return false;
            };
            // `k * c` as the node-by-node form computes it.
            let (dc, dm) = (k * c, u64::from(k) * m);
            let fills = dc > 0
                && u.used_c <= u.cores
                && u.cores - u.used_c == dc
                && u.used_m <= u.mem
                && u.mem - u.used_m >= dm;
            if !in_pool(u) || !fills {
                return false;
            }
            sum_c += i64::from(dc);
            sum_m += dm as i64;
        }
        for &(ix, k) in placement {
            let u = &mut usage[ix as usize];
            u.used_c += k * c;
            u.used_m += u64::from(k) * m;
            u.jobs += 1;
            pool.normal.remove(ix);
        }
        pool.free_c -= sum_c;
        pool.free_m -= sum_m;
        return true;
    }
    let mut shape = None;
    for &(ix, k) in placement {
        let Some(u) = usage.get(ix as usize) else {
            return false;
        };
        let (dc, dm) = (k * c, u64::from(k) * m);
        if !in_pool(u) || u.used_c < u.cores || u.used_c < dc || u.used_m < dm {
            return false;
        }
        let nfc = u.cores.saturating_sub(u.used_c - dc);
        let nfm = u.mem.saturating_sub(u.used_m - dm);
        let key = (u.be_jobs > 0, nfc, nfm);
        if nfc == 0 || shape.is_some_and(|s| s != key) {
            return false;
        }
        shape = Some(key);
        sum_c += i64::from(nfc);
        sum_m += nfm as i64 - u.mem.saturating_sub(u.used_m) as i64;
    }
    let Some(key) = shape else {
        return false;
    };
    for &(ix, k) in placement {
        let u = &mut usage[ix as usize];
        u.used_c -= k * c;
        u.used_m -= u64::from(k) * m;
        u.jobs -= 1;
    }
    pool.normal.insert_all(key, placement);
    pool.free_c += sum_c;
    pool.free_m += sum_m;
    true
}

/// [`Scheduler::charge`] node by node, each in its own pool. Returns true
/// when every node counts in a pool.
fn charge_each(
    usage: &mut [Usage],
    domains: &mut [super::state::Domain],
    placement: &[(u32, u32)],
    c: u32,
    m: u64,
    be: bool,
    add: bool,
) -> bool {
    let mut all_in_pool = true;
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
            all_in_pool = false;
            continue;
        }
        let dom = &mut domains[usize::from(u.serving)];
        let be_active = dom.be_active;
        let pool = &mut dom.pools[usize::from(u.pool)];
        reindex(pool, be_active, ix, &before, &Shape::of(u));
    }
    all_in_pool
}

/// Take (`ADD`) or give back `k` VMs of `c` cores and `m` MiB on each node
/// of `placement`, moving the nodes within the pool's normal index; returns
/// the change of the pool's free cores and MiB. Monomorphised on the
/// direction: this loop runs once per VM of every job that starts or ends.
#[inline]
#[allow(clippy::too_many_arguments)]
fn charge_nodes<const ADD: bool>(
    usage: &mut [Usage],
    index: &mut crate::index::FreeIndex,
    placement: &[(u32, u32)],
    c: u32,
    m: u64,
    serving: u16,
    kind: u8,
    odd: &mut Vec<(u32, u32)>,
) -> (i64, i64) {
    let (mut delta_c, mut delta_m) = (0i64, 0i64);
    // Consecutive nodes that were full and go back into the same shape
    // (a job ending on identical nodes): `placement[run_from..i]` under
    // `run_key`, inserted together before any other change to the index,
    // so the order of moves stays the same.
    let mut run_from = 0;
    let mut run_key = None;
    let flush = |index: &mut crate::index::FreeIndex, key: Option<_>, from: usize, to: usize| {
        if let Some(key) = key {
            index.insert_all(key, &placement[from..to]);
        }
    };
    for (i, &(ix, k)) in placement.iter().enumerate() {
        let u = &mut usage[ix as usize];
        if !u.in_pool || u.serving != serving || u.pool != kind {
            flush(index, run_key.take(), run_from, i);
            odd.push((ix, k));
            continue;
        }
        let (dc, dm) = (k * c, u64::from(k) * m);
        let (fc, fm) = u.free_normal();
        let (nfc, nfm) = if ADD {
            u.used_c += dc;
            u.used_m = u.used_m.saturating_add(dm);
            u.jobs += 1;
            // The same as recomputing from the new usage.
            (fc.saturating_sub(dc), fm.saturating_sub(dm))
        } else {
            u.used_c -= dc;
            u.used_m = u.used_m.saturating_sub(dm);
            u.jobs -= 1;
            u.free_normal()
        };
        delta_c += i64::from(nfc) - i64::from(fc);
        delta_m += nfm as i64 - fm as i64;
        let key = (u.be_jobs > 0, nfc, nfm);
        if !ADD && fc == 0 && nfc > 0 {
            if run_key != Some(key) {
                flush(index, run_key, run_from, i);
                (run_key, run_from) = (Some(key), i);
            }
            continue;
        }
        flush(index, run_key.take(), run_from, i);
        if fc == nfc && fm == nfm {
            continue;
        }
        if nfc > 0 {
            // Moves it if it is in the index.
            index.insert(key, ix);
        } else if fc > 0 {
            index.remove(ix);
        }
    }
    flush(index, run_key, run_from, placement.len());
    (delta_c, delta_m)
}

/// [`charge_nodes`] for a placement on one node of the pool (every job of
/// a counted pool): the same moves, without gathering runs of nodes or
/// trying the bulk form first.
#[inline]
fn charge_one(
    u: &mut Usage,
    pool: &mut super::state::Pool,
    ix: u32,
    k: u32,
    c: u32,
    m: u64,
    add: bool,
) {
    let (dc, dm) = (k * c, u64::from(k) * m);
    let (fc, fm) = u.free_normal();
    if add {
        u.used_c += dc;
        u.used_m = u.used_m.saturating_add(dm);
        u.jobs += 1;
    } else {
        u.used_c -= dc;
        u.used_m = u.used_m.saturating_sub(dm);
        u.jobs -= 1;
    }
    let (nfc, nfm) = u.free_normal();
    pool.free_c += i64::from(nfc) - i64::from(fc);
    pool.free_m += nfm as i64 - fm as i64;
    if (fc, fm) == (nfc, nfm) {
        return;
    }
    if nfc > 0 {
        // Moves it if it is in the index.
        pool.normal.insert((u.be_jobs > 0, nfc, nfm), ix);
    } else if fc > 0 {
        pool.normal.remove(ix);
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
    /// Returns true when every node of `placement` counts in a pool (then
    /// none of them waits for its last job to leave).
    pub(super) fn charge(
        &mut self,
        placement: &[(u32, u32)],
        c: u32,
        m: u64,
        be: bool,
        add: bool,
    ) -> bool {
        let Scheduler {
            usage,
            domains,
            scratch,
            ..
        } = self;
        let Some(&(first, _)) = placement.first() else {
            return true;
        };
        let (serving, kind) = (usage[first as usize].serving, usage[first as usize].pool);
        let dom = &mut domains[usize::from(serving)];
        if be || dom.be_active || !usage[first as usize].in_pool {
            return charge_each(usage, domains, placement, c, m, be, add);
        }
        // A normal job whose nodes count in one pool of a domain that keeps
        // no best-effort index (every SWF job of the simulator): the pool is
        // looked up once and its totals change once. Nodes elsewhere (rare:
        // leaving their pool) are charged after, the general way; they touch
        // no index this loop touches, so the order of moves stays the same.
        let pool = &mut dom.pools[usize::from(kind)];
        if let [(ix, k)] = *placement {
            charge_one(&mut usage[ix as usize], pool, ix, k, c, m, add);
            return true;
        }
        if take_whole_nodes(usage, pool, placement, c, m, serving, kind, add) {
            return true;
        }
        let odd = &mut scratch.odd;
        odd.clear();
        let (delta_c, delta_m) = if add {
            charge_nodes::<true>(usage, &mut pool.normal, placement, c, m, serving, kind, odd)
        } else {
            charge_nodes::<false>(usage, &mut pool.normal, placement, c, m, serving, kind, odd)
        };
        pool.free_c += delta_c;
        pool.free_m += delta_m;
        if odd.is_empty() {
            return true;
        }
        let odd = std::mem::take(odd);
        let all_in_pool = charge_each(usage, domains, &odd, c, m, be, add);
        scratch.odd = odd;
        all_in_pool
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
                let holds = j
                    .spec
                    .image
                    .as_ref()
                    .is_some_and(|i| self.nodes[node as usize].spec.images.contains(i));
                cands.push((rank, holds, node, s as u32));
                total += s;
            }
        }
        if total < want {
            return false;
        }
        // Highest rank first, then nodes that hold the job's image; ties
        // keep index order (best fit, then node).
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut left = want;
        for &(_, _, node, s) in cands.iter() {
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
        // (Neither leaving the queue nor taking capacity changes it.)
        let end = now.plus(self.remaining_ms(now, j, true));
        self.dequeue(id);
        let _ = self.charge(&placement, c, m, be, true);
        let cost = self.cfg.checkpoint_cost.cost_ms(m);
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.placement.clear();
        if j.placement.capacity() == 0
            && let Some(spare) = self.scratch.placements.pop()
        {
            j.placement = spare;
        }
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
        // Usually the end `place` expected: nothing to move then.
        let moved = j.expected_end != end;
        if let Some(j) = self.jobs.get_mut(&id) {
            j.st = St::Starting;
            j.pin = None;
        }
        if moved {
            self.set_expected_end(id, end);
        }
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
        let all_in_pool = self.charge(&placement, c, m, be, false);
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
        if !all_in_pool {
            for &(ix, _) in &placement {
                // Only nodes on their way out of a pool wait for their last job.
                if self.usage[ix as usize].in_pool {
                    continue;
                }
                self.node_emptied(ix);
            }
        }
        self.scratch.spare_placement(placement);
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

#[cfg(test)]
mod tests {
    use super::super::state::Domain;
    use super::*;

    /// `n` identical nodes in pool 0 of domain 0, all free.
    fn cluster(n: u32, cores: u32, mem: u64) -> (Vec<Usage>, Vec<Domain>) {
        let usage: Vec<Usage> = (0..n)
            .map(|i| Usage {
                cores,
                mem,
                in_pool: true,
                id: i,
                ..Usage::default()
            })
            .collect();
        let mut dom = Domain::default();
        for (ix, u) in usage.iter().enumerate() {
            index_usage(&mut dom.pools[0], false, ix as u32, u);
        }
        (usage, vec![dom])
    }

    type Snapshot = (
        Vec<(u32, u64, u32)>,
        i64,
        i64,
        Vec<(crate::index::Key, Vec<u32>)>,
    );

    /// Everything a charge changes, index order included.
    fn snapshot(usage: &[Usage], domains: &[Domain]) -> Snapshot {
        let pool = &domains[0].pools[0];
        (
            usage.iter().map(|u| (u.used_c, u.used_m, u.jobs)).collect(),
            pool.free_c,
            pool.free_m,
            pool.normal.iter().map(|(k, n)| (*k, n.to_vec())).collect(),
        )
    }

    #[test]
    fn bulk_charge_makes_the_same_moves_as_node_by_node() {
        let (mut u1, mut d1) = cluster(8, 1, 100);
        let (mut u2, mut d2) = cluster(8, 1, 100);
        // Jobs take nodes from the back of the bag, as `find_placement` does.
        type Step<'a> = (&'a [(u32, u32)], u64, bool);
        let steps: [Step; 6] = [
            (&[(7, 1), (6, 1), (5, 1)], 60, true),
            (&[(4, 1), (3, 1)], 100, true),
            (&[(7, 1), (6, 1), (5, 1)], 60, false),
            (&[(5, 1), (6, 1), (7, 1), (2, 1)], 10, true),
            (&[(4, 1), (3, 1)], 100, false),
            (&[(5, 1), (6, 1), (7, 1), (2, 1)], 10, false),
        ];
        for (placement, m, add) in steps {
            let pool = &mut d1[0].pools[0];
            assert!(take_whole_nodes(&mut u1, pool, placement, 1, m, 0, 0, add));
            assert!(charge_each(&mut u2, &mut d2, placement, 1, m, false, add));
            assert_eq!(snapshot(&u1, &d1), snapshot(&u2, &d2));
        }
        assert_eq!(d1[0].pools[0].free_c, 8);
    }

    #[test]
    fn one_node_charge_makes_the_same_moves_as_the_general_one() {
        let (mut u1, mut d1) = cluster(1, 16, 1600);
        let (mut u2, mut d2) = cluster(1, 16, 1600);
        // (VMs, MiB per VM, take): fill the node, empty it, partial steps.
        let steps = [
            (16, 100, true),
            (16, 100, false),
            (5, 10, true),
            (3, 0, true),
            (8, 200, true),
            (5, 10, false),
            (8, 200, false),
            (3, 0, false),
        ];
        for (k, m, add) in steps {
            charge_one(&mut u1[0], &mut d1[0].pools[0], 0, k, 1, m, add);
            assert!(charge_each(&mut u2, &mut d2, &[(0, k)], 1, m, false, add));
            assert_eq!(snapshot(&u1, &d1), snapshot(&u2, &d2));
        }
        assert_eq!(d1[0].pools[0].free_c, 16);
    }

    #[test]
    fn bulk_charge_declines_nodes_it_would_not_fill() {
        let (mut usage, mut domains) = cluster(4, 2, 100);
        let before = snapshot(&usage, &domains);
        let pool = &mut domains[0].pools[0];
        // (cores per VM, memory per VM, pool of the node): one core of two
        // (the node stays in the index with a new shape), more memory than
        // the node has left, a node of another pool.
        for (cores, memory, pool_of_node) in [(1, 10, 0), (2, 200, 0), (2, 10, 1)] {
            assert!(!take_whole_nodes(
                &mut usage,
                pool,
                &[(3, 1)],
                cores,
                memory,
                0,
                pool_of_node,
                true
            ));
        }
        assert_eq!(snapshot(&usage, &domains), before);
    }
}
