//! Properties of the job book under random commands and agent reports:
//! no illegal change of a job's state ever, every round's changes fit the
//! database, and a book rebuilt from the database equals the live one.

use proptest::prelude::*;
use vgrid_api::types::AgentEvent;

use super::harness::Harness;

/// One thing that happens.
#[derive(Debug, Clone)]
enum Op {
    Submit {
        user: usize,
        kind: u8,
        cpus: u8,
    },
    Cancel(usize),
    Hold(usize),
    Release(usize),
    Suspend(usize),
    Resume(usize),
    Checkpoint(usize),
    Migrate {
        job: usize,
        to: Option<usize>,
    },
    Register(usize),
    /// A node's agent reports on one of its units.
    Event {
        node: usize,
        unit: usize,
        what: u8,
    },
    /// A report that is wrong on purpose (a checkpoint never asked for, a
    /// stale attempt).
    Bogus {
        node: usize,
        job: usize,
        what: u8,
    },
    Advance(u16),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..3u8, 1..3u8).prop_map(|(user, kind, cpus)| Op::Submit { user, kind, cpus }),
        1 => (0..16usize).prop_map(Op::Cancel),
        1 => (0..16usize).prop_map(Op::Hold),
        1 => (0..16usize).prop_map(Op::Release),
        1 => (0..16usize).prop_map(Op::Suspend),
        1 => (0..16usize).prop_map(Op::Resume),
        1 => (0..16usize).prop_map(Op::Checkpoint),
        1 => (0..16usize, proptest::option::of(0..3usize)).prop_map(|(job, to)| Op::Migrate { job, to }),
        2 => (0..3usize).prop_map(Op::Register),
        8 => (0..3usize, 0..4usize, 0..9u8).prop_map(|(node, unit, what)| Op::Event { node, unit, what }),
        1 => (0..3usize, 0..16usize, 0..3u8).prop_map(|(node, job, what)| Op::Bogus { node, job, what }),
        3 => (0..20_000u16).prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// A manifest the harness's store holds.
const MANIFEST: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn job_text(kind: u8, cpus: u8) -> String {
    let class = match kind {
        0 => "class = \"normal\"\n",
        1 => "class = \"best-effort\"\ncheckpoint_interval_s = 5\n",
        _ => "class = \"normal\"\ncheckpoint_interval_s = 7\n",
    };
    format!("image = \"tiny\"\ncommand = [\"/bin/true\"]\ncpus = {cpus}\nmemory_mb = 256\n{class}")
}

fn apply(h: &mut Harness, op: Op) {
    let ids: Vec<u64> = h.book.jobs().map(|j| j.rec.id).collect();
    let job = |i: usize| ids.get(i % ids.len().max(1)).copied().unwrap_or(1);
    let owner_of = |h: &Harness, id: u64| {
        let owner = h.book.job(id).map(|j| j.rec.owner);
        h.users
            .iter()
            .find(|u| Some(u.user_id) == owner)
            .cloned()
            .unwrap_or_else(|| h.admin.clone())
    };
    match op {
        Op::Submit { user, kind, cpus } => {
            let _ = h.submit(user, &job_text(kind, cpus));
        }
        Op::Cancel(i)
        | Op::Hold(i)
        | Op::Release(i)
        | Op::Suspend(i)
        | Op::Resume(i)
        | Op::Checkpoint(i) => {
            let id = job(i);
            let p = owner_of(h, id);
            let _ = h.call(|b, now| match op {
                Op::Cancel(_) => b.cancel(now, &p, id),
                Op::Hold(_) => b.hold(now, &p, id),
                Op::Release(_) => b.release(now, &p, id),
                Op::Suspend(_) => b.suspend_resume(&p, id, true),
                Op::Resume(_) => b.suspend_resume(&p, id, false),
                _ => b.user_checkpoint(now, &p, id),
            });
        }
        Op::Migrate { job: i, to } => {
            let id = job(i);
            let p = owner_of(h, id);
            let to = to.map(|n| NODES[n].to_string());
            let _ = h.call(|b, now| b.migrate(now, &p, id, to));
        }
        Op::Register(n) => h.register(NODES[n], 2),
        Op::Event { node, unit, what } => {
            let name = NODES[node];
            let Some(n) = h.nodes.get(name) else { return };
            if !n.connected {
                return;
            }
            let Some((&(job, attempt), u)) = n.units.iter().nth(unit % n.units.len().max(1)) else {
                return;
            };
            let first = u.checkpoints.first().copied();
            let event = match (what, first) {
                (0, _) => AgentEvent::Booting { job, attempt },
                (1 | 2, _) => AgentEvent::Running {
                    job,
                    attempt,
                    vm: None,
                    restore_ms: None,
                },
                (3, Some((seq, stopped))) | (4, Some((seq, stopped))) => AgentEvent::Checkpointed {
                    // Half of them in the store.
                    manifest: (what == 4).then(|| MANIFEST.to_string()),
                    job,
                    attempt,
                    seq,
                    location: String::new(),
                    work_ms: 10,
                    log_offset: 0,
                    stopped,
                    paused_ms: 1,
                    took_ms: None,
                    sent_bytes: None,
                },
                (5, Some((seq, stopped))) => AgentEvent::CheckpointFailed {
                    job,
                    attempt,
                    seq,
                    reason: "no room".into(),
                    stopped,
                },
                (6, _) => AgentEvent::Exited {
                    job,
                    attempt,
                    exit_code: i32::from(attempt % 2 == 0),
                    outputs: None,
                },
                (7, _) => AgentEvent::Failed {
                    job,
                    attempt,
                    reason: "the VM crashed".into(),
                },
                (8, _) => AgentEvent::RestoreFailed {
                    job,
                    attempt,
                    seq: h
                        .book
                        .job(job)
                        .and_then(|j| j.last_checkpoint())
                        .map_or(1, |c| c.seq),
                    reason: "a chunk is missing".into(),
                },
                (_, _) => AgentEvent::Suspended { job, attempt },
            };
            if matches!(
                event,
                AgentEvent::Checkpointed { .. } | AgentEvent::CheckpointFailed { .. }
            ) && let Some(u) = h
                .nodes
                .get_mut(name)
                .and_then(|n| n.units.get_mut(&(job, attempt)))
            {
                let (_, stop) = u.checkpoints.remove(0);
                if stop && let Some(n) = h.nodes.get_mut(name) {
                    n.units.remove(&(job, attempt));
                }
            }
            h.report(name, event).expect("a true report is taken");
        }
        Op::Bogus { node, job: i, what } => {
            let name = NODES[node];
            if !h.nodes.get(name).is_some_and(|n| n.connected) {
                return;
            }
            let id = job(i);
            let attempt = h.book.job(id).map_or(1, |j| j.dispatch.attempt);
            let event = match what {
                0 => AgentEvent::Checkpointed {
                    manifest: None,
                    job: id,
                    attempt,
                    seq: 1_000_000,
                    location: "/elsewhere".into(),
                    work_ms: 1,
                    log_offset: 0,
                    stopped: true,
                    paused_ms: 0,
                    took_ms: None,
                    sent_bytes: None,
                },
                1 => AgentEvent::Exited {
                    job: id,
                    attempt: attempt + 7,
                    exit_code: 0,
                    outputs: None,
                },
                _ => AgentEvent::Running {
                    job: id,
                    attempt: attempt + 3,
                    vm: None,
                    restore_ms: None,
                },
            };
            // Refused or ignored: either way nothing changes illegally.
            let _ = h.report(name, event);
        }
        Op::Advance(ms) => h.advance(u64::from(ms)),
        Op::Restart => h.restart(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_and_reports_keep_the_lifecycle_and_the_database_in_step(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let mut h = Harness::new();
        h.manifests.insert(MANIFEST.into());
        h.register("n1", 2);
        for op in ops {
            apply(&mut h, op);
            prop_assert_eq!(h.book.illegal_transitions(), 0);
        }
        h.restart();
    }
}

#[test]
fn a_job_runs_is_preempted_resumes_and_survives_restarts() {
    let mut h = Harness::new();
    h.register("n1", 2);
    let be = match h.submit(0, &job_text(1, 2)) {
        Ok(vgrid_server::Reply::Submitted { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    h.advance(10);
    let attempt = h.book.job(be).expect("job").dispatch.attempt;
    assert_eq!(attempt, 1);
    h.report(
        "n1",
        AgentEvent::Running {
            job: be,
            attempt,
            vm: None,
            restore_ms: None,
        },
    )
    .expect("running");
    h.restart();
    h.register("n1", 2);
    // A normal job needs the node: the best-effort one is checkpointed.
    let normal = match h.submit(1, &job_text(0, 2)) {
        Ok(vgrid_server::Reply::Submitted { id, .. }) => id,
        other => panic!("{other:?}"),
    };
    h.advance(10);
    let (seq, stop) = h.nodes["n1"].units[&(be, attempt)].checkpoints[0];
    assert!(stop, "a preemption stops the VMs");
    h.manifests.insert(MANIFEST.into());
    h.report(
        "n1",
        AgentEvent::Checkpointed {
            manifest: Some(MANIFEST.into()),
            job: be,
            attempt,
            seq,
            location: "/not/used".into(),
            work_ms: 100,
            log_offset: 0,
            stopped: true,
            paused_ms: 2,
            took_ms: None,
            sent_bytes: None,
        },
    )
    .expect("saved");
    h.restart();
    h.register("n1", 2);
    h.advance(10);
    let n = h.book.job(normal).expect("normal").dispatch.attempt;
    h.report(
        "n1",
        AgentEvent::Running {
            job: normal,
            attempt: n,
            vm: None,
            restore_ms: None,
        },
    )
    .expect("runs");
    h.report(
        "n1",
        AgentEvent::Exited {
            job: normal,
            attempt: n,
            exit_code: 0,
            outputs: None,
        },
    )
    .expect("ends");
    h.advance(10);
    let job = h.book.job(be).expect("be");
    assert_eq!(job.dispatch.attempt, 2, "resumed");
    assert!(job.dispatch.restoring);
    let c = job.last_checkpoint().expect("checkpoint");
    assert_eq!(c.location, format!("{be}/{seq}"), "named by the book");
    assert_eq!(c.manifest.as_deref(), Some(MANIFEST));
    h.restart();
    assert_eq!(h.book.illegal_transitions(), 0);

    // Its restore fails: it is tried again from the same checkpoint...
    let failed = |h: &mut Harness| {
        h.register("n1", 2);
        h.advance(10);
        let job = h.book.job(be).expect("be");
        let attempt = job.dispatch.attempt;
        let restoring = job.dispatch.restoring;
        h.report(
            "n1",
            AgentEvent::RestoreFailed {
                job: be,
                attempt,
                seq,
                reason: "a chunk is missing".into(),
            },
        )
        .expect("taken");
        // Requeued (and maybe placed again in the same round), not failed.
        let history = h.store.read().history(be).expect("history");
        let requeued = history
            .iter()
            .rev()
            .find(|e| e.state == vgrid_model::JobState::Preempted)
            .expect("requeued");
        assert!(!h.book.job(be).expect("be").rec.state.is_terminal());
        (restoring, requeued.reason.clone())
    };
    let (restoring, why) = failed(&mut h);
    assert!(restoring);
    assert!(why.contains("tried again"), "{why}");
    h.restart();
    // ...and given up after the second failure: with no checkpoint
    // before it, the job starts again from the beginning, not failed.
    let (restoring, why) = failed(&mut h);
    assert!(restoring, "the second try restores the same checkpoint");
    assert!(
        why.contains("given up") && why.contains("beginning"),
        "{why}"
    );
    h.restart();
    h.register("n1", 2);
    h.advance(10);
    let job = h.book.job(be).expect("be");
    assert!(!job.dispatch.restoring, "a fresh start");
    assert!(job.last_checkpoint().is_none());
    let listed = h.store.read().checkpoints(be).expect("read");
    assert_eq!(listed.len(), 1, "the given-up checkpoint stays listed");
    assert!(!listed[0].1, "but is not restorable");
    assert_eq!(h.book.illegal_transitions(), 0);
}
