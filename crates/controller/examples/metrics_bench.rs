//! How long a `/metrics` scrape takes with a full book.
//!
//! Starts a controller (database in a fresh temporary directory) and its
//! HTTP server on loopback, adds `--users` users and `--nodes` nodes of 32
//! CPUs (registered through the API and long-polling like agents, no VM
//! behind them), submits `--jobs`
//! jobs spread over the users (one in ten held), lets the scheduler place
//! what fits, then scrapes `/metrics` `--scrapes` times over HTTP as an
//! admin. Each scrape is the whole path: HTTP, the controller's actor,
//! reading the book and writing the text. Prints one JSON line.
//!
//! cargo run --release -p vgrid-controller --example metrics_bench -- --jobs 10000

use std::time::{Duration, Instant};

use vgrid_api::types::{RegisterNode, Role};
use vgrid_client::Client;

mod common;
use common::{JOB, arg};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let jobs = arg(&args, "--jobs", 10_000);
    let users = arg(&args, "--users", 100).max(1);
    let nodes = arg(&args, "--nodes", 20);
    let scrapes = arg(&args, "--scrapes", 50).max(1) as usize;
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().to_path_buf();

    let controller =
        vgrid_controller::Controller::start(vgrid_controller::Config::new(data_dir.clone()))?;
    let rt = common::runtime()?;
    let result = rt.block_on(async {
        let (url, admin_token) = common::serve(&controller, &data_dir).await?;
        let admin = Client::new(&url, &admin_token)?;
        for n in 0..nodes {
            let name = format!("node{n}");
            let added = admin.add_user(&name, Role::Agent).await?;
            let node = Client::new(&url, &added.token)?;
            node.register(&RegisterNode {
                name,
                cpus: 32,
                memory_mb: 65_536,
                labels: Default::default(),
                running: Vec::new(),
                images: Vec::new(),
            })
            .await?;
            // Its agent's long poll: the node stays up (and answers no
            // action; the jobs it is given stay staging).
            tokio::spawn(async move {
                let name = format!("node{n}");
                let mut after = 0;
                loop {
                    match node.actions(&name, after, 2_000).await {
                        Ok(actions) => {
                            after = actions.last().map_or(after, |a| a.seq);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        }
        let mut clients = Vec::new();
        for u in 0..users {
            let added = admin.add_user(&format!("user{u}"), Role::User).await?;
            clients.push(Client::new(&url, &added.token)?);
        }
        // 64 submitters, each taking every 64th job.
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let clients = clients.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < jobs {
                    let client = &clients[(i % users) as usize];
                    client.submit("bench.toml", JOB, i % 10 == 0).await?;
                    i += 64;
                }
                Ok::<_, vgrid_client::ClientError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        // Let the last scheduling pass place what fits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let http = vgrid_client::plain_http();
        let mut times = Vec::with_capacity(scrapes);
        let mut bytes = 0;
        let mut text = String::new();
        for _ in 0..scrapes {
            let started = Instant::now();
            let response = http
                .get(format!("{url}/metrics"))
                .bearer_auth(&admin_token)
                .send()
                .await?
                .error_for_status()?;
            text = response.text().await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            bytes = text.len();
        }
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        let running = text
            .lines()
            .find_map(|l| l.strip_prefix("vgrid_queue_staging "))
            .unwrap_or("?")
            .to_string();
        Ok::<_, Box<dyn std::error::Error>>((times, bytes, series, running))
    });
    let (mut times, bytes, series, placed) = result?;
    controller.stop()?;
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"jobs\": {jobs}, \"users\": {users}, \"nodes\": {nodes}, \"placed\": {placed}, \
         \"scrapes\": {scrapes}, \"bytes\": {bytes}, \"samples\": {series}, \
         \"ms_min\": {:.2}, \"ms_median\": {:.2}, \"ms_p95\": {:.2}, \"ms_max\": {:.2}}}",
        pick(0.0),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
    Ok(())
}
