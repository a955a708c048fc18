//! Users' commands on jobs.

use vgrid_api::types::{AgentAction, Principal, Role};
use vgrid_core::Action;
use vgrid_model::{JobClass, JobSpec, JobState};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Change, JobRecord, NodeState};

use super::sched::Refusal;
use super::{Dispatch, Job, JobBook, Move};
use crate::schedlog::SchedInput;

impl JobBook {
    pub(crate) fn submit(
        &mut self,
        now: u64,
        p: &Principal,
        spec: JobSpec,
        hold: bool,
        key: Option<String>,
    ) -> Result<Reply, CommandError> {
        if !matches!(p.role, Role::User | Role::Admin) {
            return Err(CommandError::Forbidden("only users submit jobs".into()));
        }
        if let Some(key) = &key
            && let Some(&id) = self.keys.get(&(p.user_id, key.clone()))
        {
            let same = self.jobs.get(&id).is_some_and(|j| j.rec.spec == spec);
            if !same {
                return Err(CommandError::Conflict(format!(
                    "idempotency key `{key}` was used for job {id}, with another job file"
                )));
            }
            return Ok(Reply::Submitted { id, created: false });
        }
        spec.check_host_paths(&self.cfg.staging_roots, &p.name)
            .map_err(|e| CommandError::BadRequest(e.to_string()))?;
        // The server checked the input data against the store; a job that
        // stages inputs never comes without it.
        if spec.inputs.is_empty() != spec.input_data.is_none() {
            return Err(CommandError::BadRequest(
                "a job has input data exactly when it has inputs".into(),
            ));
        }
        if let JobClass::Reservation { end_unix_s, .. } = spec.class
            && end_unix_s.saturating_mul(1000) <= now as i64
        {
            return Err(CommandError::BadRequest(format!(
                "the reservation window ended at Unix time {end_unix_s}, before now; it could never run"
            )));
        }
        let id = self.next_job_id;
        self.next_job_id += 1;
        let stamp = now as i64;
        let (state, reason) = if hold {
            (JobState::Held, "held at submission")
        } else {
            (JobState::Pending, "submitted")
        };
        let rec = JobRecord {
            id,
            owner: p.user_id,
            spec,
            state,
            node: None,
            reason: reason.into(),
            exit_code: None,
            submitted_unix_ms: stamp,
            updated_unix_ms: stamp,
            runtime: None,
            idempotency_key: key.clone(),
            outputs: None,
        };
        if let Some(key) = key {
            self.keys.insert((p.user_id, key), id);
        }
        self.fx.changes.push(Change::AddJob(Box::new(rec.clone())));
        self.jobs.insert(
            id,
            Job {
                rec,
                owner_name: p.name.clone(),
                dispatch: Dispatch::default(),
                checkpoints: Vec::new(),
            },
        );
        self.feed(now, SchedInput::Submit { job: id });
        if hold {
            self.feed(now, SchedInput::Hold { job: id });
        }
        Ok(Reply::Submitted { id, created: true })
    }

    /// The jobs `p` may list: their own; with `all`, everyone's (admin);
    /// with `user`, that user's (anyone's for an admin, only their own for
    /// a user: another's is refused, not answered with an empty list that
    /// would look like "has no jobs").
    pub(crate) fn list_jobs(
        &self,
        p: &Principal,
        all: bool,
        user: Option<&str>,
    ) -> Result<Reply, CommandError> {
        match p.role {
            Role::Admin => {}
            Role::User if user.is_some_and(|u| u != p.name) => {
                return Err(CommandError::Forbidden(
                    "only an admin lists another user's jobs".into(),
                ));
            }
            Role::User if !all || user.is_some() => {}
            Role::User => {
                return Err(CommandError::Forbidden(
                    "only an admin lists every user's jobs".into(),
                ));
            }
            Role::Agent => return Err(CommandError::Forbidden("agents do not list jobs".into())),
        }
        let views = self
            .jobs
            .values()
            .filter(|j| match user {
                Some(name) => j.owner_name == name,
                None => all || j.rec.owner == p.user_id,
            })
            .filter_map(|j| self.view(j.rec.id))
            .collect();
        Ok(Reply::Jobs(views))
    }

    pub(crate) fn cancel(
        &mut self,
        now: u64,
        p: &Principal,
        id: u64,
    ) -> Result<Reply, CommandError> {
        let state = self.visible(p, id)?.rec.state;
        if state.is_terminal() {
            return Err(CommandError::Conflict(format!(
                "job {id} has already ended"
            )));
        }
        self.feed(now, SchedInput::Cancel { job: id });
        self.transition(
            now,
            id,
            JobState::Cancelled,
            format!("cancelled by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    pub(crate) fn hold(&mut self, now: u64, p: &Principal, id: u64) -> Result<Reply, CommandError> {
        let state = self.visible(p, id)?.rec.state;
        if !super::lifecycle::is_waiting(state) {
            return Err(CommandError::Conflict(format!(
                "only a waiting job can be held; job {id} is {state}"
            )));
        }
        if !self.feed(now, SchedInput::Hold { job: id }) {
            return Err(CommandError::Conflict(format!(
                "job {id} cannot be held now"
            )));
        }
        self.transition(
            now,
            id,
            JobState::Held,
            format!("held by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    pub(crate) fn release(
        &mut self,
        now: u64,
        p: &Principal,
        id: u64,
    ) -> Result<Reply, CommandError> {
        if self.visible(p, id)?.rec.state != JobState::Held {
            return Err(CommandError::Conflict(format!("job {id} is not held")));
        }
        self.feed(now, SchedInput::Release { job: id });
        self.transition(
            now,
            id,
            JobState::Pending,
            format!("released by {}", p.name),
            None,
            None,
        );
        self.control_reply(id)
    }

    /// Asks the job's nodes to pause (`suspend`) or continue its VMs; the
    /// state changes when the agent reports it.
    pub(crate) fn suspend_resume(
        &mut self,
        p: &Principal,
        id: u64,
        suspend: bool,
    ) -> Result<Reply, CommandError> {
        let job = self.visible(p, id)?;
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
        let attempt = job.dispatch.attempt;
        let nodes: Vec<String> = job
            .dispatch
            .placement
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
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

    /// `vgrid checkpoint`: saved progress the core did not ask for.
    pub(crate) fn user_checkpoint(
        &mut self,
        now: u64,
        p: &Principal,
        id: u64,
    ) -> Result<Reply, CommandError> {
        let job = self.visible(p, id)?;
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
        self.checkpoint_into(
            now,
            id,
            false,
            false,
            JobState::Checkpointing,
            format!("checkpoint requested by {}", p.name),
        );
        self.control_reply(id)
    }

    /// A user's move, carried out by the core's `Move` event: a running
    /// job is checkpointed and stopped (the core's `Preempt`) and resumes
    /// from that checkpoint on `to` (or on any other node); a job still
    /// starting is stopped and starts again there; a waiting job only gets
    /// the restriction (`to: None` lifts it).
    pub(crate) fn migrate(
        &mut self,
        now: u64,
        p: &Principal,
        id: u64,
        to: Option<String>,
    ) -> Result<Reply, CommandError> {
        let job = self.visible(p, id)?;
        let state = job.rec.state;
        let placed_on: Vec<String> = job
            .dispatch
            .placement
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
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
        match self.try_feed(
            now,
            SchedInput::Move {
                job: id,
                to: target,
            },
        ) {
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
            job.dispatch.moving = m.clone();
        }
        self.save_dispatch(id);
        // The core answers a placed job's move with its preemption at once.
        let mut stopped = false;
        while let Some(action) = self.sched.poll_action() {
            stopped |= matches!(action, Action::Preempt { job, .. } if job.0 == id);
            self.carry_out(now, action);
        }
        if !stopped {
            let why = match &m {
                Some(m) => format!("moved by {}: its next start is {}", p.name, m.whither()),
                None => format!("moved by {}: it may start on any node", p.name),
            };
            self.transition(now, id, state, why, None, None);
        }
        self.control_reply(id)
    }
}
