//! What the controller's HTTP benchmarks share: their options, the job they
//! submit, and a controller served on loopback.

use std::path::Path;
use std::sync::Arc;

/// A job file that needs no VM behind it to be accepted.
pub const JOB: &str =
    "name = \"bench\"\nimage = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/true\"]\n";

/// The number after `name` on the command line, or `default`.
pub fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The runtime the benchmarks' clients and the server share.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Serves `controller` (started on `data_dir`) over plain HTTP on a
/// loopback port; returns its URL and the admin's token.
pub async fn serve(
    controller: &vgrid_controller::Controller,
    data_dir: &Path,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(vgrid_server::serve(
        listener,
        Arc::new(controller.handle()),
        std::future::pending(),
    ));
    let token = std::fs::read_to_string(data_dir.join(vgrid_controller::ADMIN_TOKEN_FILE))?;
    Ok((url, token.trim().to_string()))
}
