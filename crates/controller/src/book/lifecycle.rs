//! The user-visible life of a job as one table: which state may follow
//! which. Every change of a job's state goes through [`check`]; a change
//! the table does not allow is a typed error and changes nothing.

use vgrid_model::JobState;

use JobState::*;

/// Waiting for a start (a migrating job between two nodes waits, too).
const WAITING: &[JobState] = &[Pending, Preempted, Migrating];
/// On nodes: placed, starting, running, stopping or copying outputs.
const PLACED: &[JobState] = &[
    Staging,
    Booting,
    Running,
    Checkpointing,
    Suspended,
    Migrating,
    StagingOut,
];

/// The states `to` may follow. A state may follow itself where its reason
/// can change without a new state (`checkpoint 3 saved` while running, a
/// waiting job that was moved).
fn sources(to: JobState) -> &'static [JobState] {
    match to {
        Pending => &[Held, Pending],
        Held => &[Pending, Preempted, Migrating, Held],
        // Staging again: a new step of it (an image being fetched).
        Staging => &[Pending, Preempted, Migrating, Staging],
        Booting => &[Staging],
        Running => &[
            Staging,
            Booting,
            Running,
            Checkpointing,
            Suspended,
            Migrating,
        ],
        Checkpointing => &[Running, Suspended, Checkpointing],
        Suspended => &[Running],
        Preempted => &[
            Staging,
            Booting,
            Running,
            Checkpointing,
            Suspended,
            Migrating,
            StagingOut,
            Preempted,
        ],
        Migrating => &[
            Pending,
            Staging,
            Booting,
            Running,
            Checkpointing,
            Suspended,
            Migrating,
        ],
        StagingOut => &[Running, Checkpointing, Suspended, Migrating],
        Done => PLACED,
        // A job may fail or be cancelled from anywhere before its end.
        Failed | Cancelled => &[
            Pending,
            Held,
            Staging,
            Booting,
            Running,
            Checkpointing,
            Suspended,
            Preempted,
            Migrating,
            StagingOut,
        ],
    }
}

/// A state change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job {job} cannot go from {from} to {to}")]
pub(crate) struct IllegalTransition {
    pub job: u64,
    pub from: JobState,
    pub to: JobState,
}

/// Whether job `job` may go from `from` to `to`.
pub(crate) fn check(job: u64, from: JobState, to: JobState) -> Result<(), IllegalTransition> {
    if sources(to).contains(&from) {
        Ok(())
    } else {
        Err(IllegalTransition { job, from, to })
    }
}

/// Whether `state` waits for a start.
pub(crate) fn is_waiting(state: JobState) -> bool {
    WAITING.contains(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_job_never_changes_again() {
        for from in [Done, Failed, Cancelled] {
            for to in JobState::ALL {
                assert!(check(1, from, to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_common_lives_are_allowed() {
        let lives: &[&[JobState]] = &[
            &[Pending, Staging, Booting, Running, StagingOut, Done],
            &[
                Pending,
                Staging,
                Running,
                Checkpointing,
                Preempted,
                Staging,
                Running,
                Done,
            ],
            &[
                Pending, Held, Pending, Staging, Running, Suspended, Running, Failed,
            ],
            &[
                Pending, Staging, Running, Migrating, Staging, Booting, Running, Done,
            ],
            &[Pending, Cancelled],
        ];
        for life in lives {
            for w in life.windows(2) {
                check(1, w[0], w[1]).unwrap_or_else(|e| panic!("{e} in {life:?}"));
            }
        }
    }

    #[test]
    fn shortcuts_that_skip_a_step_are_refused() {
        for (from, to) in [
            (Pending, Running),
            (Held, Staging),
            (Running, Booting),
            (Pending, Done),
            (Suspended, Suspended),
            (Preempted, Running),
        ] {
            let e = check(7, from, to).expect_err("refused");
            assert_eq!((e.job, e.from, e.to), (7, from, to));
            assert!(e.to_string().contains("cannot go from"), "{e}");
        }
    }
}
