//! Hostile agents and users: what they send is checked at the edge and
//! cannot stop the controller or act for others.

use vgrid_api::types::{AgentEvent, AgentReport, RegisterNode, Role};
use vgrid_client::Client;
use vgrid_model::JobState;

use super::*;
use crate::ADMIN_TOKEN_FILE;

// ---- Hostile agents and users (issue: holes a hostile user or a broken
// agent can use) ----

/// A raw JSON call with a token, for bodies the typed client would never
/// send.
async fn raw(url: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let resp = vgrid_client::plain_http()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{url}{path}"),
        )
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_the_store_cannot_hold_are_refused_and_the_controller_goes_on() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let agent = cluster
        .h
        .admin
        .add_user("n9", Role::Agent)
        .await
        .expect("agent");
    let url = cluster.h.url.clone();
    let (status, body) = raw(
        &url,
        &agent.token,
        "POST",
        "/v1/agent/register",
        r#"{"name":"n9","cpus":2,"memory_mb":9223372036854775808}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("memory_mb"), "{body}");

    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    // A checkpoint that was never asked for, with a sequence number past
    // what SQLite holds: refused whole, nothing recorded.
    let (status, body) = raw(
        &url,
        &admin_token(&cluster),
        "POST",
        "/v1/agent/events",
        &format!(
            r#"{{"node":"n1","events":[{{"event":"checkpointed","job":{id},"attempt":{attempt},
               "seq":9223372036854775808,"location":"/x","work_ms":1,"log_offset":0,"stopped":false}}]}}"#
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let report = |seq| AgentReport {
        node: "n1".into(),
        events: vec![saved(id, attempt, seq, false)],
    };
    let refused = n1
        .client
        .report(&report(7))
        .await
        .expect_err("not asked for");
    assert_eq!(api_status(refused), 400);
    // Everything still works: writes and reads.
    let second = alice.submit("b.toml", JOB, false).await.expect("submitted");
    let detail = alice.job(id).await.expect("show");
    assert!(detail.checkpoints.is_empty(), "{:?}", detail.checkpoints);
    assert!(
        !detail
            .history
            .iter()
            .any(|h| h.reason.contains("checkpoint")),
        "{:?}",
        detail.history
    );
    assert_eq!(alice.job(second).await.expect("show").job.id, second);
}

/// The admin's token (the admin may act for any node).
fn admin_token(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.dir.path().join(ADMIN_TOKEN_FILE))
        .expect("admin token")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_acts_only_for_its_own_node() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let n2 = cluster.node("n2", 1).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    // n2's token polls, reports and writes output as n1: all refused.
    let poll = n2
        .client
        .actions("n1", 0, 10)
        .await
        .expect_err("not its node");
    assert_eq!(api_status(poll), 403);
    let forged = AgentReport {
        node: "n1".into(),
        events: vec![AgentEvent::Exited {
            job: id,
            attempt,
            exit_code: 0,
            outputs: None,
        }],
    };
    let report = n2.client.report(&forged).await.expect_err("not its node");
    assert_eq!(api_status(report), 403);
    let write = n2
        .client
        .write_output(id, "n1", attempt, 0, b"forged\n".to_vec())
        .await
        .expect_err("not its node");
    assert_eq!(api_status(write), 403);
    let register = n2
        .client
        .register(&RegisterNode {
            name: "n1".into(),
            cpus: 64,
            memory_mb: 4096,
            labels: Default::default(),
            running: vec![],
            images: Vec::new(),
        })
        .await
        .expect_err("not its node");
    assert_eq!(api_status(register), 403);
    assert_eq!(
        alice.job(id).await.expect("show").job.state,
        JobState::Running
    );

    // n1 itself may not leave holes or write past the limit.
    n1.client
        .write_output(id, "n1", attempt, 0, b"1\n".to_vec())
        .await
        .expect("output");
    for offset in [1u64 << 40, u64::MAX] {
        let far = n1
            .client
            .write_output(id, "n1", attempt, offset, b"x".to_vec())
            .await
            .expect_err("past the end");
        assert_eq!(api_status(far), 400, "offset {offset}");
    }
    let out = alice.output(id, 0).await.expect("output");
    assert_eq!(out.data, b"1\n");
    let file = cluster.dir.path().join("output").join(format!("{id}.log"));
    assert_eq!(std::fs::metadata(file).expect("output file").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_in_the_past_is_refused_at_submission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = h.user("alice", Role::User).await;
    let job = "image = \"tiny\"\ncommand = [\"/bin/true\"]\n\
               class = \"reservation\"\nstart = 1970-01-02T00:00:00Z\nend = 1970-01-02T01:00:00Z\n";
    let err = alice
        .submit("r.toml", job, false)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("reservation window ended"),
        "{err}"
    );
    assert_eq!(api_status(err), 400);
    assert!(alice.jobs(false).await.expect("ps").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_with_its_key_makes_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    let alice_token = h
        .admin
        .add_user("alice", Role::User)
        .await
        .expect("alice")
        .token;
    let alice = Client::new(&h.url, &alice_token).expect("client");
    let bob = h.user("bob", Role::User).await;
    let first = alice
        .submit_with_key("a.toml", JOB, false, Some("k-1"))
        .await
        .expect("submitted");
    let again = alice
        .submit_with_key("a.toml", JOB, false, Some("k-1"))
        .await
        .expect("found");
    assert_eq!(first, again);
    // The same key from another user is another job.
    let bobs = bob
        .submit_with_key("a.toml", JOB, false, Some("k-1"))
        .await
        .expect("submitted");
    assert_ne!(bobs, first);
    // The same key with another file is a mistake, said as such.
    let other = JOB.replace("hi", "ho");
    let err = alice
        .submit_with_key("a.toml", &other, false, Some("k-1"))
        .await
        .expect_err("conflict");
    assert_eq!(api_status(err), 409);
    let bad = alice
        .submit_with_key("a.toml", JOB, false, Some("with space"))
        .await
        .expect_err("bad key");
    assert_eq!(api_status(bad), 400);
    assert_eq!(alice.jobs(false).await.expect("ps").len(), 1);
    // Keys survive a restart.
    let token_dir = dir.path().to_path_buf();
    drop(h);
    let h = Harness::start(&token_dir, 10_000).await;
    let alice = Client::new(&h.url, &alice_token).expect("client");
    let after = alice
        .submit_with_key("a.toml", JOB, false, Some("k-1"))
        .await
        .expect("found after a restart");
    assert_eq!(after, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_outside_the_owners_directory_are_refused_at_submission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), 10_000).await;
    let alice = h.user("alice", Role::User).await;
    let repos = dir.path().join("repos");
    let job = |host: &str| {
        format!(
            "image = \"tiny\"\ncommand = [\"/bin/true\"]\n[[mounts]]\nhost = \"{host}\"\nguest = \"/data\"\n"
        )
    };
    let bobs = repos.join("bob/data");
    let err = alice
        .submit("m.toml", &job(&bobs.display().to_string()), false)
        .await
        .expect_err("another user's directory");
    assert_eq!(api_status(err), 400);
    let err = alice
        .submit("m.toml", &job("/etc"), false)
        .await
        .expect_err("outside every root");
    assert!(err.to_string().contains("mounts[0].host"), "{err}");
    let own = repos.join("alice/data");
    alice
        .submit("m.toml", &job(&own.display().to_string()), false)
        .await
        .expect("the owner's own directory");
    assert_eq!(alice.jobs(false).await.expect("ps").len(), 1);
}
