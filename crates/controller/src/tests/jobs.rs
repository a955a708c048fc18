//! Users' commands through the API, with a scripted agent.

use std::time::Duration;

use vgrid_api::types::{AgentAction, AgentEvent, Role};
use vgrid_model::JobState;

use super::*;
use crate::ADMIN_TOKEN_FILE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_private_and_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        h.admin
            .jobs(true)
            .await
            .expect("admin lists all")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_and_control_only_their_own_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = h.user("alice", Role::User).await;
    let bob = h.user("bob", Role::User).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");

    assert_eq!(alice.jobs(false).await.expect("ps").len(), 1);
    assert!(bob.jobs(false).await.expect("ps").is_empty());
    assert_eq!(api_status(bob.job(id).await.expect_err("hidden")), 404);
    assert_eq!(
        api_status(bob.control(id, "cancel").await.expect_err("hidden")),
        404
    );
    assert_eq!(
        api_status(bob.control(id, "hold").await.expect_err("hidden")),
        404
    );
    assert_eq!(
        api_status(bob.output(id, 0).await.expect_err("hidden")),
        404
    );
    assert_eq!(
        api_status(bob.jobs(true).await.expect_err("not admin")),
        403
    );
    assert_eq!(
        api_status(
            alice
                .add_user("eve", Role::Admin)
                .await
                .expect_err("not admin")
        ),
        403
    );
    // Bob's attempts changed nothing.
    assert_eq!(
        alice.job(id).await.expect("show").job.state,
        JobState::Pending
    );
    // The admin sees and controls everything.
    assert_eq!(h.admin.jobs(true).await.expect("all").len(), 1);
    let held = h.admin.control(id, "hold").await.expect("admin holds");
    assert_eq!(held.state, JobState::Held);
    let released = alice.control(id, "release").await.expect("owner releases");
    assert_eq!(released.state, JobState::Pending);
    let cancelled = alice.control(id, "cancel").await.expect("owner cancels");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        api_status(alice.control(id, "cancel").await.expect_err("ended")),
        409
    );
    let states: Vec<JobState> = alice
        .job(id)
        .await
        .expect("show")
        .history
        .iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(
        states,
        vec![
            JobState::Pending,
            JobState::Held,
            JobState::Pending,
            JobState::Cancelled
        ]
    );
    // Duplicate and malformed user names are refused.
    assert_eq!(
        api_status(
            h.admin
                .add_user("alice", Role::User)
                .await
                .expect_err("dup")
        ),
        409
    );
    assert_eq!(
        api_status(
            h.admin
                .add_user("Bad Name", Role::User)
                .await
                .expect_err("bad")
        ),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_an_agent_and_its_output_and_status_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = h.user("alice", Role::User).await;
    let agent_client = h.user("n1", Role::Agent).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    // No node yet: the job waits, and says why (once a scheduling pass has
    // looked at it; passes are coalesced under load).
    let mut reason = String::new();
    for _ in 0..400 {
        let pending = alice.job(id).await.expect("show").job;
        assert_eq!(pending.state, JobState::Pending);
        reason = pending.reason;
        if reason.contains("no node up") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reason.contains("no node up"), "{reason}");

    let mut agent = FakeAgent::register(agent_client, "n1", 4, vec![]).await;
    let AgentAction::Start {
        job,
        attempt,
        spec,
        vms,
        restore,
        ..
    } = agent.next_action().await
    else {
        panic!("expected a start");
    };
    assert_eq!((job, attempt, vms, restore), (id, 1, 1, None));
    assert_eq!(spec.command, vec!["/bin/echo", "hi"]);
    wait_state(&alice, id, JobState::Staging).await;
    agent.report(AgentEvent::Booting { job: id, attempt }).await;
    report_running(&agent, &alice, id, attempt).await;
    let nodes = alice.nodes().await.expect("nodes");
    assert_eq!((nodes[0].free_cpus, nodes[0].jobs.clone()), (2, vec![id]));

    agent
        .client
        .write_output(id, "n1", attempt, 0, b"hi\n".to_vec())
        .await
        .expect("output");
    // A stale attempt may not write.
    let stale = agent
        .client
        .write_output(id, "n1", attempt + 1, 0, b"x".to_vec())
        .await;
    assert_eq!(api_status(stale.expect_err("stale")), 409);
    let waiter = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.wait(id, 30_000).await })
    };
    agent
        .report(AgentEvent::Exited {
            job: id,
            attempt,
            exit_code: 3,
            outputs: None,
        })
        .await;
    let waited = waiter.await.expect("join").expect("wait");
    assert!(waited.ended);
    assert_eq!(
        (waited.job.state, waited.job.exit_code),
        (JobState::Failed, Some(3))
    );
    let out = alice.output(id, 0).await.expect("output");
    assert_eq!((out.data.as_slice(), out.complete), (&b"hi\n"[..], true));
    let states: Vec<JobState> = alice
        .job(id)
        .await
        .expect("show")
        .history
        .iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(
        states,
        vec![
            JobState::Pending,
            JobState::Staging,
            JobState::Booting,
            JobState::Running,
            JobState::Failed
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_and_checkpoint_on_request_reach_the_agent() {
    let (cluster, alice, mut agent) = one_node(10_000, 4).await;
    let bob = cluster.h.user("bob", Role::User).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let AgentAction::Start { attempt, .. } = agent.next_action().await else {
        panic!("expected a start");
    };
    // Not running yet: nothing to suspend.
    assert_eq!(
        api_status(alice.control(id, "suspend").await.expect_err("not running")),
        409
    );
    report_running(&agent, &alice, id, attempt).await;
    assert_eq!(
        api_status(bob.control(id, "suspend").await.expect_err("not his")),
        404
    );

    alice
        .control(id, "suspend")
        .await
        .expect("suspend accepted");
    assert_eq!(
        agent.next_action().await,
        AgentAction::Suspend { job: id, attempt }
    );
    agent
        .report(AgentEvent::Suspended { job: id, attempt })
        .await;
    wait_state(&alice, id, JobState::Suspended).await;
    alice.control(id, "resume").await.expect("resume accepted");
    assert_eq!(
        agent.next_action().await,
        AgentAction::Resume { job: id, attempt }
    );
    agent.report(AgentEvent::Resumed { job: id, attempt }).await;
    wait_state(&alice, id, JobState::Running).await;

    let view = alice
        .control(id, "checkpoint")
        .await
        .expect("checkpoint accepted");
    assert_eq!(view.state, JobState::Checkpointing);
    let AgentAction::Checkpoint {
        seq, stop: false, ..
    } = agent.next_action().await
    else {
        panic!("expected a checkpoint that keeps the job running");
    };
    agent
        .report(AgentEvent::Checkpointed {
            manifest: None,
            job: id,
            attempt,
            seq,
            location: "/ckpt/x".into(),
            work_ms: 100,
            log_offset: 0,
            stopped: false,
            paused_ms: 0,
            took_ms: None,
            sent_bytes: None,
        })
        .await;
    wait_state(&alice, id, JobState::Running).await;
    let detail = alice.job(id).await.expect("show");
    assert_eq!(detail.checkpoints.len(), 1);
    assert_eq!(detail.checkpoints[0].seq, seq);
    // A move needs a target that is up.
    assert_eq!(
        api_status(
            alice
                .migrate(id, Some("nowhere".into()))
                .await
                .expect_err("no node")
        ),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_jobs_nodes_and_commits_for_admins_only() {
    let (cluster, alice, _agent) = one_node(10_000, 4).await;
    alice.submit("a.toml", JOB, true).await.expect("submitted");
    let raw = vgrid_client::plain_http()
        .get(format!("{}/metrics", cluster.h.url))
        .send()
        .await
        .expect("request");
    assert_eq!(raw.status(), 401);
    let get = |token: String| {
        let url = format!("{}/metrics", cluster.h.url);
        async move {
            vgrid_client::plain_http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
        }
    };
    let admin_token =
        std::fs::read_to_string(cluster.dir.path().join(ADMIN_TOKEN_FILE)).expect("token");
    let text = get(admin_token.trim().to_string())
        .await
        .text()
        .await
        .expect("text");
    assert!(text.contains("\nvgrid_queue_held 1\n"), "{text}");
    assert!(text.contains("\nvgrid_queue_running 0\n"), "{text}");
    assert!(text.contains("\nvgrid_nodes_idle 1\n"), "{text}");
    assert!(text.contains("\nvgrid_cpus_total 4\n"), "{text}");
    let commits = text
        .lines()
        .find_map(|l| l.strip_prefix("vgrid_commit_seconds_count "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("commit counter");
    assert!(commits >= 1.0, "{text}");
    let users = cluster
        .h
        .admin
        .add_user("carol", Role::User)
        .await
        .expect("carol");
    assert_eq!(get(users.token).await.status(), 403);
}
