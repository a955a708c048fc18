//! `vgrid vm`: node-local VM commands.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum VmCmd {
    /// List VMs on this node.
    Ls,
}

pub fn run(cmd: VmCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Ls => anyhow::bail!("vgrid vm is not built yet"),
    }
}
