//! Agents' protocol: starts, checkpoints, preemption, lost VMs and nodes,
//! moves, restarts of the controller.

use vgrid_api::types::{AgentAction, AgentEvent, Role, RunningJob};
use vgrid_client::Client;
use vgrid_model::JobState;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_job_is_checkpointed_for_a_normal_job_and_resumes_from_it() {
    let (cluster, alice, mut agent) = one_node(10_000, 2).await;
    let be = alice
        .submit(
            "be.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nclass = \"best-effort\"\n",
            false,
        )
        .await
        .expect("best-effort submitted");
    let attempt = run_next(&mut agent, &alice, be).await;

    let normal = alice
        .submit("n.toml", JOB, false)
        .await
        .expect("normal submitted");
    let AgentAction::Checkpoint {
        job,
        seq,
        stop: true,
        ..
    } = agent.next_action().await
    else {
        panic!("expected a preemption checkpoint");
    };
    assert_eq!((job, seq), (be, 1));
    wait_state(&alice, be, JobState::Checkpointing).await;
    agent
        .report(AgentEvent::Checkpointed {
            manifest: None,
            job: be,
            attempt,
            seq,
            location: "/ckpt/1".into(),
            work_ms: 5_000,
            log_offset: 42,
            stopped: true,
            paused_ms: 0,
            took_ms: None,
            sent_bytes: None,
        })
        .await;
    let AgentAction::Start {
        job, attempt: a2, ..
    } = agent.next_action().await
    else {
        panic!("expected the normal job to start");
    };
    assert_eq!(job, normal);
    let be_now = alice.job(be).await.expect("show");
    assert_eq!(be_now.job.state, JobState::Preempted);
    assert_eq!(be_now.checkpoints.len(), 1);
    run_to_end(&agent, normal, a2).await;
    // The node is idle again: the best-effort job resumes from its checkpoint.
    let AgentAction::Start {
        job,
        attempt: a3,
        restore,
        ..
    } = agent.next_action().await
    else {
        panic!("expected the best-effort job to resume");
    };
    assert_eq!(job, be);
    assert_eq!(a3, attempt + 1);
    let restore = restore.expect("resumes from a checkpoint");
    assert_eq!(
        (restore.seq, restore.location, restore.log_offset),
        (1, ckpt_at(&cluster, be, 1), 42)
    );
    assert_eq!(
        alice.job(normal).await.expect("show").job.state,
        JobState::Done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_lost_and_its_job_resumes_on_another_from_its_checkpoint() {
    let (cluster, alice, mut n1) = one_node(600, 2).await;
    let id = alice
        .submit(
            "be.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nclass = \"best-effort\"\ncheckpoint_interval_s = 1\n",
            false,
        )
        .await
        .expect("submitted");
    let AgentAction::Start { attempt, .. } = n1.next_action().await else {
        panic!("expected a start");
    };
    n1.report(AgentEvent::Running {
        job: id,
        attempt,
        vm: None,
        restore_ms: None,
    })
    .await;
    // A periodic checkpoint after one second of work.
    let AgentAction::Checkpoint {
        seq, stop: false, ..
    } = n1.next_action().await
    else {
        panic!("expected a periodic checkpoint");
    };
    n1.report(AgentEvent::Checkpointed {
        manifest: None,
        job: id,
        attempt,
        seq,
        location: "/ckpt/a".into(),
        work_ms: 1_000,
        log_offset: 7,
        stopped: false,
        paused_ms: 0,
        took_ms: None,
        sent_bytes: None,
    })
    .await;
    wait_state(&alice, id, JobState::Running).await;
    // n1 goes silent (SIGKILLed); a second node comes up.
    drop(n1);
    let mut n2 = cluster.node("n2", 2).await;
    let AgentAction::Start { job, restore, .. } = n2.next_action().await else {
        panic!("expected the job to start on n2");
    };
    assert_eq!(job, id);
    let restore = restore.expect("resumes from its checkpoint");
    assert_eq!(
        (restore.location, restore.log_offset),
        (ckpt_at(&cluster, id, 1), 7)
    );
    let nodes = alice.nodes().await.expect("nodes");
    let n1_state = nodes
        .iter()
        .find(|n| n.name == "n1")
        .map(|n| n.state.clone());
    assert_eq!(n1_state.as_deref(), Some("lost"));
    let history = alice.job(id).await.expect("show").history;
    assert!(
        history
            .iter()
            .any(|e| e.state == JobState::Preempted && e.reason.contains("node was lost")),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_every_job_and_reattaches_running_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_token, agent_token, running_id, ids) = {
        let mut h = Harness::start(dir.path(), 10_000).await;
        let alice_added = h.admin.add_user("alice", Role::User).await.expect("alice");
        let agent_added = h.admin.add_user("n1", Role::Agent).await.expect("agent");
        let alice = Client::new(&h.url, &alice_added.token).expect("client");
        let agent_client = Client::new(&h.url, &agent_added.token).expect("client");
        let mut agent = FakeAgent::register(agent_client, "n1", 2, vec![]).await;
        let first = alice.submit("a.toml", JOB, false).await.expect("submitted");
        let AgentAction::Start { attempt, .. } = agent.next_action().await else {
            panic!("expected a start");
        };
        report_running(&agent, &alice, first, attempt).await;
        // Many concurrent submissions, all acknowledged.
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let alice = alice.clone();
            tasks.push(tokio::spawn(async move {
                alice.submit("b.toml", JOB, false).await
            }));
        }
        let mut ids = vec![first];
        for t in tasks {
            ids.push(t.await.expect("join").expect("acknowledged"));
        }
        h.stop();
        (alice_added.token, agent_added.token, first, ids)
    };
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = Client::new(&h.url, &alice_token).expect("tokens survive a restart");
    let mut listed: Vec<u64> = alice
        .jobs(false)
        .await
        .expect("ps")
        .iter()
        .map(|j| j.id)
        .collect();
    listed.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(listed, expected, "every acknowledged job is still there");
    assert_eq!(
        alice.job(running_id).await.expect("show").job.state,
        JobState::Running
    );
    // The agent comes back still running the job: it is reattached, not
    // restarted (no new start for it), and the next job waits for room.
    let agent_client = Client::new(&h.url, &agent_token).expect("client");
    let mut agent = FakeAgent::register(
        agent_client,
        "n1",
        2,
        vec![RunningJob {
            job: running_id,
            attempt: 1,
        }],
    )
    .await;
    agent
        .report(AgentEvent::Exited {
            job: running_id,
            attempt: 1,
            exit_code: 0,
            outputs: None,
        })
        .await;
    wait_state(&alice, running_id, JobState::Done).await;
    let AgentAction::Start { job, attempt, .. } = agent.next_action().await else {
        panic!("expected the next job to start");
    };
    assert_ne!(job, running_id, "the reattached job was not started again");
    assert_eq!(attempt, 1);
    let history = alice.job(running_id).await.expect("show").history;
    let starts = history
        .iter()
        .filter(|e| e.state == JobState::Staging)
        .count();
    assert_eq!(starts, 1, "started exactly once: {history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_checkpoint_in_flight_does_not_end_a_preemption() {
    let (_cluster, alice, mut agent) = one_node(10_000, 2).await;
    let be = alice
        .submit(
            "be.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\nclass = \"best-effort\"\ncheckpoint_interval_s = 1\n",
            false,
        )
        .await
        .expect("submitted");
    let AgentAction::Start { attempt, .. } = agent.next_action().await else {
        panic!("expected a start");
    };
    agent
        .report(AgentEvent::Running {
            job: be,
            attempt,
            vm: None,
            restore_ms: None,
        })
        .await;
    let AgentAction::Checkpoint {
        seq: periodic,
        stop: false,
        ..
    } = agent.next_action().await
    else {
        panic!("expected a periodic checkpoint");
    };
    // While it is in flight, a normal job needs the node.
    let normal = alice.submit("n.toml", JOB, false).await.expect("submitted");
    let AgentAction::Checkpoint {
        seq: preempt,
        stop: true,
        ..
    } = agent.next_action().await
    else {
        panic!("expected the preemption's checkpoint");
    };
    assert!(preempt > periodic);
    let saved = |seq, stopped| AgentEvent::Checkpointed {
        manifest: None,
        job: be,
        attempt,
        seq,
        location: format!("/ckpt/{seq}"),
        work_ms: 1_000,
        log_offset: 0,
        stopped,
        paused_ms: 0,
        took_ms: None,
        sent_bytes: None,
    };
    agent.report(saved(periodic, false)).await;
    // The periodic checkpoint ended, but the VM still runs: the node is not
    // free and the job still waits for its preemption checkpoint.
    let nodes = alice.nodes().await.expect("nodes");
    assert!(nodes[0].jobs.contains(&be), "the node was freed too early");
    assert_eq!(
        alice.job(normal).await.expect("show").job.state,
        JobState::Pending
    );
    assert_eq!(
        alice.job(be).await.expect("show").job.state,
        JobState::Checkpointing
    );
    agent.report(saved(preempt, true)).await;
    let AgentAction::Start { job, .. } = agent.next_action().await else {
        panic!("expected the normal job to start");
    };
    assert_eq!(job, normal);
    let be_now = alice.job(be).await.expect("show");
    assert_eq!(be_now.job.state, JobState::Preempted);
    assert_eq!(be_now.checkpoints.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_vm_dies_resumes_from_its_checkpoint_and_one_without_fails() {
    let (cluster, alice, mut agent) = one_node(10_000, 2).await;
    let id = alice
        .submit(
            "c.toml",
            "image = \"tiny\"\ncommand = [\"/bin/count\"]\ncpus = 2\n",
            false,
        )
        .await
        .expect("submitted");
    let attempt = run_next(&mut agent, &alice, id).await;
    alice.control(id, "checkpoint").await.expect("checkpoint");
    let AgentAction::Checkpoint { seq, .. } = agent.next_action().await else {
        panic!("expected a checkpoint");
    };
    agent
        .report(AgentEvent::Checkpointed {
            manifest: None,
            job: id,
            attempt,
            seq,
            location: "/ckpt/c".into(),
            work_ms: 500,
            log_offset: 9,
            stopped: false,
            paused_ms: 0,
            took_ms: None,
            sent_bytes: None,
        })
        .await;
    wait_state(&alice, id, JobState::Running).await;
    // QEMU dies under the job; the node lives on.
    agent
        .report(AgentEvent::Failed {
            job: id,
            attempt,
            reason: "the VM crashed".into(),
        })
        .await;
    let AgentAction::Start {
        job,
        attempt: again,
        restore,
        ..
    } = agent.next_action().await
    else {
        panic!("expected the job to start again");
    };
    assert_eq!((job, again), (id, attempt + 1));
    let restore = restore.expect("from its checkpoint");
    assert_eq!(
        (restore.location, restore.log_offset),
        (ckpt_at(&cluster, id, 1), 9)
    );
    let history = alice.job(id).await.expect("show").history;
    assert!(
        history
            .iter()
            .any(|e| e.state == JobState::Preempted && e.reason.contains("the VM crashed")),
        "{history:?}"
    );
    // Without a checkpoint there is nothing to resume: the job fails.
    run_to_end(&agent, id, again).await;
    let plain = alice.submit("p.toml", JOB, false).await.expect("submitted");
    let AgentAction::Start { attempt: pa, .. } = agent.next_action().await else {
        panic!("expected a start");
    };
    agent
        .report(AgentEvent::Running {
            job: plain,
            attempt: pa,
            vm: None,
            restore_ms: None,
        })
        .await;
    agent
        .report(AgentEvent::Failed {
            job: plain,
            attempt: pa,
            reason: "the VM crashed".into(),
        })
        .await;
    wait_state(&alice, plain, JobState::Failed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_checkpoints_stops_and_resumes_the_job_on_the_target_node() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    let mut n2 = cluster.node("n2", 2).await;
    let view = alice.migrate(id, Some("n2".into())).await.expect("migrate");
    assert_eq!(view.state, JobState::Migrating);
    let AgentAction::Checkpoint {
        seq, stop: true, ..
    } = n1.next_action().await
    else {
        panic!("expected a checkpoint that stops the VM on n1");
    };
    n1.report(AgentEvent::Checkpointed {
        manifest: None,
        job: id,
        attempt,
        seq,
        location: "/ckpt/m".into(),
        work_ms: 700,
        log_offset: 3,
        stopped: true,
        paused_ms: 0,
        took_ms: None,
        sent_bytes: None,
    })
    .await;
    let AgentAction::Start {
        job,
        attempt: a2,
        restore,
        ..
    } = n2.next_action().await
    else {
        panic!("expected the job to resume on n2");
    };
    assert_eq!((job, a2), (id, attempt + 1));
    assert_eq!(restore.map(|r| r.location), Some(ckpt_at(&cluster, id, 1)));
    report_running(&n2, &alice, id, a2).await;
    let detail = alice.job(id).await.expect("show");
    assert_eq!(detail.job.node.as_deref(), Some("n2"));
    let said = |state: JobState, reason: &str| {
        detail
            .history
            .iter()
            .any(|e| e.state == state && e.reason == reason)
    };
    assert!(
        said(JobState::Migrating, "moving to run on n2: checkpointing")
            && said(
                JobState::Migrating,
                &format!("checkpoint {seq} saved; waits to resume on n2")
            )
            && said(
                JobState::Staging,
                &format!("resuming from checkpoint {seq} on n2")
            ),
        "{:?}",
        detail.history
    );
}

/// Where the controller puts checkpoint `seq` of job `job` (agents' own
/// idea of the place is never taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_vms_die_goes_back_to_its_place_in_the_queue() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let first = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, first).await;
    let seq = user_checkpoint(&mut n1, &alice, first, attempt).await;
    // Two jobs submitted later wait for the node.
    let second = alice.submit("b.toml", JOB, false).await.expect("submitted");
    let _third = alice.submit("c.toml", JOB, false).await.expect("submitted");
    n1.report(AgentEvent::Failed {
        job: first,
        attempt,
        reason: "the VM crashed".into(),
    })
    .await;
    // The lost job is back at the head of the queue, ahead of later jobs.
    let action = n1.next_action().await;
    let AgentAction::Start {
        job,
        attempt: again,
        restore,
        ..
    } = action
    else {
        panic!("expected a start, got {action:?}");
    };
    assert_eq!(job, first, "job {second} overtook the lost job");
    assert_eq!(again, attempt + 1);
    assert_eq!(
        restore.map(|r| r.location),
        Some(ckpt_at(&cluster, first, seq))
    );
    let history = alice.job(first).await.expect("show").history;
    assert!(
        history.iter().any(|e| e.state == JobState::Preempted
            && e.reason.starts_with("requeued, VMs lost")
            && e.reason.contains("the VM crashed")),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_checkpoint_is_saved_progress_when_the_node_is_lost() {
    let (cluster, alice, mut n1) = one_node(600, 2).await;
    // No periodic checkpoints: the user's is the only one.
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    let seq = user_checkpoint(&mut n1, &alice, id, attempt).await;
    // n1 goes silent; the core requeues the job and restarts it on n2 from
    // the checkpoint it was told about, not from the beginning.
    drop(n1);
    let mut n2 = cluster.node("n2", 2).await;
    let action = n2.next_action().await;
    let AgentAction::Start { job, restore, .. } = action else {
        panic!("expected the job to start on n2, got {action:?}");
    };
    assert_eq!(job, id);
    let restore = restore.expect("resumes from the user's checkpoint");
    assert_eq!(
        (restore.seq, restore.location),
        (seq, ckpt_at(&cluster, id, seq))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_waiting_job_restricts_its_start_also_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_token, agent_tokens, b1, b2, waiting) = {
        let mut h = Harness::start(dir.path(), 10_000).await;
        let alice_added = h.admin.add_user("alice", Role::User).await.expect("alice");
        let n1_added = h.admin.add_user("n1", Role::Agent).await.expect("agent");
        let n2_added = h.admin.add_user("n2", Role::Agent).await.expect("agent");
        let alice = Client::new(&h.url, &alice_added.token).expect("client");
        let n1_client = Client::new(&h.url, &n1_added.token).expect("client");
        let n2_client = Client::new(&h.url, &n2_added.token).expect("client");
        let mut n1 = FakeAgent::register(n1_client, "n1", 2, vec![]).await;
        let b1 = alice
            .submit("b1.toml", JOB, false)
            .await
            .expect("submitted");
        run_next(&mut n1, &alice, b1).await;
        let mut n2 = FakeAgent::register(n2_client, "n2", 2, vec![]).await;
        let b2 = alice
            .submit("b2.toml", JOB, false)
            .await
            .expect("submitted");
        run_next(&mut n2, &alice, b2).await;
        let waiting = alice.submit("w.toml", JOB, false).await.expect("submitted");
        let view = alice
            .migrate(waiting, Some("n2".into()))
            .await
            .expect("a waiting job may move");
        assert_eq!(view.state, JobState::Pending);
        let history = alice.job(waiting).await.expect("show").history;
        assert!(
            history
                .iter()
                .any(|e| e.reason.contains("its next start is on n2")),
            "{history:?}"
        );
        h.stop();
        (
            alice_added.token,
            (n1_added.token, n2_added.token),
            b1,
            b2,
            waiting,
        )
    };
    // The restriction is in the scheduler log: a restarted controller
    // still keeps the waiting job off n1.
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = Client::new(&h.url, &alice_token).expect("client");
    let n1_client = Client::new(&h.url, &agent_tokens.0).expect("client");
    let n2_client = Client::new(&h.url, &agent_tokens.1).expect("client");
    let running = |job| vec![RunningJob { job, attempt: 1 }];
    let mut n1 = FakeAgent::register(n1_client, "n1", 2, running(b1)).await;
    let mut n2 = FakeAgent::register(n2_client, "n2", 2, running(b2)).await;
    n1.report(AgentEvent::Exited {
        job: b1,
        attempt: 1,
        exit_code: 0,
        outputs: None,
    })
    .await;
    wait_state(&alice, b1, JobState::Done).await;
    // n1 is free but the head of the queue may not go there: a later job
    // takes it.
    let later = alice.submit("l.toml", JOB, false).await.expect("submitted");
    run_next(&mut n1, &alice, later).await;
    n2.report(AgentEvent::Exited {
        job: b2,
        attempt: 1,
        exit_code: 0,
        outputs: None,
    })
    .await;
    run_next(&mut n2, &alice, waiting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_booting_job_restarts_it_on_the_target_and_a_job_with_mounts_cannot_move() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let data = cluster.dir.path().join("repos/alice/data");
    let job_file = format!(
        "{JOB}[[mounts]]\nhost = \"{}\"\nguest = \"/data\"\nreadonly = true\n",
        data.display()
    );
    let id = alice
        .submit("m.toml", &job_file, false)
        .await
        .expect("submitted");
    let AgentAction::Start { attempt, .. } = n1.next_action().await else {
        panic!("expected a start on n1");
    };
    // Still booting: it has done no work, so it may move although it
    // cannot be checkpointed.
    let mut n2 = cluster.node("n2", 2).await;
    let view = alice.migrate(id, Some("n2".into())).await.expect("moves");
    assert_eq!(view.state, JobState::Migrating);
    assert_eq!(
        n1.next_action().await,
        AgentAction::Kill { job: id, attempt }
    );
    let action = n2.next_action().await;
    let AgentAction::Start {
        job,
        attempt: a2,
        restore,
        ..
    } = action
    else {
        panic!("expected the job to start on n2, got {action:?}");
    };
    assert_eq!((job, a2, restore), (id, attempt + 1, None));
    report_running(&n2, &alice, id, a2).await;
    // Running, it would lose its work: refused, nothing changes.
    let refused = alice
        .migrate(id, Some("n1".into()))
        .await
        .expect_err("cannot be checkpointed");
    assert_eq!(refused.status(), Some(409));
    assert!(refused.to_string().contains("mounts"), "{refused}");
    let same = alice
        .migrate(id, Some("n2".into()))
        .await
        .expect_err("already there");
    assert_eq!(same.status(), Some(409));
    let detail = alice.job(id).await.expect("show");
    assert_eq!(detail.job.state, JobState::Running);
    assert!(
        detail
            .history
            .iter()
            .any(|e| e.state == JobState::Migrating && e.reason.contains("stopped while starting")),
        "{:?}",
        detail.history
    );
}
