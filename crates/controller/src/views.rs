//! Turning the controller's records into API views.

use vgrid_api::types::{CheckpointView, ClauseCount, HistoryView, JobView, WaitAnalysis};
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

/// The reason's name on the wire (`WaitInfo::reason`).
pub(crate) fn wait_reason_name(reason: WaitReason) -> &'static str {
    match reason {
        WaitReason::Priority => "priority",
        WaitReason::Resources => "resources",
        WaitReason::Requirements => "requirements",
        WaitReason::TooLarge => "too-large",
        WaitReason::Reservation => "reservation",
        WaitReason::Held => "held",
        WaitReason::BestEffortNoIdle => "best-effort-no-idle",
        WaitReason::Vacating => "vacating",
        WaitReason::New => "new",
    }
}

/// The core's node-by-node counts on the wire.
pub(crate) fn analysis_view(a: vgrid_core::WaitAnalysis) -> WaitAnalysis {
    WaitAnalysis {
        nodes: a.nodes,
        drained: a.drained,
        clauses: a
            .clauses
            .into_iter()
            .map(|c| ClauseCount {
                clause: c.clause,
                failing: c.failing,
            })
            .collect(),
        matching: a.matching,
        too_few_cores: a.too_few_cores,
        too_little_memory: a.too_little_memory,
        busy_cores: a.busy_cores,
        busy_memory: a.busy_memory,
        vms: a.vms,
        vms_free_now: a.vms_free_now,
        vms_when_empty: a.vms_when_empty,
    }
}

/// The job as listed; `wait` is the caller's to fill.
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
        wait: None,
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
