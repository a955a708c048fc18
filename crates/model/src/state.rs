//! The states a job goes through, shared by the store, the controller and
//! the API so that all three spell them the same way.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. Every change is recorded with time, node and
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting for resources.
    Pending,
    /// Kept out of scheduling by its owner until released.
    Held,
    /// The image goes to the node and inputs are copied in.
    Staging,
    /// The VMs boot (or are restored from a checkpoint).
    Booting,
    /// The command runs.
    Running,
    /// A checkpoint is being taken; the job goes on running afterwards.
    Checkpointing,
    /// Paused by its owner, VMs kept in memory.
    Suspended,
    /// Checkpointed and taken off its node; waits to resume elsewhere.
    Preempted,
    /// Moving live to another node.
    Migrating,
    /// Outputs are copied back.
    StagingOut,
    /// Finished; the exit status is recorded.
    Done,
    /// Could not run or lost its work.
    Failed,
    /// Cancelled by its owner or an admin.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 13] = [
        JobState::Pending,
        JobState::Held,
        JobState::Staging,
        JobState::Booting,
        JobState::Running,
        JobState::Checkpointing,
        JobState::Suspended,
        JobState::Preempted,
        JobState::Migrating,
        JobState::StagingOut,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name used on the wire, in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Held => "held",
            JobState::Staging => "staging",
            JobState::Booting => "booting",
            JobState::Running => "running",
            JobState::Checkpointing => "checkpointing",
            JobState::Suspended => "suspended",
            JobState::Preempted => "preempted",
            JobState::Migrating => "migrating",
            JobState::StagingOut => "staging-out",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a name written by [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether the job holds resources on a node (its VMs exist there).
    pub fn is_on_node(self) -> bool {
        matches!(
            self,
            JobState::Staging
                | JobState::Booting
                | JobState::Running
                | JobState::Checkpointing
                | JobState::Suspended
                | JobState::Migrating
                | JobState::StagingOut
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
            let json = serde_json::to_string(&st).expect("serializes");
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert_eq!(JobState::parse("bogus"), None);
    }
}
