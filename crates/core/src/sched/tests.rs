//! Hand-checked scenarios for each policy and feature.

use crate::harness::Harness;
use crate::{Action, Config, Event, JobId, JobSpec, JobState, Policy, Time, WaitReason};

fn job(id: u64, vms: u32, walltime: u64) -> JobSpec {
    JobSpec::simple(JobId(id), vms, walltime)
}

fn harness(policy: Policy, nodes: u32) -> Harness {
    let mut h = Harness::new(Config::with_policy(policy));
    h.nodes(0, nodes, 1, 0);
    h
}

fn reason(h: &Harness, id: u64) -> Option<WaitReason> {
    match h.s.job_state(JobId(id)) {
        Some(JobState::Pending { reason }) => Some(reason),
        _ => None,
    }
}

#[test]
fn fcfs_keeps_strict_order() {
    // 4 one-core nodes. A takes 3 until 100; B needs 2 and must wait; C
    // (1 VM, short) could fit now but FCFS does not let it pass B.
    let mut h = harness(Policy::Fcfs, 4);
    h.submit(0, job(1, 3, 100), 100);
    h.submit(1, job(2, 2, 10), 10);
    h.submit(2, job(3, 1, 10), 10);
    h.run_to(2);
    assert_eq!(reason(&h, 2), Some(WaitReason::Resources));
    assert_eq!(reason(&h, 3), Some(WaitReason::Priority));
    h.run(100);
    assert_eq!(h.start_of(1), 0);
    assert_eq!(h.start_of(2), 100);
    assert_eq!(h.start_of(3), 100);
    assert_eq!(h.end_of(3), 110);
}

#[test]
fn easy_backfills_a_short_job() {
    let mut h = harness(Policy::Easy, 4);
    h.submit(0, job(1, 3, 100), 100);
    h.submit(1, job(2, 2, 10), 10);
    h.submit(2, job(3, 1, 50), 50);
    h.run(100);
    assert_eq!(h.start_of(1), 0);
    assert_eq!(h.start_of(3), 2, "C ends before B's reservation at 100");
    assert_eq!(h.start_of(2), 100);
}

#[test]
fn easy_refuses_a_backfill_that_would_delay_the_head() {
    // B needs all 4 nodes at 100: nothing is left over (extra = 0), so a
    // job running past 100 may not start, while one ending by 100 may.
    let mut h = harness(Policy::Easy, 4);
    h.submit(0, job(1, 3, 100), 100);
    h.submit(1, job(2, 4, 10), 10);
    h.submit(2, job(3, 1, 500), 500);
    h.submit(3, job(4, 1, 97), 97);
    h.run_to(3);
    assert_eq!(reason(&h, 2), Some(WaitReason::Resources));
    assert_eq!(reason(&h, 3), Some(WaitReason::Priority));
    h.run(100);
    assert_eq!(h.start_of(4), 3, "ends at 100, in time for B");
    assert_eq!(h.start_of(2), 100);
    assert_eq!(h.start_of(3), 110);
}

#[test]
fn easy_backfill_uses_extra_capacity() {
    // At B's reservation (100) 4 nodes are free and B needs 3: one is
    // extra, so one long job may start now, but not a second.
    let mut h = harness(Policy::Easy, 4);
    h.submit(0, job(1, 2, 100), 100);
    h.submit(1, job(2, 3, 10), 10);
    h.submit(2, job(3, 1, 500), 500);
    h.submit(3, job(4, 1, 500), 500);
    h.run(100);
    assert_eq!(h.start_of(3), 2);
    assert_eq!(h.start_of(2), 100);
    assert_eq!(h.start_of(4), 110);
}

#[test]
fn conservative_protects_every_reservation() {
    // A runs on 2 of 4 nodes until 100; B (3 nodes) is reserved at 100,
    // C (4 nodes) at 200. D (1 node, 300) fits now and is within EASY's
    // extra capacity (it delays only C), so EASY starts it; conservative
    // does not, because it would delay C's reservation.
    let scenario = |policy| {
        let mut h = harness(policy, 4);
        h.submit(0, job(1, 2, 100), 100);
        h.submit(1, job(2, 3, 100), 100);
        h.submit(2, job(3, 4, 100), 100);
        h.submit(3, job(4, 1, 300), 300);
        h.run(100);
        h
    };
    let easy = scenario(Policy::Easy);
    assert_eq!(easy.start_of(4), 3);
    assert_eq!(easy.start_of(2), 100);
    assert_eq!(easy.start_of(3), 303, "EASY let D delay C");
    let cons = scenario(Policy::Conservative);
    assert_eq!(cons.start_of(2), 100);
    assert_eq!(cons.start_of(3), 200);
    assert_eq!(cons.start_of(4), 300);
}

#[test]
fn conservative_backfills_when_no_reservation_is_delayed() {
    let mut h = harness(Policy::Conservative, 4);
    h.submit(0, job(1, 2, 100), 100);
    h.submit(1, job(2, 3, 100), 100);
    h.submit(2, job(3, 2, 90), 90); // ends before B's reservation
    h.run(100);
    assert_eq!(h.start_of(3), 2);
    assert_eq!(h.start_of(2), 100);
}

#[test]
fn jobs_running_past_their_estimate_do_not_break_backfilling() {
    // A's estimate is 10 but it runs 100. B waits for it; C (short) may
    // backfill only into capacity B does not need.
    let mut h = harness(Policy::Easy, 2);
    h.submit(0, job(1, 2, 10), 100);
    h.submit(1, job(2, 2, 10), 10);
    h.submit(20, job(3, 1, 5), 5);
    h.run(100);
    assert_eq!(h.start_of(2), 100);
    assert_eq!(h.start_of(3), 110);
}

#[test]
fn too_large_and_unmatched_jobs_wait_with_a_reason_without_blocking() {
    let mut h = harness(Policy::Fcfs, 2);
    h.submit(0, job(1, 3, 10), 10);
    let mut picky = job(2, 1, 10);
    picky.requirements = Some(crate::Expr::parse("gpu == true").unwrap());
    h.submit(0, picky, 10);
    h.submit(0, job(3, 2, 10), 10);
    h.run(100);
    assert_eq!(reason(&h, 1), Some(WaitReason::TooLarge));
    assert_eq!(reason(&h, 2), Some(WaitReason::Requirements));
    assert_eq!(h.start_of(3), 0);
}

#[test]
fn priority_orders_the_queue() {
    let mut h = harness(Policy::Fcfs, 1);
    h.submit(0, job(1, 1, 10), 10);
    h.submit(1, job(2, 1, 10), 10);
    let mut urgent = job(3, 1, 10);
    urgent.priority = 5;
    h.submit(2, urgent, 10);
    h.run(100);
    assert_eq!(h.start_of(1), 0);
    assert_eq!(h.start_of(3), 10);
    assert_eq!(h.start_of(2), 20);
    assert_eq!(
        h.s.queue(crate::DomainId(0)),
        Vec::<JobId>::new(),
        "queue drained"
    );
}

#[test]
fn hold_and_release() {
    let mut h = harness(Policy::Fcfs, 1);
    h.submit(0, job(1, 1, 10), 10);
    h.at(0, Event::Hold { job: JobId(1) });
    h.run_to(0);
    assert_eq!(reason(&h, 1), Some(WaitReason::Held));
    h.at(50, Event::Release { job: JobId(1) });
    h.run(100);
    assert_eq!(h.start_of(1), 50);
}

#[test]
fn cancel_kills_a_running_job_and_frees_its_nodes() {
    let mut h = harness(Policy::Fcfs, 1);
    h.submit(0, job(1, 1, 100), 100);
    h.submit(0, job(2, 1, 100), 100);
    h.at(30, Event::Cancel { job: JobId(1) });
    h.run(100);
    assert!(
        h.actions_for(1)
            .iter()
            .any(|(t, a)| *t == 30 && matches!(a, Action::Kill { .. }))
    );
    assert_eq!(h.start_of(2), 30);
    assert_eq!(
        h.s.job_state(JobId(1)),
        Some(JobState::Done {
            outcome: crate::Outcome::Cancelled
        })
    );
}

#[test]
fn events_that_do_not_apply_are_refused() {
    let mut s = crate::Scheduler::new(Config::default());
    assert!(
        s.handle(Time(0), Event::JobRunning { job: JobId(9) })
            .is_err()
    );
    s.handle(Time(0), Event::Submit(job(1, 1, 10))).unwrap();
    assert!(s.handle(Time(0), Event::Submit(job(1, 1, 10))).is_err());
    assert!(
        s.handle(
            Time(0),
            Event::JobFinished {
                job: JobId(1),
                exit_status: 0
            }
        )
        .is_err()
    );
    assert!(s.handle(Time(0), Event::Submit(job(2, 0, 10))).is_err());
    let mut bad = job(3, 1, 10);
    bad.domain = crate::DomainId(7);
    assert!(s.handle(Time(0), Event::Submit(bad)).is_err());
}
