//! The JSON bodies of the API. These are the wire contract between the CLI,
//! the agents and the controller: change them only compatibly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vgrid_jobfile::Diagnostic;
use vgrid_model::{JobSpec, JobState};

/// Who a request acts as, resolved from its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: u64,
    pub name: String,
    pub role: Role,
}

pub use vgrid_model::Role;

/// The request header that makes a submission safe to retry: a second
/// submission with the same key by the same user returns the first job.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub use vgrid_model::limits::MAX_IDEMPOTENCY_KEY_LEN;

/// Checks an idempotency key: 1 to 128 printable ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an idempotency key is printable ASCII without spaces".into());
    }
    Ok(())
}

/// `POST /v1/jobs`: the job file's text; the server validates it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitRequest {
    /// The file name, used only in error messages.
    pub file_name: String,
    /// The TOML text of the job file.
    pub source: String,
    /// Keep the job held until `release`.
    #[serde(default)]
    pub hold: bool,
    /// The data manifest holding the job's inputs, uploaded by the
    /// submitter to the store beforehand (`PUT /v1/store/manifests/{id}`);
    /// required when the job file has `inputs`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
}

/// Whether `text` is the name of a store object (a chunk or a manifest):
/// 64 lowercase hexadecimal digits.
pub fn is_object_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitResponse {
    pub id: u64,
}

/// A job in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub state: JobState,
    /// Why the job is in its state (what it waits for, why it failed).
    pub reason: String,
    pub node: Option<String>,
    pub class: String,
    pub image: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub vms: u32,
    pub exit_code: Option<i32>,
    pub submitted_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// While it waits: why, and when it is expected to start (the job
    /// detail adds the node-by-node counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitInfo>,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryView {
    pub unix_ms: i64,
    pub state: JobState,
    pub reason: String,
    pub node: Option<String>,
}

/// One checkpoint of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointView {
    pub seq: u64,
    pub node: String,
    pub location: String,
    pub work_ms: i64,
    pub unix_ms: i64,
    /// Length of the job's output when it was taken: a resume goes on
    /// from there.
    #[serde(default)]
    pub log_offset: u64,
    /// Its manifest in the controller's store (absent: taken without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// False once it failed to restore too often: nothing resumes from it.
    #[serde(default = "yes")]
    pub restorable: bool,
}

fn yes() -> bool {
    true
}

/// `GET /v1/jobs/{id}`: a job with its request, history and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDetail {
    pub job: JobView,
    /// The request as validated: the job file's fields (docs/jobs.md).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: JobSpec,
    pub history: Vec<HistoryView>,
    pub checkpoints: Vec<CheckpointView>,
    /// The data manifest of the job's outputs in the controller's store,
    /// once its command has ended and they were collected
    /// (`vgrid output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
}

/// `GET /v1/jobs/{id}/wait`: the job once it has ended, or as it stands
/// when the server's wait ran out (`ended` false: ask again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitResponse {
    pub ended: bool,
    pub job: JobView,
}

/// A node in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    pub name: String,
    pub state: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub free_cpus: u32,
    pub free_memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    pub jobs: Vec<u64>,
    pub last_seen_unix_ms: i64,
    /// The images the node holds.
    #[serde(default)]
    pub images: Vec<String>,
    /// Why an admin drained it (`state` is `draining` while its jobs
    /// run on, then `drained`); absent while it takes work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_reason: Option<String>,
}

/// `POST /v1/users` (admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddUserRequest {
    pub name: String,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::User
}

/// The new user's token is shown once, here; the server keeps only a hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddUserResponse {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub token: String,
}

impl std::fmt::Debug for AddUserResponse {
    // Debug output ends up in logs: the token never does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddUserResponse")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/jobs/{id}/migrate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrateRequest {
    /// The node to move to; the scheduler picks one when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// The answer to job control requests (cancel, hold, ...): the job after the
/// request was accepted and stored.
pub type ControlResponse = JobView;

/// Response headers of `GET /v1/jobs/{id}/output`: where to read on, and
/// whether more will come.
pub const NEXT_OFFSET_HEADER: &str = "x-vgrid-next-offset";
pub const COMPLETE_HEADER: &str = "x-vgrid-complete";

/// A slice of a job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSlice {
    /// The bytes from the requested offset.
    pub data: Vec<u8>,
    /// The offset to ask for next.
    pub next_offset: u64,
    /// The job has ended: no more output will come.
    pub complete: bool,
}

/// Every error body: a machine-readable code, a sentence, and for refused
/// job files the place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// `unauthorized`, `forbidden`, `not-found`, `method-not-allowed`,
    /// `invalid-job-file`, `bad-request`, `conflict`, `too-large`,
    /// `unavailable` or `internal`.
    pub error: String,
    /// What went wrong, as a sentence.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
}

// ---- Joining ----

/// `POST /v1/join` (no bearer token: the secret of the join token is the
/// credential): a node asks for its own credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinRequest {
    /// The node's name; its credential acts only for this node.
    pub node: String,
    /// The secret half of the join token (`vgj_<ca>_<secret>`).
    pub secret: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("node", &self.node)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The node's credential, shown this once, and the controller's CA (the
/// node checks it against the pin of its join token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinResponse {
    pub node: String,
    pub token: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("node", &self.node)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

// ---- The store ----

/// `POST /v1/store/missing`: chunk ids (64 hex digits) in, the ones the
/// store lacks out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkList {
    pub chunks: Vec<String>,
}

/// An image as listed: its name, its manifest and the bytes of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRef {
    pub name: String,
    pub manifest: String,
    pub size: u64,
}

/// `PUT /v1/images/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetImage {
    pub manifest: String,
}

// ---- Node agent protocol ----

/// `POST /v1/agent/register`: an agent announces its node, and the jobs it
/// still runs after a restart (so the controller reattaches, not restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterNode {
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Jobs (with their attempt) whose VMs are still alive on the node.
    #[serde(default)]
    pub running: Vec<RunningJob>,
    /// The images the node holds: placement prefers nodes that hold a
    /// job's image.
    #[serde(default)]
    pub images: Vec<String>,
}

/// `POST /v1/agent/images`: the images a node holds now (it fetched one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeImages {
    pub node: String,
    pub images: Vec<String>,
}

fn check_images(images: &[String]) -> Result<(), String> {
    if images.len() > MAX_LABELS * 16 {
        return Err(format!("more than {} images", MAX_LABELS * 16));
    }
    for i in images {
        short("images", i, MAX_LABEL_LEN)?;
    }
    Ok(())
}

impl NodeImages {
    pub fn validate(&self) -> Result<(), String> {
        short("node", &self.node, MAX_NODE_NAME)?;
        check_images(&self.images)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningJob {
    pub job: u64,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// How often the agent must poll; missing a few polls marks it lost.
    pub heartbeat_ms: u64,
    /// Actions delivered before this sequence number were already handled
    /// by the agent's previous run; new actions come after it.
    pub next_seq: u64,
}

/// What the controller tells an agent to do. Every action names the job's
/// attempt; an agent ignores actions for attempts it does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum AgentAction {
    /// Start the job (fresh, or from a checkpoint when `restore` is set).
    Start {
        job: u64,
        attempt: u32,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        spec: Box<JobSpec>,
        /// How many of the job's VMs run on this node.
        vms: u32,
        restore: Option<CheckpointRef>,
        /// The job's owner: a VM kept for the `persistent` and
        /// `save-restore` modes serves only jobs of the same owner.
        #[serde(default)]
        owner: String,
    },
    /// Take a checkpoint; with `stop`, stop the VMs afterwards (preemption).
    Checkpoint {
        job: u64,
        attempt: u32,
        seq: u64,
        stop: bool,
    },
    /// Stop the job's VMs now, without a checkpoint.
    Kill { job: u64, attempt: u32 },
    /// Pause the job's VMs (kept in memory).
    Suspend { job: u64, attempt: u32 },
    /// Continue paused VMs.
    Resume { job: u64, attempt: u32 },
}

/// How an attempt's VM came to run its command: the job's VM mode at work
/// (GridWay's stop/start, save/restore and persistent VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum VmStart {
    /// A fresh VM was booted.
    Booted,
    /// The VMs were restored from the job's own checkpoint.
    RestoredCheckpoint,
    /// A VM kept running after an earlier job (`persistent`) took the job.
    ReusedRunning,
    /// A VM saved after an earlier job (`save-restore`) was restored.
    RestoredSaved,
}

impl VmStart {
    /// The words the job's history uses.
    pub fn describe(self) -> &'static str {
        match self {
            VmStart::Booted => "VM booted",
            VmStart::RestoredCheckpoint => "VMs restored from the checkpoint",
            VmStart::ReusedRunning => "reused running VM",
            VmStart::RestoredSaved => "restored saved VM",
        }
    }
}

/// A checkpoint to restore from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointRef {
    pub seq: u64,
    /// Its name, `<job>/<seq>` (before the store: a directory every node
    /// could read).
    pub location: String,
    pub work_ms: i64,
    /// Output length at the checkpoint: the resumed job's output goes on
    /// from there.
    pub log_offset: u64,
    /// The store's manifest of the checkpoint with its whole chain: a node
    /// that lacks its files fetches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// One action with its per-node sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionEnvelope {
    pub seq: u64,
    pub action: AgentAction,
}

/// `GET /v1/agent/actions?node=N&after=S`: actions after `S`. The call also
/// counts as the node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ActionsQuery {
    pub node: String,
    /// The last sequence number the agent has handled.
    pub after: u64,
    /// How long the server may hold the request open when there is nothing.
    #[serde(default)]
    pub wait_ms: u64,
}

/// What an agent reports about a job attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum AgentEvent {
    /// The VMs are booting (or restoring).
    Booting {
        job: u64,
        attempt: u32,
    },
    /// The job is being made ready on the node (its image fetched, say);
    /// `detail` says what happens.
    Staging {
        job: u64,
        attempt: u32,
        detail: String,
    },
    /// The command runs.
    Running {
        job: u64,
        attempt: u32,
        /// How the VM came to run it (absent from older agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<VmStart>,
        /// How long restoring the VMs from a checkpoint took, fetching
        /// included (absent when nothing was restored, and from older
        /// agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore_ms: Option<u64>,
    },
    /// A checkpoint is complete and durable (in the controller's store
    /// when it has one).
    Checkpointed {
        job: u64,
        attempt: u32,
        seq: u64,
        /// Where the node keeps it (for people; restores go by name).
        location: String,
        /// The store's manifest of the checkpoint and its chain, uploaded
        /// before this report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<String>,
        work_ms: i64,
        /// Output length at the checkpoint: a resume continues from here.
        log_offset: u64,
        /// The VMs were stopped after it (preemption).
        stopped: bool,
        /// How long the checkpoint held the VMs paused, at most: saved
        /// progress is the work done before the pause. (Absent from older
        /// agents: 0.)
        #[serde(default)]
        paused_ms: u64,
        /// How long the checkpoint took on the node, from the request to
        /// the upload's end (absent from older agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        took_ms: Option<u64>,
        /// Bytes the checkpoint sent to the controller's store: the chunks
        /// it did not hold yet, as stored (absent from older agents and
        /// without a store).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_bytes: Option<u64>,
    },
    /// A checkpoint could not be taken; the previous one stays valid. With
    /// `stopped`, the VMs were stopped anyway (preemption).
    CheckpointFailed {
        job: u64,
        attempt: u32,
        seq: u64,
        reason: String,
        stopped: bool,
    },
    /// Outputs are being copied back.
    StagingOut {
        job: u64,
        attempt: u32,
    },
    /// The command ended with this status and its outputs are in the
    /// controller's store.
    Exited {
        job: u64,
        attempt: u32,
        exit_code: i32,
        /// The data manifest of the job's outputs (absent for a job
        /// without outputs, and from older agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outputs: Option<String>,
    },
    /// Restoring checkpoint `seq` failed before the command went on
    /// (its files could not be fetched, a checksum did not match, the
    /// node cannot run it): the job is tried again, not ended.
    RestoreFailed {
        job: u64,
        attempt: u32,
        seq: u64,
        reason: String,
    },
    /// The attempt failed for a reason outside the command.
    Failed {
        job: u64,
        attempt: u32,
        reason: String,
    },
    /// The VMs were stopped as asked (kill).
    Stopped {
        job: u64,
        attempt: u32,
    },
    Suspended {
        job: u64,
        attempt: u32,
    },
    Resumed {
        job: u64,
        attempt: u32,
    },
}

impl AgentEvent {
    pub fn job(&self) -> (u64, u32) {
        match *self {
            AgentEvent::Booting { job, attempt }
            | AgentEvent::Staging { job, attempt, .. }
            | AgentEvent::Running { job, attempt, .. }
            | AgentEvent::Checkpointed { job, attempt, .. }
            | AgentEvent::CheckpointFailed { job, attempt, .. }
            | AgentEvent::StagingOut { job, attempt }
            | AgentEvent::Exited { job, attempt, .. }
            | AgentEvent::Failed { job, attempt, .. }
            | AgentEvent::RestoreFailed { job, attempt, .. }
            | AgentEvent::Stopped { job, attempt }
            | AgentEvent::Suspended { job, attempt }
            | AgentEvent::Resumed { job, attempt } => (job, attempt),
        }
    }
}

/// `POST /v1/agent/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentReport {
    pub node: String,
    pub events: Vec<AgentEvent>,
}

// ---- Limits of what crosses the network ----

use vgrid_model::limits::{
    MAX_EVENTS, MAX_LABEL_LEN, MAX_LABELS, MAX_NODE_CPUS, MAX_NODE_MEMORY_MB, MAX_NODE_NAME,
    MAX_PAUSED_MS, MAX_RUNNING, MAX_STORED, MAX_TEXT_LEN,
};

fn within(field: &str, value: u64, max: u64) -> Result<(), String> {
    if value > max {
        Err(format!(
            "`{field}` is {value}, more than the largest allowed, {max}"
        ))
    } else {
        Ok(())
    }
}

fn short(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        Err(format!(
            "`{field}` is {} bytes long, more than {max}",
            text.len()
        ))
    } else {
        Ok(())
    }
}

impl RegisterNode {
    /// Checks every number and text against what the controller and its
    /// store can hold: a refusal is a clear 400, never a failed write.
    pub fn validate(&self) -> Result<(), String> {
        short("name", &self.name, MAX_NODE_NAME)?;
        within("cpus", u64::from(self.cpus), u64::from(MAX_NODE_CPUS))?;
        within("memory_mb", self.memory_mb, MAX_NODE_MEMORY_MB)?;
        if self.labels.len() > MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
        for (k, v) in &self.labels {
            short("labels (key)", k, MAX_LABEL_LEN)?;
            short("labels (value)", v, MAX_LABEL_LEN)?;
        }
        if self.running.len() > MAX_RUNNING {
            return Err(format!("more than {MAX_RUNNING} running jobs"));
        }
        for r in &self.running {
            within("running.job", r.job, MAX_STORED)?;
        }
        check_images(&self.images)
    }
}

impl AgentEvent {
    /// Range checks of one event; see [`RegisterNode::validate`].
    pub fn validate(&self) -> Result<(), String> {
        let (job, _) = self.job();
        within("job", job, MAX_STORED)?;
        match self {
            AgentEvent::Checkpointed {
                seq,
                location,
                manifest,
                work_ms,
                log_offset,
                paused_ms,
                took_ms,
                ..
            } => {
                within("seq", *seq, MAX_STORED)?;
                short("location", location, MAX_TEXT_LEN)?;
                if let Some(m) = manifest
                    && !(m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err("`manifest` is not 64 hexadecimal digits".into());
                }
                if *work_ms < 0 {
                    return Err(format!("`work_ms` is {work_ms}, less than 0"));
                }
                within("log_offset", *log_offset, MAX_STORED)?;
                // A duration no checkpoint reaches: a week.
                within("took_ms", took_ms.unwrap_or(0), MAX_PAUSED_MS)?;
                within("paused_ms", *paused_ms, MAX_PAUSED_MS)
            }
            AgentEvent::Running {
                restore_ms: Some(ms),
                ..
            } => within("restore_ms", *ms, MAX_PAUSED_MS),
            AgentEvent::CheckpointFailed { seq, reason, .. } => {
                within("seq", *seq, MAX_STORED)?;
                short("reason", reason, MAX_TEXT_LEN)
            }
            AgentEvent::Failed { reason, .. } => short("reason", reason, MAX_TEXT_LEN),
            AgentEvent::RestoreFailed { seq, reason, .. } => {
                within("seq", *seq, MAX_STORED)?;
                short("reason", reason, MAX_TEXT_LEN)
            }
            AgentEvent::Staging { detail, .. } => short("detail", detail, MAX_TEXT_LEN),
            AgentEvent::Exited {
                outputs: Some(id), ..
            } if !is_object_id(id) => {
                Err("`outputs` is not a manifest id (64 lowercase hexadecimal digits)".to_string())
            }
            _ => Ok(()),
        }
    }
}

impl AgentReport {
    /// Range checks of the report and all its events.
    pub fn validate(&self) -> Result<(), String> {
        short("node", &self.node, MAX_NODE_NAME)?;
        if self.events.len() > MAX_EVENTS {
            return Err(format!("more than {MAX_EVENTS} events in one report"));
        }
        for (i, e) in self.events.iter().enumerate() {
            e.validate().map_err(|why| format!("event {i}: {why}"))?;
        }
        Ok(())
    }
}

/// `PUT /v1/agent/jobs/{id}/output?node=N&attempt=A&offset=O`: the body is
/// written at `offset` of the job's output, cutting off anything after it
/// (a resumed job rewinds its output to its checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct OutputQuery {
    pub node: String,
    pub attempt: u32,
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_the_store_cannot_hold_are_refused() {
        let node = RegisterNode {
            name: "n1".into(),
            cpus: 2,
            memory_mb: 9_223_372_036_854_775_808,
            labels: BTreeMap::new(),
            running: vec![],
            images: Vec::new(),
        };
        let why = node.validate().expect_err("refused");
        assert!(why.contains("memory_mb"), "{why}");
        let ok = RegisterNode {
            memory_mb: 4096,
            ..node
        };
        ok.validate().expect("a real node");
        let report = |event| AgentReport {
            node: "n1".into(),
            events: vec![event],
        };
        let ckpt = |seq, work_ms, paused_ms| AgentEvent::Checkpointed {
            job: 1,
            attempt: 1,
            seq,
            location: "/c".into(),
            manifest: None,
            work_ms,
            log_offset: 0,
            stopped: false,
            paused_ms,
            took_ms: None,
            sent_bytes: None,
        };
        let why = report(ckpt(9_223_372_036_854_775_808, 1, 0))
            .validate()
            .expect_err("refused");
        assert!(why.contains("event 0: `seq`"), "{why}");
        assert!(report(ckpt(1, -5, 0)).validate().is_err());
        assert!(report(ckpt(1, 5, u64::MAX)).validate().is_err());
        report(ckpt(1, 5, 10))
            .validate()
            .expect("a real checkpoint");
        let long = AgentEvent::Failed {
            job: 1,
            attempt: 1,
            reason: "x".repeat(MAX_TEXT_LEN + 1),
        };
        assert!(report(long).validate().is_err());
    }

    #[test]
    fn events_and_actions_from_older_peers_still_parse() {
        let running: AgentEvent =
            serde_json::from_str(r#"{"event":"running","job":1,"attempt":2}"#).expect("parses");
        assert_eq!(
            running,
            AgentEvent::Running {
                job: 1,
                attempt: 2,
                vm: None,
                restore_ms: None,
            }
        );
        let with_vm = AgentEvent::Running {
            job: 1,
            attempt: 2,
            vm: Some(VmStart::RestoredSaved),
            restore_ms: None,
        };
        let text = serde_json::to_string(&with_vm).expect("serializes");
        assert!(text.contains(r#""vm":"restored-saved""#), "{text}");
        let start: AgentAction = serde_json::from_str(
            r#"{"action":"start","job":1,"attempt":1,"vms":1,"restore":null,"checkpoint_dir":"/c",
                "spec":{"name":"j","image":"tiny","cpus":1,"memory_mb":256,"vms":1,"command":["true"],
                        "class":{"kind":"normal"},"mode":"persistent"}}"#,
        )
        .expect("parses");
        assert!(matches!(start, AgentAction::Start { owner, .. } if owner.is_empty()));
        let saved: AgentEvent = serde_json::from_str(
            r#"{"event":"checkpointed","job":1,"attempt":2,"seq":3,"location":"/c/3",
                "work_ms":40,"log_offset":5,"stopped":false}"#,
        )
        .expect("parses");
        assert!(matches!(
            saved,
            AgentEvent::Checkpointed { paused_ms: 0, .. }
        ));
    }

    #[test]
    fn a_new_token_never_shows_in_debug_output() {
        let r = AddUserResponse {
            id: 1,
            name: "alice".into(),
            role: Role::User,
            token: "vgt_secret".into(),
        };
        let text = format!("{r:?} {:?}", r.clone());
        assert!(!text.contains("vgt_secret"), "{text}");
        assert!(text.contains("alice"));
    }
}

// ---- Why a job waits ----

/// Why a waiting job waits, and when it is expected to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitInfo {
    /// The scheduler's reason: `priority`, `resources`, `requirements`,
    /// `too-large`, `reservation`, `held`, `best-effort-no-idle`,
    /// `vacating` or `new`.
    pub reason: String,
    /// The start backfilling reserved for it (Unix ms): it holds if the
    /// running jobs' walltimes hold and no job of higher priority comes.
    /// Absent: no reservation, so unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_start_unix_ms: Option<i64>,
    /// Node by node, what keeps it out (in `GET /v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<WaitAnalysis>,
}

/// How many nodes keep a waiting job out, clause by clause of its
/// requirements and resource by resource, like `condor_q -better-analyze`.
/// Each count is over `nodes` on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitAnalysis {
    /// Nodes up that take new work.
    pub nodes: u32,
    /// Nodes an admin drained (not in `nodes`).
    pub drained: u32,
    /// The top-level `&&` clauses of its requirements.
    pub clauses: Vec<ClauseCount>,
    /// Nodes meeting the whole requirements.
    pub matching: u32,
    /// Nodes with fewer cores in all than one VM needs.
    pub too_few_cores: u32,
    /// Nodes with less memory in all than one VM needs.
    pub too_little_memory: u32,
    /// Nodes big enough whose free cores now are too few for one VM.
    pub busy_cores: u32,
    /// Nodes big enough whose free memory now is too little for one VM.
    pub busy_memory: u32,
    /// VMs the job needs.
    pub vms: u32,
    /// VMs the matching nodes could take now.
    pub vms_free_now: u64,
    /// VMs the matching nodes could take if they were empty.
    pub vms_when_empty: u64,
}

/// A clause of a job's requirements and the nodes failing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClauseCount {
    /// The clause as the job file wrote it.
    pub clause: String,
    /// Up nodes that fail it.
    pub failing: u32,
}

// ---- Administration ----

/// `POST /v1/nodes/{name}/drain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainRequest {
    /// Why, for `vgrid nodes` (like Slurm's `Reason=`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The longest drain reason, in bytes.
pub const MAX_DRAIN_REASON: usize = 256;

/// `GET /v1/users` (admin): a user, never their token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub created_unix_ms: i64,
    /// When their token was revoked; absent while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_revoked_unix_ms: Option<i64>,
    /// Their jobs that have not ended.
    pub active_jobs: u32,
}
