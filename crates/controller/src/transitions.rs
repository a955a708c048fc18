//! A job's changes of state once they are durable: one log line each (an
//! operator follows a job with `grep job=17`), and the queue wait of each
//! start for `/metrics`.

use vgrid_model::JobState;

use crate::book::lifecycle;
use crate::metrics::Metrics;

/// One change of a job's state, as the book decided it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    pub job: u64,
    /// `None`: the job was just submitted.
    pub from: Option<JobState>,
    pub to: JobState,
    pub reason: String,
    /// How long the job was in `from` (0 for a submission).
    pub after_ms: u64,
}

impl Transition {
    /// A start: a waiting job is placed on nodes.
    fn is_start(&self) -> bool {
        self.to == JobState::Staging && self.from.is_some_and(lifecycle::is_waiting)
    }
}

/// Logs and counts the transitions of a round that was just committed.
pub(crate) fn committed(transitions: &[Transition], metrics: &Metrics) {
    for t in transitions {
        let from = t.from.map_or("none", JobState::as_str);
        tracing::info!(
            target: "vgrid::job",
            job = t.job,
            from,
            to = t.to.as_str(),
            reason = %t.reason,
            "job transition"
        );
        if t.is_start() {
            metrics
                .queue_wait_seconds
                .observe(t.after_ms as f64 / 1000.0);
        }
    }
}
