//! The controller through its HTTP API, with a scripted agent standing in
//! for a node (the end-to-end tests with real agents and QEMU live with the
//! `vgrid` binary).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vgrid_api::types::{
    ActionEnvelope, AgentAction, AgentEvent, AgentReport, RegisterNode, Role, RunningJob,
};
use vgrid_client::{Client, ClientError};
use vgrid_model::JobState;

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
        tokio::spawn(vgrid_server::serve(
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
                images: Vec::new(),
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

/// The name the controller gives checkpoint `seq` of `job`.
fn ckpt_at(_cluster: &Cluster, job: u64, seq: u64) -> String {
    format!("{job}/{seq}")
}

/// A successful checkpoint report.
fn saved(job: u64, attempt: u32, seq: u64, stopped: bool) -> AgentEvent {
    AgentEvent::Checkpointed {
        manifest: None,
        job,
        attempt,
        seq,
        location: format!("/ckpt/{job}/{seq}"),
        work_ms: 500,
        log_offset: 10 * seq,
        stopped,
        paused_ms: 5,
        took_ms: None,
        sent_bytes: None,
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
            restore_ms: None,
        },
        AgentEvent::Exited {
            job: id,
            attempt,
            exit_code: 0,
            outputs: None,
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
            restore_ms: None,
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

mod admin;
mod agents;
mod data;
mod hostile;
mod jobs;
mod metrics;
mod store;
