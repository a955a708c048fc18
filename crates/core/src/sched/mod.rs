//! The scheduler state machine: events in, actions out.

mod admin;
mod broker;
mod pass;
mod place;
#[cfg(test)]
mod props;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};

use crate::action::{Action, StopMode};
use crate::config::{Config, PreemptionMode};
use crate::event::{Event, Rejected};
use crate::hash::IdMap;
use crate::model::{Class, JobRequest, NodeSpec};
use crate::profile::Profile;
use crate::types::{DomainId, JobId, NodeId, Time};
use crate::view::{DomainView, JobPhase, JobStatus, NodeLoad, NodeStatus, Outcome, WaitReason};

use state::{Domain, Job, Node, PoolKind, QEntry, St, Timer};

/// The scheduling core. See the crate documentation for how to drive it.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: Config,
    jobs: IdMap<JobId, Job>,
    nodes: Vec<Node>,
    /// Capacity and usage of each node (same index as `nodes`).
    usage: Vec<state::Usage>,
    node_ix: IdMap<NodeId, u32>,
    domains: Vec<Domain>,
    actions: VecDeque<Action>,
    timers: BTreeSet<(Time, Timer)>,
    /// Reused buffers, so passes do not allocate.
    scratch: Scratch,
    conservative_depth: Option<u32>,
    /// Tests compare the fast EASY/FCFS paths with the general one.
    #[cfg(test)]
    pub(crate) force_profile: bool,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    placement: Vec<(u32, u32)>,
    /// `(rank, holds the job's image, node, slots)`.
    candidates: Vec<(f64, bool, u32, u32)>,
    releases: Vec<(Time, i64, i64)>,
    profiles: [Profile; 2],
    ids: Vec<JobId>,
    /// Nodes of a placement outside its first node's pool (see
    /// `Scheduler::charge`).
    odd: Vec<(u32, u32)>,
    /// Queue entries and placement buffers of jobs that left the queue or
    /// their nodes, for the next ones: every job passes through both, and
    /// an allocation and a free each time cost more than the rest of
    /// queuing it. At most `SPARE` of each are kept.
    #[allow(clippy::vec_box)] // the boxes are what is reused
    entries: Vec<Box<QEntry>>,
    placements: Vec<Vec<(u32, u32)>>,
}

/// How many spare queue entries and placement buffers are kept.
const SPARE: usize = 256;

impl Scratch {
    /// `entry` in a box, reusing a spare one if there is one.
    fn boxed(&mut self, entry: QEntry) -> Box<QEntry> {
        match self.entries.pop() {
            Some(mut b) => {
                *b = entry;
                b
            }
            None => Box::new(entry),
        }
    }

    fn spare_entry(&mut self, e: Box<QEntry>) {
        if self.entries.len() < SPARE {
            self.entries.push(e);
        }
    }

    fn spare_placement(&mut self, mut p: Vec<(u32, u32)>) {
        if self.placements.len() < SPARE && p.capacity() > 0 {
            p.clear();
            self.placements.push(p);
        }
    }
}

impl Scheduler {
    /// A scheduler with no nodes and no jobs. A config without domains gets
    /// one domain named "default".
    pub fn new(mut cfg: Config) -> Scheduler {
        if cfg.domains.is_empty() {
            cfg.domains = Config::default().domains;
        }
        let domains = vec![Domain::default(); cfg.domains.len()];
        let mut timers = BTreeSet::new();
        for (i, d) in cfg.domains.iter().enumerate() {
            if let Some(b) = &d.broker {
                let id = DomainId(u16::try_from(i).unwrap_or(u16::MAX));
                timers.insert((Time(b.interval_ms.max(1)), Timer::Broker(id)));
            }
        }
        Scheduler {
            cfg,
            jobs: IdMap::default(),
            nodes: Vec::new(),
            usage: Vec::new(),
            node_ix: IdMap::default(),
            domains,
            actions: VecDeque::new(),
            timers,
            scratch: Scratch::default(),
            conservative_depth: None,
            #[cfg(test)]
            force_profile: false,
        }
    }

    /// Limit conservative backfilling to reservations for the first `depth`
    /// waiting jobs per pass (like Slurm's `bf_max_job_test`); jobs beyond
    /// wait with reason `Priority` and cannot start in that pass. `None`
    /// (the default) means every job: exact, but a pass costs
    /// O(queue x profile), seconds for 50,000 waiting jobs (see
    /// `examples/pass_bench.rs`).
    pub fn set_conservative_depth(&mut self, depth: Option<u32>) {
        self.conservative_depth = depth;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Record an event that happened at `now`. Actions it causes at once
    /// (a kill after a cancel, say) are queued; new starts wait for
    /// [`Scheduler::schedule`]. A refused event changes nothing.
    pub fn handle(&mut self, now: Time, event: Event) -> Result<(), Rejected> {
        match event {
            Event::Submit(spec) => self.submit(now, spec),
            Event::Cancel { job } => self.cancel(now, job),
            Event::Hold { job } => self.hold(job, true),
            Event::Release { job } => self.hold(job, false),
            Event::JobRunning { job } => self.job_running(now, job),
            Event::JobFinished { job, exit_status } => self.job_finished(now, job, exit_status),
            Event::CheckpointFinished { job, ok } => self.checkpoint_finished(now, job, ok),
            Event::JobLost { job } => self.job_lost(now, job),
            Event::Move { job, to } => self.move_job(now, job, to),
            Event::CheckpointTaken { job, paused_ms } => self.checkpoint_taken(now, job, paused_ms),
            Event::NodeUp(spec) => self.node_up(now, spec),
            Event::NodeImages { node, images } => self.node_images(node, images),
            Event::NodeDown { node } => self.node_down(now, node, false),
            Event::NodeLost { node } => self.node_down(now, node, true),
            Event::NodeDrain { node } => self.node_drain(node, true),
            Event::NodeResume { node } => self.node_drain(node, false),
            Event::LoanReady { node } => self.loan_ready(now, node),
            Event::LoanReturned { node } => self.loan_returned(now, node),
        }
    }

    /// Run one scheduling pass at `now` (after doing any time-driven work
    /// that is due). Cheap when nothing changed since the last pass.
    pub fn schedule(&mut self, now: Time) {
        self.handle_timeout(now);
        for d in 0..self.domains.len() {
            if self.domains[d].dirty {
                self.pass(now, d);
            }
        }
    }

    /// Do the time-driven work due at or before `now`: periodic
    /// checkpoints, reservation windows, broker evaluations, lease ends.
    /// [`Scheduler::schedule`] calls it too.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(now, at, timer);
        }
        for dom in &mut self.domains {
            if dom.prep_wakeup.is_some_and(|t| t <= now) {
                dom.prep_wakeup = None;
                dom.dirty = true;
            }
        }
    }

    /// The next decision, if any. Drain after every call that changes state.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the core next wants [`Scheduler::schedule`] (or
    /// [`Scheduler::handle_timeout`]) called even if no event arrives.
    pub fn next_wakeup(&self) -> Option<Time> {
        let timer = self.timers.first().map(|&(t, _)| t);
        let prep = self.domains.iter().filter_map(|d| d.prep_wakeup).min();
        match (timer, prep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drop a finished job's record. Unknown or unfinished jobs are ignored.
    pub fn forget(&mut self, job: JobId) {
        if self
            .jobs
            .get(&job)
            .is_some_and(|j| matches!(j.st, St::Done(_)))
        {
            self.jobs.remove(&job);
        }
    }

    // ----- queries -----

    /// The state of a job, with a reason if it waits.
    pub fn job_phase(&self, job: JobId) -> Option<JobPhase> {
        self.jobs.get(&job).map(|j| self.state_of(j))
    }

    /// Everything known about a job.
    pub fn job(&self, job: JobId) -> Option<JobStatus> {
        let j = self.jobs.get(&job)?;
        Some(JobStatus {
            id: j.spec.id,
            domain: j.spec.domain,
            class: j.spec.class,
            state: self.state_of(j),
            submitted: j.submitted,
            saved_progress_ms: j.progress,
            has_checkpoint: j.has_ckpt,
            preemptions: j.preemptions,
            nodes: j
                .placement
                .iter()
                .map(|&(n, k)| (self.nodes[n as usize].spec.id, k))
                .collect(),
            running_since: if matches!(j.st, St::Running | St::Checkpointing | St::Preempting) {
                j.run_since
            } else {
                None
            },
            expected_end: j.st.is_placed().then_some(j.expected_end),
            planned_start: self.planned_start(j),
        })
    }

    /// The job's specification as submitted.
    pub fn job_spec(&self, job: JobId) -> Option<&JobRequest> {
        self.jobs.get(&job).map(|j| &j.spec)
    }

    /// Every job the core holds, in id order.
    pub fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.jobs.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Waiting jobs of a domain in the order the policy considers them:
    /// open reservations, then normal jobs, then best-effort jobs. Held jobs
    /// are not listed.
    pub fn queue(&self, domain: DomainId) -> Vec<JobId> {
        let Some(d) = self.domains.get(usize::from(domain.0)) else {
            return Vec::new();
        };
        let res = d.reservations.keys().map(|&(_, id)| id);
        let normal = d.queue.keys().map(|k| k.2);
        let be = d.be_queue.keys().map(|k| k.2);
        res.chain(normal).chain(be).collect()
    }

    /// A node's view.
    pub fn node(&self, node: NodeId) -> Option<NodeLoad> {
        let &ix = self.node_ix.get(&node)?;
        let n = &self.nodes[ix as usize];
        let u = &self.usage[ix as usize];
        Some(NodeLoad {
            id: n.spec.id,
            name: n.spec.name.clone(),
            owner: n.spec.domain,
            serving: n.serving,
            status: n.status,
            cores: n.spec.cores,
            memory_mb: n.spec.memory_mb,
            used_cores: u.used_c,
            best_effort_cores: u.be_c,
            used_memory_mb: u.used_m.saturating_add(u.be_m),
            jobs: self.jobs_on(ix),
        })
    }

    /// Every node, in the order they first came up.
    pub fn nodes(&self) -> Vec<NodeLoad> {
        self.nodes
            .iter()
            .filter_map(|n| self.node(n.spec.id))
            .collect()
    }

    /// A domain's counters.
    pub fn domain(&self, domain: DomainId) -> Option<DomainView> {
        let d = self.domains.get(usize::from(domain.0))?;
        let mut v = DomainView {
            own_nodes: d.own_up,
            lent: d.lent,
            borrowed: d.borrowed,
            demand_nodes: self.demand(domain),
            queued_jobs: u32::try_from(
                d.queue.len() + d.be_queue.len() + d.reservations.len() + d.held as usize,
            )
            .unwrap_or(u32::MAX),
            running_jobs: 0,
            busy_cores: 0,
            total_cores: 0,
            loans_made: d.loans_made,
        };
        for p in &d.pools {
            v.total_cores += p.total_c;
            v.running_jobs += u32::try_from(p.running.len()).unwrap_or(u32::MAX);
        }
        for (n, u) in self.nodes.iter().zip(&self.usage) {
            if n.serving == domain && n.in_pool {
                v.busy_cores += u64::from((u.used_c + u.be_c).min(u.cores));
            }
        }
        v.running_jobs += u32::try_from(self.running_be(domain)).unwrap_or(u32::MAX);
        Some(v)
    }

    fn running_be(&self, domain: DomainId) -> usize {
        self.domains[usize::from(domain.0)]
            .be_costs
            .values()
            .map(|&c| c as usize)
            .sum()
    }

    /// A waiting job's queue entry.
    pub(super) fn entry(&self, j: &Job) -> Option<&QEntry> {
        if j.st != St::Queued || j.held {
            return None;
        }
        let d = &self.domains[usize::from(j.spec.domain.0)];
        match j.spec.class {
            Class::Normal => d.queue.get(&j.qkey()).map(|e| &**e),
            Class::BestEffort => d.be_queue.get(&j.qkey()).map(|e| &**e),
            Class::Reservation { start, .. } => d.reservations.get(&(start, j.spec.id)),
        }
    }

    pub(super) fn entry_mut(&mut self, id: JobId) -> Option<&mut QEntry> {
        let j = self.jobs.get(&id)?;
        if j.st != St::Queued || j.held {
            return None;
        }
        let d = &mut self.domains[usize::from(j.spec.domain.0)];
        match j.spec.class {
            Class::Normal => d.queue.get_mut(&j.qkey()).map(|e| &mut **e),
            Class::BestEffort => d.be_queue.get_mut(&j.qkey()).map(|e| &mut **e),
            Class::Reservation { start, .. } => d.reservations.get_mut(&(start, id)),
        }
    }

    /// The start a waiting job was given by the last pass, if any.
    fn planned_start(&self, j: &Job) -> Option<Time> {
        let d = &self.domains[usize::from(j.spec.domain.0)];
        let e = self.entry(j)?;
        let current = e.reason_gen == d.pass_gen && e.reason_gen >= e.queued_gen;
        current.then_some(e.planned).flatten().map(|(t, _)| t)
    }

    fn state_of(&self, j: &Job) -> JobPhase {
        match j.st {
            St::Queued | St::Vacating => {
                let reason = if j.held {
                    WaitReason::Held
                } else if j.st == St::Vacating {
                    WaitReason::Vacating
                } else {
                    let d = &self.domains[usize::from(j.spec.domain.0)];
                    let e = self.entry(j);
                    if d.dirty && e.is_some_and(|e| e.queued_gen == d.pass_gen) {
                        // Queued since the last pass (a job requeued during
                        // a pass leaves the domain clean).
                        WaitReason::New
                    } else if let Some(e) =
                        e.filter(|e| e.reason_gen == d.pass_gen && e.reason_gen >= e.queued_gen)
                    {
                        e.reason
                    } else if let Some(r) = self.feasibility(usize::from(j.spec.domain.0), j) {
                        // Not looked at by the last pass, but it could not
                        // run anyway.
                        r
                    } else if j.is_best_effort() {
                        WaitReason::BestEffortNoIdle
                    } else if j.window().is_some() {
                        WaitReason::Reservation
                    } else {
                        WaitReason::Priority
                    }
                };
                JobPhase::Pending { reason }
            }
            St::Starting => JobPhase::Starting,
            St::Running => JobPhase::Running,
            St::Checkpointing => JobPhase::Checkpointing,
            St::Preempting => JobPhase::Preempting,
            St::Done(outcome) => JobPhase::Done { outcome },
        }
    }

    // ----- events -----

    fn domain_ix(&self, d: DomainId) -> Result<usize, Rejected> {
        let i = usize::from(d.0);
        if i < self.domains.len() {
            Ok(i)
        } else {
            Err(Rejected::UnknownDomain(d))
        }
    }

    fn submit(&mut self, now: Time, spec: JobRequest) -> Result<(), Rejected> {
        self.domain_ix(spec.domain)?;
        if self.jobs.contains_key(&spec.id) {
            return Err(Rejected::DuplicateJob(spec.id));
        }
        let invalid = |why| Rejected::InvalidJob { job: spec.id, why };
        if spec.vms == 0 {
            return Err(invalid("it asks for no VMs"));
        }
        if spec.cores_per_vm == 0 {
            return Err(invalid("its VMs have no cores"));
        }
        if spec.checkpoint_interval_ms == Some(0) {
            return Err(invalid("its checkpoint interval is 0"));
        }
        if let Class::Reservation { start, end } = spec.class {
            if end <= start {
                return Err(invalid("its reservation window ends before it starts"));
            }
            if end <= now {
                return Err(invalid("its reservation window is already over"));
            }
        }
        let job = Job {
            submitted: now,
            st: St::Queued,
            held: false,
            progress: 0,
            has_ckpt: false,
            preemptions: 0,
            placement: Vec::new(),
            pool: PoolKind::Own,
            run_since: None,
            run_base: 0,
            paused: 0,
            ckpt_at: None,
            ckpt_work: 0,
            expected_end: Time::MAX,
            next_ckpt: None,
            not_before: Time::ZERO,
            pin: None,
            spec,
        };
        if let Some((start, end)) = job.window() {
            self.timers.insert((start, Timer::WindowStart(job.spec.id)));
            self.timers.insert((end, Timer::WindowEnd(job.spec.id)));
        }
        let id = job.spec.id;
        self.jobs.insert(id, job);
        self.enqueue(id);
        Ok(())
    }

    /// Put a job into its domain's queue (or count it as held).
    fn enqueue(&mut self, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.st = St::Queued;
        let j = &self.jobs[&id];
        let dur = self.remaining_ms(Time::ZERO, j, true);
        let d = &mut self.domains[usize::from(j.spec.domain.0)];
        d.dirty = true;
        if j.held {
            d.held += 1;
            return;
        }
        let s = &j.spec;
        let entry = QEntry {
            vms: s.vms,
            cores: s.cores_per_vm,
            mem: s.memory_mb_per_vm,
            need_c: i64::try_from(s.total_cores()).unwrap_or(i64::MAX),
            need_m: i64::try_from(s.total_memory_mb()).unwrap_or(i64::MAX),
            dur,
            simple: !j.picky(),
            feas: None,
            reason: WaitReason::New,
            reason_gen: 0,
            queued_gen: d.pass_gen,
            planned: None,
            profiled: 0,
        };
        if !j.is_best_effort() {
            d.demand_vms += u64::from(s.vms);
        }
        match s.class {
            Class::Normal => {
                d.count_queued(entry.need_c, true);
                d.queue.insert(j.qkey(), self.scratch.boxed(entry));
                d.arrivals.push(j.qkey());
            }
            Class::BestEffort => {
                let b = state::size_class(entry.need_c);
                if d.be_buckets.len() <= b {
                    d.be_buckets.resize_with(b + 1, Default::default);
                }
                d.be_buckets[b].insert(j.qkey());
                d.be_queue.insert(j.qkey(), self.scratch.boxed(entry));
                let d = usize::from(s.domain.0);
                self.set_best_effort_index(d, true);
            }
            Class::Reservation { start, .. } => {
                d.reservations.insert((start, id), entry);
            }
        }
    }

    /// Take a queued job out of its domain's queue.
    fn dequeue(&mut self, id: JobId) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let d = &mut self.domains[usize::from(j.spec.domain.0)];
        if j.held {
            d.held = d.held.saturating_sub(1);
            return;
        }
        if !j.is_best_effort() {
            d.demand_vms = d.demand_vms.saturating_sub(u64::from(j.spec.vms));
        }
        match j.spec.class {
            Class::Normal => {
                let key = j.qkey();
                if let Some(e) = d.queue.remove(&key) {
                    d.count_queued(e.need_c, false);
                    self.scratch.spare_entry(e);
                }
                if d.last_head.is_some_and(|(head, _)| head == key) {
                    // The queue's head leaves: the next pass looks again.
                    d.rescan = true;
                }
            }
            Class::BestEffort => {
                let key = j.qkey();
                if let Some(e) = d.be_queue.remove(&key) {
                    if let Some(bucket) = d.be_buckets.get_mut(state::size_class(e.need_c)) {
                        bucket.remove(&key);
                    }
                    self.scratch.spare_entry(e);
                }
            }
            Class::Reservation { start, .. } => {
                d.reservations.remove(&(start, id));
            }
        }
    }

    fn wrong_state(j: &Job, event: &'static str) -> Rejected {
        Rejected::WrongState {
            job: j.spec.id,
            event,
            state: j.st.name(),
        }
    }

    fn cancel(&mut self, now: Time, id: JobId) -> Result<(), Rejected> {
        let j = self.jobs.get(&id).ok_or(Rejected::UnknownJob(id))?;
        match j.st {
            St::Done(_) => Err(Self::wrong_state(j, "cancel")),
            St::Queued => {
                self.dequeue(id);
                self.finish(now, id, Outcome::Cancelled);
                Ok(())
            }
            St::Vacating => {
                self.release(now, id);
                self.finish(now, id, Outcome::Cancelled);
                Ok(())
            }
            St::Starting | St::Running | St::Checkpointing | St::Preempting => {
                self.actions.push_back(Action::Kill { job: id });
                self.release(now, id);
                self.finish(now, id, Outcome::Cancelled);
                Ok(())
            }
        }
    }

    fn hold(&mut self, id: JobId, hold: bool) -> Result<(), Rejected> {
        let j = self.jobs.get(&id).ok_or(Rejected::UnknownJob(id))?;
        let event = if hold { "hold" } else { "release" };
        if j.st != St::Queued {
            return Err(Self::wrong_state(j, event));
        }
        if j.held == hold {
            return Ok(());
        }
        self.dequeue(id);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.held = hold;
        }
        self.enqueue(id);
        Ok(())
    }

    fn job_running(&mut self, now: Time, id: JobId) -> Result<(), Rejected> {
        let interval = self.checkpoint_interval(id);
        let j = self.jobs.get_mut(&id).ok_or(Rejected::UnknownJob(id))?;
        if j.st != St::Starting {
            return Err(Self::wrong_state(j, "job-running"));
        }
        j.st = St::Running;
        j.run_since = Some(now);
        j.run_base = j.progress;
        j.paused = 0;
        j.ckpt_at = None;
        if let Some(i) = interval {
            j.next_ckpt = Some(now.plus(i));
            self.timers.insert((now.plus(i), Timer::Checkpoint(id)));
        }
        let end = self.expected_end_from(now, id, false);
        self.set_expected_end(id, end);
        Ok(())
    }

    fn job_finished(&mut self, now: Time, id: JobId, exit_status: i32) -> Result<(), Rejected> {
        let j = self.jobs.get(&id).ok_or(Rejected::UnknownJob(id))?;
        if !matches!(
            j.st,
            St::Starting | St::Running | St::Checkpointing | St::Preempting
        ) {
            return Err(Self::wrong_state(j, "job-finished"));
        }
        self.release(now, id);
        self.finish(now, id, Outcome::Finished { exit_status });
        Ok(())
    }

    fn checkpoint_finished(&mut self, now: Time, id: JobId, ok: bool) -> Result<(), Rejected> {
        let interval = self.checkpoint_interval(id);
        let j = self.jobs.get_mut(&id).ok_or(Rejected::UnknownJob(id))?;
        let Some(at) = j.ckpt_at else {
            return Err(Self::wrong_state(j, "checkpoint-finished"));
        };
        if ok {
            // Progress never goes down, whatever order reports come in.
            j.progress = j.progress.max(j.ckpt_work);
            j.has_ckpt = true;
        }
        match j.st {
            St::Checkpointing => {
                j.paused += now.since(at);
                j.ckpt_at = None;
                j.st = St::Running;
                if let Some(i) = interval {
                    j.next_ckpt = Some(now.plus(i));
                    self.timers.insert((now.plus(i), Timer::Checkpoint(id)));
                }
                let end = self.expected_end_from(now, id, false);
                self.set_expected_end(id, end);
            }
            St::Preempting => {
                j.ckpt_at = None;
                self.release(now, id);
                self.requeue(id);
            }
            _ => return Err(Self::wrong_state(j, "checkpoint-finished")),
        }
        Ok(())
    }

    /// The job's VMs died while its nodes live on: requeue it in its old
    /// place; it resumes from its last checkpoint.
    fn job_lost(&mut self, now: Time, id: JobId) -> Result<(), Rejected> {
        let j = self.jobs.get_mut(&id).ok_or(Rejected::UnknownJob(id))?;
        if !matches!(
            j.st,
            St::Starting | St::Running | St::Checkpointing | St::Preempting
        ) {
            return Err(Self::wrong_state(j, "job-lost"));
        }
        j.preemptions += 1;
        self.release(now, id);
        self.requeue(id);
        Ok(())
    }

    /// A user's migration: off its nodes (checkpointed when running), and
    /// its next placement restricted to `to` (or away from where it was).
    fn move_job(&mut self, now: Time, id: JobId, to: Option<NodeId>) -> Result<(), Rejected> {
        let target = match to {
            Some(n) => Some(*self.node_ix.get(&n).ok_or(Rejected::UnknownNode(n))?),
            None => None,
        };
        let can_checkpoint = self.cfg.preemption == PreemptionMode::Checkpoint;
        let j = self.jobs.get(&id).ok_or(Rejected::UnknownJob(id))?;
        let pin = match target {
            Some(ix) => Some(state::Pin::To(ix)),
            None if j.placement.is_empty() => None,
            None => {
                let mut left: Vec<u32> = j.placement.iter().map(|&(n, _)| n).collect();
                left.sort_unstable();
                Some(state::Pin::Away(left))
            }
        };
        match j.st {
            St::Done(_) => return Err(Self::wrong_state(j, "move")),
            St::Running | St::Checkpointing if !(can_checkpoint && j.spec.checkpointable) => {
                return Err(Rejected::InvalidJob {
                    job: id,
                    why: "it cannot be checkpointed, so moving it would lose its work",
                });
            }
            _ => {}
        }
        let st = j.st;
        let queued = st == St::Queued;
        if queued {
            // Its queue entry caches whether placement is simple.
            self.dequeue(id);
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.pin = pin;
        }
        match st {
            St::Queued => self.enqueue(id),
            St::Vacating => {
                self.release(now, id);
                self.requeue(id);
            }
            St::Starting => self.stop_job(now, id, StopMode::Kill),
            St::Running | St::Checkpointing => self.stop_job(now, id, StopMode::Checkpoint),
            St::Preempting | St::Done(_) => {}
        }
        Ok(())
    }

    /// A checkpoint the core did not issue was saved: record its progress.
    fn checkpoint_taken(&mut self, now: Time, id: JobId, paused_ms: u64) -> Result<(), Rejected> {
        let j = self.jobs.get_mut(&id).ok_or(Rejected::UnknownJob(id))?;
        if !matches!(j.st, St::Running | St::Checkpointing | St::Preempting) {
            return Err(Self::wrong_state(j, "checkpoint-taken"));
        }
        // The work done when it started: the pause at its end is not work.
        let work = j.work_at(now).saturating_sub(paused_ms).max(j.run_base);
        j.progress = j.progress.max(work);
        j.has_ckpt = true;
        if j.st == St::Running {
            // (During the core's own checkpoint the pauses overlap.)
            j.paused = j.paused.saturating_add(paused_ms);
            let end = self.expected_end_from(now, id, false);
            self.set_expected_end(id, end);
        }
        Ok(())
    }

    /// The job's periodic checkpoint interval, if checkpoints are taken.
    fn checkpoint_interval(&self, id: JobId) -> Option<u64> {
        self.jobs.get(&id).and_then(|j| self.interval_of(j))
    }

    /// [`Scheduler::checkpoint_interval`] of a job at hand.
    fn interval_of(&self, j: &Job) -> Option<u64> {
        if self.cfg.preemption == PreemptionMode::Checkpoint && j.spec.checkpointable {
            j.spec.checkpoint_interval_ms.filter(|&i| i > 0)
        } else {
            None
        }
    }

    /// Estimated remaining run time of a job from `now`: remaining work per
    /// its estimate, plus periodic checkpoint pauses, plus a restore if it
    /// is about to resume.
    fn remaining_ms(&self, now: Time, j: &Job, with_restore: bool) -> u64 {
        if let Some((start, end)) = j.window() {
            return end.since(now.max(start));
        }
        let done = if j.run_since.is_some() && matches!(j.st, St::Running | St::Checkpointing) {
            j.work_at(now)
        } else {
            j.progress
        };
        let work = j.spec.walltime_ms.saturating_sub(done);
        let mut total = work;
        if let Some(i) = self.interval_of(j) {
            let per = self.cfg.checkpoint_cost.cost_ms(j.spec.memory_mb_per_vm);
            total = total.saturating_add((work / i).saturating_mul(per));
        }
        if with_restore && j.has_ckpt && self.cfg.preemption == PreemptionMode::Checkpoint {
            total = total.saturating_add(self.cfg.restore_cost.cost_ms(j.spec.memory_mb_per_vm));
        }
        total
    }

    fn expected_end_from(&self, now: Time, id: JobId, with_restore: bool) -> Time {
        match self.jobs.get(&id) {
            Some(j) => now.plus(self.remaining_ms(now, j, with_restore)),
            None => now,
        }
    }

    /// Move a placed normal/reservation job in its pool's by-end index.
    fn set_expected_end(&mut self, id: JobId, end: Time) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let old = j.expected_end;
        j.expected_end = end;
        if j.is_best_effort() || !j.st.is_placed() || old == end {
            return;
        }
        // The job is indexed in the pool of the domain its nodes serve.
        if let Some(p) = self.serving_domain(id) {
            self.domains[p.0].rescan = true;
            let pool = self.domains[p.0].pool_mut(p.1);
            if let Some(need) = pool.running.remove(&(old, id)) {
                pool.running.insert((end, id), need);
            }
        }
    }

    /// `(domain index, pool)` whose nodes a placed job is on.
    fn serving_domain(&self, id: JobId) -> Option<(usize, PoolKind)> {
        let j = self.jobs.get(&id)?;
        let &(n, _) = j.placement.first()?;
        let node = &self.nodes[n as usize];
        Some((usize::from(node.serving.0), j.pool))
    }

    /// Mark a job done and forget it if so configured.
    fn finish(&mut self, _now: Time, id: JobId, outcome: Outcome) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.st = St::Done(outcome);
            j.next_ckpt = None;
            j.ckpt_at = None;
            let d = usize::from(j.spec.domain.0);
            self.domains[d].dirty = true;
        }
        if !self.cfg.keep_finished_jobs {
            self.jobs.remove(&id);
        }
    }

    /// Back to the queue after leaving its nodes (capacity already
    /// released), keeping its saved progress.
    fn requeue(&mut self, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.run_since = None;
        j.ckpt_at = None;
        j.next_ckpt = None;
        j.paused = 0;
        j.expected_end = Time::MAX;
        self.enqueue(id);
    }

    /// Take a placed job off its nodes, with `mode`. Returns after queuing
    /// the action; a kill releases capacity and requeues at once.
    fn stop_job(&mut self, now: Time, id: JobId, mode: StopMode) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.preemptions += 1;
        match j.st {
            St::Vacating => {
                // Never started: nothing to stop on the nodes.
                j.preemptions -= 1;
                self.release(now, id);
                self.requeue(id);
            }
            St::Preempting => {}
            St::Checkpointing if mode == StopMode::Checkpoint => {
                // The checkpoint in progress will serve; stop afterwards.
                j.st = St::Preempting;
                self.actions.push_back(Action::Preempt { job: id, mode });
            }
            St::Running if mode == StopMode::Checkpoint => {
                j.ckpt_work = j.work_at(now);
                j.ckpt_at = Some(now);
                j.st = St::Preempting;
                self.actions.push_back(Action::Preempt { job: id, mode });
            }
            _ => {
                self.actions.push_back(Action::Preempt {
                    job: id,
                    mode: StopMode::Kill,
                });
                self.release(now, id);
                self.requeue(id);
            }
        }
    }

    /// How a job leaves its nodes when it must: checkpoint if it can.
    fn stop_mode(&self, id: JobId) -> StopMode {
        match self.jobs.get(&id) {
            Some(j)
                if self.cfg.preemption == PreemptionMode::Checkpoint
                    && j.spec.checkpointable
                    && matches!(j.st, St::Running | St::Checkpointing) =>
            {
                StopMode::Checkpoint
            }
            _ => StopMode::Kill,
        }
    }

    fn fire(&mut self, now: Time, at: Time, timer: Timer) {
        match timer {
            Timer::Checkpoint(id) => {
                let Some(j) = self.jobs.get_mut(&id) else {
                    return;
                };
                if j.st != St::Running || j.next_ckpt != Some(at) {
                    return;
                }
                j.next_ckpt = None;
                j.ckpt_work = j.work_at(now);
                j.ckpt_at = Some(now);
                j.st = St::Checkpointing;
                self.actions.push_back(Action::Checkpoint { job: id });
            }
            Timer::WindowStart(id) => {
                if let Some(j) = self.jobs.get(&id) {
                    let d = usize::from(j.spec.domain.0);
                    self.domains[d].dirty = true;
                }
            }
            Timer::WindowEnd(id) => {
                let Some(j) = self.jobs.get(&id) else {
                    return;
                };
                match j.st {
                    St::Done(_) => {}
                    St::Queued => {
                        self.dequeue(id);
                        self.finish(now, id, Outcome::WindowEnded);
                    }
                    St::Vacating => {
                        self.release(now, id);
                        self.finish(now, id, Outcome::WindowEnded);
                    }
                    _ => {
                        self.actions.push_back(Action::Kill { job: id });
                        self.release(now, id);
                        self.finish(now, id, Outcome::WindowEnded);
                    }
                }
            }
            Timer::Broker(d) => self.broker_tick(now, d),
            Timer::LeaseEnd(node) => self.lease_end(now, at, node),
            Timer::Gradual(d) => self.gradual_tick(now, d),
        }
    }

    fn node_up(&mut self, now: Time, spec: NodeSpec) -> Result<(), Rejected> {
        let d = self.domain_ix(spec.domain)?;
        if spec.cores == 0 {
            return Err(Rejected::InvalidNode {
                node: spec.id,
                why: "it has no cores",
            });
        }
        let ix = match self.node_ix.get(&spec.id) {
            Some(&ix) => {
                let n = &self.nodes[ix as usize];
                if n.status != NodeStatus::Down {
                    return Err(Rejected::NodeAlreadyUp(spec.id));
                }
                let n = &mut self.nodes[ix as usize];
                n.spec = spec;
                let u = &mut self.usage[ix as usize];
                u.cores = n.spec.cores;
                u.mem = n.spec.memory_mb;
                ix
            }
            None => {
                let ix = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
                self.node_ix.insert(spec.id, ix);
                self.usage.push(state::Usage {
                    cores: spec.cores,
                    mem: spec.memory_mb,
                    ..state::Usage::default()
                });
                self.nodes.push(Node {
                    serving: spec.domain,
                    spec,
                    status: NodeStatus::Down,
                    pool: PoolKind::Own,
                    in_pool: false,
                    loan: None,
                });
                ix
            }
        };
        let n = &mut self.nodes[ix as usize];
        n.status = NodeStatus::Up;
        n.serving = n.spec.domain;
        n.pool = PoolKind::Own;
        n.loan = None;
        self.sync_hot(ix);
        self.domains[d].own_up += 1;
        self.join_pool(ix);
        let _ = now;
        Ok(())
    }

    /// A node's images changed: only where jobs prefer to go, not what
    /// fits, so no pass is due for it.
    fn node_images(
        &mut self,
        node: NodeId,
        images: std::collections::BTreeSet<String>,
    ) -> Result<(), Rejected> {
        let &ix = self.node_ix.get(&node).ok_or(Rejected::UnknownNode(node))?;
        self.nodes[ix as usize].spec.images = images;
        Ok(())
    }

    fn node_down(&mut self, now: Time, node: NodeId, lost: bool) -> Result<(), Rejected> {
        let &ix = self.node_ix.get(&node).ok_or(Rejected::UnknownNode(node))?;
        let n = &self.nodes[ix as usize];
        if n.status == NodeStatus::Down {
            return Ok(());
        }
        if n.status == NodeStatus::Draining && !lost {
            return Ok(());
        }
        let owner = usize::from(n.spec.domain.0);
        // A loan ends with the node.
        if let Some(loan) = n.loan {
            let b = usize::from(loan.borrower.0);
            if matches!(
                loan.phase,
                state::LoanPhase::Active | state::LoanPhase::Draining(_)
            ) {
                self.domains[b].borrowed = self.domains[b].borrowed.saturating_sub(1);
            }
            self.domains[owner].lent = self.domains[owner].lent.saturating_sub(1);
            self.nodes[ix as usize].loan = None;
        }
        self.leave_pool(ix);
        let jobs: Vec<JobId> = self.jobs_on(ix).into_iter().map(|(j, _)| j).collect();
        if lost {
            for id in jobs {
                self.lose_job(now, id);
            }
            self.set_down(ix);
        } else {
            self.nodes[ix as usize].status = NodeStatus::Draining;
            for id in jobs {
                let mode = self.stop_mode(id);
                self.stop_job(now, id, mode);
            }
            if self.usage[ix as usize].is_empty() {
                self.set_down(ix);
            }
        }
        Ok(())
    }

    fn set_down(&mut self, ix: u32) {
        let n = &mut self.nodes[ix as usize];
        n.status = NodeStatus::Down;
        n.loan = None;
        let owner = usize::from(n.spec.domain.0);
        n.serving = n.spec.domain;
        n.pool = PoolKind::Own;
        self.sync_hot(ix);
        self.domains[owner].own_up = self.domains[owner].own_up.saturating_sub(1);
    }

    /// A job lost one of its nodes without notice.
    fn lose_job(&mut self, now: Time, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        match j.st {
            St::Vacating => {
                self.release(now, id);
                self.requeue(id);
            }
            St::Starting | St::Running | St::Checkpointing | St::Preempting => {
                j.preemptions += 1;
                self.actions.push_back(Action::Requeue { job: id });
                self.release(now, id);
                self.requeue(id);
            }
            _ => {}
        }
    }
}
