//! A deterministic test driver in the style of quinn-proto's `Pair`: a
//! virtual clock, a fake cluster that carries out the core's actions with
//! fixed operation times, and `step()` to the next thing that happens.
//!
//! The fake cluster knows each job's true amount of work (the core only
//! knows the estimate) and measures the work lost to kills and failures.

use std::collections::{BTreeMap, HashMap};

use crate::{
    Action, Config, Event, JobId, JobRequest, NodeId, NodeSpec, Scheduler, StopMode, Time,
};

/// Operation times the fake cluster takes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Costs {
    pub boot_ms: u64,
    pub restore_ms: u64,
    pub checkpoint_ms: u64,
    pub loan_boot_ms: u64,
    pub loan_halt_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct Run {
    /// Bumped whenever the job leaves its nodes, so stale events are dropped.
    generation: u64,
    /// Work the job needs in total.
    work: u64,
    /// Work saved by the last successful checkpoint, as the cluster sees it.
    saved: u64,
    /// Work captured by the checkpoint in progress.
    capturing: u64,
    /// When the current run started working and the work done before.
    running_since: Option<Time>,
    base: u64,
    paused: u64,
    checkpoint_started: Option<Time>,
    /// Make the next checkpoint fail.
    fail_next_checkpoint: bool,
    /// A `Preempt { Checkpoint }` is in progress: the VMs stop when it ends.
    preempting: bool,
}

impl Run {
    fn work_at(&self, now: Time) -> u64 {
        match self.running_since {
            Some(since) => {
                let until = self.checkpoint_started.unwrap_or(now).min(now);
                (self.base + until.since(since).saturating_sub(self.paused)).min(self.work)
            }
            None => self.saved,
        }
    }
}

/// Order of events at the same instant: completions before arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Completion,
    Arrival,
}

/// A driver event waiting for its time, dropped if `guard`'s job generation
/// moved on (the job left its nodes since).
type Pending = BTreeMap<(Time, Lane, u64), (Event, Option<(JobId, u64)>)>;

pub(crate) struct Harness {
    pub s: Scheduler,
    pub now: Time,
    pub costs: Costs,
    pending: Pending,
    seq: u64,
    runs: HashMap<JobId, Run>,
    /// Every action with the time it was issued.
    pub log: Vec<(Time, Action)>,
    /// Start time of each job's last start.
    pub started: HashMap<JobId, Time>,
    pub finished: HashMap<JobId, Time>,
    /// Work lost per job to kills and node losses, one entry per loss.
    pub lost: HashMap<JobId, Vec<u64>>,
    /// VMs the fake cluster is running: job -> (node, VMs, cores/VM, MiB/VM).
    pub occupancy: HashMap<JobId, Vec<(NodeId, u32, u32, u64)>>,
    shapes: HashMap<JobId, (u32, u64)>,
}

impl Harness {
    pub(crate) fn new(cfg: Config) -> Harness {
        Harness {
            s: Scheduler::new(cfg),
            now: Time::ZERO,
            costs: Costs::default(),
            pending: BTreeMap::new(),
            seq: 0,
            runs: HashMap::new(),
            log: Vec::new(),
            started: HashMap::new(),
            finished: HashMap::new(),
            lost: HashMap::new(),
            occupancy: HashMap::new(),
            shapes: HashMap::new(),
        }
    }

    fn push(&mut self, at: Time, lane: Lane, ev: Event, guard: Option<(JobId, u64)>) {
        self.seq += 1;
        self.pending.insert((at, lane, self.seq), (ev, guard));
    }

    /// Nodes `first..first+count` with `cores` cores each, up at time 0.
    pub(crate) fn nodes(&mut self, first: u32, count: u32, cores: u32, memory_mb: u64) {
        for i in first..first + count {
            let spec = NodeSpec::new(NodeId(i), crate::DomainId(0), cores, memory_mb);
            self.push(Time::ZERO, Lane::Arrival, Event::NodeUp(spec), None);
        }
    }

    /// Nodes in another domain.
    pub(crate) fn nodes_in(&mut self, domain: u16, first: u32, count: u32, cores: u32) {
        for i in first..first + count {
            let spec = NodeSpec::new(NodeId(i), crate::DomainId(domain), cores, 0);
            self.push(Time::ZERO, Lane::Arrival, Event::NodeUp(spec), None);
        }
    }

    /// An event at a given time (from the "outside world").
    pub(crate) fn at(&mut self, t: u64, ev: Event) {
        self.push(Time(t), Lane::Arrival, ev, None);
    }

    /// Submit `spec` at `t`; the job really needs `work` ms of run time.
    pub(crate) fn submit(&mut self, t: u64, spec: JobRequest, work: u64) {
        self.shapes
            .insert(spec.id, (spec.cores_per_vm, spec.memory_mb_per_vm));
        self.runs.insert(
            spec.id,
            Run {
                work,
                ..Run::default()
            },
        );
        self.push(Time(t), Lane::Arrival, Event::Submit(spec), None);
    }

    /// Make the next checkpoint of `job` fail.
    #[allow(dead_code)]
    pub(crate) fn fail_next_checkpoint(&mut self, job: JobId) {
        if let Some(r) = self.runs.get_mut(&job) {
            r.fail_next_checkpoint = true;
        }
    }

    /// Advance to the next instant where something happens; false when idle.
    pub(crate) fn step(&mut self) -> bool {
        let next_event = self.pending.keys().next().map(|k| k.0);
        let wake = self.s.next_wakeup();
        let t = match (next_event, wake) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(t);
        let now = self.now;
        while let Some((&key, _)) = self.pending.iter().next() {
            if key.0 > now {
                break;
            }
            let Some((ev, guard)) = self.pending.remove(&key) else {
                break;
            };
            if let Some((job, generation)) = guard
                && self.runs.get(&job).map(|r| r.generation) != Some(generation)
            {
                continue;
            }
            self.before_event(&ev);
            // Losses and user checkpoints change the cluster only if the
            // core took them (it refuses them for jobs not running).
            let follow = matches!(ev, Event::JobLost { .. } | Event::CheckpointTaken { .. })
                .then(|| ev.clone());
            if self.s.handle(now, ev).is_ok()
                && let Some(ev) = follow
            {
                self.after_event(&ev);
            }
        }
        self.s.schedule(now);
        while let Some(a) = self.s.poll_action() {
            self.log.push((now, a.clone()));
            self.carry_out(a);
        }
        true
    }

    /// Step through everything that happens at or before `t`.
    pub(crate) fn run_to(&mut self, t: u64) {
        loop {
            let next_event = self.pending.keys().next().map(|k| k.0);
            let next = match (next_event, self.s.next_wakeup()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(n) if n.0 <= t => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(Time(t));
    }

    /// Step until nothing is left to do (or `limit` steps, to catch loops).
    pub(crate) fn run(&mut self, limit: usize) {
        for _ in 0..limit {
            if !self.step() {
                return;
            }
        }
        panic!("harness did not become idle within {limit} steps");
    }

    /// Bookkeeping the fake cluster does when it delivers an event.
    fn before_event(&mut self, ev: &Event) {
        let now = self.now;
        match ev {
            Event::JobRunning { job } => {
                if let Some(r) = self.runs.get_mut(job) {
                    r.running_since = Some(now);
                    r.paused = 0;
                    r.checkpoint_started = None;
                    let left = r.work - r.base;
                    let g = r.generation;
                    self.push(
                        now.plus(left),
                        Lane::Completion,
                        Event::JobFinished {
                            job: *job,
                            exit_status: 0,
                        },
                        Some((*job, g)),
                    );
                }
            }
            Event::JobFinished { job, .. } => {
                self.finished.insert(*job, now);
                self.occupancy.remove(job);
                if let Some(r) = self.runs.get_mut(job) {
                    r.generation += 1;
                }
            }
            Event::CheckpointFinished { job, ok } => {
                if let Some(r) = self.runs.get_mut(job) {
                    if *ok {
                        r.saved = r.saved.max(r.capturing);
                    }
                    if let Some(at) = r.checkpoint_started.take() {
                        r.paused += now.since(at);
                    }
                    if std::mem::take(&mut r.preempting) {
                        r.running_since = None;
                        self.occupancy.remove(job);
                    }
                }
            }
            Event::NodeLost { node } => {
                // Jobs on the node lose the work since their last checkpoint.
                let jobs = self.s.node(*node).map(|v| v.jobs).unwrap_or_default();
                for (job, _) in jobs {
                    self.stop(job, false);
                }
            }
            _ => {}
        }
    }

    /// Bookkeeping for driver-initiated events the core accepted.
    fn after_event(&mut self, ev: &Event) {
        let now = self.now;
        match *ev {
            Event::JobLost { job } => self.stop(job, false),
            Event::CheckpointTaken { job, paused_ms } => {
                let Some(r) = self.runs.get_mut(&job) else {
                    return;
                };
                let work = r.work_at(now).saturating_sub(paused_ms).max(r.base);
                r.saved = r.saved.max(work);
                if paused_ms > 0
                    && r.running_since.is_some()
                    && r.checkpoint_started.is_none()
                    && !r.preempting
                {
                    // The VMs were paused: the job ends that much later.
                    r.paused += paused_ms;
                    r.generation += 1;
                    let g = r.generation;
                    let left = r.work - r.work_at(now);
                    self.push(
                        now.plus(left),
                        Lane::Completion,
                        Event::JobFinished {
                            job,
                            exit_status: 0,
                        },
                        Some((job, g)),
                    );
                }
            }
            _ => {}
        }
    }

    /// The job leaves its nodes; record lost work unless it was saved.
    fn stop(&mut self, job: JobId, saved_now: bool) {
        let now = self.now;
        if let Some(r) = self.runs.get_mut(&job) {
            let done = r.work_at(now);
            if !saved_now && r.running_since.is_some() {
                self.lost
                    .entry(job)
                    .or_default()
                    .push(done.saturating_sub(r.saved));
            }
            r.running_since = None;
            r.checkpoint_started = None;
            r.preempting = false;
            r.generation += 1;
        }
        self.occupancy.remove(&job);
    }

    fn carry_out(&mut self, a: Action) {
        let now = self.now;
        let c = self.costs;
        match a {
            Action::Start {
                job,
                resume,
                ref placement,
            } => {
                self.started.insert(job, now);
                let (cores, mem) = self.shapes.get(&job).copied().unwrap_or((1, 0));
                self.occupancy.insert(
                    job,
                    placement.iter().map(|&(n, k)| (n, k, cores, mem)).collect(),
                );
                if let Some(r) = self.runs.get_mut(&job) {
                    r.generation += 1;
                    r.base = if resume { r.saved } else { 0 };
                    r.running_since = None;
                    let g = r.generation;
                    let delay = if resume { c.restore_ms } else { c.boot_ms };
                    self.push(
                        now.plus(delay),
                        Lane::Completion,
                        Event::JobRunning { job },
                        Some((job, g)),
                    );
                }
            }
            Action::Checkpoint { job } => {
                if let Some(r) = self.runs.get_mut(&job) {
                    r.capturing = r.work_at(now);
                    r.checkpoint_started = Some(now);
                    let ok = !std::mem::take(&mut r.fail_next_checkpoint);
                    // The job is paused while saving: its end moves later.
                    r.generation += 1;
                    let g = r.generation;
                    let left = r.work - r.capturing;
                    self.push(
                        now.plus(c.checkpoint_ms),
                        Lane::Completion,
                        Event::CheckpointFinished { job, ok },
                        Some((job, g)),
                    );
                    self.push(
                        now.plus(c.checkpoint_ms + left),
                        Lane::Completion,
                        Event::JobFinished {
                            job,
                            exit_status: 0,
                        },
                        Some((job, g)),
                    );
                }
            }
            Action::Preempt { job, mode } => match mode {
                StopMode::Kill => self.stop(job, false),
                StopMode::Checkpoint => {
                    let mut ok = true;
                    if let Some(r) = self.runs.get_mut(&job) {
                        if r.checkpoint_started.is_none() {
                            r.capturing = r.work_at(now);
                            r.checkpoint_started = Some(now);
                        }
                        ok = !std::mem::take(&mut r.fail_next_checkpoint);
                        r.preempting = true;
                        r.generation += 1;
                        let g = r.generation;
                        self.push(
                            now.plus(c.checkpoint_ms),
                            Lane::Completion,
                            Event::CheckpointFinished { job, ok },
                            Some((job, g)),
                        );
                    }
                    if !ok {
                        // Lost since the last good checkpoint, once stopped.
                        if let Some(r) = self.runs.get(&job) {
                            let done = r.capturing;
                            let saved = r.saved;
                            self.lost
                                .entry(job)
                                .or_default()
                                .push(done.saturating_sub(saved));
                        }
                    }
                }
            },
            Action::Kill { job } | Action::Requeue { job } => {
                if matches!(a, Action::Kill { .. }) {
                    if let Some(r) = self.runs.get_mut(&job) {
                        r.generation += 1;
                        r.running_since = None;
                        r.preempting = false;
                    }
                    self.occupancy.remove(&job);
                } else {
                    self.stop(job, false);
                }
            }
            Action::Lend { node, .. } => {
                self.push(
                    now.plus(c.loan_boot_ms),
                    Lane::Completion,
                    Event::LoanReady { node },
                    None,
                );
            }
            Action::Reclaim { node, .. } => {
                self.push(
                    now.plus(c.loan_halt_ms),
                    Lane::Completion,
                    Event::LoanReturned { node },
                    None,
                );
            }
        }
    }

    /// Start time of a job (panics in tests if it never started).
    pub(crate) fn start_of(&self, id: u64) -> u64 {
        match self.started.get(&JobId(id)) {
            Some(t) => t.0,
            None => panic!("job {id} never started"),
        }
    }

    pub(crate) fn end_of(&self, id: u64) -> u64 {
        match self.finished.get(&JobId(id)) {
            Some(t) => t.0,
            None => panic!("job {id} never finished"),
        }
    }

    /// Actions of one kind for one job, with times.
    pub(crate) fn actions_for(&self, id: u64) -> Vec<(u64, Action)> {
        self.log
            .iter()
            .filter(|(_, a)| action_job(a) == Some(JobId(id)))
            .map(|(t, a)| (t.0, a.clone()))
            .collect()
    }
}

pub(crate) fn action_job(a: &Action) -> Option<JobId> {
    match a {
        Action::Start { job, .. }
        | Action::Checkpoint { job }
        | Action::Preempt { job, .. }
        | Action::Kill { job }
        | Action::Requeue { job } => Some(*job),
        Action::Lend { .. } | Action::Reclaim { .. } => None,
    }
}
