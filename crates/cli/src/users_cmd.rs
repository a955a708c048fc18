//! `vgrid users`: user administration (admin token needed).

use std::process::ExitCode;

use vgrid_api::types::Role;

use std::io::Write;

use crate::connect::{block_on, client, format_time};

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
    /// List users, their roles and their jobs not ended (never tokens).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user whose jobs have all ended: their token stops working;
    /// their ended jobs stay, and the name is never given again.
    Rm { name: String },
    /// Rotate or revoke a user's token.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Make a new token and print it (or write a credentials file); the
    /// old one stops working at once. A user may rotate their own.
    Rotate {
        name: String,
        /// Write a credentials file (0600) instead of printing the token.
        #[arg(long, value_name = "FILE")]
        credentials: Option<std::path::PathBuf>,
        /// Print JSON, as `users add --json` does.
        #[arg(long)]
        json: bool,
    },
    /// The token stops working at once; none works until a rotation.
    Revoke { name: String },
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
            let ca_pem = ca_for(&credentials)?;
            let added = block_on(c.add_user(&name, role))??;
            hand_over(&c, added, credentials, ca_pem, json)?;
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Ls { json } => {
            let c = client()?;
            let users = block_on(c.users())??;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:>5}  {:<20} {:<6} {:<21} {:<8} {:>5}",
                "ID", "NAME", "ROLE", "CREATED", "TOKEN", "JOBS"
            )?;
            for u in &users {
                writeln!(
                    out,
                    "{:>5}  {:<20} {:<6} {:<21} {:<8} {:>5}",
                    u.id,
                    vgrid_model::names::display_safe(&u.name),
                    u.role.as_str(),
                    format_time(u.created_unix_ms),
                    if u.token_revoked_unix_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    u.active_jobs
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Rm { name } => {
            block_on(client()?.remove_user(&name))??;
            println!("user {name}: removed");
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Token(TokenCmd::Rotate {
            name,
            credentials,
            json,
        }) => {
            let c = client()?;
            let ca_pem = ca_for(&credentials)?;
            let new = block_on(c.rotate_token(&name))??;
            hand_over(&c, new, credentials, ca_pem, json)?;
            Ok(ExitCode::SUCCESS)
        }
        UsersCmd::Token(TokenCmd::Revoke { name }) => {
            block_on(client()?.revoke_token(&name))??;
            println!("user {name}: token revoked");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The controller's CA when a credentials file is asked for: fetched
/// before the token is made, since a token made without a file to hand
/// it over in is lost.
fn ca_for(credentials: &Option<std::path::PathBuf>) -> anyhow::Result<Option<String>> {
    match credentials {
        Some(_) => Ok(Some(crate::connect::ca_pem()?.ok_or_else(|| {
            anyhow::anyhow!(
                "this controller serves plain http: a credentials file is for https:// controllers"
            )
        })?)),
        None => Ok(None),
    }
}

/// Prints a new token, or writes it into a credentials file; with `json`,
/// `{"id", "name", "role", "token"}`, or `{"name", "credentials"}` with
/// the file's path.
fn hand_over(
    c: &vgrid_client::Client,
    added: vgrid_api::types::AddUserResponse,
    credentials: Option<std::path::PathBuf>,
    ca_pem: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
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
    Ok(())
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
