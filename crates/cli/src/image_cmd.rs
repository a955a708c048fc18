//! `vgrid image`: guest images.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Build the stock guest image from Debian packages.
    Build {
        /// Image name.
        #[arg(default_value = "tiny")]
        name: String,
    },
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build { name } => anyhow::bail!("vgrid image build is not built yet ({name})"),
    }
}
