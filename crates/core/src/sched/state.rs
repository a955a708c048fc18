//! The scheduler's internal records of jobs, nodes, pools and domains.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use vgrid_expr::{Attributes, Value};

use crate::index::FreeIndex;
use crate::model::{Class, JobRequest, NodeSpec};
use crate::types::{DomainId, JobId, Time};
use crate::view::{NodeStatus, Outcome, WaitReason};

/// Queue order: higher priority first, then earlier submission, then id.
pub(crate) type QKey = (Reverse<i32>, Time, JobId);

/// Own nodes, or nodes borrowed from another domain. A job never spans both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PoolKind {
    Own = 0,
    Borrowed = 1,
}

pub(crate) const POOLS: [PoolKind; 2] = [PoolKind::Own, PoolKind::Borrowed];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum St {
    /// In a queue (or held).
    Queued,
    /// Placed (capacity taken) but `Start` not issued yet: waiting for
    /// preempted best-effort jobs to leave, or for a reservation's window.
    Vacating,
    Starting,
    Running,
    Checkpointing,
    Preempting,
    Done(Outcome),
}

impl St {
    pub(crate) fn name(self) -> &'static str {
        match self {
            St::Queued => "pending",
            St::Vacating => "pending",
            St::Starting => "starting",
            St::Running => "running",
            St::Checkpointing => "checkpointing",
            St::Preempting => "preempting",
            St::Done(_) => "done",
        }
    }

    /// Holding capacity on nodes.
    pub(crate) fn is_placed(self) -> bool {
        matches!(
            self,
            St::Vacating | St::Starting | St::Running | St::Checkpointing | St::Preempting
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub spec: JobRequest,
    pub submitted: Time,
    pub st: St,
    pub held: bool,
    /// Work saved by the last successful checkpoint (ms of run time).
    pub progress: u64,
    pub has_ckpt: bool,
    pub preemptions: u32,
    /// `(node index, VMs)` while placed.
    pub placement: Vec<(u32, u32)>,
    pub pool: PoolKind,
    /// When the current run's work started (`JobRunning`).
    pub run_since: Option<Time>,
    /// Saved progress at the start of the current run.
    pub run_base: u64,
    /// Time paused by checkpoints during the current run.
    pub paused: u64,
    /// When the checkpoint in progress started, and the work it captures.
    pub ckpt_at: Option<Time>,
    pub ckpt_work: u64,
    pub expected_end: Time,
    pub next_ckpt: Option<Time>,
    /// A placed reservation does not start before this.
    pub not_before: Time,
    /// Where the next placement may go (after a `Move`); cleared when the
    /// job starts.
    pub pin: Option<Pin>,
}

/// A restriction on a job's next placement, from a user's `Move`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Only this node (index).
    To(u32),
    /// Any node but these (the ones the job left), sorted.
    Away(Vec<u32>),
}

impl Pin {
    pub(crate) fn allows(&self, ix: u32) -> bool {
        match self {
            Pin::To(n) => *n == ix,
            Pin::Away(left) => left.binary_search(&ix).is_err(),
        }
    }
}

impl Job {
    pub(crate) fn qkey(&self) -> QKey {
        (Reverse(self.spec.priority), self.submitted, self.spec.id)
    }

    /// Requirements, rank or a pin: placement must look at each node.
    pub(crate) fn picky(&self) -> bool {
        self.spec.requirements.is_some()
            || self.spec.rank.is_some()
            || self.pin.is_some()
            || self.spec.image.is_some()
    }

    pub(crate) fn is_best_effort(&self) -> bool {
        self.spec.class == Class::BestEffort
    }

    pub(crate) fn window(&self) -> Option<(Time, Time)> {
        match self.spec.class {
            Class::Reservation { start, end } => Some((start, end)),
            _ => None,
        }
    }

    /// Work done in the current run up to `now` (paused time excluded).
    pub(crate) fn work_at(&self, now: Time) -> u64 {
        match self.run_since {
            Some(since) => {
                let until = self.ckpt_at.unwrap_or(now).min(now);
                self.run_base + until.since(since).saturating_sub(self.paused)
            }
            None => self.progress,
        }
    }
}

/// The size class of a job needing `cores` cores (see `Domain::be_buckets`).
pub(crate) fn size_class(cores: i64) -> usize {
    (63 - cores.max(1).leading_zeros()) as usize
}

/// A waiting job's entry in its queue: what a pass needs to know about
/// it, so that scanning the queue looks nothing up.
#[derive(Debug, Clone)]
pub(crate) struct QEntry {
    pub vms: u32,
    pub cores: u32,
    pub mem: u64,
    pub need_c: i64,
    pub need_m: i64,
    /// Estimated run time if it started now (a restore included).
    pub dur: u64,
    /// No requirements and no rank: the fast paths apply.
    pub simple: bool,
    /// Cached `(domain node-set version, Some(reason) if it can never run
    /// on that node set)`.
    pub feas: Option<(u64, Option<WaitReason>)>,
    pub reason: WaitReason,
    /// The domain pass generation in which `reason` was set.
    pub reason_gen: u64,
    /// The domain pass generation when it joined the queue.
    pub queued_gen: u64,
    /// The start backfilling reserved for it, and in which pool (EASY's
    /// head job in the pass that set `reason`; under conservative every
    /// job, kept from pass to pass so that it only moves earlier).
    pub planned: Option<(Time, PoolKind)>,
    /// The pass in which `planned` was carved into the pass's profile.
    pub profiled: u64,
}

impl QEntry {
    pub(crate) fn set(
        &mut self,
        reason: WaitReason,
        planned: Option<(Time, PoolKind)>,
        pass_no: u64,
    ) {
        self.reason = reason;
        self.planned = planned;
        self.reason_gen = pass_no;
    }
}

/// The EASY head job's reservation: when it can start, and the capacity
/// left over at that time for jobs that run past it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shadow {
    pub at: Time,
    pub extra_c: i64,
    pub extra_m: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoanPhase {
    /// `Lend` issued; waiting for `LoanReady`.
    Booting,
    /// Serving the borrower.
    Active,
    /// Ending: waiting for the borrower's jobs to leave.
    Draining(crate::action::LoanEnd),
    /// `Reclaim` issued; waiting for `LoanReturned`.
    Halting,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Loan {
    pub borrower: DomainId,
    pub phase: LoanPhase,
    /// When this loan's lease ends (lease reclamation only); a timer for
    /// an earlier loan of the same node must not end this one.
    pub lease_end: Option<Time>,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub spec: NodeSpec,
    pub status: NodeStatus,
    /// The domain whose pool it is in (its owner unless lent).
    pub serving: DomainId,
    pub pool: PoolKind,
    /// Whether it counts in its pool's indexes and totals.
    pub in_pool: bool,
    pub loan: Option<Loan>,
}

/// A node's capacity and what jobs take of it: everything a placement
/// touches, kept apart from the rest of the node so that placing thousands
/// of VMs stays in cache.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cores: u32,
    /// Cores taken by normal and reservation jobs.
    pub used_c: u32,
    /// Cores taken by best-effort jobs.
    pub be_c: u32,
    /// Jobs with VMs here, and how many of them are best-effort.
    pub jobs: u32,
    pub be_jobs: u32,
    pub mem: u64,
    pub used_m: u64,
    pub be_m: u64,
    /// Copies of the node's `in_pool`, `serving` and `pool` (see
    /// `Scheduler::sync_hot`), so placements need not touch the node.
    pub in_pool: bool,
    pub serving: u16,
    pub pool: u8,
    /// The node's id, for `Start` actions.
    pub id: u32,
}

impl Usage {
    /// Free capacity for normal jobs (best-effort usage counts as free).
    pub(crate) fn free_normal(&self) -> (u32, u64) {
        (
            self.cores.saturating_sub(self.used_c),
            self.mem.saturating_sub(self.used_m),
        )
    }

    /// Capacity free right now, for best-effort jobs.
    pub(crate) fn free_physical(&self) -> (u32, u64) {
        (
            self.cores.saturating_sub(self.used_c + self.be_c),
            self.mem
                .saturating_sub(self.used_m.saturating_add(self.be_m)),
        )
    }

    pub(crate) fn overcommitted(&self) -> bool {
        self.used_c + self.be_c > self.cores || self.used_m.saturating_add(self.be_m) > self.mem
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.jobs == 0
    }
}

/// A node as expressions see it.
pub(crate) struct NodeAttrs<'a> {
    pub node: &'a Node,
    pub domain_name: &'a str,
    pub free_cores: u32,
    pub free_mem: u64,
}

impl Attributes for NodeAttrs<'_> {
    fn get(&self, name: &str) -> Option<Value<'_>> {
        Some(match name {
            "cores" => Value::Int(i64::from(self.node.spec.cores)),
            "memory_mb" => Value::Int(i64::try_from(self.node.spec.memory_mb).unwrap_or(i64::MAX)),
            "free_cores" => Value::Int(i64::from(self.free_cores)),
            "free_memory_mb" => Value::Int(i64::try_from(self.free_mem).unwrap_or(i64::MAX)),
            "name" => Value::Str(&self.node.spec.name),
            "domain" => Value::Str(self.domain_name),
            "borrowed" => Value::Bool(self.node.pool == PoolKind::Borrowed),
            other => return self.node.spec.attrs.get(other).map(|v| v.as_value()),
        })
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Pool {
    /// Nodes by free capacity for normal jobs.
    pub normal: FreeIndex,
    /// Nodes by physically free capacity, for best-effort jobs.
    pub be: FreeIndex,
    /// Free cores/MiB for normal jobs, summed over the pool's nodes.
    pub free_c: i64,
    pub free_m: i64,
    pub total_c: u64,
    pub total_m: u64,
    pub nodes: u32,
    /// Node shapes `(cores, memory)` and how many nodes have each.
    pub kinds: BTreeMap<(u32, u64), u32>,
    /// Placed normal and reservation jobs by expected end, with the cores
    /// and MiB they hold (so backfilling looks nothing up).
    pub running: BTreeMap<(Time, JobId), (i64, i64)>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct BrokerState {
    /// When gradual reclamation may take its next node.
    pub gradual_next: Option<Time>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Domain {
    pub pools: [Pool; 2],
    /// Waiting normal jobs (not held). Entries are boxed (here and in
    /// `be_queue`) so that the B-tree moves 8 bytes, not a whole entry,
    /// when a job joins or leaves a long queue (FCFS queues on real traces
    /// hold tens of thousands of jobs).
    pub queue: BTreeMap<QKey, Box<QEntry>>,
    /// How many jobs of `queue` are in each size class (see `size_class`;
    /// the last class takes all larger jobs too), and which classes are not
    /// empty: the smallest job waiting needs at least `2^(lowest class)`
    /// cores.
    pub queue_sizes: [u32; 32],
    pub queue_classes: u64,
    /// Waiting best-effort jobs (not held).
    pub be_queue: BTreeMap<QKey, Box<QEntry>>,
    /// The same jobs by size class: bucket `b` holds jobs needing
    /// `2^b ..= 2^(b+1)-1` cores, so a pass finds the next job that fits
    /// without walking past all those that cannot.
    pub be_buckets: Vec<BTreeSet<QKey>>,
    /// Reservation jobs not placed yet, by window start.
    pub reservations: BTreeMap<(Time, JobId), QEntry>,
    /// Normal jobs queued since the last pass.
    pub arrivals: Vec<QKey>,
    /// Something other than arrivals changed since the last pass (capacity,
    /// expected ends, the queue's head), so the next pass must look at the
    /// whole queue.
    pub rescan: bool,
    /// The head job the last full FCFS/EASY pass stopped at, and (EASY) its
    /// reservation; `None` if it started everything it could.
    pub last_head: Option<(QKey, Shadow)>,
    /// The last head fit in total but not on the nodes (fragmentation):
    /// its reservation is a guess that a full pass may revise.
    pub head_fragmented: bool,
    /// The last full FCFS/EASY pass started every job it could: the jobs
    /// left in the queue can never run on the current nodes.
    pub settled: bool,
    /// Jobs placed but not started (see [`St::Vacating`]).
    pub vacating: Vec<JobId>,
    /// Best-effort jobs placed on the domain's nodes.
    pub be_placed: BTreeSet<JobId>,
    /// Checkpoint costs of best-effort jobs on the domain's nodes (for the
    /// lead time before a reservation): cost -> count.
    pub be_costs: BTreeMap<u64, u32>,
    pub held: u32,
    /// Whether the pools keep their best-effort index (see
    /// `set_best_effort_index`).
    pub be_active: bool,
    /// Broker demand d: VMs of waiting normal and reservation jobs.
    pub demand_vms: u64,
    pub dirty: bool,
    /// Bumped when the domain's node set changes (feasibility caches).
    pub nodes_version: u64,
    pub pass_gen: u64,
    /// Own nodes up (|P|), own nodes lent (|L|), nodes borrowed (|V|).
    pub own_up: u32,
    pub lent: u32,
    pub borrowed: u32,
    pub loans_made: u64,
    pub broker: BrokerState,
    /// When the next reservation must be prepared (placed ahead of its
    /// start so best-effort jobs can be checkpointed in time).
    pub prep_wakeup: Option<Time>,
}

impl Domain {
    /// A lower bound on the cores the smallest waiting normal job needs
    /// (`i64::MAX` with none waiting).
    pub(crate) fn least_need(&self) -> i64 {
        match self.queue_classes {
            0 => i64::MAX,
            classes => 1i64 << classes.trailing_zeros(),
        }
    }

    /// Count a job needing `need_c` cores into (`add`) or out of `queue`.
    pub(crate) fn count_queued(&mut self, need_c: i64, add: bool) {
        let b = size_class(need_c).min(31);
        let n = &mut self.queue_sizes[b];
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        if *n == 0 {
            self.queue_classes &= !(1u64 << b);
        } else {
            self.queue_classes |= 1u64 << b;
        }
    }

    pub(crate) fn pool(&self, kind: PoolKind) -> &Pool {
        &self.pools[kind as usize]
    }

    pub(crate) fn pool_mut(&mut self, kind: PoolKind) -> &mut Pool {
        &mut self.pools[kind as usize]
    }

    /// The longest checkpoint among best-effort jobs here.
    pub(crate) fn be_lead(&self) -> u64 {
        self.be_costs.keys().next_back().copied().unwrap_or(0)
    }
}

/// Time-driven work, ordered by when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Checkpoint(JobId),
    WindowStart(JobId),
    WindowEnd(JobId),
    Broker(DomainId),
    LeaseEnd(crate::types::NodeId),
    Gradual(DomainId),
}
