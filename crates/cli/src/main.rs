//! The `vgrid` command. Each subcommand lives in its own module; this file
//! only parses the command line and dispatches.

mod data_dir;
mod image_cmd;
mod sim_cmd;
mod vm_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vgrid runs batch jobs and services inside virtual machines.
#[derive(Parser)]
#[command(name = "vgrid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a workload trace (SWF) through the scheduling core.
    Sim(sim_cmd::SimArgs),
    /// Build, import, list and remove guest images.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Node-local VM commands (for administrators and tests).
    #[command(subcommand)]
    Vm(vm_cmd::VmCmd),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VGRID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Vm(cmd) => vm_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vgrid: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
