//! Durable submissions per second through the HTTP API.
//!
//! Starts a controller (database in a fresh temporary directory, or
//! `--data-dir`) and its HTTP server on loopback, then `--concurrency`
//! clients submit `--jobs` job files in total over HTTP. Every submission is
//! acknowledged only after it is committed (WAL, synchronous=FULL). Prints
//! one JSON line with the measured rate.
//!
//! cargo run --release -p vgrid-controller --example submit_bench -- --jobs 20000 --concurrency 64

use std::time::Instant;

use vgrid_api::types::Role;
use vgrid_client::Client;

mod common;
use common::{JOB, arg};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let jobs = arg(&args, "--jobs", 20_000);
    let concurrency = arg(&args, "--concurrency", 64).max(1);
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);

    let controller =
        vgrid_controller::Controller::start(vgrid_controller::Config::new(data_dir.clone()))?;
    let rt = common::runtime()?;
    let result = rt.block_on(async {
        let (url, admin_token) = common::serve(&controller, &data_dir).await?;
        let admin = Client::new(&url, &admin_token)?;
        let user = admin.add_user("bench", Role::User).await?;
        let client = Client::new(&url, &user.token)?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let client = client.clone();
            let share = jobs / concurrency + u64::from(w < jobs % concurrency);
            tasks.push(tokio::spawn(async move {
                for _ in 0..share {
                    client.submit("bench.toml", JOB, false).await?;
                }
                Ok::<_, vgrid_client::ClientError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        let listed = admin.jobs(true).await?.len();
        Ok::<_, Box<dyn std::error::Error>>((secs, listed))
    });
    let (secs, listed) = result?;
    controller.stop()?;
    println!(
        "{{\"jobs\": {jobs}, \"concurrency\": {concurrency}, \"seconds\": {secs:.3}, \"submissions_per_s\": {:.0}, \"stored\": {listed}}}",
        jobs as f64 / secs
    );
    Ok(())
}
