//! What the store keeps, as plain records, and the changes that write it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vgrid_model::{JobSpec, JobState};

use crate::token::TokenHash;

pub use vgrid_model::Role;

/// A user and their role; the token is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub created_unix_ms: i64,
    /// When an admin removed the user: the record stays for the owner of
    /// their jobs, and the name is never given again (store names such
    /// as `data/<user>/` are by name).
    #[serde(default)]
    pub removed_unix_ms: Option<i64>,
    /// When the user's token was revoked; none works until a new one is
    /// made.
    #[serde(default)]
    pub token_revoked_unix_ms: Option<i64>,
}

impl UserRecord {
    /// Whether a token of theirs may work.
    pub fn has_token(&self) -> bool {
        self.removed_unix_ms.is_none() && self.token_revoked_unix_ms.is_none()
    }
}

/// A job as stored: its request and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub owner: u64,
    pub spec: JobSpec,
    pub state: JobState,
    /// The node the job is on (or was last on).
    pub node: Option<String>,
    /// Why the job is in its state, e.g. what it waits for.
    pub reason: String,
    pub exit_code: Option<i32>,
    pub submitted_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// Opaque runtime facts the controller needs to pick up after a restart
    /// (VM names, attempt counter), as JSON.
    pub runtime: Option<String>,
    /// The key the client sent with the submission: a retried submission
    /// with the same key (and owner) finds this job instead of making one.
    pub idempotency_key: Option<String>,
    /// The data manifest (hex id) of the job's outputs in the controller's
    /// content-addressed store, once its command has ended.
    #[serde(default)]
    pub outputs: Option<String>,
}

/// One recorded state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub unix_ms: i64,
    pub state: JobState,
    pub reason: String,
    pub node: Option<String>,
}

/// Whether a node can take work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Its agent reports in.
    Up,
    /// Its agent missed its heartbeats.
    Lost,
    /// Its agent reports in, but an admin drained it: nothing new is
    /// placed there. (A drained node whose agent falls silent is `Lost`
    /// and keeps its [`NodeRecord::drain_reason`].)
    Drained,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Lost => "lost",
            NodeState::Drained => "drained",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        [NodeState::Up, NodeState::Lost, NodeState::Drained]
            .into_iter()
            .find(|n| n.as_str() == s)
    }
}

/// A node as registered by its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// A small number that names the node in the scheduler; never reused.
    pub id: u32,
    pub cpus: u32,
    pub memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    pub state: NodeState,
    pub registered_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// Why an admin drained it; `None` while it takes work.
    #[serde(default)]
    pub drain_reason: Option<String>,
}

/// A checkpoint of a job, the newest one being where it resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub job_id: u64,
    /// 1 for the first checkpoint of the job, then counting up.
    pub seq: u64,
    /// The node that took it.
    pub node: String,
    /// Its name, `<job>/<seq>` (a directory path when written before
    /// checkpoints went to the store).
    pub location: String,
    /// Its manifest (with its whole chain) in the controller's
    /// content-addressed store; `None` when taken without one.
    pub manifest: Option<String>,
    /// Run time the job had done when the checkpoint was taken.
    pub work_ms: i64,
    /// Length of the job's output when the checkpoint was taken: a job
    /// resumed from it continues its output from there.
    pub log_offset: u64,
    pub unix_ms: i64,
}

/// One durable change. [`crate::Store::apply`] writes a batch of them in one
/// transaction: all of it is on disk when `apply` returns, or none of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    AddUser {
        user: UserRecord,
        token_hash: TokenHash,
    },
    /// Gives a user a new token (the old one stops working): a node that
    /// joins again gets a fresh credential.
    SetToken {
        user_id: u64,
        token_hash: TokenHash,
    },
    /// Revokes the user's token: none of theirs works until `SetToken`.
    RevokeToken {
        user_id: u64,
        unix_ms: i64,
    },
    /// Removes a user: their token stops working, the record stays for
    /// their jobs and keeps the name taken.
    RemoveUser {
        user_id: u64,
        unix_ms: i64,
    },
    /// Drains a node (`Some(reason)`) or puts it back in service.
    SetDrain {
        name: String,
        reason: Option<String>,
    },
    /// Forgets a node.
    RemoveNode {
        name: String,
    },
    /// Inserts the job and its first history entry (its state and reason).
    AddJob(Box<JobRecord>),
    /// Moves a job to a new state and records it in the history.
    Transition {
        job_id: u64,
        unix_ms: i64,
        state: JobState,
        reason: String,
        node: Option<String>,
        exit_code: Option<i32>,
    },
    /// Replaces the runtime facts of a job without a state change.
    SetRuntime {
        job_id: u64,
        runtime: Option<String>,
    },
    /// Registers a node or replaces its record.
    PutNode(NodeRecord),
    /// Updates a node's state and last contact.
    NodeSeen {
        name: String,
        state: NodeState,
        unix_ms: i64,
    },
    AddCheckpoint(CheckpointRecord),
    /// A checkpoint that could not be restored: no job resumes from it
    /// again (it stays listed).
    GiveUpCheckpoint {
        job_id: u64,
        seq: u64,
    },
    /// Records the data manifest of a job's outputs.
    SetOutputs {
        job_id: u64,
        manifest: String,
    },
    /// Appends one input of the scheduling core to the scheduler log. The
    /// core is deterministic, so replaying the log rebuilds its state.
    AppendSchedulerLog {
        unix_ms: i64,
        input: String,
    },
}

impl Change {
    /// The change's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddUser { .. } => "add user",
            Change::SetToken { .. } => "set token",
            Change::RevokeToken { .. } => "revoke token",
            Change::RemoveUser { .. } => "remove user",
            Change::SetDrain { .. } => "drain node",
            Change::RemoveNode { .. } => "remove node",
            Change::AddJob(_) => "add job",
            Change::Transition { .. } => "job transition",
            Change::SetRuntime { .. } => "job runtime",
            Change::PutNode(_) => "put node",
            Change::NodeSeen { .. } => "node seen",
            Change::AddCheckpoint(_) => "add checkpoint",
            Change::GiveUpCheckpoint { .. } => "give up checkpoint",
            Change::SetOutputs { .. } => "job outputs",
            Change::AppendSchedulerLog { .. } => "scheduler log",
        }
    }
}

/// One entry of the scheduler log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerLogEntry {
    pub seq: u64,
    pub unix_ms: i64,
    pub input: String,
}
