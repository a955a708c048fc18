//! The vgrid scheduling core: a pure state machine.
//!
//! It holds the model (nodes, domains, jobs, reservations) and makes every
//! scheduling decision. It does no IO, reads no clock, starts no thread and
//! draws no random numbers: drivers (the live controller, the simulator)
//! feed it events with the current time and carry out the actions it
//! returns. The same events at the same times give the same actions.
//!
//! # How to drive the core
//!
//! ```
//! use vgrid_core::{Action, Config, Event, JobId, JobRequest, NodeId, NodeSpec, DomainId, Scheduler, Time};
//!
//! let mut core = Scheduler::new(Config::default());
//! let now = Time::from_secs(0);
//! core.handle(now, Event::NodeUp(NodeSpec::new(NodeId(1), DomainId(0), 4, 8192))).unwrap();
//! core.handle(now, Event::Submit(JobRequest::simple(JobId(7), 2, 60_000))).unwrap();
//! core.schedule(now); // one pass for everything that happened at `now`
//! while let Some(action) = core.poll_action() {
//!     match action {
//!         Action::Start { job, placement, resume } => {
//!             // boot (or restore) the VMs, then later:
//!             // core.handle(t, Event::JobRunning { job })
//!             assert_eq!((job, resume), (JobId(7), false));
//!             assert_eq!(placement, vec![(NodeId(1), 2)]);
//!         }
//!         _ => {}
//!     }
//! }
//! // Sleep until the next event arrives or until `core.next_wakeup()`,
//! // then call `core.schedule(now)` again.
//! ```
//!
//! The loop, at each instant `now` where something happens:
//!
//! 1. [`Scheduler::handle`] every event that happened at `now` (the
//!    simulator delivers completions before arrivals at equal times). A
//!    refused event ([`Rejected`]) changes nothing; drivers log it.
//! 2. [`Scheduler::schedule`]`(now)`: does due time-driven work (periodic
//!    checkpoints, reservation windows, broker evaluations, lease ends) and
//!    runs one scheduling pass per domain that changed. Many events at one
//!    instant cost one pass.
//! 3. Drain [`Scheduler::poll_action`] and carry each action out.
//! 4. Wait for the next event or for [`Scheduler::next_wakeup`], whichever
//!    comes first. (`handle_timeout(now)` does only step 2's timed work.)
//!
//! `now` must never go backwards.
//!
//! # Actions and the events that answer them
//!
//! | action | driver does | then reports |
//! |---|---|---|
//! | `Start { placement, resume }` | boot the VMs (or restore the last checkpoint) on the listed nodes | `JobRunning` when all run; `JobFinished` when it ends |
//! | `Checkpoint` | save the job's state (VMs paused meanwhile), keep running | `CheckpointFinished { ok }` |
//! | `Preempt { mode: Checkpoint }` | checkpoint, then stop the VMs | `CheckpointFinished { ok }` once stopped (the job is requeued either way) |
//! | `Preempt { mode: Kill }` | stop the VMs now | nothing: the nodes count as free at once |
//! | `Kill` | stop the VMs for good (cancel, end of a reservation window) | nothing |
//! | `Requeue` | a node of the job was lost: stop its other VMs | nothing |
//! | `Lend { node, from, to }` | boot the borrower's VM on the node | `LoanReady` |
//! | `Reclaim { node, .. }` | the node is empty: halt the borrower's VM | `LoanReturned` |
//!
//! Events a driver sends on its own, without an action asking for them:
//!
//! | event | when | the core then |
//! |---|---|---|
//! | `JobLost { job }` | the job's VMs died (QEMU killed, VM crashed) but its nodes live on | requeues it in its old place (priority, submission time) to resume from its last checkpoint; counts a preemption; issues no action: the driver stops what is left of its VMs |
//! | `Move { job, to }` | a user migrates the job | a running job: `Preempt { mode: Checkpoint }` (then `CheckpointFinished` as usual); one still booting: `Preempt { mode: Kill }`; then its next `Start` is on `to` only, or with `None` on other nodes than the ones it left. Refused (`InvalidJob`) for a running job that cannot be checkpointed |
//! | `CheckpointTaken { job, paused_ms }` | a checkpoint the core did not ask for (a user's) was saved | records the work done when it started as saved progress, like a periodic checkpoint; a later resume restores it |
//!
//! Node events come from the infrastructure: `NodeUp` (joins or returns),
//! `NodeDown` (announced: its jobs are checkpointed when possible and
//! requeued), `NodeLost` (no notice: its jobs are requeued from their last
//! checkpoint, the driver stops their VMs on other nodes after `Requeue`).
//! An administrator's `NodeDrain` takes a node out of placement while its
//! jobs run on to their end (Slurm's DRAIN); `NodeResume` puts it back.
//! [`Scheduler::wait_analysis`] says, clause by clause and resource by
//! resource, how many nodes keep a waiting job out.
//!
//! # Who measures what
//!
//! - The core knows each job's *estimate* (`walltime_ms`), never its true
//!   run time; the driver reports `JobFinished`. Jobs running past their
//!   estimate are fine: backfilling treats them as ending just after `now`.
//! - Work time: a job works while `Running`, from its `JobRunning` event;
//!   it does not work while its VMs boot or restore or while a checkpoint
//!   is being saved. A checkpoint saves the work done when it *started*.
//! - Saved progress ([`JobStatus::saved_progress_ms`]) is what the last
//!   successful checkpoint saved; it never goes down. After a kill or a
//!   node loss, work since then is lost; the driver measures how much
//!   from real run times (the core cannot know).
//! - Checkpoint and restore costs in [`Config`] are the core's estimates
//!   (used for backfilling and for preempting best-effort jobs in time for
//!   a reservation); the driver's real durations are what they are.
//!
//! # Policies and classes
//!
//! - [`Policy::Fcfs`]: strict queue order. [`Policy::Easy`]: the first job
//!   that cannot start gets a reservation at the earliest time it fits;
//!   later jobs start now only if they do not delay it. [`Policy::Conservative`]:
//!   every waiting job gets a reservation; a job starts early only if it
//!   delays no earlier one. Reservations are kept from pass to pass and
//!   only move earlier (compression), so with correct estimates a job never
//!   starts later than the start it was given ([`JobStatus::planned_start`]).
//!   A conservative pass costs O(queue x profile); see
//!   [`Scheduler::set_conservative_depth`] for a bound on large queues.
//! - Queue order: higher `priority` first, then earlier submission, then
//!   lower id. Reservation-class jobs come before all others.
//! - Jobs running past their estimate are taken to end just after `now`.
//!   Jobs that can never run on the domain's current nodes (requirements
//!   no node meets, or more than the domain holds) wait with reason
//!   `Requirements` / `TooLarge` and do not block the queue.
//! - [`Class::BestEffort`] jobs use only capacity no normal job can use at
//!   the moment: after the normal queue, they start greedily in queue order
//!   on what is physically free. Normal and reservation jobs see capacity
//!   held by best-effort jobs as free; when they are placed there, the
//!   best-effort jobs in the way (lowest priority first, then the most
//!   recently started) are preempted: checkpointed and requeued in
//!   [`PreemptionMode::Checkpoint`] when checkpointable, killed and requeued
//!   otherwise. The normal job starts when they are gone (it waits with
//!   reason `Vacating` meanwhile). Preempted jobs resume later from their
//!   checkpoint on any free node.
//! - [`Class::Reservation`] jobs start at their window's start and are
//!   killed at its end. Capacity is kept for the window (later jobs that
//!   would overlap it do not start); the reservation is placed on nodes as
//!   early as the longest checkpoint of the best-effort jobs in the domain,
//!   so those in the way are checkpointed in time. Normal jobs running past
//!   their estimate into a window are not preempted: the reservation waits.
//! - Periodic checkpoints: jobs that are checkpointable and have an
//!   interval are checkpointed every `checkpoint_interval_ms` of work (in
//!   checkpoint mode), so a node lost without notice costs at most that
//!   (plus the previous interval if a checkpoint failed).
//! - In [`PreemptionMode::Kill`] no checkpoint is ever taken: preempted
//!   jobs restart from zero (today's batch systems).
//!
//! # Domains and brokers
//!
//! Each domain has its own nodes and queues; jobs run only on nodes that
//! serve their domain: its own, or nodes borrowed from another domain
//! (never a mix of the two for one job; own nodes are tried first). A
//! domain with a [`BrokerConfig`] evaluates every `interval_ms` (at
//! multiples of it) its demand d (VMs of its waiting normal and reservation
//! jobs; in VioCluster every job process needs a machine) and its need
//! `n = d - [(|P| - |L|) + |V|]` (own nodes up, lent, borrowed; see
//! [`DomainView`]). With `n > 0` it reclaims nodes it lent (by its
//! [`ReclaimPolicy`]: immediate, one per period for gradual, none early for
//! lease) and borrows from domains whose own need is negative; a lender
//! lends at most `|n|` nodes and keeps its total on loan within
//! `lend_fraction` of its idle nodes (idle at home plus already lent).
//! With `n < 0` it returns borrowed nodes that run nothing. A lent node
//! costs a VM boot (`Lend` .. `LoanReady`) before use and a halt after
//! (`Reclaim` .. `LoanReturned`); jobs on a reclaimed node are preempted
//! like best-effort ones. A lease shorter than a job that cannot be
//! checkpointed can keep that job from ever finishing on borrowed nodes.
//!
//! # Placement and capacity accounting
//!
//! A job is `vms` identical VMs of `cores_per_vm` cores and
//! `memory_mb_per_vm` MiB; several of them may share a node. Jobs without
//! requirements or rank are placed best-fit through a free-capacity index
//! (cost independent of the number of nodes); jobs with requirements or
//! rank evaluate them on each node with free capacity, highest rank first.
//! Backfilling reasons about cores and memory summed over a pool (a time
//! profile); a VM's fit on a node is checked at placement, so with mixed
//! node sizes a job the profile admits may still wait for fragmented
//! capacity. On identical nodes with one-core VMs (the simulator's SWF
//! model) the profile is exact.
//!
//! # Cost
//!
//! FCFS and EASY without reservations or borrowed nodes take a fast path:
//! a pass walks the queue only until nothing is free, a pass caused only
//! by arrivals looks only at them, and placing or releasing a VM is O(1).
//! A property test checks that this path decides exactly like the general
//! profile-based one. A node of P cores running one-core VMs is a counted
//! pool of P interchangeable processors: a job of k VMs is placed there as
//! `(node, k)` in O(1) whatever k, with the same decisions as P one-core
//! nodes (a property test checks it); the simulator announces a machine's
//! processors this way when no event names one. Measured numbers and the commands that reproduce
//! them are in `docs/core.md` (`examples/pass_bench.rs`,
//! `examples/trace_bench.rs`).
//!
//! A job that cannot be placed is not an error: it waits with a
//! [`WaitReason`] ([`Scheduler::job_state`]).

#![warn(missing_docs)]

mod action;
mod config;
mod event;
#[cfg(test)]
mod harness;
mod hash;
mod index;
mod model;
mod profile;
mod sched;
mod types;
mod view;

pub use action::{Action, LoanEnd, StopMode};
pub use config::{
    BrokerConfig, Config, CostModel, DomainConfig, Policy, PreemptionMode, ReclaimPolicy,
};
pub use event::{Event, Rejected};
pub use model::{Class, JobRequest, NodeSpec};
pub use sched::Scheduler;
pub use types::{DomainId, JobId, NodeId, Time};
pub use vgrid_expr::{AttrValue, Expr};
pub use view::{
    ClauseCount, DomainView, JobPhase, JobStatus, NodeLoad, NodeStatus, Outcome, WaitAnalysis,
    WaitReason,
};
