//! Administrators' verbs and why a job waits, through the HTTP API with a
//! real SQLite store, across a restart.

use std::time::Duration;

use vgrid_api::types::{JobView, RunningJob, WaitInfo};

use super::*;

/// Polls job `id` until its reason contains `text`.
async fn wait_reason(client: &Client, id: u64, text: &str) -> JobView {
    for _ in 0..400 {
        let job = client.job(id).await.expect("show").job;
        if job.reason.contains(text) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let job = client.job(id).await.expect("show").job;
    panic!("job {id} never waited for `{text}`: {job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_keeps_its_job_takes_no_new_one_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::start(dir.path(), 10_000).await;
    let alice_token = h
        .admin
        .add_user("alice", Role::User)
        .await
        .expect("alice")
        .token;
    let n1_token = h.admin.add_user("n1", Role::Agent).await.expect("n1").token;
    let alice = Client::new(&h.url, &alice_token).expect("client");
    let n1_client = Client::new(&h.url, &n1_token).expect("client");
    let mut n1 = FakeAgent::register(n1_client, "n1", 4, vec![]).await;
    let first = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, first).await;

    let admin = h.admin.clone();
    assert_eq!(
        api_status(alice.drain_node("n1", None).await.expect_err("user")),
        403
    );
    let view = admin
        .drain_node("n1", Some("disk swap".into()))
        .await
        .expect("drained");
    assert_eq!(view.state, "draining", "its job runs on");
    assert_eq!(view.drain_reason.as_deref(), Some("disk swap"));

    // Two of four cores are free, yet a new job waits, saying why.
    let second = alice.submit("b.toml", JOB, false).await.expect("submitted");
    let waiting = wait_reason(&alice, second, "1 node is drained").await;
    let wait = waiting.wait.expect("a waiting job says why");
    assert_eq!(wait.reason, "requirements");
    let detail = alice.job(second).await.expect("show").job.wait;
    let analysis = detail.and_then(|w| w.analysis).expect("analysis");
    assert_eq!((analysis.nodes, analysis.drained), (0, 1));
    // The running job is untouched: no action reaches its node.
    let actions = n1.client.actions("n1", n1.after, 300).await.expect("poll");
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(
        alice.job(first).await.expect("show").job.state,
        JobState::Running
    );

    // The drain outlives a restart; the agent registers again with its job.
    h.stop();
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = Client::new(&h.url, &alice_token).expect("client");
    let admin = h.admin.clone();
    let mut n1 = FakeAgent::register(
        Client::new(&h.url, &n1_token).expect("client"),
        "n1",
        4,
        vec![RunningJob {
            job: first,
            attempt,
        }],
    )
    .await;
    let nodes = admin.nodes().await.expect("nodes");
    assert_eq!(nodes[0].state, "draining");
    assert_eq!(nodes[0].drain_reason.as_deref(), Some("disk swap"));
    wait_reason(&alice, second, "1 node is drained").await;
    // A node that takes work is not removed.
    let up = admin.remove_node("n1").await.expect_err("has jobs");
    assert_eq!(api_status(up), 409);

    // Resumed, the node takes the waiting job.
    let view = admin.resume_node("n1").await.expect("resumed");
    assert_eq!((view.state.as_str(), view.drain_reason), ("up", None));
    let attempt2 = run_next(&mut n1, &alice, second).await;
    let refused = admin.remove_node("n1").await.expect_err("up");
    assert!(format!("{refused}").contains("drain it first"), "{refused}");

    // Drained and empty, it can be forgotten.
    admin.drain_node("n1", None).await.expect("drained");
    let busy = admin.remove_node("n1").await.expect_err("jobs run");
    assert!(format!("{busy}").contains("still has jobs"), "{busy}");
    run_to_end(&n1, first, attempt).await;
    run_to_end(&n1, second, attempt2).await;
    wait_state(&alice, first, JobState::Done).await;
    wait_state(&alice, second, JobState::Done).await;
    assert_eq!(admin.nodes().await.expect("nodes")[0].state, "drained");
    admin.remove_node("n1").await.expect("removed");
    assert!(admin.nodes().await.expect("nodes").is_empty());
    let gone = admin.remove_node("n1").await.expect_err("gone");
    assert_eq!(api_status(gone), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_names_the_clause_no_node_meets() {
    let (cluster, alice, _n1) = one_node(10_000, 4).await;
    let _n2 = cluster.node("n2", 1).await;
    let job = format!("{JOB}requirements = \"cores >= 2 && gpus >= 1\"\n");
    let id = alice
        .submit("g.toml", &job, false)
        .await
        .expect("submitted");
    wait_reason(&alice, id, "no node up").await;
    let listed = alice.jobs(false).await.expect("ps").remove(0);
    // The list has the short form only.
    assert_eq!(
        listed.wait,
        Some(WaitInfo {
            reason: "requirements".into(),
            expected_start_unix_ms: None,
            analysis: None,
        })
    );
    let a = alice
        .job(id)
        .await
        .expect("show")
        .job
        .wait
        .and_then(|w| w.analysis);
    let a = a.expect("the detail has the counts");
    let clauses: Vec<(&str, u32)> = a
        .clauses
        .iter()
        .map(|c| (c.clause.as_str(), c.failing))
        .collect();
    assert_eq!(clauses, vec![("cores >= 2", 1), ("gpus >= 1", 2)]);
    assert_eq!((a.nodes, a.matching, a.too_few_cores), (2, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_removed_and_their_tokens_rotated_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::start(dir.path(), 10_000).await;
    let alice = h.user("alice", Role::User).await;
    let bob = h.user("bob", Role::User).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");

    let users = h.admin.users().await.expect("users");
    let names: Vec<(&str, u32)> = users
        .iter()
        .map(|u| (u.name.as_str(), u.active_jobs))
        .collect();
    assert_eq!(names, vec![("admin", 0), ("alice", 1), ("bob", 0)]);
    assert_eq!(api_status(bob.users().await.expect_err("user")), 403);

    // Not while a job of hers has not ended.
    let busy = h.admin.remove_user("alice").await.expect_err("has a job");
    let why = busy.to_string();
    assert_eq!(api_status(busy), 409);
    assert!(why.contains("vgrid cancel"), "{why}");
    alice.control(id, "cancel").await.expect("cancelled");
    h.admin.remove_user("alice").await.expect("removed");
    assert_eq!(api_status(alice.jobs(false).await.expect_err("gone")), 401);
    // Her ended job keeps its owner; her name is not given again.
    assert_eq!(h.admin.job(id).await.expect("show").job.owner, "alice");
    let again = h
        .admin
        .add_user("alice", Role::User)
        .await
        .expect_err("taken");
    assert_eq!(api_status(again), 409);

    // Rotation: the old token stops working at once, the new one works.
    let rotated = h.admin.rotate_token("bob").await.expect("rotated");
    assert_eq!(api_status(bob.jobs(false).await.expect_err("old")), 401);
    let bob2 = Client::new(&h.url, &rotated.token).expect("client");
    bob2.jobs(false).await.expect("the new token works");
    // A user rotates their own token, never another's, and revokes none.
    let own = bob2.rotate_token("bob").await.expect("own");
    assert_eq!(api_status(bob2.jobs(false).await.expect_err("old")), 401);
    let bob3 = Client::new(&h.url, &own.token).expect("client");
    assert_eq!(
        api_status(bob3.rotate_token("admin").await.expect_err("not own")),
        403
    );
    assert_eq!(
        api_status(bob3.revoke_token("bob").await.expect_err("user")),
        403
    );

    h.admin.revoke_token("bob").await.expect("revoked");
    assert_eq!(
        api_status(bob3.jobs(false).await.expect_err("revoked")),
        401
    );
    let me = h.admin.revoke_token("admin").await.expect_err("own");
    assert_eq!(api_status(me), 409);

    // Revoked stays revoked across a restart, and listed as such.
    h.stop();
    let h = Harness::start(dir.path(), 10_000).await;
    let bob3 = Client::new(&h.url, &own.token).expect("client");
    assert_eq!(
        api_status(bob3.jobs(false).await.expect_err("revoked")),
        401
    );
    let users = h.admin.users().await.expect("users");
    let bob_view = users.iter().find(|u| u.name == "bob").expect("bob listed");
    assert!(bob_view.token_revoked_unix_ms.is_some());
    assert!(users.iter().all(|u| u.name != "alice"));
    let back = h.admin.rotate_token("bob").await.expect("rotated");
    Client::new(&h.url, &back.token)
        .expect("client")
        .jobs(false)
        .await
        .expect("a new token works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_behind_a_running_one_gets_the_start_backfilling_reserved() {
    let (_cluster, alice, mut n1) = one_node(10_000, 2).await;
    let job = "image = \"tiny\"\ncommand = [\"/bin/true\"]\ncpus = 2\nmemory_mb = 512\nwalltime_s = 600\n";
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    let before = unix_ms();
    let first = alice.submit("a.toml", job, false).await.expect("submitted");
    run_next(&mut n1, &alice, first).await;
    let second = alice.submit("b.toml", job, false).await.expect("submitted");
    let mut start = None;
    for _ in 0..400 {
        let wait = alice.job(second).await.expect("show").job.wait;
        start = wait.and_then(|w| w.expected_start_unix_ms);
        if start.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let start = start.expect("the head of the queue holds a reservation");
    // When the first job's walltime (600 s) runs out after its start.
    assert!(start >= before + 600_000, "{start} vs {before}");
    assert!(start <= unix_ms() + 600_000 + 60_000, "{start}");
    let listed = alice.jobs(false).await.expect("ps");
    let waiting = listed.iter().find(|j| j.id == second).expect("listed");
    assert_eq!(
        waiting.wait.as_ref().and_then(|w| w.expected_start_unix_ms),
        Some(start)
    );
}
