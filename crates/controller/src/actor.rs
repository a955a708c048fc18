//! The actor: the one thread that owns the controller's state. See the crate
//! documentation for its loop and invariants.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vgrid_api::types::{
    ActionEnvelope, AddUserResponse, AgentAction, AgentEvent, AgentReport, CheckpointRef,
    JobDetail, JobView, NodeView, Principal, RegisterNode, RegisterResponse, Role, RunningJob,
    WaitResponse,
};
use vgrid_api::{Command, CommandError, Reply};
use vgrid_core::{Action, Event, JobId, NodeId, NodeStatus, Scheduler, StopMode, Time};
use vgrid_jobfile::{JobSpec, JobState, VmMode};
use vgrid_store::{
    Change, CheckpointRecord, JobRecord, NodeRecord, NodeState, Store, UserRecord, generate_token,
    hash_token,
};

use crate::handle::{AuthMap, ControllerHandle, Msg, ReplyTx};
use crate::output::OutputFiles;
use crate::schedlog::{LoggedNode, SchedInput, core_job};
use crate::views::{
    checkpoint_view, history_view, job_view, role_to_api, role_to_store, wait_reason_text,
};
use crate::{ADMIN_TOKEN_FILE, Config, ControllerError};

#[cfg(test)]
mod replay_tests;

/// Most commands taken into one round (one transaction).
const MAX_BATCH: usize = 4096;

/// Least time between two scheduling passes while commands keep coming. A
/// pass looks at the whole queue, so under a stream of submissions passes
/// are coalesced; an idle controller schedules a new job at once. When
/// passes get slow (a long queue), the gap grows to twice the last pass's
/// duration, so that scheduling takes at most a third of the actor's time.
const MIN_PASS_INTERVAL_MS: u64 = 20;

/// What the controller must remember about a job attempt across restarts;
/// stored as JSON in the job's `runtime` column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Runtime {
    /// Counts starts; agents' reports name the attempt they are about.
    attempt: u32,
    /// `(node, VMs)` of the current attempt.
    placement: Vec<(String, u32)>,
    /// The sequence number the next checkpoint gets.
    next_checkpoint: u64,
    /// Checkpoints asked of the agent and not yet reported, oldest first.
    #[serde(default)]
    checkpoints_in_flight: Vec<InFlight>,
    /// The current attempt restores the job's last checkpoint.
    #[serde(default)]
    restoring: bool,
    /// How many times its VMs died; past a limit the job fails.
    #[serde(default)]
    losses: u32,
    /// A user's move not yet ended by a start: the core restricts the
    /// job's next placement; this only words the history.
    #[serde(default)]
    moving: Option<Move>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Move {
    /// The node it must run on next; `None`: any but the ones it left.
    to: Option<String>,
}

impl Move {
    fn whither(&self) -> String {
        match &self.to {
            Some(to) => format!("on {to}"),
            None => "on another node".into(),
        }
    }
}

/// Why the core did not take an input.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("job {0} is not in the database")]
    NotStored(u64),
    #[error(transparent)]
    Core(#[from] vgrid_core::Rejected),
}

/// A job whose VMs die this many times fails instead of resuming again.
const MAX_LOSSES: u32 = 5;

/// A checkpoint in progress. `for_core`: the core asked for it and is told
/// when it ends. A preemption supersedes a periodic checkpoint still in
/// flight: the core then waits for the preemption's checkpoint only (its
/// end frees the node, so the periodic one must not be taken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct InFlight {
    seq: u64,
    for_core: bool,
    stop: bool,
}

struct Job {
    rec: JobRecord,
    owner_name: String,
    rt: Runtime,
    last_checkpoint: Option<CheckpointRecord>,
    waiters: Vec<ReplyTx>,
}

struct Node {
    rec: NodeRecord,
    /// Registered since the controller started (or since it was lost).
    connected: bool,
    last_contact_ms: u64,
    queue: VecDeque<ActionEnvelope>,
    next_seq: u64,
    parked: Option<ReplyTx>,
}

pub(crate) struct Actor {
    cfg: Config,
    rx: Receiver<Msg>,
    store: Store,
    sched: Scheduler,
    auth: AuthMap,
    users: HashMap<u64, UserRecord>,
    user_names: HashSet<String>,
    next_user_id: u64,
    jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    nodes: BTreeMap<String, Node>,
    node_names: HashMap<u32, String>,
    next_node_id: u32,
    output: OutputFiles,
    /// The clock of this round (Unix ms), never going back.
    now: u64,
    // Collected during a round, flushed at its end.
    changes: Vec<Change>,
    outbox: Vec<(ReplyTx, Result<Reply, CommandError>)>,
    new_tokens: Vec<(vgrid_store::TokenHash, Principal)>,
    touched_nodes: HashSet<String>,
    sched_dirty: bool,
    last_pass_ms: u64,
    pass_gap_ms: u64,
    stats: Stats,
}

/// Counters for `/metrics`, since the controller started.
#[derive(Default)]
struct Stats {
    commits: u64,
    committed_changes: u64,
    commit_seconds: f64,
    passes: u64,
    pass_seconds: f64,
    commands: u64,
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_store_err(e: vgrid_store::StoreError) -> ControllerError {
    ControllerError::Store(e)
}

impl Actor {
    /// Opens the store, makes sure an admin exists, loads every record and
    /// replays the scheduler log.
    pub(crate) fn open(cfg: Config) -> Result<(ControllerHandle, Actor), ControllerError> {
        let data_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| ControllerError::DataDir { path, source }
        };
        crate::output::create_private_dir(&cfg.data_dir).map_err(data_err(&cfg.data_dir))?;
        let now = wall_clock_ms();
        let mut store = Store::open(&cfg.data_dir.join("vgrid.db"), now as i64)?;
        ensure_admin(&mut store, &cfg, now)?;
        let output_dir = cfg.data_dir.join("output");
        let output = OutputFiles::new(output_dir.clone()).map_err(data_err(&output_dir))?;
        let ckpt_root = cfg.checkpoint_root();
        crate::output::create_private_dir(&ckpt_root).map_err(data_err(&ckpt_root))?;

        let read = store.read();
        let mut auth = HashMap::new();
        let mut users = HashMap::new();
        let mut user_names = HashSet::new();
        for (user, hash) in read.users_with_token_hashes()? {
            auth.insert(
                hash,
                Principal {
                    user_id: user.id,
                    name: user.name.clone(),
                    role: role_to_api(user.role),
                },
            );
            user_names.insert(user.name.clone());
            users.insert(user.id, user);
        }
        let mut latest: HashMap<u64, CheckpointRecord> = read
            .latest_checkpoints()?
            .into_iter()
            .map(|c| (c.job_id, c))
            .collect();
        let mut jobs = BTreeMap::new();
        for rec in read.jobs()? {
            let rt: Runtime = rec
                .runtime
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let owner_name = users.get(&rec.owner).map_or_else(
                || format!("user{}", rec.owner),
                |u: &UserRecord| u.name.clone(),
            );
            jobs.insert(
                rec.id,
                Job {
                    last_checkpoint: latest.remove(&rec.id),
                    rec,
                    owner_name,
                    rt,
                    waiters: Vec::new(),
                },
            );
        }
        let mut nodes = BTreeMap::new();
        let mut node_names = HashMap::new();
        for rec in read.nodes()? {
            node_names.insert(rec.id, rec.name.clone());
            nodes.insert(
                rec.name.clone(),
                Node {
                    rec,
                    connected: false,
                    // Known nodes get a full lost-timeout from now to come
                    // back before their jobs are moved.
                    last_contact_ms: now,
                    queue: VecDeque::new(),
                    next_seq: 1,
                    parked: None,
                },
            );
        }
        let next_job_id = read.max_job_id()? + 1;
        let next_user_id = read.max_user_id()? + 1;
        let next_node_id = read.max_node_id()? + 1;
        let log = read.scheduler_log()?;

        let mut sched = Scheduler::new(vgrid_core::Config {
            policy: cfg.policy,
            keep_finished_jobs: false,
            ..vgrid_core::Config::default()
        });
        let mut last_time = 0;
        for entry in log {
            let input: SchedInput =
                serde_json::from_str(&entry.input).map_err(|e| ControllerError::SchedulerLog {
                    seq: entry.seq,
                    why: e.to_string(),
                })?;
            let t = (entry.unix_ms.max(0) as u64).max(last_time);
            last_time = t;
            // Refusals cannot happen here (only accepted inputs are logged);
            // actions were carried out before the restart.
            let _ = apply_input(&mut sched, &jobs, Time(t), &input);
            while sched.poll_action().is_some() {}
        }

        let (tx, rx) = std::sync::mpsc::channel();
        let auth: AuthMap = Arc::new(RwLock::new(auth));
        let handle = ControllerHandle {
            tx,
            auth: auth.clone(),
        };
        let actor = Actor {
            cfg,
            rx,
            store,
            sched,
            auth,
            users,
            user_names,
            next_user_id,
            jobs,
            next_job_id,
            nodes,
            node_names,
            next_node_id,
            output,
            now: now.max(last_time),
            changes: Vec::new(),
            outbox: Vec::new(),
            new_tokens: Vec::new(),
            touched_nodes: HashSet::new(),
            sched_dirty: true,
            last_pass_ms: 0,
            pass_gap_ms: MIN_PASS_INTERVAL_MS,
            stats: Stats::default(),
        };
        Ok((handle, actor))
    }

    /// The loop; returns when stopped or when the database fails.
    pub(crate) fn run(mut self) -> Result<(), ControllerError> {
        tracing::info!(
            jobs = self.jobs.len(),
            nodes = self.nodes.len(),
            "controller running"
        );
        let mut batch = Vec::new();
        loop {
            let wait = self.time_to_next_wakeup();
            let mut stop = false;
            match self.rx.recv_timeout(wait) {
                Ok(msg) => batch.push(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            self.now = self.now.max(wall_clock_ms());
            for msg in batch.drain(..) {
                match msg {
                    Msg::Command {
                        principal,
                        command,
                        reply,
                    } => self.command(principal, command, reply),
                    Msg::Stop => stop = true,
                }
            }
            self.tick();
            if let Err(e) = self.flush() {
                tracing::error!(error = %e, "database write failed; the controller stops");
                return Err(e);
            }
            if stop {
                return Ok(());
            }
        }
    }

    fn time_to_next_wakeup(&self) -> Duration {
        let now = wall_clock_ms();
        // Check heartbeats a few times per lost-timeout.
        let mut next = now + (self.cfg.lost_after_ms / 4).max(50);
        if let Some(t) = self.sched.next_wakeup() {
            next = next.min(t.as_ms());
        }
        if self.sched_dirty {
            next = next.min(self.last_pass_ms + self.pass_gap_ms);
        }
        Duration::from_millis(next.saturating_sub(now))
    }

    /// Ends a round: schedules, writes, then answers.
    fn flush(&mut self) -> Result<(), ControllerError> {
        self.schedule();
        if !self.changes.is_empty() {
            let changes = std::mem::take(&mut self.changes);
            let started = std::time::Instant::now();
            let results = self.store.apply(&changes).map_err(to_store_err)?;
            self.stats.commits += 1;
            self.stats.committed_changes += changes.len() as u64;
            self.stats.commit_seconds += started.elapsed().as_secs_f64();
            // Each change was checked against memory first, so a refusal by
            // the database means memory and disk disagree: stop rather than
            // acknowledge something that is not stored.
            for (change, result) in changes.iter().zip(results) {
                if let Err(e) = result {
                    tracing::error!(?change, error = %e, "the database refused a change");
                    return Err(to_store_err(e));
                }
            }
        }
        if !self.new_tokens.is_empty()
            && let Ok(mut auth) = self.auth.write()
        {
            for (hash, p) in self.new_tokens.drain(..) {
                auth.insert(hash, p);
            }
        }
        for (tx, answer) in self.outbox.drain(..) {
            let _ = tx.send(answer);
        }
        for name in std::mem::take(&mut self.touched_nodes) {
            self.deliver(&name);
        }
        Ok(())
    }

    /// Hands queued actions to a node's parked poll, if any.
    fn deliver(&mut self, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if node.queue.is_empty() {
            return;
        }
        if let Some(tx) = node.parked.take() {
            let actions: Vec<ActionEnvelope> = node.queue.iter().cloned().collect();
            if let Err(Ok(Reply::Actions(_))) = tx.send(Ok(Reply::Actions(actions))) {
                // The poll had timed out; the next one picks the actions up.
            }
        }
    }

    // ---- The scheduling core ----

    /// Gives an input to the core; logs it when the core accepts it.
    fn feed(&mut self, input: SchedInput) -> bool {
        self.try_feed(input).is_ok()
    }

    /// [`Actor::feed`], saying why the core refused.
    fn try_feed(&mut self, input: SchedInput) -> Result<(), Refusal> {
        match apply_input(&mut self.sched, &self.jobs, Time(self.now), &input) {
            Ok(()) => {
                self.log(&input);
                self.sched_dirty = true;
                Ok(())
            }
            Err(why) => {
                tracing::debug!(?input, %why, "the scheduler refused an input");
                Err(why)
            }
        }
    }

    fn log(&mut self, input: &SchedInput) {
        match serde_json::to_string(input) {
            Ok(text) => self.changes.push(Change::AppendSchedulerLog {
                unix_ms: self.now as i64,
                input: text,
            }),
            Err(e) => tracing::error!(error = %e, "cannot serialize a scheduler input"),
        }
    }

    fn schedule(&mut self) {
        let due = self
            .sched
            .next_wakeup()
            .is_some_and(|t| t.as_ms() <= self.now);
        let coalesce = self.now < self.last_pass_ms + self.pass_gap_ms;
        if !due && (!self.sched_dirty || coalesce) {
            return;
        }
        self.sched_dirty = false;
        self.last_pass_ms = self.now;
        let started = std::time::Instant::now();
        self.sched.schedule(Time(self.now));
        let took = started.elapsed();
        self.stats.passes += 1;
        self.stats.pass_seconds += took.as_secs_f64();
        let took_ms = took.as_millis() as u64;
        self.pass_gap_ms = MIN_PASS_INTERVAL_MS.max(2 * took_ms);
        self.log(&SchedInput::Schedule);
        while let Some(action) = self.sched.poll_action() {
            self.carry_out(action);
        }
    }

    fn node_name(&self, id: NodeId) -> Option<String> {
        self.node_names.get(&id.0).cloned()
    }

    /// The user's move in progress, if any.
    fn moving(&self, id: u64) -> Option<Move> {
        self.jobs.get(&id).and_then(|j| j.rt.moving.clone())
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Start {
                job,
                placement,
                resume,
            } => self.start_job(job.0, &placement, resume),
            Action::Checkpoint { job } => {
                self.checkpoint_job(job.0, false, true, "periodic checkpoint".into())
            }
            Action::Preempt {
                job,
                mode: StopMode::Checkpoint,
            } => match self.moving(job.0) {
                Some(m) => self.checkpoint_into(
                    job.0,
                    true,
                    true,
                    JobState::Migrating,
                    format!("moving to run {}: checkpointing", m.whither()),
                ),
                None => self.checkpoint_job(
                    job.0,
                    true,
                    true,
                    "preempted: checkpointing to make room for another job".into(),
                ),
            },
            Action::Preempt {
                job,
                mode: StopMode::Kill,
            } => {
                self.kill_on_nodes(job.0);
                let (state, why) = match self.moving(job.0) {
                    Some(m) => (
                        JobState::Migrating,
                        format!(
                            "moving: stopped while starting; waits to start {}",
                            m.whither()
                        ),
                    ),
                    None => (
                        JobState::Preempted,
                        "preempted: stopped to make room for another job; work since the last checkpoint is lost".into(),
                    ),
                };
                self.transition(job.0, state, why, None, None);
            }
            Action::Kill { job } => {
                self.kill_on_nodes(job.0);
                let ended = self
                    .jobs
                    .get(&job.0)
                    .is_some_and(|j| j.rec.state.is_terminal());
                if !ended {
                    self.transition(
                        job.0,
                        JobState::Failed,
                        "stopped at the end of its reservation window".into(),
                        None,
                        None,
                    );
                }
            }
            Action::Requeue { job } => {
                self.kill_on_nodes(job.0);
                let reason = match self
                    .jobs
                    .get(&job.0)
                    .and_then(|j| j.last_checkpoint.as_ref())
                {
                    Some(c) => format!("its node was lost; resumes from checkpoint {}", c.seq),
                    None => "its node was lost; restarts from the beginning".into(),
                };
                self.transition(job.0, JobState::Preempted, reason, None, None);
            }
            other => tracing::warn!(?other, "the live controller does not carry out this action"),
        }
    }

    fn start_job(&mut self, id: u64, placement: &[(NodeId, u32)], resume: bool) {
        let named: Vec<(String, u32)> = placement
            .iter()
            .filter_map(|(n, vms)| self.node_name(*n).map(|name| (name, *vms)))
            .collect();
        let ckpt_dir = self.cfg.checkpoint_root().join(id.to_string());
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.rt.attempt += 1;
        job.rt.placement = named.clone();
        job.rt.checkpoints_in_flight.clear();
        // The core restricted this start to the move's target: the move is over.
        job.rt.moving = None;
        // Every checkpoint the controller recorded was reported to the core
        // (as `Checkpointed` or `CheckpointTaken`), so the core's `resume`
        // says whether one exists.
        let restore = if resume {
            job.last_checkpoint.as_ref().map(checkpoint_ref)
        } else {
            None
        };
        job.rt.restoring = restore.is_some();
        let attempt = job.rt.attempt;
        let spec = Box::new(job.rec.spec.clone());
        let owner = job.owner_name.clone();
        let runtime = serde_json::to_string(&job.rt).ok();
        let first = named.first().map(|(n, _)| n.clone());
        let reason = match (&restore, &first) {
            (Some(c), Some(n)) => format!("resuming from checkpoint {} on {n}", c.seq),
            (None, Some(n)) => format!("placed on {n}"),
            _ => "placed".into(),
        };
        self.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
        for (node, vms) in &named {
            self.enqueue(
                node,
                AgentAction::Start {
                    job: id,
                    attempt,
                    spec: spec.clone(),
                    vms: *vms,
                    restore: restore.clone(),
                    checkpoint_dir: ckpt_dir.display().to_string(),
                    owner: owner.clone(),
                },
            );
        }
        self.transition(id, JobState::Staging, reason, first, None);
    }

    fn checkpoint_job(&mut self, id: u64, stop: bool, for_core: bool, reason: String) {
        self.checkpoint_into(id, stop, for_core, JobState::Checkpointing, reason);
    }

    /// Asks the job's nodes for a checkpoint and records `state`.
    fn checkpoint_into(
        &mut self,
        id: u64,
        stop: bool,
        for_core: bool,
        state: JobState,
        reason: String,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.rt.next_checkpoint = job
            .rt
            .next_checkpoint
            .max(job.last_checkpoint.as_ref().map_or(0, |c| c.seq))
            + 1;
        let seq = job.rt.next_checkpoint;
        if stop && for_core {
            for f in &mut job.rt.checkpoints_in_flight {
                f.for_core = false;
            }
        }
        job.rt.checkpoints_in_flight.push(InFlight {
            seq,
            for_core,
            stop,
        });
        let attempt = job.rt.attempt;
        let nodes: Vec<String> = job.rt.placement.iter().map(|(n, _)| n.clone()).collect();
        let runtime = serde_json::to_string(&job.rt).ok();
        self.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
        for node in &nodes {
            self.enqueue(
                node,
                AgentAction::Checkpoint {
                    job: id,
                    attempt,
                    seq,
                    stop,
                },
            );
        }
        self.transition(id, state, reason, None, None);
    }

    /// Tells the job's nodes to stop its VMs, and forgets the placement.
    fn kill_on_nodes(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let attempt = job.rt.attempt;
        let nodes: Vec<String> = job.rt.placement.drain(..).map(|(n, _)| n).collect();
        job.rt.checkpoints_in_flight.clear();
        let runtime = serde_json::to_string(&job.rt).ok();
        self.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
        for node in nodes {
            self.enqueue(&node, AgentAction::Kill { job: id, attempt });
        }
    }

    fn enqueue(&mut self, node: &str, action: AgentAction) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if !n.connected {
            // A node that is not connected gets a fresh queue when it
            // registers; the reconciliation then decides what it runs.
            return;
        }
        let seq = n.next_seq;
        n.next_seq += 1;
        n.queue.push_back(ActionEnvelope { seq, action });
        self.touched_nodes.insert(node.to_string());
    }

    /// Records a state change of a job (in memory now, on disk at the end
    /// of the round) and wakes its waiters when it ended.
    fn transition(
        &mut self,
        id: u64,
        state: JobState,
        reason: String,
        node: Option<String>,
        exit_code: Option<i32>,
    ) {
        let now = self.now as i64;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.rec.state = state;
        job.rec.reason = reason.clone();
        if node.is_some() {
            job.rec.node = node.clone();
        }
        if exit_code.is_some() {
            job.rec.exit_code = exit_code;
        }
        job.rec.updated_unix_ms = now;
        self.changes.push(Change::Transition {
            job_id: id,
            unix_ms: now,
            state,
            reason,
            node,
            exit_code,
        });
        if state.is_terminal() {
            let waiters = std::mem::take(&mut job.waiters);
            let view = self.view(id);
            if let Some(view) = view {
                for w in waiters {
                    self.outbox.push((
                        w,
                        Ok(Reply::Waited(Box::new(WaitResponse {
                            ended: true,
                            job: view.clone(),
                        }))),
                    ));
                }
            }
        }
    }

    fn view(&self, id: u64) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        let reason = match job.rec.state {
            JobState::Pending | JobState::Preempted | JobState::Held | JobState::Migrating => {
                match self.sched.job(JobId(id)).map(|v| v.state) {
                    Some(vgrid_core::JobState::Pending { reason }) => {
                        if matches!(job.rec.state, JobState::Preempted | JobState::Migrating) {
                            format!("{}; {}", job.rec.reason, wait_reason_text(reason))
                        } else {
                            wait_reason_text(reason).to_string()
                        }
                    }
                    _ => job.rec.reason.clone(),
                }
            }
            _ => job.rec.reason.clone(),
        };
        Some(job_view(&job.rec, &job.owner_name, reason))
    }

    // ---- Time ----

    /// Marks silent nodes lost.
    fn tick(&mut self) {
        let now = self.now;
        let lost: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.rec.state == NodeState::Up
                    && now.saturating_sub(n.last_contact_ms) > self.cfg.lost_after_ms
            })
            .map(|n| n.rec.name.clone())
            .collect();
        for name in lost {
            tracing::warn!(node = %name, "node lost: no heartbeat");
            let Some(node) = self.nodes.get_mut(&name) else {
                continue;
            };
            node.connected = false;
            node.rec.state = NodeState::Lost;
            node.queue.clear();
            if let Some(tx) = node.parked.take() {
                self.outbox.push((tx, Ok(Reply::Actions(Vec::new()))));
            }
            let id = node.rec.id;
            self.changes.push(Change::NodeSeen {
                name: name.clone(),
                state: NodeState::Lost,
                unix_ms: now as i64,
            });
            self.feed(SchedInput::NodeLost { node: id });
        }
    }

    // ---- Commands ----

    fn command(&mut self, p: Principal, command: Command, reply: ReplyTx) {
        self.stats.commands += 1;
        let answer = match command {
            Command::WaitJob { id, .. } => match self.visible(&p, id) {
                Err(e) => Err(e),
                Ok(()) => {
                    let ended = self
                        .jobs
                        .get(&id)
                        .is_some_and(|j| j.rec.state.is_terminal());
                    if ended {
                        self.view(id)
                            .map(|job| Reply::Waited(Box::new(WaitResponse { ended: true, job })))
                            .ok_or_else(|| not_found(id))
                    } else {
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.waiters.push(reply);
                        }
                        return;
                    }
                }
            },
            Command::PollActions { node, after, .. } => match self.poll(&p, &node, after) {
                Ok(Some(actions)) => Ok(Reply::Actions(actions)),
                Ok(None) => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        // A newer poll replaces an older one.
                        if let Some(old) = n.parked.replace(reply) {
                            let _ = old.send(Ok(Reply::Actions(Vec::new())));
                        }
                    }
                    return;
                }
                Err(e) => Err(e),
            },
            other => self.simple_command(&p, other),
        };
        self.outbox.push((reply, answer));
    }

    fn simple_command(&mut self, p: &Principal, command: Command) -> Result<Reply, CommandError> {
        match command {
            Command::Submit { spec, hold } => self.submit(p, *spec, hold),
            Command::ListJobs { all } => self.list_jobs(p, all),
            Command::ShowJob { id } => self.show_job(p, id),
            Command::Cancel { id } => self.cancel(p, id),
            Command::Hold { id } => self.hold(p, id),
            Command::Release { id } => self.release(p, id),
            Command::Suspend { id } => self.suspend_resume(p, id, true),
            Command::Resume { id } => self.suspend_resume(p, id, false),
            Command::Checkpoint { id } => self.user_checkpoint(p, id),
            Command::Migrate { id, to } => self.migrate(p, id, to),
            Command::ListNodes => Ok(Reply::Nodes(self.list_nodes())),
            Command::Metrics => {
                if p.role != Role::Admin {
                    return Err(CommandError::Forbidden(
                        "only an admin reads metrics".into(),
                    ));
                }
                Ok(Reply::Metrics(self.metrics()))
            }
            Command::AddUser { name, role } => self.add_user(p, name, role),
            Command::ReadOutput {
                id,
                offset,
                max_bytes,
            } => self.read_output(p, id, offset, max_bytes),
            Command::RegisterNode(req) => self.register(p, req),
            Command::Report(report) => self.report(p, report),
            Command::WriteOutput {
                id,
                node,
                attempt,
                offset,
                data,
            } => self.write_output(p, id, &node, attempt, offset, &data),
            Command::WaitJob { .. } | Command::PollActions { .. } => {
                Err(CommandError::BadRequest("internal routing error".into()))
            }
        }
    }

    /// A job the principal may see: their own, or any for an admin. Other
    /// users' jobs look like missing ones.
    fn visible(&self, p: &Principal, id: u64) -> Result<(), CommandError> {
        match self.jobs.get(&id) {
            Some(j)
                if p.role == Role::Admin || (p.role == Role::User && j.rec.owner == p.user_id) =>
            {
                Ok(())
            }
            _ => Err(not_found(id)),
        }
    }

    fn control_reply(&self, id: u64) -> Result<Reply, CommandError> {
        self.view(id)
            .map(|v| Reply::Control(Box::new(v)))
            .ok_or_else(|| not_found(id))
    }

    fn submit(&mut self, p: &Principal, spec: JobSpec, hold: bool) -> Result<Reply, CommandError> {
        if !matches!(p.role, Role::User | Role::Admin) {
            return Err(CommandError::Forbidden("only users submit jobs".into()));
        }
        let id = self.next_job_id;
        self.next_job_id += 1;
        let now = self.now as i64;
        let rec = JobRecord {
            id,
            owner: p.user_id,
            spec,
            state: if hold {
                JobState::Held
            } else {
                JobState::Pending
            },
            node: None,
            reason: if hold {
                "held at submission".into()
            } else {
                "submitted".into()
            },
            exit_code: None,
            submitted_unix_ms: now,
            updated_unix_ms: now,
            runtime: None,
        };
        self.changes.push(Change::AddJob(Box::new(rec.clone())));
        self.jobs.insert(
            id,
            Job {
                rec,
                owner_name: p.name.clone(),
                rt: Runtime::default(),
                last_checkpoint: None,
                waiters: Vec::new(),
            },
        );
        self.feed(SchedInput::Submit { job: id });
        if hold {
            self.feed(SchedInput::Hold { job: id });
        }
        Ok(Reply::Submitted { id })
    }

    fn list_jobs(&self, p: &Principal, all: bool) -> Result<Reply, CommandError> {
        match p.role {
            Role::Admin => {}
            Role::User if !all => {}
            Role::User => {
                return Err(CommandError::Forbidden(
                    "only an admin lists every user's jobs".into(),
                ));
            }
            Role::Agent => return Err(CommandError::Forbidden("agents do not list jobs".into())),
        }
        let mine = |j: &&Job| all || j.rec.owner == p.user_id;
        let ids: Vec<u64> = self.jobs.values().filter(mine).map(|j| j.rec.id).collect();
        Ok(Reply::Jobs(
            ids.into_iter().filter_map(|id| self.view(id)).collect(),
        ))
    }

    fn show_job(&self, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let job = self.view(id).ok_or_else(|| not_found(id))?;
        let spec = self
            .jobs
            .get(&id)
            .map(|j| j.rec.spec.clone())
            .ok_or_else(|| not_found(id))?;
        let read = self.store.read();
        let unavailable =
            |e: vgrid_store::StoreError| CommandError::Unavailable(format!("database: {e}"));
        // The history of this round is not on disk yet: show it from the
        // disk plus nothing pending (the caller sees it after the commit).
        let history = read.history(id).map_err(unavailable)?;
        let checkpoints = read.checkpoints(id).map_err(unavailable)?;
        Ok(Reply::Job(Box::new(JobDetail {
            job,
            spec,
            history: history.into_iter().map(history_view).collect(),
            checkpoints: checkpoints.into_iter().map(checkpoint_view).collect(),
        })))
    }

    fn cancel(&mut self, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let state = self.jobs.get(&id).map(|j| j.rec.state);
        if state.is_some_and(JobState::is_terminal) {
            return Err(CommandError::Conflict(format!(
                "job {id} has already ended"
            )));
        }
        self.feed(SchedInput::Cancel { job: id });
        self.transition(
            id,
            JobState::Cancelled,
            format!("cancelled by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    fn hold(&mut self, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let state = self.jobs.get(&id).map(|j| j.rec.state);
        if !matches!(
            state,
            Some(JobState::Pending | JobState::Preempted | JobState::Migrating)
        ) {
            return Err(CommandError::Conflict(format!(
                "only a waiting job can be held; job {id} is {}",
                state.map_or("unknown", JobState::as_str)
            )));
        }
        if !self.feed(SchedInput::Hold { job: id }) {
            return Err(CommandError::Conflict(format!(
                "job {id} cannot be held now"
            )));
        }
        self.transition(
            id,
            JobState::Held,
            format!("held by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    fn release(&mut self, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let state = self.jobs.get(&id).map(|j| j.rec.state);
        if state != Some(JobState::Held) {
            return Err(CommandError::Conflict(format!("job {id} is not held")));
        }
        self.feed(SchedInput::Release { job: id });
        self.transition(
            id,
            JobState::Pending,
            format!("released by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    fn suspend_resume(
        &mut self,
        p: &Principal,
        id: u64,
        suspend: bool,
    ) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let Some(job) = self.jobs.get(&id) else {
            return Err(not_found(id));
        };
        let (needed, verb) = if suspend {
            (JobState::Running, "suspend")
        } else {
            (JobState::Suspended, "resume")
        };
        if job.rec.state != needed {
            return Err(CommandError::Conflict(format!(
                "cannot {verb} job {id}: it is {}",
                job.rec.state
            )));
        }
        let attempt = job.rt.attempt;
        let nodes: Vec<String> = job.rt.placement.iter().map(|(n, _)| n.clone()).collect();
        for node in nodes {
            let action = if suspend {
                AgentAction::Suspend { job: id, attempt }
            } else {
                AgentAction::Resume { job: id, attempt }
            };
            self.enqueue(&node, action);
        }
        self.control_reply(id)
    }

    fn user_checkpoint(&mut self, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let Some(job) = self.jobs.get(&id) else {
            return Err(not_found(id));
        };
        if !matches!(job.rec.state, JobState::Running | JobState::Suspended) {
            return Err(CommandError::Conflict(format!(
                "only a running job can be checkpointed; job {id} is {}",
                job.rec.state
            )));
        }
        if !job.rec.spec.mounts.is_empty() {
            return Err(CommandError::Conflict(
                "a job with mounts cannot be checkpointed (QEMU cannot save 9p mounts)".into(),
            ));
        }
        self.checkpoint_job(
            id,
            false,
            false,
            format!("checkpoint requested by {}", p.name),
        );
        self.control_reply(id)
    }

    /// A user's move, carried out by the core's `Move` event: a running
    /// job is checkpointed and stopped (the core's `Preempt`) and resumes
    /// from that checkpoint on `to` (or on any other node); a job still
    /// starting is stopped and starts again there; a waiting job only gets
    /// the restriction (`to: None` lifts it).
    fn migrate(
        &mut self,
        p: &Principal,
        id: u64,
        to: Option<String>,
    ) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let Some(job) = self.jobs.get(&id) else {
            return Err(not_found(id));
        };
        let state = job.rec.state;
        let placed_on: Vec<String> = job.rt.placement.iter().map(|(n, _)| n.clone()).collect();
        let has_mounts = !job.rec.spec.mounts.is_empty();
        let refuse = |why: String| {
            Err(CommandError::Conflict(format!(
                "job {id} cannot move: {why}"
            )))
        };
        match state {
            s if s.is_terminal() => return refuse("it has ended".into()),
            // The core counts a suspended job as running; moving it would
            // resume it on the target, unasked.
            JobState::Suspended => return refuse("it is suspended; resume it first".into()),
            JobState::StagingOut => {
                return refuse("its command has ended; its outputs are being copied".into());
            }
            JobState::Migrating if !placed_on.is_empty() => {
                return refuse("it is already being checkpointed to move".into());
            }
            _ => {}
        }
        let target = match &to {
            None => None,
            Some(name) => {
                let Some(node) = self.nodes.get(name) else {
                    return Err(CommandError::BadRequest(format!(
                        "there is no node `{name}`"
                    )));
                };
                if !(node.connected && node.rec.state == NodeState::Up) {
                    return refuse(format!("node `{name}` is not up"));
                }
                if placed_on == [name.clone()] {
                    return refuse(format!("it already runs on {name}"));
                }
                Some(node.rec.id)
            }
        };
        match self.try_feed(SchedInput::Move {
            job: id,
            to: target,
        }) {
            Ok(()) => {}
            Err(Refusal::Core(vgrid_core::Rejected::InvalidJob { .. })) if has_mounts => {
                return refuse(
                    "it has mounts, which QEMU cannot checkpoint, so moving it would lose its work"
                        .into(),
                );
            }
            Err(e) => return refuse(e.to_string()),
        }
        let waiting = placed_on.is_empty();
        let m = (to.is_some() || !waiting).then_some(Move { to });
        if let Some(job) = self.jobs.get_mut(&id) {
            job.rt.moving = m.clone();
            let runtime = serde_json::to_string(&job.rt).ok();
            self.changes.push(Change::SetRuntime {
                job_id: id,
                runtime,
            });
        }
        // The core answers a placed job's move with its preemption at once.
        let mut stopped = false;
        while let Some(action) = self.sched.poll_action() {
            stopped |= matches!(action, Action::Preempt { job, .. } if job.0 == id);
            self.carry_out(action);
        }
        if !stopped {
            let why = match &m {
                Some(m) => format!("moved by {}: its next start is {}", p.name, m.whither()),
                None => format!("moved by {}: it may start on any node", p.name),
            };
            self.transition(id, state, why, None, None);
        }
        self.control_reply(id)
    }

    fn list_nodes(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| {
                let core = self.sched.node(NodeId(n.rec.id));
                let (used_cpus, used_mem, jobs) = match &core {
                    Some(v) if v.status != NodeStatus::Down => (
                        v.used_cores + v.best_effort_cores,
                        v.used_memory_mb,
                        v.jobs.iter().map(|(j, _)| j.0).collect(),
                    ),
                    _ => (0, 0, Vec::new()),
                };
                NodeView {
                    name: n.rec.name.clone(),
                    state: n.rec.state.as_str().to_string(),
                    cpus: n.rec.cpus,
                    memory_mb: n.rec.memory_mb,
                    free_cpus: n.rec.cpus.saturating_sub(used_cpus),
                    free_memory_mb: n.rec.memory_mb.saturating_sub(used_mem),
                    labels: n.rec.labels.clone(),
                    jobs,
                    last_seen_unix_ms: n.rec.last_seen_unix_ms.max(n.last_contact_ms as i64),
                }
            })
            .collect()
    }

    /// The Prometheus text exposition of the controller's state.
    fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut by_state: BTreeMap<&str, u64> =
            JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for j in self.jobs.values() {
            *by_state.entry(j.rec.state.as_str()).or_default() += 1;
        }
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        gauge("vgrid_jobs", "Jobs by state.", "gauge");
        let mut text = String::new();
        for (state, n) in &by_state {
            let _ = writeln!(text, "vgrid_jobs{{state=\"{state}\"}} {n}");
        }
        out.push_str(&text);
        let nodes = self.list_nodes();
        let mut node_states: BTreeMap<&str, u64> = [("up", 0), ("lost", 0), ("drained", 0)]
            .into_iter()
            .collect();
        for n in &nodes {
            *node_states.entry(n.state.as_str()).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP vgrid_nodes Nodes by state.\n# TYPE vgrid_nodes gauge"
        );
        for (state, n) in &node_states {
            let _ = writeln!(out, "vgrid_nodes{{state=\"{state}\"}} {n}");
        }
        let up = nodes.iter().filter(|n| n.state == "up");
        let (cpus, free): (u64, u64) = up.fold((0, 0), |(c, f), n| {
            (c + u64::from(n.cpus), f + u64::from(n.free_cpus))
        });
        let s = &self.stats;
        for (name, help, kind, value) in [
            (
                "vgrid_cpus",
                "CPUs of the nodes that are up.",
                "gauge",
                cpus as f64,
            ),
            (
                "vgrid_free_cpus",
                "Free CPUs of the nodes that are up.",
                "gauge",
                free as f64,
            ),
            (
                "vgrid_commands_total",
                "Commands received.",
                "counter",
                s.commands as f64,
            ),
            (
                "vgrid_commits_total",
                "Database transactions (one per round).",
                "counter",
                s.commits as f64,
            ),
            (
                "vgrid_committed_changes_total",
                "Changes written, all transactions.",
                "counter",
                s.committed_changes as f64,
            ),
            (
                "vgrid_commit_seconds_total",
                "Time spent committing, fsync included.",
                "counter",
                s.commit_seconds,
            ),
            (
                "vgrid_scheduling_passes_total",
                "Scheduling passes.",
                "counter",
                s.passes as f64,
            ),
            (
                "vgrid_scheduling_seconds_total",
                "Time spent in scheduling passes.",
                "counter",
                s.pass_seconds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    fn add_user(&mut self, p: &Principal, name: String, role: Role) -> Result<Reply, CommandError> {
        if p.role != Role::Admin {
            return Err(CommandError::Forbidden("only an admin adds users".into()));
        }
        if !valid_name(&name, 32) {
            return Err(CommandError::BadRequest(format!(
                "`{name}` is not a user name (1-32 of a-z, 0-9, `_`, `-`, starting with a letter)"
            )));
        }
        if self.user_names.contains(&name) {
            return Err(CommandError::Conflict(format!(
                "user `{name}` already exists"
            )));
        }
        let token = generate_token()
            .map_err(|e| CommandError::Unavailable(format!("cannot make a token: {e}")))?;
        let id = self.next_user_id;
        self.next_user_id += 1;
        let user = UserRecord {
            id,
            name: name.clone(),
            role: role_to_store(role),
            created_unix_ms: self.now as i64,
        };
        let hash = hash_token(&token);
        self.changes.push(Change::AddUser {
            user: user.clone(),
            token_hash: hash,
        });
        self.new_tokens.push((
            hash,
            Principal {
                user_id: id,
                name: name.clone(),
                role,
            },
        ));
        self.user_names.insert(name.clone());
        self.users.insert(id, user);
        Ok(Reply::UserAdded(AddUserResponse {
            id,
            name,
            role,
            token,
        }))
    }

    fn read_output(
        &self,
        p: &Principal,
        id: u64,
        offset: u64,
        max: u64,
    ) -> Result<Reply, CommandError> {
        self.visible(p, id)?;
        let ended = self
            .jobs
            .get(&id)
            .is_some_and(|j| j.rec.state.is_terminal());
        let (data, len) = self.output.read_at(id, offset, max).map_err(|e| {
            CommandError::Unavailable(format!("cannot read the output of job {id}: {e}"))
        })?;
        let next_offset = offset.min(len) + data.len() as u64;
        Ok(Reply::Output {
            data,
            next_offset,
            complete: ended && next_offset >= len,
        })
    }

    // ---- Node agents ----

    fn register(&mut self, p: &Principal, req: RegisterNode) -> Result<Reply, CommandError> {
        if !matches!(p.role, Role::Agent | Role::Admin) {
            return Err(CommandError::Forbidden("only agents register nodes".into()));
        }
        if !valid_name(&req.name, 64) {
            return Err(CommandError::BadRequest(format!(
                "`{}` is not a node name (1-64 of a-z, 0-9, `_`, `-`, starting with a letter)",
                req.name
            )));
        }
        if req.cpus == 0 || req.memory_mb < vgrid_jobfile::MIN_MEMORY_MB {
            return Err(CommandError::BadRequest(format!(
                "a node needs at least 1 CPU and {} MiB of memory",
                vgrid_jobfile::MIN_MEMORY_MB
            )));
        }
        let now = self.now;
        let existing = self.nodes.get(&req.name).map(|n| n.rec.id);
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_node_id;
                self.next_node_id += 1;
                id
            }
        };
        let rec = NodeRecord {
            name: req.name.clone(),
            id,
            cpus: req.cpus,
            memory_mb: req.memory_mb,
            labels: req.labels.clone(),
            state: NodeState::Up,
            registered_unix_ms: now as i64,
            last_seen_unix_ms: now as i64,
        };
        self.changes.push(Change::PutNode(rec.clone()));
        self.node_names.insert(id, req.name.clone());
        let node = self.nodes.entry(req.name.clone()).or_insert_with(|| Node {
            rec: rec.clone(),
            connected: false,
            last_contact_ms: now,
            queue: VecDeque::new(),
            next_seq: 1,
            parked: None,
        });
        node.rec = rec;
        node.connected = true;
        node.last_contact_ms = now;
        node.queue.clear();
        node.next_seq = 1;
        if let Some(old) = node.parked.take() {
            self.outbox.push((old, Ok(Reply::Actions(Vec::new()))));
        }
        let core_up = self
            .sched
            .node(NodeId(id))
            .is_some_and(|v| v.status != NodeStatus::Down);
        if !core_up {
            self.feed(SchedInput::NodeUp {
                node: LoggedNode {
                    id,
                    name: req.name.clone(),
                    cpus: req.cpus,
                    memory_mb: req.memory_mb,
                    labels: req.labels.clone(),
                },
            });
        }
        self.reconcile(&req.name, &req.running);
        Ok(Reply::Registered(RegisterResponse {
            heartbeat_ms: self.cfg.heartbeat_ms,
            next_seq: 1,
        }))
    }

    /// After a (re)registration: jobs the agent still runs are reattached;
    /// starts it never got are sent again; VMs it runs that the controller
    /// no longer wants are stopped.
    fn reconcile(&mut self, node: &str, running: &[RunningJob]) {
        let have: HashSet<(u64, u32)> = running.iter().map(|r| (r.job, r.attempt)).collect();
        let expected: Vec<(u64, u32, JobState)> = self
            .jobs
            .values()
            .filter(|j| j.rt.placement.iter().any(|(n, _)| n == node))
            .map(|j| (j.rec.id, j.rt.attempt, j.rec.state))
            .collect();
        for r in running {
            let wanted = self.jobs.get(&r.job).is_some_and(|j| {
                j.rt.attempt == r.attempt && j.rt.placement.iter().any(|(n, _)| n == node)
            });
            if !wanted {
                self.enqueue(
                    node,
                    AgentAction::Kill {
                        job: r.job,
                        attempt: r.attempt,
                    },
                );
            }
        }
        for (id, attempt, state) in expected {
            if have.contains(&(id, attempt)) {
                tracing::info!(job = id, node, "reattached to a running job");
                // Checkpoints that were in flight are asked for again.
                let pending = self
                    .jobs
                    .get(&id)
                    .map(|j| j.rt.checkpoints_in_flight.clone())
                    .unwrap_or_default();
                for f in pending {
                    self.enqueue(
                        node,
                        AgentAction::Checkpoint {
                            job: id,
                            attempt,
                            seq: f.seq,
                            stop: f.stop,
                        },
                    );
                }
                continue;
            }
            if state == JobState::Staging {
                // The start may never have reached the agent: send it again.
                self.resend_start(id, node);
            } else {
                // The VMs are gone (the agent restarted and they died with
                // it): this is the same as losing the node for this job.
                self.job_lost(id, format!("its VMs on {node} are gone"));
            }
        }
    }

    fn resend_start(&mut self, id: u64, node: &str) {
        let ckpt_dir = self.cfg.checkpoint_root().join(id.to_string());
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let vms = job
            .rt
            .placement
            .iter()
            .find(|(n, _)| n == node)
            .map_or(job.rec.spec.vms, |(_, v)| *v);
        let restore = if job.rt.restoring {
            job.last_checkpoint.as_ref().map(checkpoint_ref)
        } else {
            None
        };
        let action = AgentAction::Start {
            job: id,
            attempt: job.rt.attempt,
            spec: Box::new(job.rec.spec.clone()),
            vms,
            restore,
            checkpoint_dir: ckpt_dir.display().to_string(),
            owner: job.owner_name.clone(),
        };
        self.enqueue(node, action);
    }

    /// A job whose VMs died while its node lives on: requeued in its
    /// place when it can resume from a checkpoint, failed otherwise.
    fn job_lost(&mut self, id: u64, why: String) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.rec.state.is_terminal() {
            return;
        }
        self.kill_on_nodes(id);
        if self.requeue_lost(id, &why) {
            return;
        }
        self.feed(SchedInput::Finished {
            job: id,
            exit_status: -1,
        });
        self.transition(id, JobState::Failed, why, None, None);
    }

    /// After the job's VMs died: when it has a checkpoint and has not died
    /// too often, the core requeues it in its old place (`JobLost`) and it
    /// resumes from the checkpoint. Returns whether it did.
    fn requeue_lost(&mut self, id: u64, why: &str) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        let Some(seq) = job.last_checkpoint.as_ref().map(|c| c.seq) else {
            return false;
        };
        if job.rt.losses >= MAX_LOSSES || !job.rec.spec.mounts.is_empty() {
            return false;
        }
        if !self.feed(SchedInput::JobLost { job: id }) {
            return false;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.rt.losses += 1;
            job.rt.placement.clear();
            job.rt.checkpoints_in_flight.clear();
            let runtime = serde_json::to_string(&job.rt).ok();
            self.changes.push(Change::SetRuntime {
                job_id: id,
                runtime,
            });
        }
        self.transition(
            id,
            JobState::Preempted,
            format!("requeued, VMs lost: {why}; resumes from checkpoint {seq}"),
            None,
            None,
        );
        true
    }

    fn agent_node(&mut self, p: &Principal, node: &str) -> Result<(), CommandError> {
        if !matches!(p.role, Role::Agent | Role::Admin) {
            return Err(CommandError::Forbidden("only agents do this".into()));
        }
        match self.nodes.get_mut(node) {
            Some(n) if n.connected => {
                n.last_contact_ms = self.now;
                Ok(())
            }
            _ => Err(CommandError::Conflict(format!(
                "node `{node}` is not registered with this controller; register first"
            ))),
        }
    }

    /// `Some(actions)` to answer now, `None` to park the poll.
    fn poll(
        &mut self,
        p: &Principal,
        node: &str,
        after: u64,
    ) -> Result<Option<Vec<ActionEnvelope>>, CommandError> {
        self.agent_node(p, node)?;
        let Some(n) = self.nodes.get_mut(node) else {
            return Ok(Some(Vec::new()));
        };
        while n.queue.front().is_some_and(|a| a.seq <= after) {
            n.queue.pop_front();
        }
        if n.queue.is_empty() {
            Ok(None)
        } else {
            Ok(Some(n.queue.iter().cloned().collect()))
        }
    }

    fn report(&mut self, p: &Principal, report: AgentReport) -> Result<Reply, CommandError> {
        self.agent_node(p, &report.node)?;
        for event in report.events {
            self.agent_event(&report.node, event);
        }
        Ok(Reply::Done)
    }

    fn agent_event(&mut self, node: &str, event: AgentEvent) {
        let (id, attempt) = event.job();
        let current = self.jobs.get(&id).is_some_and(|j| {
            j.rt.attempt == attempt
                && !j.rec.state.is_terminal()
                && j.rt.placement.iter().any(|(n, _)| n == node)
        });
        if !current {
            // A late report about an attempt that was stopped or replaced.
            tracing::debug!(?event, node, "ignoring a report about a stale attempt");
            return;
        }
        let node_s = Some(node.to_string());
        match event {
            AgentEvent::Booting { .. } => {
                let Some(job) = self.jobs.get(&id) else {
                    return;
                };
                let why = if job.rt.restoring {
                    "restoring VMs from the checkpoint".to_string()
                } else {
                    match job.rec.spec.mode {
                        VmMode::StopStart => "booting VMs".to_string(),
                        // The agent finds out whether a kept VM is there.
                        mode => format!("starting the VM (mode {})", mode.name()),
                    }
                };
                self.transition(id, JobState::Booting, why, node_s, None);
            }
            AgentEvent::Running { vm, .. } => {
                self.feed(SchedInput::Running { job: id });
                let why = match vm {
                    Some(how) => format!("command running; {}", how.describe()),
                    None => "command running".to_string(),
                };
                self.transition(id, JobState::Running, why, node_s, None);
            }
            AgentEvent::Checkpointed {
                seq,
                location,
                work_ms,
                log_offset,
                stopped,
                paused_ms,
                ..
            } => {
                let rec = CheckpointRecord {
                    job_id: id,
                    seq,
                    node: node.to_string(),
                    location,
                    work_ms,
                    log_offset,
                    unix_ms: self.now as i64,
                };
                let known = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.last_checkpoint.as_ref())
                    .is_some_and(|c| c.seq >= seq);
                if !known {
                    self.changes.push(Change::AddCheckpoint(rec.clone()));
                }
                let (done, more) = self.finish_checkpoint(id, seq, Some(rec));
                match done {
                    Some(f) if f.for_core => {
                        self.feed(SchedInput::Checkpointed { job: id, ok: true });
                    }
                    // A user's checkpoint, or a periodic one a preemption
                    // superseded: saved progress all the same.
                    Some(_) => {
                        self.feed(SchedInput::CheckpointTaken { job: id, paused_ms });
                    }
                    // A repeated report.
                    None => {}
                }
                let moving = self.moving(id);
                let (state, why) = if stopped {
                    self.clear_placement(id);
                    match &moving {
                        Some(m) => (
                            JobState::Migrating,
                            format!("checkpoint {seq} saved; waits to resume {}", m.whither()),
                        ),
                        None => (
                            JobState::Preempted,
                            format!("checkpoint {seq} saved; waits to resume"),
                        ),
                    }
                } else if more {
                    // A preemption's (or move's) checkpoint is still to come.
                    (
                        stopping_state(&moving),
                        format!("checkpoint {seq} saved; another one is in progress"),
                    )
                } else {
                    (JobState::Running, format!("checkpoint {seq} saved"))
                };
                self.transition(id, state, why, node_s, None);
            }
            AgentEvent::CheckpointFailed {
                seq,
                reason,
                stopped,
                ..
            } => {
                let (done, more) = self.finish_checkpoint(id, seq, None);
                if done.is_some_and(|f| f.for_core) {
                    self.feed(SchedInput::Checkpointed { job: id, ok: false });
                }
                let moving = self.moving(id);
                let (state, why) = if stopped {
                    self.clear_placement(id);
                    let from = self.resume_point(id);
                    match &moving {
                        Some(m) => (
                            JobState::Migrating,
                            format!(
                                "checkpoint {seq} failed ({reason}); waits to resume {} {from}",
                                m.whither()
                            ),
                        ),
                        None => (
                            JobState::Preempted,
                            format!("checkpoint {seq} failed ({reason}); waits to resume {from}"),
                        ),
                    }
                } else if more {
                    (
                        stopping_state(&moving),
                        format!("checkpoint {seq} failed ({reason}); another one is in progress"),
                    )
                } else {
                    (
                        JobState::Running,
                        format!("checkpoint {seq} failed: {reason}"),
                    )
                };
                self.transition(id, state, why, node_s, None);
            }
            AgentEvent::StagingOut { .. } => {
                self.transition(
                    id,
                    JobState::StagingOut,
                    "copying outputs back".into(),
                    node_s,
                    None,
                );
            }
            AgentEvent::Exited { exit_code, .. } => {
                self.clear_placement(id);
                self.feed(SchedInput::Finished {
                    job: id,
                    exit_status: exit_code,
                });
                let (state, why) = if exit_code == 0 {
                    (JobState::Done, "command exited with status 0".to_string())
                } else {
                    (
                        JobState::Failed,
                        format!("command exited with status {exit_code}"),
                    )
                };
                self.transition(id, state, why, node_s, Some(exit_code));
            }
            AgentEvent::Failed { reason, .. } => {
                self.clear_placement(id);
                // VMs that died while running resume from their checkpoint.
                let was_running = self.jobs.get(&id).is_some_and(|j| {
                    matches!(
                        j.rec.state,
                        JobState::Running
                            | JobState::Checkpointing
                            | JobState::Suspended
                            | JobState::Migrating
                    )
                });
                if was_running && self.requeue_lost(id, &format!("its VM failed ({reason})")) {
                    return;
                }
                self.feed(SchedInput::Finished {
                    job: id,
                    exit_status: -1,
                });
                self.transition(id, JobState::Failed, reason, node_s, None);
            }
            AgentEvent::Stopped { .. } => {}
            AgentEvent::Suspended { .. } => {
                self.transition(id, JobState::Suspended, "suspended".into(), node_s, None);
            }
            AgentEvent::Resumed { .. } => {
                self.transition(id, JobState::Running, "resumed".into(), node_s, None);
            }
        }
    }

    /// Ends checkpoint `seq`; returns it when it was in flight (a repeated
    /// report finds nothing) and whether others are still in flight.
    fn finish_checkpoint(
        &mut self,
        id: u64,
        seq: u64,
        saved: Option<CheckpointRecord>,
    ) -> (Option<InFlight>, bool) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return (None, false);
        };
        let done = job
            .rt
            .checkpoints_in_flight
            .iter()
            .position(|f| f.seq == seq)
            .map(|i| job.rt.checkpoints_in_flight.remove(i));
        let more = !job.rt.checkpoints_in_flight.is_empty();
        if let Some(c) = saved
            && job
                .last_checkpoint
                .as_ref()
                .is_none_or(|old| old.seq < c.seq)
        {
            job.rt.next_checkpoint = job.rt.next_checkpoint.max(c.seq);
            job.last_checkpoint = Some(c);
        }
        let runtime = serde_json::to_string(&job.rt).ok();
        self.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
        (done, more)
    }

    /// Where a waiting job resumes from, in words.
    fn resume_point(&self, id: u64) -> String {
        match self.jobs.get(&id).and_then(|j| j.last_checkpoint.as_ref()) {
            Some(c) => format!("from checkpoint {}", c.seq),
            None => "from the beginning".into(),
        }
    }

    fn clear_placement(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.rt.placement.clear();
        let runtime = serde_json::to_string(&job.rt).ok();
        self.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
    }

    fn write_output(
        &mut self,
        p: &Principal,
        id: u64,
        node: &str,
        attempt: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<Reply, CommandError> {
        self.agent_node(p, node)?;
        let current = self.jobs.get(&id).is_some_and(|j| {
            j.rt.attempt == attempt && j.rt.placement.iter().any(|(n, _)| n == node)
        });
        if !current {
            return Err(CommandError::Conflict(format!(
                "job {id} attempt {attempt} does not run on {node}"
            )));
        }
        self.output.write_at(id, offset, data).map_err(|e| {
            CommandError::Unavailable(format!("cannot write the output of job {id}: {e}"))
        })?;
        Ok(Reply::Done)
    }
}

/// The state of a job whose VMs are being checkpointed to stop.
fn stopping_state(moving: &Option<Move>) -> JobState {
    if moving.is_some() {
        JobState::Migrating
    } else {
        JobState::Checkpointing
    }
}

fn checkpoint_ref(c: &CheckpointRecord) -> CheckpointRef {
    CheckpointRef {
        seq: c.seq,
        location: c.location.clone(),
        work_ms: c.work_ms,
        log_offset: c.log_offset,
    }
}

/// Gives one input to the core (live or during replay).
fn apply_input(
    sched: &mut Scheduler,
    jobs: &BTreeMap<u64, Job>,
    now: Time,
    input: &SchedInput,
) -> Result<(), Refusal> {
    let event = match input {
        SchedInput::Submit { job } => {
            let j = jobs.get(job).ok_or(Refusal::NotStored(*job))?;
            Event::Submit(core_job(*job, &j.owner_name, &j.rec.spec))
        }
        SchedInput::Cancel { job } => Event::Cancel { job: JobId(*job) },
        SchedInput::Hold { job } => Event::Hold { job: JobId(*job) },
        SchedInput::Release { job } => Event::Release { job: JobId(*job) },
        SchedInput::NodeUp { node } => Event::NodeUp(node.to_core()),
        SchedInput::NodeLost { node } => Event::NodeLost {
            node: NodeId(*node),
        },
        SchedInput::Running { job } => Event::JobRunning { job: JobId(*job) },
        SchedInput::Finished { job, exit_status } => Event::JobFinished {
            job: JobId(*job),
            exit_status: *exit_status,
        },
        SchedInput::Checkpointed { job, ok } => Event::CheckpointFinished {
            job: JobId(*job),
            ok: *ok,
        },
        SchedInput::Schedule => {
            sched.schedule(now);
            return Ok(());
        }
        SchedInput::JobLost { job } => Event::JobLost { job: JobId(*job) },
        SchedInput::Move { job, to } => Event::Move {
            job: JobId(*job),
            to: to.map(NodeId),
        },
        SchedInput::CheckpointTaken { job, paused_ms } => Event::CheckpointTaken {
            job: JobId(*job),
            paused_ms: *paused_ms,
        },
    };
    Ok(sched.handle(now, event)?)
}

fn not_found(id: u64) -> CommandError {
    CommandError::NotFound(format!("job {id} does not exist"))
}

/// Names of users and nodes: a lower-case letter, then lower-case letters,
/// digits, `_` and `-`.
fn valid_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    name.len() <= max
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Creates the admin user on first start, writing its token to
/// `admin.token` (0600) before the user is committed: a crash in between
/// leaves a file with a token that does not work yet, and the next start
/// writes a new one.
fn ensure_admin(store: &mut Store, cfg: &Config, now: u64) -> Result<(), ControllerError> {
    let users = store.read().users_with_token_hashes()?;
    if users
        .iter()
        .any(|(u, _)| u.role == vgrid_store::Role::Admin)
    {
        return Ok(());
    }
    let path = cfg.data_dir.join(ADMIN_TOKEN_FILE);
    let token_err = |source| ControllerError::AdminToken {
        path: path.clone(),
        source,
    };
    let token = generate_token().map_err(token_err)?;
    write_secret(&path, &token).map_err(token_err)?;
    let id = store.read().max_user_id()? + 1;
    let results = store.apply(&[Change::AddUser {
        user: UserRecord {
            id,
            name: "admin".into(),
            role: vgrid_store::Role::Admin,
            created_unix_ms: now as i64,
        },
        token_hash: hash_token(&token),
    }])?;
    for r in results {
        r?;
    }
    Ok(())
}

/// Writes a secret file readable only by its owner.
pub(crate) fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
