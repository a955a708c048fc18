//! Nodes and what their agents report.

use std::collections::HashSet;

use vgrid_api::types::{
    AgentAction, AgentEvent, AgentReport, NodeView, Principal, RegisterNode, RegisterResponse,
    RunningJob,
};
use vgrid_core::{NodeId, NodeStatus};
use vgrid_model::{JobState, VmMode};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Change, CheckpointRecord, NodeRecord, NodeState};

use super::sched::checkpoint_ref;
use vgrid_model::limits::MAX_NODE_NAME;
use vgrid_model::names::{is_node_name, plain_name_rule};

use super::{Delivery, InFlight, JobBook, MAX_LOSSES, Move, Node, RESTORE_TRIES};
use crate::schedlog::{LoggedNode, SchedInput};

impl JobBook {
    pub(crate) fn register(
        &mut self,
        now: u64,
        p: &Principal,
        req: RegisterNode,
        heartbeat_ms: u64,
    ) -> Result<Reply, CommandError> {
        Self::for_own_node(p, &req.name)?;
        if !is_node_name(&req.name) {
            return Err(CommandError::BadRequest(format!(
                "`{}` is not a node name ({})",
                req.name,
                plain_name_rule(MAX_NODE_NAME)
            )));
        }
        if req.cpus == 0 || req.memory_mb < vgrid_model::limits::MIN_MEMORY_MB {
            return Err(CommandError::BadRequest(format!(
                "a node needs at least 1 CPU and {} MiB of memory",
                vgrid_model::limits::MIN_MEMORY_MB
            )));
        }
        let id = match self.nodes.get(&req.name) {
            Some(n) => n.rec.id,
            None => {
                let id = self.next_node_id;
                self.next_node_id += 1;
                id
            }
        };
        // A drain outlives the node being lost or the agent restarting.
        let drain_reason = self
            .nodes
            .get(&req.name)
            .and_then(|n| n.rec.drain_reason.clone());
        let rec = NodeRecord {
            name: req.name.clone(),
            id,
            cpus: req.cpus,
            memory_mb: req.memory_mb,
            labels: req.labels.clone(),
            state: if drain_reason.is_some() {
                NodeState::Drained
            } else {
                NodeState::Up
            },
            registered_unix_ms: now as i64,
            last_seen_unix_ms: now as i64,
            drain_reason,
        };
        let drained = rec.drain_reason.is_some();
        self.fx.changes.push(Change::PutNode(rec.clone()));
        self.node_names.insert(id, req.name.clone());
        let images: std::collections::BTreeSet<String> = req.images.iter().cloned().collect();
        let had = self.nodes.get(&req.name).map(|n| n.images.clone());
        self.nodes.insert(
            req.name.clone(),
            Node {
                rec,
                connected: true,
                last_contact_ms: now,
                images: images.clone(),
            },
        );
        self.fx.deliveries.push(Delivery::Reset(req.name.clone()));
        let core_up = self
            .sched
            .node(NodeId(id))
            .is_some_and(|v| v.status != NodeStatus::Down);
        if !core_up {
            self.feed(
                now,
                SchedInput::NodeUp {
                    node: LoggedNode {
                        id,
                        name: req.name.clone(),
                        cpus: req.cpus,
                        memory_mb: req.memory_mb,
                        labels: req.labels.clone(),
                        images,
                    },
                },
            );
            if drained {
                self.sync_drain(now, id, true);
            }
        } else if had.as_ref() != Some(&images) {
            self.feed(now, SchedInput::NodeImages { node: id, images });
        }
        self.reconcile(now, &req.name, &req.running);
        Ok(Reply::Registered(RegisterResponse {
            heartbeat_ms,
            next_seq: 1,
        }))
    }

    /// After a (re)registration: jobs the agent still runs are reattached;
    /// starts it never got are sent again; VMs it runs that the controller
    /// no longer wants are stopped.
    fn reconcile(&mut self, now: u64, node: &str, running: &[RunningJob]) {
        let have: HashSet<(u64, u32)> = running.iter().map(|r| (r.job, r.attempt)).collect();
        let expected: Vec<(u64, u32, JobState)> = self
            .jobs
            .values()
            .filter(|j| j.dispatch.placement.iter().any(|(n, _)| n == node))
            .map(|j| (j.rec.id, j.dispatch.attempt, j.rec.state))
            .collect();
        for r in running {
            let wanted = self.jobs.get(&r.job).is_some_and(|j| {
                j.dispatch.attempt == r.attempt
                    && j.dispatch.placement.iter().any(|(n, _)| n == node)
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
                    .map(|j| j.dispatch.checkpoints_in_flight.clone())
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
                self.job_lost(now, id, format!("its VMs on {node} are gone"));
            }
        }
    }

    fn resend_start(&mut self, id: u64, node: &str) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let d = &job.dispatch;
        let vms = d
            .placement
            .iter()
            .find(|(n, _)| n == node)
            .map_or(job.rec.spec.vms, |(_, v)| *v);
        let restore = if d.restoring {
            job.last_checkpoint().map(checkpoint_ref)
        } else {
            None
        };
        let action = AgentAction::Start {
            job: id,
            attempt: d.attempt,
            spec: Box::new(job.rec.spec.clone()),
            vms,
            restore,
            owner: job.owner_name.clone(),
        };
        self.enqueue(node, action);
    }

    /// A job whose VMs died while its node lives on: requeued in its
    /// place when it can resume from a checkpoint, failed otherwise.
    fn job_lost(&mut self, now: u64, id: u64, why: String) {
        if self.jobs.get(&id).is_none_or(|j| j.rec.state.is_terminal()) {
            return;
        }
        self.kill_on_nodes(id);
        if self.requeue_lost(now, id, &why) {
            return;
        }
        self.feed(
            now,
            SchedInput::Finished {
                job: id,
                exit_status: -1,
            },
        );
        self.transition(now, id, JobState::Failed, why, None, None);
    }

    /// After the job's VMs died: when it has a checkpoint and has not died
    /// too often, the core requeues it in its old place (`JobLost`) and it
    /// resumes from the checkpoint. Returns whether it did.
    fn requeue_lost(&mut self, now: u64, id: u64, why: &str) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        let Some(seq) = job.last_checkpoint().map(|c| c.seq) else {
            return false;
        };
        if job.dispatch.losses >= MAX_LOSSES || !job.rec.spec.mounts.is_empty() {
            return false;
        }
        if !self.feed(now, SchedInput::JobLost { job: id }) {
            return false;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.dispatch.losses += 1;
            job.dispatch.placement.clear();
            job.dispatch.checkpoints_in_flight.clear();
        }
        self.save_dispatch(id);
        self.transition(
            now,
            id,
            JobState::Preempted,
            format!("requeued, VMs lost: {why}; resumes from checkpoint {seq}"),
            None,
            None,
        );
        true
    }

    /// Checks that `p` may act for `node` and that the node is registered;
    /// counts as the node's heartbeat.
    pub(crate) fn agent_contact(
        &mut self,
        now: u64,
        p: &Principal,
        node: &str,
    ) -> Result<(), CommandError> {
        Self::for_own_node(p, node)?;
        match self.nodes.get_mut(node) {
            Some(n) if n.connected => {
                n.last_contact_ms = now;
                Ok(())
            }
            _ => Err(CommandError::Conflict(format!(
                "node `{node}` is not registered with this controller; register first"
            ))),
        }
    }

    /// The images node `node` holds now (it fetched one).
    pub(crate) fn node_images(
        &mut self,
        now: u64,
        p: &Principal,
        node: &str,
        images: Vec<String>,
    ) -> Result<Reply, CommandError> {
        self.agent_contact(now, p, node)?;
        let images: std::collections::BTreeSet<String> = images.into_iter().collect();
        let Some(n) = self.nodes.get_mut(node) else {
            return Ok(Reply::Done);
        };
        if n.images != images {
            n.images = images.clone();
            let id = n.rec.id;
            self.feed(now, SchedInput::NodeImages { node: id, images });
        }
        Ok(Reply::Done)
    }

    /// Whether `attempt` of job `id` is the one running on `node` now.
    pub(crate) fn is_current(&self, id: u64, attempt: u32, node: &str) -> bool {
        self.jobs.get(&id).is_some_and(|j| {
            j.dispatch.attempt == attempt
                && !j.rec.state.is_terminal()
                && j.dispatch.placement.iter().any(|(n, _)| n == node)
        })
    }

    /// Takes an agent's report, whole or not at all: `facts` says what
    /// the controller holds (a job's output length, the store's manifests).
    pub(crate) fn report(
        &mut self,
        now: u64,
        p: &Principal,
        report: AgentReport,
        facts: &impl ReportFacts,
    ) -> Result<Reply, CommandError> {
        self.agent_contact(now, p, &report.node)?;
        for (i, event) in report.events.iter().enumerate() {
            self.check_event(&report.node, event, facts)
                .map_err(|why| CommandError::BadRequest(format!("event {i}: {why}")))?;
        }
        for event in report.events {
            self.agent_event(now, &report.node, event);
        }
        Ok(Reply::Done)
    }

    /// Whether an event about the current attempt can be true: a
    /// checkpoint must have been asked for, its output length must be what
    /// the controller holds, and its manifest must be in the store. Events
    /// about stale attempts pass (they are ignored).
    fn check_event(
        &self,
        node: &str,
        event: &AgentEvent,
        facts: &impl ReportFacts,
    ) -> Result<(), String> {
        let (id, attempt) = event.job();
        if !self.is_current(id, attempt, node) {
            return Ok(());
        }
        let Some(job) = self.jobs.get(&id) else {
            return Ok(());
        };
        // A checkpoint the book asked for at some time: it may have ended
        // since (a repeated report, or a repeated action after the agent
        // registered again), which is ignored, not refused.
        let asked = |seq: u64| seq <= job.dispatch.next_checkpoint;
        match event {
            AgentEvent::Checkpointed {
                seq,
                log_offset,
                manifest,
                ..
            } => {
                if !asked(*seq) {
                    return Err(format!("checkpoint {seq} of job {id} was not asked for"));
                }
                if let Some(m) = manifest
                    && !facts.has_manifest(m)
                {
                    return Err(format!(
                        "checkpoint {seq} of job {id} names manifest {m}, which is not in the store"
                    ));
                }
                let len = facts.output_len(id)?;
                if *log_offset > len {
                    return Err(format!(
                        "checkpoint {seq} of job {id} says the output is {log_offset} bytes long, \
                         but {len} bytes were written"
                    ));
                }
                Ok(())
            }
            AgentEvent::CheckpointFailed { seq, .. } if !asked(*seq) => {
                Err(format!("checkpoint {seq} of job {id} was not asked for"))
            }
            _ => Ok(()),
        }
    }

    fn agent_event(&mut self, now: u64, node: &str, event: AgentEvent) {
        let (id, attempt) = event.job();
        if !self.is_current(id, attempt, node) {
            // A late report about an attempt that was stopped or replaced.
            tracing::debug!(?event, node, "ignoring a report about a stale attempt");
            return;
        }
        // A report that does not fit the job's state (a repeat, or one
        // overtaken by another) changes nothing.
        let state = self.jobs.get(&id).map(|j| j.rec.state);
        let fits = |allowed: &[JobState]| state.is_some_and(|s| allowed.contains(&s));
        let in_flight = |seq: u64| {
            self.jobs.get(&id).is_some_and(|j| {
                j.dispatch
                    .checkpoints_in_flight
                    .iter()
                    .any(|f| f.seq == seq)
                    || j.last_checkpoint().is_some_and(|c| c.seq == seq)
            })
        };
        let fitting = match &event {
            AgentEvent::Staging { .. } => fits(&[JobState::Staging]),
            AgentEvent::Checkpointed { seq, .. } => in_flight(*seq),
            AgentEvent::CheckpointFailed { seq, .. } => self.jobs.get(&id).is_some_and(|j| {
                j.dispatch
                    .checkpoints_in_flight
                    .iter()
                    .any(|f| f.seq == *seq)
            }),
            AgentEvent::Booting { .. } => fits(&[JobState::Staging]),
            AgentEvent::RestoreFailed { .. } => {
                fits(&[JobState::Staging, JobState::Booting])
                    && self.jobs.get(&id).is_some_and(|j| j.dispatch.restoring)
            }
            AgentEvent::Running { .. } => fits(&[JobState::Staging, JobState::Booting]),
            AgentEvent::Suspended { .. } => fits(&[JobState::Running]),
            AgentEvent::Resumed { .. } => fits(&[JobState::Suspended]),
            AgentEvent::StagingOut { .. } => fits(&[
                JobState::Running,
                JobState::Checkpointing,
                JobState::Suspended,
            ]),
            _ => true,
        };
        if !fitting {
            tracing::debug!(
                ?event,
                ?state,
                "ignoring a report that does not fit the job's state"
            );
            return;
        }
        let node_s = Some(node.to_string());
        match event {
            AgentEvent::Staging { detail, .. } => {
                self.transition(now, id, JobState::Staging, detail, node_s, None);
            }
            AgentEvent::Booting { .. } => {
                let Some(job) = self.jobs.get(&id) else {
                    return;
                };
                let why = if job.dispatch.restoring {
                    "restoring VMs from the checkpoint".to_string()
                } else {
                    match job.rec.spec.mode {
                        VmMode::StopStart => "booting VMs".to_string(),
                        // The agent finds out whether a kept VM is there.
                        mode => format!("starting the VM (mode {})", mode.name()),
                    }
                };
                self.transition(now, id, JobState::Booting, why, node_s, None);
            }
            AgentEvent::Running { vm, .. } => {
                self.feed(now, SchedInput::Running { job: id });
                let why = match vm {
                    Some(how) => format!("command running; {}", how.describe()),
                    None => "command running".to_string(),
                };
                self.transition(now, id, JobState::Running, why, node_s, None);
            }
            AgentEvent::Checkpointed {
                seq,
                manifest,
                work_ms,
                log_offset,
                stopped,
                paused_ms,
                ..
            } => {
                // Where the checkpoint is comes from the book, never from
                // the agent: a report cannot point a restore (or a
                // deletion) at another path.
                let rec = CheckpointRecord {
                    job_id: id,
                    seq,
                    node: node.to_string(),
                    location: self.cfg.checkpoint_location(id, seq),
                    work_ms,
                    log_offset,
                    unix_ms: now as i64,
                    manifest: manifest.clone(),
                };
                let known = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.last_checkpoint())
                    .is_some_and(|c| c.seq >= seq);
                if !known {
                    self.fx.changes.push(Change::AddCheckpoint(rec.clone()));
                    if let Some(m) = manifest {
                        self.fx.stored_checkpoints.push((id, seq, m));
                    }
                }
                let (done, more) = self.finish_checkpoint(id, seq, Some(rec));
                match done {
                    Some(f) if f.for_core => {
                        self.feed(now, SchedInput::Checkpointed { job: id, ok: true });
                    }
                    // A user's checkpoint, or a periodic one a preemption
                    // superseded: saved progress all the same.
                    Some(_) => {
                        self.feed(now, SchedInput::CheckpointTaken { job: id, paused_ms });
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
                self.transition(now, id, state, why, node_s, None);
            }
            AgentEvent::CheckpointFailed {
                seq,
                reason,
                stopped,
                ..
            } => {
                let (done, more) = self.finish_checkpoint(id, seq, None);
                if done.is_some_and(|f| f.for_core) {
                    self.feed(now, SchedInput::Checkpointed { job: id, ok: false });
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
                self.transition(now, id, state, why, node_s, None);
            }
            AgentEvent::StagingOut { .. } => {
                self.transition(
                    now,
                    id,
                    JobState::StagingOut,
                    "copying outputs back".into(),
                    node_s,
                    None,
                );
            }
            AgentEvent::Exited {
                exit_code, outputs, ..
            } => {
                self.clear_placement(id);
                self.feed(
                    now,
                    SchedInput::Finished {
                        job: id,
                        exit_status: exit_code,
                    },
                );
                // The handler checked the manifest against the job.
                let collected = match outputs {
                    Some(manifest) => {
                        self.fx.changes.push(Change::SetOutputs {
                            job_id: id,
                            manifest: manifest.clone(),
                        });
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.rec.outputs = Some(manifest);
                        }
                        format!("; outputs collected (`vgrid output {id}`)")
                    }
                    None => String::new(),
                };
                let (state, why) = if exit_code == 0 {
                    (
                        JobState::Done,
                        format!("command exited with status 0{collected}"),
                    )
                } else {
                    (
                        JobState::Failed,
                        format!("command exited with status {exit_code}{collected}"),
                    )
                };
                self.transition(now, id, state, why, node_s, Some(exit_code));
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
                if was_running && self.requeue_lost(now, id, &format!("its VM failed ({reason})")) {
                    return;
                }
                self.feed(
                    now,
                    SchedInput::Finished {
                        job: id,
                        exit_status: -1,
                    },
                );
                self.transition(now, id, JobState::Failed, reason, node_s, None);
            }
            AgentEvent::RestoreFailed { seq, reason, .. } => {
                self.restore_failed(now, id, seq, node, &reason);
            }
            AgentEvent::Stopped { .. } => {}
            AgentEvent::Suspended { .. } => {
                self.transition(
                    now,
                    id,
                    JobState::Suspended,
                    "suspended".into(),
                    node_s,
                    None,
                );
            }
            AgentEvent::Resumed { .. } => {
                self.transition(now, id, JobState::Running, "resumed".into(), node_s, None);
            }
        }
    }

    /// Restoring checkpoint `seq` failed on `node`: the job waits to be
    /// placed again (anywhere) and tries again; a checkpoint that failed
    /// [`RESTORE_TRIES`] times is given up and the job resumes from the
    /// one before, or from the beginning. A failed restore never ends a
    /// job.
    fn restore_failed(&mut self, now: u64, id: u64, seq: u64, node: &str, reason: &str) {
        self.kill_on_nodes(id);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let d = &mut job.dispatch;
        d.placement.clear();
        d.checkpoints_in_flight.clear();
        d.restoring = false;
        d.restore_failures += 1;
        let why = if d.restore_failures >= RESTORE_TRIES
            && job.checkpoints.last().is_some_and(|c| c.seq == seq)
        {
            d.restore_failures = 0;
            job.checkpoints.pop();
            self.fx
                .changes
                .push(Change::GiveUpCheckpoint { job_id: id, seq });
            let from = match job.last_checkpoint() {
                Some(c) => format!("resumes from checkpoint {}", c.seq),
                None => "starts again from the beginning".to_string(),
            };
            format!(
                "checkpoint {seq} failed to restore {RESTORE_TRIES} times (last on {node}: {reason}); it is given up and the job {from}"
            )
        } else {
            format!("restoring checkpoint {seq} on {node} failed ({reason}); it is tried again")
        };
        self.save_dispatch(id);
        if !self.feed(now, SchedInput::JobLost { job: id }) {
            // The core no longer has it starting (cancelled meanwhile).
            return;
        }
        self.transition(now, id, JobState::Preempted, why, None, None);
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
        let d = &mut job.dispatch;
        let done = d
            .checkpoints_in_flight
            .iter()
            .position(|f| f.seq == seq)
            .map(|i| d.checkpoints_in_flight.remove(i));
        let more = !d.checkpoints_in_flight.is_empty();
        if let Some(c) = saved
            && job.checkpoints.last().is_none_or(|old| old.seq < c.seq)
        {
            d.next_checkpoint = d.next_checkpoint.max(c.seq);
            // A new checkpoint has not failed to restore.
            d.restore_failures = 0;
            job.checkpoints.push(c);
        }
        self.save_dispatch(id);
        (done, more)
    }

    /// Where a waiting job resumes from, in words.
    fn resume_point(&self, id: u64) -> String {
        match self.jobs.get(&id).and_then(|j| j.last_checkpoint()) {
            Some(c) => format!("from checkpoint {}", c.seq),
            None => "from the beginning".into(),
        }
    }

    fn clear_placement(&mut self, id: u64) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.dispatch.placement.clear();
        }
        self.save_dispatch(id);
    }

    /// The nodes as listed, with what the core has placed on them.
    pub(crate) fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| {
                let core = self.sched.node(NodeId(n.rec.id));
                let (used_cpus, used_mem, jobs) = match &core {
                    Some(v) if v.status != NodeStatus::Down => (
                        v.used_cores + v.best_effort_cores,
                        v.used_memory_mb,
                        v.jobs.iter().map(|(j, _)| j.0).collect::<Vec<u64>>(),
                    ),
                    _ => (0, 0, Vec::new()),
                };
                // Like Slurm: draining while its jobs run on, then drained.
                let state = match n.rec.state {
                    NodeState::Drained if !jobs.is_empty() => "draining",
                    s => s.as_str(),
                };
                NodeView {
                    name: n.rec.name.clone(),
                    state: state.to_string(),
                    cpus: n.rec.cpus,
                    memory_mb: n.rec.memory_mb,
                    free_cpus: n.rec.cpus.saturating_sub(used_cpus),
                    free_memory_mb: n.rec.memory_mb.saturating_sub(used_mem),
                    labels: n.rec.labels.clone(),
                    jobs,
                    last_seen_unix_ms: n.rec.last_seen_unix_ms.max(n.last_contact_ms as i64),
                    images: n.images.iter().cloned().collect(),
                    drain_reason: n.rec.drain_reason.clone(),
                }
            })
            .collect()
    }

    /// After a time the database could not be written: every node gets a
    /// full lost-timeout from `now` to register again.
    pub(crate) fn grace(&mut self, now: u64) {
        for node in self.nodes.values_mut() {
            node.last_contact_ms = now;
        }
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

/// What the controller holds that a report is checked against.
pub(crate) trait ReportFacts {
    /// The length of a job's output.
    fn output_len(&self, job: u64) -> Result<u64, String>;
    /// Whether the store holds manifest `id` (complete).
    fn has_manifest(&self, id: &str) -> bool;
}
