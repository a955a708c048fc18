//! `vgrid users`: user administration (admin token needed).

use std::process::ExitCode;

use vgrid_api::types::Role;

use crate::connect::{block_on, client};

#[derive(clap::Subcommand)]
pub enum UsersCmd {
    /// Add a user and print their token (shown only this once).
    Add {
        /// The user name (a-z, 0-9, `_`, `-`).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum, default_value_t = RoleArg::User)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Sees and controls only their own jobs.
    User,
    /// Sees and controls everything.
    Admin,
    /// A node's credential: acts only for the node named like the user.
    Agent,
}

pub fn run(cmd: UsersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCmd::Add { name, role } => {
            let role = match role {
                RoleArg::User => Role::User,
                RoleArg::Admin => Role::Admin,
                RoleArg::Agent => Role::Agent,
            };
            let c = client()?;
            let added = block_on(c.add_user(&name, role))??;
            println!("{}", added.token);
            Ok(ExitCode::SUCCESS)
        }
    }
}
