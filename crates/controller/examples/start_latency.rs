//! Time from a submission's acknowledgement to the node agent holding the
//! job's start action, on an idle node: what the controller adds before a
//! VM begins to boot.
//!
//! Starts a controller and its HTTP server on loopback; one client acts as
//! the node agent (registers a node, long-polls for actions, reports each
//! job running and exited at once), another submits `--jobs` jobs one after
//! the other, each once the previous one has ended. Prints one JSON line
//! with the median, 95th percentile and maximum in milliseconds.
//!
//! cargo run --release -p vgrid-controller --example start_latency -- --jobs 200

use std::sync::Arc;
use std::time::{Duration, Instant};

use vgrid_api::types::{AgentAction, AgentEvent, AgentReport, RegisterNode, Role};
use vgrid_client::Client;

const JOB: &str = "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/true\"]\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args
        .iter()
        .position(|a| a == "--jobs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let controller = vgrid_controller::Controller::start(vgrid_controller::Config::new(
        tmp.path().to_path_buf(),
    ))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut samples = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(vgrid_server::serve(
            listener,
            Arc::new(controller.handle()),
            std::future::pending(),
        ));
        let token = std::fs::read_to_string(tmp.path().join(vgrid_controller::ADMIN_TOKEN_FILE))?;
        let admin = Client::new(&url, token.trim())?;
        let agent_user = admin.add_user("agent", Role::Agent).await?;
        let agent = Client::new(&url, &agent_user.token)?;
        agent
            .register(&RegisterNode {
                name: "n1".into(),
                cpus: 4,
                memory_mb: 8192,
                labels: Default::default(),
                running: vec![],
                images: Vec::new(),
            })
            .await?;
        let mut after = 0;
        let mut samples = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            // The agent's poll is already waiting when the job comes in.
            let poll = {
                let agent = agent.clone();
                tokio::spawn(async move { agent.actions("n1", after, 30_000).await })
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
            let submitted = admin.submit("j.toml", JOB, false).await?;
            let acked = Instant::now();
            let actions = poll.await??;
            let got = acked.elapsed();
            let Some(first) = actions.first() else {
                return Err("no action".into());
            };
            after = first.seq;
            let AgentAction::Start { job, attempt, .. } = &first.action else {
                return Err(format!("unexpected action {:?}", first.action).into());
            };
            assert_eq!(*job, submitted);
            samples.push(got.as_secs_f64() * 1000.0);
            let events = vec![
                AgentEvent::Running {
                    job: *job,
                    attempt: *attempt,
                    vm: None,
                    restore_ms: None,
                },
                AgentEvent::Exited {
                    job: *job,
                    attempt: *attempt,
                    exit_code: 0,
                    outputs: None,
                },
            ];
            agent
                .report(&AgentReport {
                    node: "n1".into(),
                    events,
                })
                .await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(samples)
    })?;
    controller.stop()?;
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"jobs\": {jobs}, \"p50_ms\": {:.2}, \"p95_ms\": {:.2}, \"max_ms\": {:.2}}}",
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
    Ok(())
}
