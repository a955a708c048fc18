//! Read-only views the core answers queries with.

use crate::model::Class;
use crate::types::{DomainId, JobId, NodeId, Time};

/// Why a job is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitReason {
    /// Jobs ahead of it in the queue go first (FCFS order, or starting it
    /// would delay an earlier job's reservation).
    Priority,
    /// It is next (or could be backfilled) but not enough capacity is free.
    Resources,
    /// No node of the domain satisfies its requirements or holds one VM.
    Requirements,
    /// Its domain, even empty, has too little capacity for all its VMs.
    TooLarge,
    /// A reservation whose window has not opened.
    Reservation,
    /// Held by the user or an administrator.
    Held,
    /// A best-effort job: no idle capacity for it now.
    BestEffortNoIdle,
    /// Placed: waiting for preempted jobs to leave its nodes (or, for a
    /// reservation, for its window to open).
    Vacating,
    /// Not yet considered by a scheduling pass.
    New,
}

/// How a finished job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// It ended by itself.
    Finished {
        /// Its exit status.
        exit_status: i32,
    },
    /// It was cancelled.
    Cancelled,
    /// A reservation killed at the end of its window.
    WindowEnded,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum JobPhase {
    /// In the queue (or held), with the reason it waits.
    Pending {
        /// Why it waits.
        reason: WaitReason,
    },
    /// `Start` was issued; waiting for `JobRunning`.
    Starting,
    /// Running.
    Running,
    /// Running, with a periodic checkpoint in progress.
    Checkpointing,
    /// Being checkpointed (or drained) to leave its nodes; then requeued.
    Preempting,
    /// Done for good.
    Done {
        /// How it ended.
        outcome: Outcome,
    },
}

impl JobPhase {
    /// A short lowercase name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            JobPhase::Pending { .. } => "pending",
            JobPhase::Starting => "starting",
            JobPhase::Running => "running",
            JobPhase::Checkpointing => "checkpointing",
            JobPhase::Preempting => "preempting",
            JobPhase::Done { .. } => "done",
        }
    }
}

/// Everything the core knows about one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its domain.
    pub domain: DomainId,
    /// Its class.
    pub class: Class,
    /// Its state (with the wait reason when pending).
    pub state: JobPhase,
    /// When it was submitted.
    pub submitted: Time,
    /// Work saved by its last successful checkpoint, in ms of run time.
    /// It never goes down.
    pub saved_progress_ms: u64,
    /// Whether a checkpoint exists to resume from.
    pub has_checkpoint: bool,
    /// How many times it was taken off its nodes (preempted, drained, node
    /// lost, node reclaimed).
    pub preemptions: u32,
    /// `(node, VMs)` while placed.
    pub nodes: Vec<(NodeId, u32)>,
    /// When its current run started (the `JobRunning` event), if running.
    pub running_since: Option<Time>,
    /// The core's estimate of when it ends, if placed.
    pub expected_end: Option<Time>,
    /// If waiting: the start backfilling reserved for it in the last pass
    /// (EASY's first waiting job; every job under conservative). It holds
    /// if run-time estimates hold and no higher-priority job arrives.
    pub planned_start: Option<Time>,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Serving its current domain.
    Up,
    /// Leaving (announced): jobs are being preempted off it.
    Draining,
    /// Down or lost.
    Down,
    /// Drained by an administrator (Slurm's DRAIN): up, but nothing new is
    /// placed on it; the jobs on it run on until they end.
    Drained,
    /// Being lent: the borrower's VM is booting on it.
    Lending,
    /// Being reclaimed: waiting for the borrower's jobs to leave, or for
    /// the borrower's VM to halt.
    Reclaiming,
}

/// A node as the core sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeLoad {
    /// The node.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// The domain that owns it.
    pub owner: DomainId,
    /// The domain it serves now (differs from `owner` while lent).
    pub serving: DomainId,
    /// Its state.
    pub status: NodeStatus,
    /// Total cores.
    pub cores: u32,
    /// Total memory in MiB.
    pub memory_mb: u64,
    /// Cores used by normal and reservation jobs.
    pub used_cores: u32,
    /// Cores used by best-effort jobs.
    pub best_effort_cores: u32,
    /// Memory used by all jobs, in MiB.
    pub used_memory_mb: u64,
    /// Jobs with VMs here: `(job, VMs)`.
    pub jobs: Vec<(JobId, u32)>,
}

/// A domain's counters, for brokers, plots and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DomainView {
    /// Nodes the domain owns and that are up (|P|), including lent ones.
    pub own_nodes: u32,
    /// Own nodes lent to other domains (|L|), including loans in progress.
    pub lent: u32,
    /// Nodes borrowed from other domains and serving here (|V|).
    pub borrowed: u32,
    /// Demand d: nodes required by the waiting (normal and reservation) jobs.
    pub demand_nodes: u64,
    /// Jobs waiting in the queue (any class, held included).
    pub queued_jobs: u32,
    /// Jobs placed (starting, running, checkpointing, preempting).
    pub running_jobs: u32,
    /// Cores in use on the nodes serving the domain.
    pub busy_cores: u64,
    /// Cores of the nodes serving the domain.
    pub total_cores: u64,
    /// Loans made by this domain so far (count of `Lend` actions).
    pub loans_made: u64,
}

/// Why a waiting job finds no room, node by node, like HTCondor's
/// `condor_q -better-analyze`: each count is over the nodes that take work
/// in the job's domain, every clause and resource on its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitAnalysis {
    /// Nodes serving the job's domain that take new work.
    pub nodes: u32,
    /// Nodes of the domain drained by an administrator (not in `nodes`).
    pub drained: u32,
    /// Each top-level clause of the job's requirements (`a && b`: `a`,
    /// `b`) and how many of `nodes` fail it.
    pub clauses: Vec<ClauseCount>,
    /// Nodes that meet the whole requirements (all of `nodes` without).
    pub matching: u32,
    /// Nodes with fewer cores in all than one VM needs.
    pub too_few_cores: u32,
    /// Nodes with less memory in all than one VM needs.
    pub too_little_memory: u32,
    /// Nodes whose free cores now are fewer than one VM needs.
    pub busy_cores: u32,
    /// Nodes whose free memory now is less than one VM needs.
    pub busy_memory: u32,
    /// VMs the job needs.
    pub vms: u32,
    /// VMs the matching nodes could take now, with what runs on them.
    pub vms_free_now: u64,
    /// VMs the matching nodes could take if they were empty.
    pub vms_when_empty: u64,
}

/// One clause of a job's requirements and how many nodes fail it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClauseCount {
    /// The clause as written.
    pub clause: String,
    /// Nodes that do not make it true (false or undefined).
    pub failing: u32,
}
