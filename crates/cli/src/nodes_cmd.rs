//! `vgrid nodes`: the nodes, their capacity and their jobs.

use std::io::Write;
use std::process::ExitCode;

use crate::connect::{block_on, client, format_time};

/// List nodes.
#[derive(clap::Args)]
pub struct NodesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let nodes = block_on(c.nodes())??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:<8} {:>9} {:>15}  {:<21} JOBS",
        "NAME", "STATE", "CPUS", "MEMORY_MB", "LAST SEEN"
    )?;
    for n in &nodes {
        let jobs: Vec<String> = n.jobs.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "{:<16} {:<8} {:>9} {:>15}  {:<21} {}",
            n.name,
            n.state,
            format!("{}/{}", n.free_cpus, n.cpus),
            format!("{}/{}", n.free_memory_mb, n.memory_mb),
            format_time(n.last_seen_unix_ms),
            if jobs.is_empty() {
                "-".to_string()
            } else {
                jobs.join(",")
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
