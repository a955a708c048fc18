//! Hand-checked scenarios for each policy and feature.

use crate::harness::Harness;
use crate::{
    Action, Config, Event, JobId, JobPhase, JobRequest, Policy, PreemptionMode, StopMode, Time,
    WaitReason,
};

fn job(id: u64, vms: u32, walltime: u64) -> JobRequest {
    JobRequest::simple(JobId(id), vms, walltime)
}

fn harness(policy: Policy, nodes: u32) -> Harness {
    let mut h = Harness::new(Config::with_policy(policy));
    h.nodes(0, nodes, 1, 0);
    h
}

fn reason(h: &Harness, id: u64) -> Option<WaitReason> {
    match h.s.job_phase(JobId(id)) {
        Some(JobPhase::Pending { reason }) => Some(reason),
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
        h.s.job_phase(JobId(1)),
        Some(JobPhase::Done {
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

/// Run to time 0 and return the (only) node job `id` was placed on.
fn node_of(h: &mut Harness, id: u64) -> crate::NodeId {
    h.run_to(0);
    let nodes = h.s.job(JobId(id)).map(|v| v.nodes).unwrap_or_default();
    assert_eq!(nodes.len(), 1, "job {id} should be on one node");
    nodes[0].0
}

/// A job's actions with placements sorted, for comparisons.
fn sorted_actions(h: &Harness, id: u64) -> Vec<(u64, Action)> {
    h.actions_for(id)
        .into_iter()
        .map(|(t, mut a)| {
            if let Action::Start { placement, .. } = &mut a {
                placement.sort();
            }
            (t, a)
        })
        .collect()
}

fn be_job(id: u64, vms: u32, walltime: u64) -> JobRequest {
    let mut j = job(id, vms, walltime);
    j.class = crate::Class::BestEffort;
    j.checkpointable = true;
    j
}

fn ckpt_harness(mode: PreemptionMode, nodes: u32) -> Harness {
    let mut cfg = Config::with_policy(Policy::Easy);
    cfg.preemption = mode;
    cfg.checkpoint_cost = crate::CostModel {
        fixed_ms: 10,
        ms_per_gb: 0,
    };
    cfg.restore_cost = crate::CostModel {
        fixed_ms: 5,
        ms_per_gb: 0,
    };
    let mut h = Harness::new(cfg);
    h.costs.checkpoint_ms = 10;
    h.costs.restore_ms = 5;
    h.nodes(0, nodes, 1, 0);
    h
}

#[test]
fn best_effort_is_checkpointed_for_a_normal_job_and_resumes_later() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, be_job(1, 2, 1000), 1000);
    h.submit(100, job(2, 1, 100), 100);
    h.run(100);
    let x = sorted_actions(&h, 1);
    assert_eq!(
        x.iter().map(|(t, a)| (*t, a.clone())).collect::<Vec<_>>()[..3],
        [
            (
                0,
                Action::Start {
                    job: JobId(1),
                    placement: vec![(crate::NodeId(0), 1), (crate::NodeId(1), 1)],
                    resume: false
                }
            ),
            (
                100,
                Action::Preempt {
                    job: JobId(1),
                    mode: StopMode::Checkpoint
                }
            ),
            (
                210,
                Action::Start {
                    job: JobId(1),
                    placement: vec![(crate::NodeId(0), 1), (crate::NodeId(1), 1)],
                    resume: true
                }
            ),
        ]
    );
    // The normal job waits for the checkpoint to finish, not longer.
    assert_eq!(h.start_of(2), 110);
    // 100 ms of work were saved; 900 remain after a 5 ms restore.
    assert_eq!(h.end_of(1), 210 + 5 + 900);
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!(v.preemptions, 1);
    assert_eq!(v.saved_progress_ms, 100);
    assert!(!h.lost.contains_key(&JobId(1)));
}

#[test]
fn best_effort_is_killed_in_kill_mode_and_restarts_from_zero() {
    let mut h = ckpt_harness(PreemptionMode::Kill, 2);
    h.submit(0, be_job(1, 2, 1000), 1000);
    h.submit(100, job(2, 1, 100), 100);
    h.run(100);
    assert!(h.actions_for(1).contains(&(
        100,
        Action::Preempt {
            job: JobId(1),
            mode: StopMode::Kill
        }
    )));
    assert_eq!(h.start_of(2), 100, "a kill frees the node at once");
    assert_eq!(h.start_of(1), 200);
    assert_eq!(h.end_of(1), 1200);
    assert_eq!(h.lost[&JobId(1)], vec![100]);
    assert_eq!(h.s.job(JobId(1)).unwrap().saved_progress_ms, 0);
}

#[test]
fn best_effort_waits_while_normal_jobs_use_the_nodes() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, job(1, 2, 100), 100);
    h.submit(0, be_job(2, 1, 50), 50);
    h.run_to(10);
    assert_eq!(reason(&h, 2), Some(WaitReason::BestEffortNoIdle));
    h.run(100);
    assert_eq!(h.start_of(2), 100);
}

#[test]
fn periodic_checkpoints_bound_the_work_lost_to_a_node_failure() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    let mut j = job(1, 1, 350);
    j.checkpointable = true;
    j.checkpoint_interval_ms = Some(100);
    h.submit(0, j, 350);
    let node = node_of(&mut h, 1);
    h.at(250, Event::NodeLost { node });
    h.run(100);
    let ckpts: Vec<u64> = h
        .actions_for(1)
        .iter()
        .filter(|(_, a)| matches!(a, Action::Checkpoint { .. }))
        .map(|(t, _)| *t)
        .collect();
    // Work 0-100, checkpoint 100-110, work to 210, checkpoint 210-220.
    assert_eq!(&ckpts[..2], &[100, 210]);
    assert!(
        h.actions_for(1)
            .contains(&(250, Action::Requeue { job: JobId(1) }))
    );
    // At 250 the job had worked 230 ms; the checkpoint at 210 saved 200.
    assert_eq!(h.lost[&JobId(1)], vec![30]);
    assert_eq!(h.start_of(1), 250, "resumes at once on the other node");
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!(v.preemptions, 1);
    assert!(v.saved_progress_ms >= 200);
    // 150 ms left after a 5 ms restore, plus one more checkpoint at 100 ms.
    assert_eq!(h.end_of(1), 250 + 5 + 150 + 10);
}

#[test]
fn announced_node_down_checkpoints_and_moves_the_job() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    let mut j = job(1, 1, 300);
    j.checkpointable = true;
    h.submit(0, j, 300);
    let node = node_of(&mut h, 1);
    let other = crate::NodeId(1 - node.0);
    h.at(100, Event::NodeDown { node });
    h.run(100);
    assert!(h.actions_for(1).contains(&(
        100,
        Action::Preempt {
            job: JobId(1),
            mode: StopMode::Checkpoint
        }
    )));
    assert!(h.actions_for(1).contains(&(
        110,
        Action::Start {
            job: JobId(1),
            placement: vec![(other, 1)],
            resume: true
        }
    )));
    assert_eq!(h.end_of(1), 110 + 5 + 200);
    assert_eq!(h.s.node(node).unwrap().status, crate::NodeStatus::Down);
    assert!(!h.lost.contains_key(&JobId(1)));
}

#[test]
fn a_failed_preemption_checkpoint_keeps_the_previous_progress() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 1);
    h.submit(0, be_job(1, 1, 500), 500);
    h.submit(100, job(2, 1, 50), 50);
    h.fail_next_checkpoint(JobId(1));
    h.run(100);
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!(v.preemptions, 1);
    assert_eq!(h.lost[&JobId(1)], vec![100]);
    assert_eq!(h.start_of(1), 160);
    assert!(h.actions_for(1).contains(&(
        160,
        Action::Start {
            job: JobId(1),
            placement: vec![(crate::NodeId(0), 1)],
            resume: false
        }
    )));
    assert_eq!(h.end_of(1), 660);
}

fn reservation(id: u64, vms: u32, start: u64, end: u64) -> JobRequest {
    let mut j = job(id, vms, end - start);
    j.class = crate::Class::Reservation {
        start: Time(start),
        end: Time(end),
    };
    j
}

#[test]
fn reservation_window_keeps_capacity_and_ends_with_a_kill() {
    let mut h = harness(Policy::Easy, 2);
    h.submit(0, reservation(1, 2, 100, 200), 500);
    h.submit(0, job(2, 2, 1000), 1000); // would overlap the window: waits
    h.submit(0, job(3, 1, 50), 50); // ends before the window: backfills
    h.submit(0, job(4, 1, 150), 150); // would hold a node at 100: no
    h.run_to(50);
    assert_eq!(reason(&h, 1), Some(WaitReason::Reservation));
    h.run(100);
    assert_eq!(h.start_of(1), 100);
    assert!(
        h.actions_for(1)
            .contains(&(200, Action::Kill { job: JobId(1) }))
    );
    assert_eq!(
        h.s.job_phase(JobId(1)),
        Some(JobPhase::Done {
            outcome: crate::Outcome::WindowEnded
        })
    );
    assert_eq!(h.start_of(3), 0);
    // Job 4 would have held a node at 100; after the window, job 2 (ahead
    // of it in the queue) takes both nodes.
    assert_eq!(h.start_of(2), 200);
    assert_eq!(h.start_of(4), 1200);
}

#[test]
fn best_effort_leaves_a_reservation_s_nodes_in_time() {
    // The best-effort job holds both nodes; the reservation needs one at
    // 100. Checkpointing takes 10 ms, so it is preempted at 90.
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, be_job(1, 2, 1000), 1000);
    h.submit(0, reservation(2, 1, 100, 200), 1000);
    h.run(100);
    assert!(h.actions_for(1).contains(&(
        90,
        Action::Preempt {
            job: JobId(1),
            mode: StopMode::Checkpoint
        }
    )));
    assert_eq!(h.start_of(2), 100);
}

// ----- brokers -----

fn two_domains(reclaim: crate::ReclaimPolicy) -> Harness {
    let broker = crate::BrokerConfig {
        interval_ms: 100,
        lend_fraction: 0.5,
        lend: true,
        borrow: true,
        reclaim,
    };
    let mut cfg = Config::with_policy(Policy::Easy);
    cfg.domains = vec![
        crate::DomainConfig {
            name: "a".into(),
            broker: Some(broker.clone()),
        },
        crate::DomainConfig {
            name: "b".into(),
            broker: Some(broker),
        },
    ];
    let mut h = Harness::new(cfg);
    h.costs.loan_boot_ms = 10;
    h.costs.loan_halt_ms = 5;
    h.nodes_in(0, 0, 2, 1); // a: nodes 0, 1
    h.nodes_in(1, 2, 4, 1); // b: nodes 2..5
    // a is overloaded: job 1 fills it, jobs 2 and 3 wait (d = 4, n = 2).
    h.submit(0, job(1, 2, 1000), 1000);
    h.submit(0, job(2, 2, 300), 300);
    h.submit(0, job(3, 2, 300), 300);
    h
}

fn in_domain(mut j: JobRequest, d: u16) -> JobRequest {
    j.domain = crate::DomainId(d);
    j
}

fn loans(h: &Harness) -> Vec<(u64, Action)> {
    h.log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Lend { .. } | Action::Reclaim { .. }))
        .map(|(t, a)| (t.0, a.clone()))
        .collect()
}

fn lend(node: u32) -> Action {
    Action::Lend {
        node: crate::NodeId(node),
        from: crate::DomainId(1),
        to: crate::DomainId(0),
    }
}

fn reclaim(node: u32, why: crate::LoanEnd) -> Action {
    Action::Reclaim {
        node: crate::NodeId(node),
        owner: crate::DomainId(1),
        borrower: crate::DomainId(0),
        why,
    }
}

#[test]
fn broker_borrows_half_the_idle_nodes_and_returns_them_when_done() {
    let mut h = two_domains(crate::ReclaimPolicy::Immediate);
    h.run_to(1000);
    // At 100: a needs 2, b (idle, 4 nodes) lends min(4/2, 2) = 2.
    // Job 2 runs on the borrowed pair from 110 (after their boot), job 3
    // follows at 410. At 800 a needs nothing and returns the idle pair.
    assert_eq!(h.start_of(2), 110);
    assert_eq!(
        h.s.job(JobId(2)).map(|v| v.nodes).unwrap_or_default(),
        Vec::new(),
        "done jobs hold no nodes"
    );
    assert_eq!(h.start_of(3), 410);
    assert_eq!(
        loans(&h),
        vec![
            (100, lend(5)),
            (100, lend(4)),
            (800, reclaim(4, crate::LoanEnd::Returned)),
            (800, reclaim(5, crate::LoanEnd::Returned)),
        ]
    );
    let a = h.s.domain(crate::DomainId(0)).unwrap();
    let b = h.s.domain(crate::DomainId(1)).unwrap();
    assert_eq!((a.borrowed, b.lent, b.loans_made), (0, 0, 2));
    assert_eq!(
        h.s.node(crate::NodeId(5)).unwrap().serving,
        crate::DomainId(1)
    );
}

#[test]
fn immediate_reclaim_preempts_the_borrower() {
    let mut h = two_domains(crate::ReclaimPolicy::Immediate);
    // b needs its nodes back: a 4-VM job at 150 (d = 4 > 4 - 2 lent).
    h.submit(150, in_domain(job(4, 4, 100), 1), 100);
    h.run_to(700);
    assert!(h.actions_for(2).contains(&(
        200,
        Action::Preempt {
            job: JobId(2),
            mode: StopMode::Kill
        }
    )));
    let l = loans(&h);
    assert!(l.contains(&(200, reclaim(5, crate::LoanEnd::Reclaimed))));
    assert!(l.contains(&(200, reclaim(4, crate::LoanEnd::Reclaimed))));
    assert_eq!(h.start_of(4), 205, "after the borrower's VMs halted");
    assert_eq!(h.s.job(JobId(2)).unwrap().preemptions, 1);
    assert_eq!(h.lost[&JobId(2)], vec![90]);
}

#[test]
fn lease_reclaim_ends_loans_after_the_period() {
    let mut h = two_domains(crate::ReclaimPolicy::Lease { period_ms: 250 });
    h.run_to(500);
    let l = loans(&h);
    assert!(l.contains(&(350, reclaim(5, crate::LoanEnd::LeaseExpired))));
    assert!(l.contains(&(350, reclaim(4, crate::LoanEnd::LeaseExpired))));
    assert!(h.actions_for(2).contains(&(
        350,
        Action::Preempt {
            job: JobId(2),
            mode: StopMode::Kill
        }
    )));
}

#[test]
fn gradual_reclaim_takes_one_node_per_period() {
    let mut h = two_domains(crate::ReclaimPolicy::Gradual { every_ms: 50 });
    h.submit(150, in_domain(job(4, 4, 100), 1), 100);
    h.run_to(400);
    let reclaims: Vec<u64> = loans(&h)
        .iter()
        .filter(|(_, a)| matches!(a, Action::Reclaim { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(reclaims, vec![200, 250]);
    assert_eq!(h.start_of(4), 255);
}

#[test]
fn lend_fraction_caps_the_total_on_loan() {
    let mut h = two_domains(crate::ReclaimPolicy::Immediate);
    // Keep a hungry: many one-VM jobs that run long on borrowed nodes.
    for id in 10..20 {
        h.submit(0, job(id, 1, 10_000), 10_000);
    }
    h.run_to(1_000);
    let lends = loans(&h)
        .iter()
        .filter(|(_, a)| matches!(a, Action::Lend { .. }))
        .count();
    // b has 4 idle nodes: at most half of them may be out at any time,
    // however many rounds the brokers run.
    assert_eq!(lends, 2);
    assert_eq!(h.s.domain(crate::DomainId(1)).unwrap().lent, 2);
}

#[test]
fn an_old_lease_does_not_end_a_new_loan_of_the_same_node() {
    let mut h = two_domains(crate::ReclaimPolicy::Lease { period_ms: 1_000 });
    // Lent at 100, returned idle at 800; lent again at 900 for new work.
    h.submit(850, job(4, 2, 300), 300);
    h.submit(850, job(5, 2, 300), 300);
    h.run_to(1_500);
    let l = loans(&h);
    assert!(l.contains(&(900, lend(5))), "{l:?}");
    assert!(
        !l.iter()
            .any(|(t, a)| *t == 1_100 && matches!(a, Action::Reclaim { .. })),
        "the first loan's lease (ending at 1100) must not end the second: {l:?}"
    );
    assert_eq!(h.start_of(4), 910);
    assert_eq!(h.end_of(4), 1_210);
}

#[test]
fn a_lost_job_keeps_its_place_and_resumes_from_its_checkpoint() {
    // One node. A checkpoints every 100 ms of work (at 100 and 210); its
    // VMs die at 250 while the node lives on. B arrived after A, so A
    // goes first again, from the 200 ms its last checkpoint saved.
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 1);
    let mut a = job(1, 1, 350);
    a.checkpointable = true;
    a.checkpoint_interval_ms = Some(100);
    h.submit(0, a, 350);
    h.submit(10, job(2, 1, 50), 50);
    h.at(250, Event::JobLost { job: JobId(1) });
    h.run_to(20);
    // Only a running job can be lost.
    let refused = h.s.handle(Time(20), Event::JobLost { job: JobId(2) });
    assert!(matches!(refused, Err(crate::Rejected::WrongState { .. })));
    h.run(100);
    let after: Vec<Action> = h
        .actions_for(1)
        .into_iter()
        .filter(|(t, _)| *t >= 250)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        after.first(),
        Some(&Action::Start {
            job: JobId(1),
            placement: vec![(crate::NodeId(0), 1)],
            resume: true
        }),
        "no Requeue action: the driver reported the loss itself"
    );
    assert_eq!(h.start_of(1), 250);
    assert_eq!(h.lost[&JobId(1)], vec![30]);
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!(v.preemptions, 1);
    assert_eq!(v.saved_progress_ms, 300);
    // 150 ms left after a 5 ms restore, one checkpoint on the way.
    assert_eq!(h.end_of(1), 250 + 5 + 150 + 10);
    assert_eq!(h.start_of(2), h.end_of(1), "B stayed behind A");
}

fn movable(id: u64, walltime: u64) -> JobRequest {
    let mut j = job(id, 1, walltime);
    j.checkpointable = true;
    j
}

#[test]
fn move_checkpoints_the_job_and_resumes_it_on_the_target() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 3);
    h.submit(0, movable(1, 300), 300);
    let from = node_of(&mut h, 1);
    let to = crate::NodeId((from.0 + 2) % 3);
    h.at(
        100,
        Event::Move {
            job: JobId(1),
            to: Some(to),
        },
    );
    h.run(100);
    assert!(h.actions_for(1).contains(&(
        100,
        Action::Preempt {
            job: JobId(1),
            mode: StopMode::Checkpoint
        }
    )));
    assert!(h.actions_for(1).contains(&(
        110,
        Action::Start {
            job: JobId(1),
            placement: vec![(to, 1)],
            resume: true
        }
    )));
    assert_eq!(h.end_of(1), 110 + 5 + 200);
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!((v.preemptions, v.saved_progress_ms), (1, 100));
    assert!(!h.lost.contains_key(&JobId(1)));
}

#[test]
fn move_without_a_target_leaves_the_node() {
    // Two free nodes; after the move the job must not go back to the one
    // it left, although best fit alone could pick it.
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, movable(1, 300), 300);
    let from = node_of(&mut h, 1);
    h.at(
        50,
        Event::Move {
            job: JobId(1),
            to: None,
        },
    );
    h.run(100);
    let starts: Vec<(u64, Vec<(crate::NodeId, u32)>)> = h
        .actions_for(1)
        .into_iter()
        .filter_map(|(t, a)| match a {
            Action::Start { placement, .. } => Some((t, placement)),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1].0, 60);
    assert_eq!(starts[1].1, vec![(crate::NodeId(1 - from.0), 1)]);
}

#[test]
fn a_moved_waiting_job_waits_for_its_target() {
    // A runs on one node until 100; B, waiting, is moved to A's node: it
    // waits there although the other node is free.
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, job(1, 1, 100), 100);
    let target = node_of(&mut h, 1);
    let mut b = job(2, 1, 50);
    b.priority = 1;
    h.submit(10, b, 50);
    h.at(10, Event::Hold { job: JobId(2) });
    h.at(
        20,
        Event::Move {
            job: JobId(2),
            to: Some(target),
        },
    );
    h.at(30, Event::Release { job: JobId(2) });
    h.run_to(40);
    assert_eq!(reason(&h, 2), Some(WaitReason::Resources));
    h.run(100);
    assert_eq!(h.start_of(2), 100);
    assert!(h.actions_for(2).contains(&(
        100,
        Action::Start {
            job: JobId(2),
            placement: vec![(target, 1)],
            resume: false
        }
    )));
    // Moving to a node the core does not know is refused.
    let mut s = crate::Scheduler::new(Config::default());
    let _ = s.handle(Time(0), Event::Submit(job(1, 1, 10)));
    let refused = s.handle(
        Time(0),
        Event::Move {
            job: JobId(1),
            to: Some(crate::NodeId(9)),
        },
    );
    assert_eq!(refused, Err(crate::Rejected::UnknownNode(crate::NodeId(9))));
}

#[test]
fn a_job_that_cannot_be_checkpointed_is_not_moved() {
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, job(1, 1, 300), 300);
    h.run_to(50);
    let refused = h.s.handle(
        Time(50),
        Event::Move {
            job: JobId(1),
            to: None,
        },
    );
    assert!(matches!(refused, Err(crate::Rejected::InvalidJob { .. })));
    assert_eq!(h.s.job_phase(JobId(1)), Some(JobPhase::Running));
    // In kill mode no checkpoint exists to move with either.
    let mut h = ckpt_harness(PreemptionMode::Kill, 2);
    h.submit(0, movable(1, 300), 300);
    h.run_to(50);
    let refused = h.s.handle(
        Time(50),
        Event::Move {
            job: JobId(1),
            to: None,
        },
    );
    assert!(matches!(refused, Err(crate::Rejected::InvalidJob { .. })));
}

#[test]
fn a_user_checkpoint_becomes_saved_progress() {
    // At 100 a user's checkpoint ends after pausing the job for 10 ms: it
    // saved 90 ms of work and the job ends 10 ms later. The node is lost
    // at 200: the job resumes from 90 elsewhere, losing 100.
    let mut h = ckpt_harness(PreemptionMode::Checkpoint, 2);
    h.submit(0, movable(1, 300), 300);
    let node = node_of(&mut h, 1);
    h.at(
        100,
        Event::CheckpointTaken {
            job: JobId(1),
            paused_ms: 10,
        },
    );
    h.at(200, Event::NodeLost { node });
    h.run_to(100);
    let v = h.s.job(JobId(1)).unwrap();
    assert_eq!(v.saved_progress_ms, 90);
    assert!(v.has_checkpoint);
    assert_eq!(v.expected_end, Some(Time(310)));
    h.run(100);
    assert_eq!(h.start_of(1), 200);
    assert_eq!(h.lost[&JobId(1)], vec![100]);
    assert_eq!(h.end_of(1), 200 + 5 + 210);
    // Only a job with running VMs can have been checkpointed.
    let refused = h.s.handle(
        Time(500),
        Event::CheckpointTaken {
            job: JobId(1),
            paused_ms: 0,
        },
    );
    assert!(refused.is_err());
}

#[test]
fn among_equal_nodes_one_that_holds_the_image_is_chosen() {
    let mut h = harness(Policy::Easy, 3);
    let holder = crate::NodeId(2);
    h.at(
        0,
        Event::NodeImages {
            node: holder,
            images: ["tiny".to_string()].into(),
        },
    );
    let mut j = job(1, 1, 100);
    j.image = Some("tiny".into());
    h.submit(0, j, 100);
    h.run_to(1);
    let started = h.log.iter().find_map(|(_, a)| match a {
        Action::Start { job, placement, .. } if job.0 == 1 => Some(placement.clone()),
        _ => None,
    });
    assert_eq!(started, Some(vec![(holder, 1)]));
    // Another image: no node is preferred, any may take it.
    let mut other = job(2, 1, 100);
    other.image = Some("other".into());
    h.submit(1, other, 100);
    h.run_to(2);
    assert!(
        h.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Start { job, .. } if job.0 == 2))
    );
    // An unknown node is refused.
    assert!(
        h.s.handle(
            Time(2),
            Event::NodeImages {
                node: crate::NodeId(99),
                images: Default::default(),
            },
        )
        .is_err()
    );
}
