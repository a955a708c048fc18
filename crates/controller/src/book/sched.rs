//! The book and its scheduling core: inputs in, actions out, and time
//! (passes, lost nodes).

use std::collections::BTreeMap;

use vgrid_api::types::{AgentAction, CheckpointRef};
use vgrid_core::{Action, Event, JobId, NodeId, Scheduler, StopMode, Time};
use vgrid_model::JobState;
use vgrid_store::{Change, CheckpointRecord, NodeState};

use super::{Delivery, InFlight, Job, JobBook, Move};
use crate::schedlog::{SchedInput, core_job};

/// Why the core did not take an input.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("job {0} is not in the database")]
    NotStored(u64),
    #[error(transparent)]
    Core(#[from] vgrid_core::Rejected),
}

impl JobBook {
    /// A scheduling pass; the core's actions become agent actions and job
    /// changes.
    pub(crate) fn schedule(&mut self, now: u64) {
        self.sched.schedule(Time(now));
        self.log(now, &SchedInput::Schedule);
        self.drain_actions(now);
    }

    /// Carries out what the core decided.
    pub(super) fn drain_actions(&mut self, now: u64) {
        while let Some(action) = self.sched.poll_action() {
            self.carry_out(now, action);
        }
    }

    /// Marks nodes lost that were silent for the lost timeout.
    pub(crate) fn tick(&mut self, now: u64) {
        let lost: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                matches!(n.rec.state, NodeState::Up | NodeState::Drained)
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
            node.rec.last_seen_unix_ms = now as i64;
            let id = node.rec.id;
            self.fx.deliveries.push(Delivery::Reset(name.clone()));
            self.fx.changes.push(Change::NodeSeen {
                name,
                state: NodeState::Lost,
                unix_ms: now as i64,
            });
            self.feed(now, SchedInput::NodeLost { node: id });
        }
    }

    fn node_name(&self, id: NodeId) -> Option<String> {
        self.node_names.get(&id.0).cloned()
    }

    /// The user's move in progress, if any.
    pub(super) fn moving(&self, id: u64) -> Option<Move> {
        self.jobs.get(&id).and_then(|j| j.dispatch.moving.clone())
    }

    pub(super) fn carry_out(&mut self, now: u64, action: Action) {
        match action {
            Action::Start {
                job,
                placement,
                resume,
            } => self.start_job(now, job.0, &placement, resume),
            Action::Checkpoint { job } => self.checkpoint_into(
                now,
                job.0,
                false,
                true,
                JobState::Checkpointing,
                "periodic checkpoint".into(),
            ),
            Action::Preempt {
                job,
                mode: StopMode::Checkpoint,
            } => match self.moving(job.0) {
                Some(m) => self.checkpoint_into(
                    now,
                    job.0,
                    true,
                    true,
                    JobState::Migrating,
                    format!("moving to run {}: checkpointing", m.whither()),
                ),
                None => self.checkpoint_into(
                    now,
                    job.0,
                    true,
                    true,
                    JobState::Checkpointing,
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
                self.transition(now, job.0, state, why, None, None);
            }
            Action::Kill { job } => {
                self.kill_on_nodes(job.0);
                let ended = self
                    .jobs
                    .get(&job.0)
                    .is_some_and(|j| j.rec.state.is_terminal());
                if !ended {
                    self.transition(
                        now,
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
                let reason = match self.jobs.get(&job.0).and_then(|j| j.last_checkpoint()) {
                    Some(c) => format!("its node was lost; resumes from checkpoint {}", c.seq),
                    None => "its node was lost; restarts from the beginning".into(),
                };
                self.transition(now, job.0, JobState::Preempted, reason, None, None);
            }
            other => tracing::warn!(?other, "the live controller does not carry out this action"),
        }
    }

    fn start_job(&mut self, now: u64, id: u64, placement: &[(NodeId, u32)], resume: bool) {
        let named: Vec<(String, u32)> = placement
            .iter()
            .filter_map(|(n, vms)| self.node_name(*n).map(|name| (name, *vms)))
            .collect();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.dispatch.attempt += 1;
        job.dispatch.placement = named.clone();
        job.dispatch.checkpoints_in_flight.clear();
        // The core restricted this start to the move's target: the move is over.
        job.dispatch.moving = None;
        // Every checkpoint the controller recorded was reported to the core
        // (as `Checkpointed` or `CheckpointTaken`), so the core's `resume`
        // says whether one exists.
        let restore = if resume {
            job.last_checkpoint().map(checkpoint_ref)
        } else {
            None
        };
        job.dispatch.restoring = restore.is_some();
        let attempt = job.dispatch.attempt;
        let spec = Box::new(job.rec.spec.clone());
        let owner = job.owner_name.clone();
        let first = named.first().map(|(n, _)| n.clone());
        let reason = match (&restore, &first) {
            (Some(c), Some(n)) => format!("resuming from checkpoint {} on {n}", c.seq),
            (None, Some(n)) => format!("placed on {n}"),
            _ => "placed".into(),
        };
        self.save_dispatch(id);
        for (node, vms) in &named {
            self.enqueue(
                node,
                AgentAction::Start {
                    job: id,
                    attempt,
                    spec: spec.clone(),
                    vms: *vms,
                    restore: restore.clone(),
                    owner: owner.clone(),
                },
            );
        }
        self.transition(now, id, JobState::Staging, reason, first, None);
    }

    /// Asks the job's nodes for a checkpoint and records `state`.
    pub(super) fn checkpoint_into(
        &mut self,
        now: u64,
        id: u64,
        stop: bool,
        for_core: bool,
        state: JobState,
        reason: String,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let d = &mut job.dispatch;
        d.next_checkpoint = d
            .next_checkpoint
            .max(job.checkpoints.last().map_or(0, |c| c.seq))
            + 1;
        let seq = d.next_checkpoint;
        if stop && for_core {
            for f in &mut d.checkpoints_in_flight {
                f.for_core = false;
            }
        }
        d.checkpoints_in_flight.push(InFlight {
            seq,
            for_core,
            stop,
        });
        let attempt = d.attempt;
        let nodes: Vec<String> = d.placement.iter().map(|(n, _)| n.clone()).collect();
        self.save_dispatch(id);
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
        self.transition(now, id, state, reason, None, None);
    }

    /// Tells the job's nodes to stop its VMs, and forgets the placement.
    pub(super) fn kill_on_nodes(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let attempt = job.dispatch.attempt;
        let nodes: Vec<String> = job.dispatch.placement.drain(..).map(|(n, _)| n).collect();
        job.dispatch.checkpoints_in_flight.clear();
        self.save_dispatch(id);
        for node in nodes {
            self.enqueue(&node, AgentAction::Kill { job: id, attempt });
        }
    }
}

pub(super) fn checkpoint_ref(c: &CheckpointRecord) -> CheckpointRef {
    CheckpointRef {
        seq: c.seq,
        location: c.location.clone(),
        work_ms: c.work_ms,
        log_offset: c.log_offset,
        manifest: c.manifest.clone(),
    }
}

/// Gives one input to the core (live or during replay).
pub(super) fn apply_input(
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
        SchedInput::NodeDrain { node } => Event::NodeDrain {
            node: NodeId(*node),
        },
        SchedInput::NodeResume { node } => Event::NodeResume {
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
        SchedInput::NodeImages { node, images } => Event::NodeImages {
            node: NodeId(*node),
            images: images.clone(),
        },
        SchedInput::CheckpointTaken { job, paused_ms } => Event::CheckpointTaken {
            job: JobId(*job),
            paused_ms: *paused_ms,
        },
    };
    Ok(sched.handle(now, event)?)
}
