//! Events the driver feeds in, and why the core may refuse one.

use crate::model::{JobRequest, NodeSpec};
use crate::types::{DomainId, JobId, NodeId};

/// Something that happened. Pass it with the time it happened to
/// [`crate::Scheduler::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A node joins its domain, or comes back after `NodeDown`/`NodeLost`.
    NodeUp(NodeSpec),
    /// A node will leave (announced): its jobs are preempted (checkpointed
    /// when possible) and requeued; nothing new is placed there.
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// A node is gone without notice: its jobs are requeued from their last
    /// checkpoint; work since then is lost.
    NodeLost {
        /// The node.
        node: NodeId,
    },
    /// An administrator drains the node (Slurm's DRAIN): nothing new is
    /// placed on it; the jobs on it run on until they end. Refused for a
    /// node that is down or lent.
    NodeDrain {
        /// The node.
        node: NodeId,
    },
    /// A drained node takes new work again.
    NodeResume {
        /// The node.
        node: NodeId,
    },
    /// The images a node holds changed (it fetched one, or dropped one).
    NodeImages {
        /// The node.
        node: NodeId,
        /// Every image it holds now.
        images: std::collections::BTreeSet<String>,
    },
    /// A new job.
    Submit(JobRequest),
    /// The user cancels a job; a running job is killed.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Keep a waiting job from starting until `Release`.
    Hold {
        /// The job.
        job: JobId,
    },
    /// Let a held job compete again.
    Release {
        /// The job.
        job: JobId,
    },
    /// After a `Start` action: all of the job's VMs booted (or were
    /// restored) and the job's work starts now.
    JobRunning {
        /// The job.
        job: JobId,
    },
    /// The job ended by itself.
    JobFinished {
        /// The job.
        job: JobId,
        /// Its exit status (0 = success); recorded, not interpreted.
        exit_status: i32,
    },
    /// A checkpoint asked for by a `Checkpoint` or `Preempt` action is done.
    CheckpointFinished {
        /// The job.
        job: JobId,
        /// Whether the checkpoint was saved. A failed checkpoint keeps the
        /// previous one; after a preemption the job is requeued either way.
        ok: bool,
    },
    /// The job's VMs were lost while its nodes live on (QEMU died, a VM
    /// crashed, the attempt failed). The job goes back to the queue in its
    /// old place (same priority and submission time) and resumes from its
    /// last checkpoint; work since then is lost. It counts as a preemption.
    /// No action follows: the driver stops whatever is left of the job's
    /// VMs, and the core counts the nodes as free at once.
    JobLost {
        /// The job.
        job: JobId,
    },
    /// Move the job (a user-requested migration): a running job is
    /// checkpointed and requeued (`Preempt { mode: Checkpoint }`), a job
    /// still booting is stopped (`Preempt { mode: Kill }`: it has done no
    /// work yet), a waiting job only gets the new restriction. Its next
    /// placement is on `to` only, or with `None` on any node but the ones
    /// it is leaving. Refused for a running job that cannot be checkpointed
    /// (or in [`crate::PreemptionMode::Kill`]): it would lose its work.
    Move {
        /// The job.
        job: JobId,
        /// The node it must run on next, if any.
        to: Option<NodeId>,
    },
    /// A checkpoint the core did not ask for (a user's) was saved just now.
    /// The core records it as the job's saved progress, like a periodic
    /// checkpoint: the work done when it started. The job's VMs were
    /// paused for `paused_ms` while saving (that time is not work).
    CheckpointTaken {
        /// The job.
        job: JobId,
        /// How long the job was paused for the checkpoint, in ms.
        paused_ms: u64,
    },
    /// After a `Lend` action: the borrower's VM on the node is up; the node
    /// now serves the borrowing domain.
    LoanReady {
        /// The node.
        node: NodeId,
    },
    /// After a `Reclaim` action: the borrower's VM on the node halted; the
    /// node is back with its owner.
    LoanReturned {
        /// The node.
        node: NodeId,
    },
}

/// Why the core refused an event. A refused event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The event names a job the core does not know (or has forgotten).
    #[error("{0} is not known")]
    UnknownJob(JobId),
    /// The event names a node the core does not know.
    #[error("{0} is not known")]
    UnknownNode(NodeId),
    /// A domain id outside the configured domains.
    #[error("{0} is not configured")]
    UnknownDomain(DomainId),
    /// A job id was submitted twice.
    #[error("{0} was already submitted")]
    DuplicateJob(JobId),
    /// `NodeUp` for a node that is up.
    #[error("{0} is already up")]
    NodeAlreadyUp(NodeId),
    /// The job spec is not valid.
    #[error("{job}: {why}")]
    InvalidJob {
        /// The job.
        job: JobId,
        /// What is wrong.
        why: &'static str,
    },
    /// The node spec is not valid.
    #[error("{node}: {why}")]
    InvalidNode {
        /// The node.
        node: NodeId,
        /// What is wrong.
        why: &'static str,
    },
    /// The event does not apply to the job in its current state (for
    /// example `JobRunning` for a job that was never started, or a late
    /// report about a job that was already requeued). Drivers may log it.
    #[error("{job}: {event} does not apply while it is {state}")]
    WrongState {
        /// The job.
        job: JobId,
        /// The event's name.
        event: &'static str,
        /// The job's state's name.
        state: &'static str,
    },
    /// A drain or resume for a node in a state it does not apply to.
    #[error("{node}: {event} does not apply while it is {state}")]
    WrongNodeState {
        /// The node.
        node: NodeId,
        /// The event's name.
        event: &'static str,
        /// The node's state's name.
        state: &'static str,
    },
    /// A loan event for a node that has no loan in that phase.
    #[error("{node}: {event} does not apply to its loan state")]
    WrongLoanState {
        /// The node.
        node: NodeId,
        /// The event's name.
        event: &'static str,
    },
}
