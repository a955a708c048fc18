//! Turning the controller's records into API views.

use vgrid_api::types::{CheckpointView, HistoryView, JobView};
use vgrid_core::WaitReason;
use vgrid_store::{CheckpointRecord, HistoryEntry, JobRecord};

/// Why a waiting job waits, in words.
pub(crate) fn wait_reason_text(reason: WaitReason) -> &'static str {
    match reason {
        WaitReason::Priority => "waiting behind jobs ahead of it in the queue",
        WaitReason::Resources => "waiting for free cores and memory",
        WaitReason::Requirements => {
            "no node up can hold one of its VMs (requirements, cores or memory)"
        }
        WaitReason::TooLarge => "needs more than all nodes together have (waits for more nodes)",
        WaitReason::Reservation => "its reservation window has not opened",
        WaitReason::Held => "held",
        WaitReason::BestEffortNoIdle => "best-effort: waiting for idle capacity",
        WaitReason::Vacating => "waiting for preempted jobs to leave its nodes",
        WaitReason::New => "waiting for the next scheduling pass",
    }
}

pub(crate) fn job_view(rec: &JobRecord, owner: &str, reason: String) -> JobView {
    JobView {
        id: rec.id,
        name: rec.spec.name.clone(),
        owner: owner.to_string(),
        state: rec.state,
        reason,
        node: rec.node.clone(),
        class: rec.spec.class.name().to_string(),
        image: rec.spec.image.clone(),
        cpus: rec.spec.cpus,
        memory_mb: rec.spec.memory_mb,
        vms: rec.spec.vms,
        exit_code: rec.exit_code,
        submitted_unix_ms: rec.submitted_unix_ms,
        updated_unix_ms: rec.updated_unix_ms,
    }
}

pub(crate) fn history_view(h: HistoryEntry) -> HistoryView {
    HistoryView {
        unix_ms: h.unix_ms,
        state: h.state,
        reason: h.reason,
        node: h.node,
    }
}

pub(crate) fn checkpoint_view(c: CheckpointRecord, restorable: bool) -> CheckpointView {
    CheckpointView {
        seq: c.seq,
        node: c.node,
        location: c.location,
        work_ms: c.work_ms,
        unix_ms: c.unix_ms,
        log_offset: c.log_offset,
        manifest: c.manifest,
        restorable,
    }
}
