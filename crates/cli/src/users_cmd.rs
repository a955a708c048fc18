//! `vgrid users`: user administration (admin token needed).

use std::process::ExitCode;

use vgrid_api::types::Role;

use crate::connect::{block_on, client};

#[derive(clap::Subcommand)]
pub enum UsersCmd {
    /// Add a user and print their token (shown only this once), or write
    /// it with the controller's URL and CA into a credentials file for
    /// `vgrid login`.
    Add {
        /// The user name (a-z, 0-9, `_`, `-`).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum, default_value_t = RoleArg::User)]
        role: RoleArg,
        /// Write a credentials file (0600) instead of printing the token:
        /// give it to the user, who runs `vgrid login FILE`.
        #[arg(long, value_name = "FILE")]
        credentials: Option<std::path::PathBuf>,
        /// Print JSON: `{"name", "token"}`, or `{"name", "credentials"}`
        /// with the file's path.
        #[arg(long)]
        json: bool,
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
        UsersCmd::Add {
            name,
            role,
            credentials,
            json,
        } => {
            let role = match role {
                RoleArg::User => Role::User,
                RoleArg::Admin => Role::Admin,
                RoleArg::Agent => Role::Agent,
            };
            let c = client()?;
            // The CA first: a user made without a file to hand over is lost.
            let ca_pem = match &credentials {
                Some(_) => Some(crate::connect::ca_pem()?.ok_or_else(|| {
                    anyhow::anyhow!("this controller serves plain http: a credentials file is for https:// controllers")
                })?),
                None => None,
            };
            let added = block_on(c.add_user(&name, role))??;
            match (credentials, ca_pem) {
                (Some(path), Some(ca_pem)) => {
                    crate::credentials::Credentials {
                        format: crate::credentials::FORMAT,
                        controller: c.base_url().to_string(),
                        name: added.name.clone(),
                        token: added.token,
                        ca_pem,
                    }
                    .write(&path)?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "name": added.name, "credentials": path })
                        );
                    }
                    eprintln!(
                        "vgrid: wrote {}; the user runs `vgrid login {}`",
                        path.display(),
                        path.display()
                    );
                }
                _ if json => println!("{}", serde_json::to_string_pretty(&added)?),
                _ => println!("{}", added.token),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `vgrid login FILE`.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The credentials file the administrator gave you.
    file: std::path::PathBuf,
    /// Print JSON: `{"controller", "name", "credentials"}`.
    #[arg(long)]
    json: bool,
}

/// Checks the credentials against the controller, then keeps them.
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let c = crate::credentials::Credentials::read(&args.file)?;
    let client = vgrid_client::Client::with_tls(&c.controller, &c.token, c.tls()?)?;
    block_on(client.jobs(false))??;
    let dest = crate::credentials::user_file()
        .ok_or_else(|| anyhow::anyhow!("no HOME or XDG_CONFIG_HOME to keep the credentials in"))?;
    c.write(&dest)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "controller": c.controller, "name": c.name, "credentials": dest })
        );
    }
    eprintln!(
        "vgrid: logged in to {} as {}; credentials in {}",
        c.controller,
        c.name,
        dest.display()
    );
    Ok(ExitCode::SUCCESS)
}
