//! The controller through its HTTP API, with a scripted agent standing in
//! for a node (the end-to-end tests with real agents and QEMU live with the
//! `vgrid` binary).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vgrid_api::types::{
    ActionEnvelope, AgentAction, AgentEvent, AgentReport, RegisterNode, Role, RunningJob,
};
use vgrid_api::{Client, ClientError};
use vgrid_jobfile::JobState;

use crate::{ADMIN_TOKEN_FILE, Config, Controller};

struct Harness {
    controller: Option<Controller>,
    url: String,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
    admin: Client,
}

impl Harness {
    async fn start(dir: &Path, lost_after_ms: u64) -> Harness {
        let mut cfg = Config::new(dir.to_path_buf());
        cfg.heartbeat_ms = 100;
        cfg.lost_after_ms = lost_after_ms;
        let controller = Controller::start(cfg).expect("controller starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(vgrid_api::server::serve(
            listener,
            Arc::new(controller.handle()),
            async move {
                let _ = stopped.await;
            },
        ));
        let token = std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE)).expect("admin token");
        let admin = Client::new(&url, token.trim()).expect("client");
        Harness {
            controller: Some(controller),
            url,
            stop_server: Some(stop),
            admin,
        }
    }

    async fn user(&self, name: &str, role: Role) -> Client {
        let added = self.admin.add_user(name, role).await.expect("user added");
        Client::new(&self.url, &added.token).expect("client")
    }

    /// Stops the server and the controller as a crash would leave them:
    /// nothing is flushed beyond what was acknowledged.
    fn stop(&mut self) {
        if let Some(s) = self.stop_server.take() {
            let _ = s.send(());
        }
        if let Some(c) = self.controller.take() {
            c.stop().expect("controller stops cleanly");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scripted node agent.
struct FakeAgent {
    client: Client,
    name: String,
    after: u64,
}

impl FakeAgent {
    async fn register(
        client: Client,
        name: &str,
        cpus: u32,
        running: Vec<RunningJob>,
    ) -> FakeAgent {
        client
            .register(&RegisterNode {
                name: name.into(),
                cpus,
                memory_mb: 4096,
                labels: Default::default(),
                running,
            })
            .await
            .expect("registered");
        FakeAgent {
            client,
            name: name.into(),
            after: 0,
        }
    }

    /// Polls until an action arrives (the poll is also the heartbeat).
    async fn next_action(&mut self) -> AgentAction {
        for _ in 0..200 {
            let actions: Vec<ActionEnvelope> = self
                .client
                .actions(&self.name, self.after, 200)
                .await
                .expect("poll");
            if let Some(a) = actions.into_iter().next() {
                self.after = a.seq;
                return a.action;
            }
        }
        panic!("no action for {} after 200 polls", self.name);
    }

    async fn report(&self, event: AgentEvent) {
        // A real agent sends a checkpoint's output before reporting it.
        if let AgentEvent::Checkpointed {
            job,
            attempt,
            log_offset,
            ..
        } = event
            && log_offset > 0
        {
            self.client
                .write_output(job, &self.name, attempt, 0, vec![b'.'; log_offset as usize])
                .await
                .expect("checkpoint output");
        }
        self.client
            .report(&AgentReport {
                node: self.name.clone(),
                events: vec![event],
            })
            .await
            .expect("report");
    }
}

/// A controller with its data directory.
struct Cluster {
    h: Harness,
    /// Dropped last: the controller's data.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Registers node `name` with its own agent token (a node credential
    /// acts only for the node of its name).
    async fn node(&self, name: &str, cpus: u32) -> FakeAgent {
        let client = self.h.user(name, Role::Agent).await;
        FakeAgent::register(client, name, cpus, vec![]).await
    }
}

/// A cluster with the user `alice` and one node agent, `n1`.
async fn one_node(lost_after_ms: u64, cpus: u32) -> (Cluster, Client, FakeAgent) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::start(dir.path(), lost_after_ms).await;
    let alice = h.user("alice", Role::User).await;
    let agent = h.user("n1", Role::Agent).await;
    let n1 = FakeAgent::register(agent, "n1", cpus, vec![]).await;
    (Cluster { h, dir }, alice, n1)
}

const JOB: &str =
    "image = \"tiny\"\ncommand = [\"/bin/echo\", \"hi\"]\ncpus = 2\nmemory_mb = 512\n";

async fn wait_state(client: &Client, id: u64, state: JobState) {
    for _ in 0..400 {
        if client.job(id).await.expect("show").job.state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let now = client.job(id).await.expect("show");
    panic!("job {id} never became {state}: {:?}", now.job);
}

fn api_status(e: ClientError) -> u16 {
    e.status()
        .unwrap_or_else(|| panic!("expected an API error, got {e}"))
}

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
            job: be,
            attempt,
            seq,
            location: "/ckpt/1".into(),
            work_ms: 5_000,
            log_offset: 42,
            stopped: true,
            paused_ms: 0,
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
        job: id,
        attempt,
        seq,
        location: "/ckpt/a".into(),
        work_ms: 1_000,
        log_offset: 7,
        stopped: false,
        paused_ms: 0,
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
            job: id,
            attempt,
            seq,
            location: "/ckpt/x".into(),
            work_ms: 100,
            log_offset: 0,
            stopped: false,
            paused_ms: 0,
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
        job: be,
        attempt,
        seq,
        location: format!("/ckpt/{seq}"),
        work_ms: 1_000,
        log_offset: 0,
        stopped,
        paused_ms: 0,
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
async fn metrics_count_jobs_nodes_and_commits_for_admins_only() {
    let (cluster, alice, _agent) = one_node(10_000, 4).await;
    alice.submit("a.toml", JOB, true).await.expect("submitted");
    let raw = reqwest::Client::new()
        .get(format!("{}/metrics", cluster.h.url))
        .send()
        .await
        .expect("request");
    assert_eq!(raw.status(), 401);
    let get = |token: String| {
        let url = format!("{}/metrics", cluster.h.url);
        async move {
            reqwest::Client::new()
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
    assert!(text.contains("vgrid_jobs{state=\"held\"} 1"), "{text}");
    assert!(text.contains("vgrid_jobs{state=\"running\"} 0"), "{text}");
    assert!(text.contains("vgrid_nodes{state=\"up\"} 1"), "{text}");
    assert!(text.contains("vgrid_cpus 4"), "{text}");
    let commits = text
        .lines()
        .find_map(|l| l.strip_prefix("vgrid_commits_total "))
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
            job: id,
            attempt,
            seq,
            location: "/ckpt/c".into(),
            work_ms: 500,
            log_offset: 9,
            stopped: false,
            paused_ms: 0,
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
        job: id,
        attempt,
        seq,
        location: "/ckpt/m".into(),
        work_ms: 700,
        log_offset: 3,
        stopped: true,
        paused_ms: 0,
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
fn ckpt_at(cluster: &Cluster, job: u64, seq: u64) -> String {
    cluster
        .dir
        .path()
        .join("checkpoints")
        .join(job.to_string())
        .join(seq.to_string())
        .display()
        .to_string()
}

/// A successful checkpoint report.
fn saved(job: u64, attempt: u32, seq: u64, stopped: bool) -> AgentEvent {
    AgentEvent::Checkpointed {
        job,
        attempt,
        seq,
        location: format!("/ckpt/{job}/{seq}"),
        work_ms: 500,
        log_offset: 10 * seq,
        stopped,
        paused_ms: 5,
    }
}

/// The agent's next action must start job `id`; the agent reports it
/// running. Returns the attempt.
async fn run_next(agent: &mut FakeAgent, client: &Client, id: u64) -> u32 {
    let action = agent.next_action().await;
    let AgentAction::Start { job, attempt, .. } = action else {
        panic!(
            "expected a start of job {id} on {}, got {action:?}",
            agent.name
        );
    };
    assert_eq!(job, id, "started on {}", agent.name);
    report_running(agent, client, id, attempt).await;
    attempt
}

/// The agent reports the job's command running and then done.
async fn run_to_end(agent: &FakeAgent, id: u64, attempt: u32) {
    for event in [
        AgentEvent::Running {
            job: id,
            attempt,
            vm: None,
        },
        AgentEvent::Exited {
            job: id,
            attempt,
            exit_code: 0,
        },
    ] {
        agent.report(event).await;
    }
}

/// The agent reports the job's command running, and the controller has it.
async fn report_running(agent: &FakeAgent, client: &Client, id: u64, attempt: u32) {
    agent
        .report(AgentEvent::Running {
            job: id,
            attempt,
            vm: None,
        })
        .await;
    wait_state(client, id, JobState::Running).await;
}

/// `vgrid checkpoint ID` on a running job, saved by the agent.
async fn user_checkpoint(agent: &mut FakeAgent, client: &Client, id: u64, attempt: u32) -> u64 {
    client.control(id, "checkpoint").await.expect("checkpoint");
    let AgentAction::Checkpoint {
        seq, stop: false, ..
    } = agent.next_action().await
    else {
        panic!("expected a checkpoint that keeps the job running");
    };
    agent.report(saved(id, attempt, seq, false)).await;
    wait_state(client, id, JobState::Running).await;
    seq
}

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
    })
    .await;
    run_next(&mut n2, &alice, waiting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_booting_job_restarts_it_on_the_target_and_a_job_with_mounts_cannot_move() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let job_file =
        format!("{JOB}[[mounts]]\nhost = \"/srv/data\"\nguest = \"/data\"\nreadonly = true\n");
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

// ---- Hostile agents and users (issue: holes a hostile user or a broken
// agent can use) ----

/// A raw JSON call with a token, for bodies the typed client would never
/// send.
async fn raw(url: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
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
