//! Building the book from what the database holds.

use std::collections::{BTreeMap, HashMap};

use vgrid_api::types::Principal;
use vgrid_core::{Scheduler, Time};
use vgrid_store::{
    CheckpointRecord, JobRecord, NodeRecord, SchedulerLogEntry, Store, StoreError, TokenHash,
    UserRecord,
};

use super::{BookConfig, DISPATCH_VERSION, Dispatch, Effects, Job, JobBook, Node, Users};
use crate::ControllerError;

/// Everything the book is built from, as read from the database.
pub(crate) struct Records {
    pub users: Vec<(UserRecord, TokenHash)>,
    pub jobs: Vec<JobRecord>,
    pub live_checkpoints: Vec<CheckpointRecord>,
    pub nodes: Vec<NodeRecord>,
    pub log: Vec<SchedulerLogEntry>,
}

impl Records {
    /// Reads them.
    pub(crate) fn read(store: &Store) -> Result<Records, StoreError> {
        let read = store.read();
        Ok(Records {
            users: read.users_with_token_hashes()?,
            jobs: read.jobs()?,
            live_checkpoints: read.live_checkpoints()?,
            nodes: read.nodes()?,
            log: read.scheduler_log()?,
        })
    }
}

impl JobBook {
    /// The book the records describe: the scheduler log is replayed into a
    /// fresh core. Nodes count as not connected until their agents
    /// register; each gets a full lost-timeout from `now` to do so. Returns
    /// the book and the time of the last logged input.
    pub(crate) fn from_records(
        cfg: BookConfig,
        records: Records,
        now: u64,
    ) -> Result<(JobBook, u64), ControllerError> {
        let mut users = Users::default();
        for (user, hash) in records.users {
            if !user.has_token() {
                // Revoked or removed: the stored hash is one no token has,
                // and the name stays taken.
                users.names.insert(user.name.clone());
                users.next_id = users.next_id.max(user.id + 1);
                users.by_id.insert(user.id, user);
                continue;
            }
            users.tokens.insert(
                hash,
                Principal {
                    user_id: user.id,
                    name: user.name.clone(),
                    role: user.role,
                },
            );
            users.names.insert(user.name.clone());
            users.next_id = users.next_id.max(user.id + 1);
            users.by_id.insert(user.id, user);
        }
        users.next_id = users.next_id.max(1);
        let mut checkpoints: HashMap<u64, Vec<CheckpointRecord>> = HashMap::new();
        for c in records.live_checkpoints {
            checkpoints.entry(c.job_id).or_default().push(c);
        }
        let mut jobs = BTreeMap::new();
        let mut keys = HashMap::new();
        let mut next_job_id = 1;
        for rec in records.jobs {
            let dispatch = read_dispatch(&rec)?;
            let owner_name = users.by_id.get(&rec.owner).map_or_else(
                || format!("user{}", rec.owner),
                |u: &UserRecord| u.name.clone(),
            );
            if let Some(key) = &rec.idempotency_key {
                keys.insert((rec.owner, key.clone()), rec.id);
            }
            next_job_id = next_job_id.max(rec.id + 1);
            jobs.insert(
                rec.id,
                Job {
                    checkpoints: checkpoints.remove(&rec.id).unwrap_or_default(),
                    rec,
                    owner_name,
                    dispatch,
                },
            );
        }
        let mut nodes = BTreeMap::new();
        let mut node_names = HashMap::new();
        let mut next_node_id = 1;
        for rec in records.nodes {
            node_names.insert(rec.id, rec.name.clone());
            next_node_id = next_node_id.max(rec.id + 1);
            nodes.insert(
                rec.name.clone(),
                Node {
                    rec,
                    connected: false,
                    last_contact_ms: now,
                    images: Default::default(),
                },
            );
        }
        let mut sched = Scheduler::new(vgrid_core::Config {
            policy: cfg.policy,
            preemption: cfg.preemption,
            checkpoint_cost: cfg.checkpoint_cost,
            restore_cost: cfg.restore_cost,
            keep_finished_jobs: false,
            ..vgrid_core::Config::default()
        });
        let mut last_time = 0;
        for entry in records.log {
            let input = crate::schedlog::decode(&entry.input).map_err(|why| {
                ControllerError::SchedulerLog {
                    seq: entry.seq,
                    why,
                }
            })?;
            // A forgotten node's id stays taken: the log still names it.
            if let crate::schedlog::SchedInput::NodeUp { node } = &input {
                next_node_id = next_node_id.max(node.id + 1);
            }
            let t = (entry.unix_ms.max(0) as u64).max(last_time);
            last_time = t;
            // Only accepted inputs are logged, and the core is
            // deterministic, so a refusal here means the log does not match.
            super::sched::apply_input(&mut sched, &jobs, Time(t), &input).map_err(|why| {
                ControllerError::SchedulerLog {
                    seq: entry.seq,
                    why: format!("the core refuses {input:?} on replay: {why}"),
                }
            })?;
            // Actions were carried out before the restart.
            while sched.poll_action().is_some() {}
        }
        let book = JobBook {
            cfg,
            users,
            jobs,
            next_job_id,
            keys,
            nodes,
            node_names,
            next_node_id,
            sched,
            fx: Effects {
                sched_dirty: true,
                ..Effects::default()
            },
            illegal: 0,
        };
        Ok((book, last_time))
    }
}

/// A job's dispatch from its `runtime` column: this version, or the
/// unversioned one before it; a newer one is refused.
fn read_dispatch(rec: &JobRecord) -> Result<Dispatch, ControllerError> {
    let Some(text) = rec.runtime.as_deref() else {
        return Ok(Dispatch::default());
    };
    let corrupt = |why: String| {
        ControllerError::Store(StoreError::Corrupt(format!(
            "the dispatch record of job {}: {why}",
            rec.id
        )))
    };
    let d: Dispatch = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if d.version > DISPATCH_VERSION {
        return Err(corrupt(format!(
            "it has version {}, but this vgrid knows only up to {DISPATCH_VERSION}; use a newer vgrid",
            d.version
        )));
    }
    Ok(d)
}
