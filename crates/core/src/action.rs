//! Decisions the core hands to the driver.

use crate::types::{DomainId, JobId, NodeId};

/// How a running job is taken off its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopMode {
    /// Checkpoint the job, then stop its VMs; report `CheckpointFinished`
    /// (ok or not) once the VMs are stopped.
    Checkpoint,
    /// Stop the VMs now; work since the last checkpoint is lost. Nothing is
    /// reported back: the core considers the nodes free at once.
    Kill,
}

/// Why a loan ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoanEnd {
    /// The owner needs the node (immediate or gradual reclamation).
    Reclaimed,
    /// The lease period is over.
    LeaseExpired,
    /// The borrower no longer needs it.
    Returned,
}

/// Something the driver must do. Drain them with
/// [`crate::Scheduler::poll_action`] after every call that changes state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Boot (or restore) the job's VMs: `placement` lists each node and how
    /// many of the job's VMs go there. When all run, report `JobRunning`.
    Start {
        /// The job.
        job: JobId,
        /// `(node, number of VMs)` pairs; the counts add up to the job's VMs.
        placement: Vec<(NodeId, u32)>,
        /// Restore from the job's last successful checkpoint instead of
        /// booting fresh.
        resume: bool,
    },
    /// Take a periodic checkpoint; the job keeps running afterwards (its VMs
    /// are paused while saving). Report `CheckpointFinished`.
    Checkpoint {
        /// The job.
        job: JobId,
    },
    /// Take the job off its nodes and back to the queue.
    Preempt {
        /// The job.
        job: JobId,
        /// Checkpoint first, or kill.
        mode: StopMode,
    },
    /// Kill the job for good (cancelled, or a reservation's window ended).
    Kill {
        /// The job.
        job: JobId,
    },
    /// One of the job's nodes was lost: stop the job's remaining VMs without
    /// a checkpoint. The job is back in the queue; nothing is reported back.
    Requeue {
        /// The job.
        job: JobId,
    },
    /// Lend an idle node: boot the borrowing domain's VM on it, then report
    /// `LoanReady`.
    Lend {
        /// The node.
        node: NodeId,
        /// Its owner.
        from: DomainId,
        /// The borrower.
        to: DomainId,
    },
    /// End a loan: the node is empty now; halt the borrower's VM on it, then
    /// report `LoanReturned`.
    Reclaim {
        /// The node.
        node: NodeId,
        /// Its owner, who gets it back.
        owner: DomainId,
        /// The borrower, who gives it back.
        borrower: DomainId,
        /// Why.
        why: LoanEnd,
    },
}
