//! The job book: everything the controller knows and decides, without IO,
//! clock or threads.
//!
//! It holds the users, the jobs with their user-visible lifecycle, the
//! nodes, and the scheduling core it drives. Each call takes the time as
//! an argument and collects what must happen into [`Effects`]: database
//! changes (the scheduler log among them), actions for node agents, jobs
//! that ended, tokens to publish, checkpoint directories to delete. The
//! actor applies the effects of a round after their changes are durable;
//! the book never waits for anything.
//!
//! # Kinds of methods
//!
//! - *Commands* (`submit`, `cancel`, `register`, `report`, ...) change the
//!   book and answer with a [`Reply`] or a [`CommandError`].
//! - *Time*: [`JobBook::tick`] marks silent nodes lost and
//!   [`JobBook::schedule`] runs a scheduling pass; [`JobBook::next_wakeup`]
//!   says when the core wants the next one.
//! - *Queries* (`view`, `job_record`, `node_views`, ...) read only.
//! - [`JobBook::take_effects`] hands over what the calls since the last
//!   take decided.
//!
//! **Invariant: a job's state changes only along [`lifecycle`]'s table.**
//! An illegal change is refused, logged and counted, never written.
//!
//! **Invariant: the book is a function of the database.** A book rebuilt
//! from the records and the scheduler log its effects wrote
//! ([`JobBook::from_records`]) equals the live one.

mod agents;
mod drain;
mod jobs;
pub(crate) mod lifecycle;
mod load;
mod sched;
mod users;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vgrid_api::types::{AgentAction, JobView, Principal, Role, WaitInfo};
use vgrid_core::{JobId, Scheduler};
use vgrid_model::JobState;
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Change, CheckpointRecord, JobRecord, NodeRecord, TokenHash, UserRecord};

pub(crate) use agents::ReportFacts;
pub(crate) use load::Records;

use crate::schedlog::SchedInput;
use crate::transitions::Transition;
use crate::views::{analysis_view, job_view, wait_reason_name, wait_reason_text};

/// What the book needs of the controller's configuration.
#[derive(Debug, Clone)]
pub(crate) struct BookConfig {
    pub policy: vgrid_core::Policy,
    pub preemption: vgrid_core::PreemptionMode,
    pub checkpoint_cost: vgrid_core::CostModel,
    pub restore_cost: vgrid_core::CostModel,
    /// A node silent this long is lost.
    pub lost_after_ms: u64,
    /// Where checkpoints were kept before the store: `<root>/<job>/<seq>`.
    pub legacy_checkpoint_root: PathBuf,
    /// The nodes' allowed roots for host paths (see [`crate::Config`]).
    pub staging_roots: Vec<PathBuf>,
}

impl BookConfig {
    /// The directory of one job's checkpoints before the store.
    pub(crate) fn legacy_checkpoint_dir(&self, job: u64) -> PathBuf {
        self.legacy_checkpoint_root.join(job.to_string())
    }

    /// The name of checkpoint `seq` of `job`. The one place that says it:
    /// agents are told it, and never tell it.
    pub(crate) fn checkpoint_location(&self, job: u64, seq: u64) -> String {
        format!("{job}/{seq}")
    }
}

/// What a round decided, for the actor to carry out once its changes are
/// durable.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Database changes, in order, the scheduler log among them.
    pub changes: Vec<Change>,
    /// What goes to node agents, in order.
    pub deliveries: Vec<Delivery>,
    /// Jobs that reached an end (their waiters are answered).
    pub ended: Vec<u64>,
    /// Jobs whose checkpoints are no longer needed (their store refs and
    /// any directory of the time before the store are removed).
    pub obsolete: Vec<u64>,
    /// Checkpoints now in the store, `(job, seq, manifest)`: a ref names
    /// each while its job lives.
    pub stored_checkpoints: Vec<(u64, u64, String)>,
    /// Tokens of new users, to accept once the users are stored.
    pub tokens: Vec<(TokenHash, Principal)>,
    /// Tokens that stop working (a node joined again).
    pub revoked: Vec<TokenHash>,
    /// The core's state changed: a scheduling pass is due.
    pub sched_dirty: bool,
    /// Jobs' changes of state, logged once committed.
    pub transitions: Vec<Transition>,
}

/// One step of the conversation with a node agent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    /// The node (re)registered or was lost: its queue starts anew, and a
    /// poll it has parked is answered empty.
    Reset(String),
    /// An action for the node.
    Action(String, AgentAction),
}

/// What the controller must remember about a job's dispatch to nodes
/// across restarts, stored as JSON in the job's `runtime` column.
///
/// Persisted: a change of its meaning needs a new [`DISPATCH_VERSION`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Dispatch {
    /// [`DISPATCH_VERSION`] when written (0: written before versions).
    #[serde(default)]
    pub version: u32,
    /// Counts starts; agents' reports name the attempt they are about.
    pub attempt: u32,
    /// `(node, VMs)` of the current attempt.
    pub placement: Vec<(String, u32)>,
    /// The sequence number the next checkpoint gets.
    pub next_checkpoint: u64,
    /// Checkpoints asked of the agent and not yet reported, oldest first.
    #[serde(default)]
    pub checkpoints_in_flight: Vec<InFlight>,
    /// The current attempt restores the job's last checkpoint.
    #[serde(default)]
    pub restoring: bool,
    /// How many times its VMs died; past a limit the job fails.
    #[serde(default)]
    pub losses: u32,
    /// Failed restores of its last checkpoint; at [`RESTORE_TRIES`] the
    /// checkpoint is given up for the one before.
    #[serde(default)]
    pub restore_failures: u32,
    /// A user's move not yet ended by a start: the core restricts the
    /// job's next placement; this only words the history.
    #[serde(default)]
    pub moving: Option<Move>,
}

/// The version of [`Dispatch`] this build writes; it reads this one and
/// the unversioned form before it (the same fields).
pub(crate) const DISPATCH_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Move {
    /// The node it must run on next; `None`: any but the ones it left.
    pub to: Option<String>,
}

impl Move {
    pub(crate) fn whither(&self) -> String {
        match &self.to {
            Some(to) => format!("on {to}"),
            None => "on another node".into(),
        }
    }
}

/// A checkpoint in progress. `for_core`: the core asked for it and is told
/// when it ends. A preemption supersedes a periodic checkpoint still in
/// flight: the core then waits for the preemption's checkpoint only (its
/// end frees the node, so the periodic one must not be taken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    pub seq: u64,
    pub for_core: bool,
    pub stop: bool,
}

/// A job as the book keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    pub rec: JobRecord,
    pub owner_name: String,
    pub dispatch: Dispatch,
    /// The checkpoints it may resume from, oldest first; none once it
    /// has ended.
    pub checkpoints: Vec<CheckpointRecord>,
}

impl Job {
    /// Where it resumes from.
    pub fn last_checkpoint(&self) -> Option<&CheckpointRecord> {
        self.checkpoints.last()
    }
}

/// A node as the book keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub rec: NodeRecord,
    /// Registered since the controller started (or since it was lost).
    pub connected: bool,
    pub last_contact_ms: u64,
    /// The images it holds, as it last said (kept for the core in the
    /// scheduler log, not in the node's record).
    pub images: std::collections::BTreeSet<String>,
}

/// The users and their tokens.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Users {
    pub by_id: HashMap<u64, UserRecord>,
    pub names: HashSet<String>,
    pub tokens: HashMap<TokenHash, Principal>,
    pub next_id: u64,
}

/// A job whose VMs die this many times fails instead of resuming again.
pub(crate) const MAX_LOSSES: u32 = 5;

/// Failed restores of one checkpoint before it is given up: the first
/// failure may be the node's (a damaged local copy is fetched again), the
/// second is the checkpoint's.
pub(crate) const RESTORE_TRIES: u32 = 2;

/// The book. See the module documentation.
pub(crate) struct JobBook {
    cfg: BookConfig,
    pub(crate) users: Users,
    jobs: BTreeMap<u64, Job>,
    next_job_id: u64,
    /// Submissions by (owner, idempotency key).
    keys: HashMap<(u64, String), u64>,
    nodes: BTreeMap<String, Node>,
    node_names: HashMap<u32, String>,
    next_node_id: u32,
    sched: Scheduler,
    fx: Effects,
    /// Changes of state the lifecycle refused (a bug if ever above 0).
    illegal: u64,
}

impl JobBook {
    pub(crate) fn config(&self) -> &BookConfig {
        &self.cfg
    }

    /// Hands over what was decided since the last call.
    pub(crate) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// Whether the core's state changed since the last call: a pass is due.
    pub(crate) fn take_sched_dirty(&mut self) -> bool {
        std::mem::take(&mut self.fx.sched_dirty)
    }

    /// When the core wants its next pass.
    pub(crate) fn next_wakeup(&self) -> Option<u64> {
        self.sched.next_wakeup().map(|t| t.as_ms())
    }

    /// How many state changes the lifecycle refused since the book was
    /// built.
    pub(crate) fn illegal_transitions(&self) -> u64 {
        self.illegal
    }

    pub(crate) fn job(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    #[cfg(test)]
    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// A job the principal may see: their own, or any for an admin. Other
    /// users' jobs look like missing ones.
    /// The request of job `id`, if the book has it.
    pub(crate) fn spec_of(&self, id: u64) -> Option<&vgrid_model::JobSpec> {
        self.jobs.get(&id).map(|j| &j.rec.spec)
    }

    /// The data manifest of job `id`'s outputs, once collected.
    pub(crate) fn outputs_of(&self, id: u64) -> Option<String> {
        self.jobs.get(&id).and_then(|j| j.rec.outputs.clone())
    }

    pub(crate) fn visible(&self, p: &Principal, id: u64) -> Result<&Job, CommandError> {
        match self.jobs.get(&id) {
            Some(j)
                if p.role == Role::Admin || (p.role == Role::User && j.rec.owner == p.user_id) =>
            {
                Ok(j)
            }
            _ => Err(not_found(id)),
        }
    }

    /// The job as listed, with what it waits for when it waits.
    pub(crate) fn view(&self, id: u64) -> Option<JobView> {
        self.view_of(id, false)
    }

    /// The job as shown alone: while it waits, with the node-by-node
    /// counts of what keeps it out.
    pub(crate) fn view_detailed(&self, id: u64) -> Option<JobView> {
        self.view_of(id, true)
    }

    fn view_of(&self, id: u64, detailed: bool) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        let mut wait = None;
        let reason = match job.rec.state {
            JobState::Pending | JobState::Preempted | JobState::Held | JobState::Migrating => {
                let status = self.sched.job(JobId(id));
                match status.as_ref().map(|v| v.state) {
                    Some(vgrid_core::JobPhase::Pending { reason }) => {
                        let mut text = wait_reason_text(reason).to_string();
                        if let Some(why) = self.drained_note(reason) {
                            text = format!("{text}; {why}");
                        }
                        wait = Some(WaitInfo {
                            reason: wait_reason_name(reason).to_string(),
                            expected_start_unix_ms: status
                                .and_then(|v| v.planned_start)
                                .map(|t| i64::try_from(t.as_ms()).unwrap_or(i64::MAX)),
                            analysis: if detailed {
                                self.sched.wait_analysis(JobId(id)).map(analysis_view)
                            } else {
                                None
                            },
                        });
                        if matches!(job.rec.state, JobState::Preempted | JobState::Migrating) {
                            format!("{}; {text}", job.rec.reason)
                        } else {
                            text
                        }
                    }
                    _ => job.rec.reason.clone(),
                }
            }
            _ => job.rec.reason.clone(),
        };
        let mut view = job_view(&job.rec, &job.owner_name, reason);
        view.wait = wait;
        Some(view)
    }

    /// How many nodes an admin drained, when that may be why a job finds
    /// no room.
    fn drained_note(&self, reason: vgrid_core::WaitReason) -> Option<String> {
        use vgrid_core::WaitReason as W;
        if !matches!(reason, W::Requirements | W::TooLarge | W::Resources) {
            return None;
        }
        let drained = self
            .nodes
            .values()
            .filter(|n| n.rec.drain_reason.is_some())
            .count();
        match drained {
            0 => None,
            1 => Some("1 node is drained".into()),
            n => Some(format!("{n} nodes are drained")),
        }
    }

    pub(crate) fn control_reply(&self, id: u64) -> Result<Reply, CommandError> {
        self.view(id)
            .map(|v| Reply::Control(Box::new(v)))
            .ok_or_else(|| not_found(id))
    }

    // ---- Changes every command uses ----

    /// Records a state change of a job along the lifecycle. An illegal one
    /// changes nothing and is counted.
    fn transition(
        &mut self,
        now: u64,
        id: u64,
        state: JobState,
        reason: String,
        node: Option<String>,
        exit_code: Option<i32>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Err(e) = lifecycle::check(id, job.rec.state, state) {
            tracing::error!(error = %e, %reason, "refusing an illegal change of a job's state");
            self.illegal += 1;
            return;
        }
        let now = now as i64;
        self.fx.transitions.push(Transition {
            job: id,
            from: Some(job.rec.state),
            to: state,
            reason: reason.clone(),
            after_ms: now.saturating_sub(job.rec.updated_unix_ms).max(0) as u64,
        });
        job.rec.state = state;
        job.rec.reason = reason.clone();
        if node.is_some() {
            job.rec.node = node.clone();
        }
        if exit_code.is_some() {
            job.rec.exit_code = exit_code;
        }
        job.rec.updated_unix_ms = now;
        self.fx.changes.push(Change::Transition {
            job_id: id,
            unix_ms: now,
            state,
            reason,
            node,
            exit_code,
        });
        if state.is_terminal() {
            // Nothing resumes from an ended job's checkpoints.
            job.checkpoints.clear();
            self.fx.obsolete.push(id);
            self.fx.ended.push(id);
        }
    }

    /// Stores a job's dispatch after a change.
    fn save_dispatch(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.dispatch.version = DISPATCH_VERSION;
        let runtime = serde_json::to_string(&job.dispatch).ok();
        self.fx.changes.push(Change::SetRuntime {
            job_id: id,
            runtime,
        });
    }

    /// Queues an action for a node; a node that is not connected gets a
    /// fresh queue when it registers, and the reconciliation then decides
    /// what it runs.
    fn enqueue(&mut self, node: &str, action: AgentAction) {
        if self.nodes.get(node).is_some_and(|n| n.connected) {
            self.fx
                .deliveries
                .push(Delivery::Action(node.to_string(), action));
        }
    }

    /// Gives an input to the core and logs it when the core takes it.
    fn feed(&mut self, now: u64, input: SchedInput) -> bool {
        self.try_feed(now, input).is_ok()
    }

    /// [`JobBook::feed`], saying why the core refused.
    fn try_feed(&mut self, now: u64, input: SchedInput) -> Result<(), sched::Refusal> {
        match sched::apply_input(&mut self.sched, &self.jobs, vgrid_core::Time(now), &input) {
            Ok(()) => {
                self.log(now, &input);
                self.fx.sched_dirty = true;
                Ok(())
            }
            Err(why) => {
                tracing::debug!(?input, %why, "the scheduler refused an input");
                Err(why)
            }
        }
    }

    fn log(&mut self, now: u64, input: &SchedInput) {
        match crate::schedlog::encode(input) {
            Ok(text) => self.fx.changes.push(Change::AppendSchedulerLog {
                unix_ms: now as i64,
                input: text,
            }),
            Err(e) => tracing::error!(error = %e, "cannot serialize a scheduler input"),
        }
    }
}

pub(crate) fn not_found(id: u64) -> CommandError {
    CommandError::NotFound(format!("job {id} does not exist"))
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod props;
