//! `vgrid sim`: replay a trace through the scheduling core.

use std::process::ExitCode;

/// Replay a Standard Workload Format trace through the scheduling core.
#[derive(clap::Args)]
pub struct SimArgs {
    /// The trace file (.swf or .swf.gz).
    #[arg(long)]
    trace: std::path::PathBuf,
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("vgrid sim is not built yet (trace {})", args.trace.display())
}
