//! `vgrid nodes`: the nodes, their capacity and their jobs; an admin
//! drains, resumes and removes them.

use std::io::Write;
use std::process::ExitCode;

use crate::connect::{block_on, client, format_time};

/// List nodes, or drain, resume or remove one (admin).
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<NodesCmd>,
}

#[derive(clap::Subcommand)]
pub enum NodesCmd {
    /// Place nothing new on the node; its jobs run on to their end (like
    /// Slurm's DRAIN). Kept across restarts and while the node is lost.
    Drain {
        node: String,
        /// Why, shown by `vgrid nodes`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put a drained node back in service.
    Resume { node: String },
    /// Forget a drained or lost node that runs nothing. An agent still
    /// running with its token registers it again: revoke the token
    /// (`vgrid users token revoke NODE`) to keep it out.
    Rm { node: String },
}

pub fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    match args.cmd {
        None => {}
        Some(NodesCmd::Drain { node, reason }) => {
            let n = block_on(c.drain_node(&node, reason))??;
            println!("node {}: {}", n.name, n.state);
            return Ok(ExitCode::SUCCESS);
        }
        Some(NodesCmd::Resume { node }) => {
            let n = block_on(c.resume_node(&node))??;
            println!("node {}: {}", n.name, n.state);
            return Ok(ExitCode::SUCCESS);
        }
        Some(NodesCmd::Rm { node }) => {
            block_on(c.remove_node(&node))??;
            println!("node {node}: removed");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let nodes = block_on(c.nodes())??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:<8} {:>9} {:>15}  {:<21} {:<12} REASON",
        "NAME", "STATE", "CPUS", "MEMORY_MB", "LAST SEEN", "JOBS"
    )?;
    for n in &nodes {
        let jobs: Vec<String> = n.jobs.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "{:<16} {:<8} {:>9} {:>15}  {:<21} {:<12} {}",
            n.name,
            n.state,
            format!("{}/{}", n.free_cpus, n.cpus),
            format!("{}/{}", n.free_memory_mb, n.memory_mb),
            format_time(n.last_seen_unix_ms),
            if jobs.is_empty() {
                "-".to_string()
            } else {
                jobs.join(",")
            },
            vgrid_model::names::display_safe(n.drain_reason.as_deref().unwrap_or("-"))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
