//! `vgrid agent`: a node agent that runs jobs' VMs for a controller. Also
//! the local agent that `vgrid serve` runs in its own process.
//!
//! A node needs nothing but the controller's URL and its join token the
//! first time: it joins over TLS, accepting only a controller whose CA has
//! the token's fingerprint, and keeps what it gets (its own credential and
//! the CA) in `$VGRID_DATA_DIR/agent/credentials.json` (0600) for every
//! later start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vgrid_agent::AgentConfig;
use vgrid_agent::qemu::{QemuDriver, StoreImages};

/// Run a node agent: register this machine with a controller and run the
/// VMs of the jobs it places here. State (VMs, images) lives under
/// `$VGRID_DATA_DIR`; give each agent on one machine its own. Settings not
/// given as flags or environment variables come from the configuration
/// file's `[agent]` and `[vm]` tables (docs/config.md).
#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    config: crate::config::ConfigArg,
    /// The controller's URL, e.g. https://10.0.0.1:7777 (as in its
    /// `$VGRID_DATA_DIR/url`); required here or in the file.
    #[arg(long, env = "VGRID_URL")]
    controller: Option<String>,
    /// The controller's join token (its `$VGRID_DATA_DIR/join-token`), to
    /// join the first time. It shows in `ps`: prefer --join-token-file or
    /// VGRID_JOIN_TOKEN.
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// A file holding the controller's join token.
    #[arg(long, value_name = "FILE", env = "VGRID_JOIN_TOKEN_FILE")]
    join_token_file: Option<std::path::PathBuf>,
    /// Instead of joining: a file holding a token made with `vgrid users
    /// add NODE --role agent` (or VGRID_TOKEN), with --ca-file for an
    /// https:// controller.
    #[arg(long, value_name = "FILE", env = "VGRID_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The controller's CA certificate (its `tls/ca.pem`), with --token-file.
    #[arg(long, value_name = "FILE", env = "VGRID_CA")]
    ca_file: Option<std::path::PathBuf>,
    /// The node's name (default: the host name); an agent token only works
    /// for the node named like its user.
    #[arg(long, env = "VGRID_NODE_NAME")]
    name: Option<String>,
    /// CPUs offered to VMs (default: all).
    #[arg(long, env = "VGRID_CPUS")]
    cpus: Option<u32>,
    /// Memory offered to VMs, in MiB (default: 3/4 of RAM).
    #[arg(long, env = "VGRID_MEMORY_MB")]
    memory_mb: Option<u64>,
    /// A node label for requirement and rank expressions, KEY=VALUE (added
    /// to the file's `[agent.labels]`, replacing a label of the same key).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

impl AgentArgs {
    /// Fills what flags and environment left unset from the file's
    /// `[agent]` table.
    fn merge(mut self, file: &crate::config::AgentFile) -> anyhow::Result<(AgentArgs, String)> {
        let controller = self.controller.take().or(file.controller.clone()).ok_or_else(|| {
            anyhow::anyhow!(
                "no controller: give --controller URL, set VGRID_URL, or set `controller` in the configuration file's [agent] table"
            )
        })?;
        self.join_token_file = self.join_token_file.or(file.join_token_file.clone());
        self.token_file = self.token_file.or(file.token_file.clone());
        self.ca_file = self.ca_file.or(file.ca_file.clone());
        self.name = self.name.or(file.name.clone());
        self.cpus = self.cpus.or(file.cpus);
        self.memory_mb = self.memory_mb.or(file.memory_mb);
        let mut labels = file.labels.clone();
        labels.extend(self.labels);
        self.labels = labels.into_iter().collect();
        Ok((self, controller))
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let file = args.config.load()?;
    let data_dir = crate::data_dir::data_dir_or(file.agent.data_dir.as_deref())?;
    let (args, controller) = args.merge(&file.agent)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let labels = args.labels.iter().cloned().collect();
    let name = args.name.clone().unwrap_or_else(host_name);
    let (token, tls) = rt.block_on(credentials(&data_dir, &controller, &name, &args))?;
    let mut cfg = agent_config(
        &data_dir,
        controller.clone(),
        token,
        Some(name),
        args.cpus,
        args.memory_mb,
        labels,
    )?;
    cfg.tls = tls;
    rt.block_on(async {
        let driver = driver(
            &data_dir,
            file.vm.runtime_config(&data_dir)?,
            file.vm.keep_config()?,
        )?;
        crate::logging::say(&format!(
            "agent {} ({} CPUs, {} MiB) for {}",
            cfg.name, cfg.cpus, cfg.memory_mb, cfg.controller
        ));
        vgrid_agent::run(cfg, driver, crate::serve_cmd::shutdown_signal())
            .await
            .context("the agent failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The node's credentials file.
fn credentials_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("agent").join("credentials.json")
}

/// The node's token and whom to trust: from its credentials file (it
/// joined before), by joining with the join token, or from a token file.
async fn credentials(
    data_dir: &Path,
    controller: &str,
    name: &str,
    args: &AgentArgs,
) -> anyhow::Result<(String, Option<rustls::ClientConfig>)> {
    let file = credentials_file(data_dir);
    let join = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(crate::connect::read_trimmed(path)?),
        (None, None) => std::env::var("VGRID_JOIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    if file.exists() {
        let c = crate::credentials::Credentials::read(&file)?;
        if c.controller == controller && c.name == name {
            let tls = c.tls()?;
            return Ok((c.token, Some(tls)));
        }
        anyhow::ensure!(
            join.is_some(),
            "{} is for node `{}` of {}, not `{name}` of {controller}: give a join token to join again",
            file.display(),
            c.name,
            c.controller
        );
    }
    if let Some(join) = join {
        return join_controller(&file, controller, name, &join).await;
    }
    let token = agent_token(args.token_file.as_deref())?;
    if controller.starts_with("https://") {
        let ca = args.ca_file.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "{controller} serves https: give --join-token (or --join-token-file), or --token-file with --ca-file"
            )
        })?;
        let tls = vgrid_pki::client_config(vgrid_pki::read_ca(ca)?)?;
        return Ok((token, Some(tls)));
    }
    Ok((token, None))
}

/// Joins: the first connection trusts only a CA with the fingerprint the
/// join token pins; the answer (the node's credential and that CA) is kept.
async fn join_controller(
    file: &Path,
    controller: &str,
    name: &str,
    join: &str,
) -> anyhow::Result<(String, Option<rustls::ClientConfig>)> {
    let token = vgrid_pki::JoinToken::parse(join)?;
    anyhow::ensure!(
        controller.starts_with("https://"),
        "joining needs the controller's https:// URL (its `$VGRID_DATA_DIR/url`), not {controller}"
    );
    let client = vgrid_client::Client::with_tls(
        controller,
        "",
        vgrid_pki::pinned_client_config(token.ca.clone())?,
    )?;
    let answer = client
        .join(name, &token.secret)
        .await
        .with_context(|| format!("cannot join {controller} as node `{name}`"))?;
    let ca = vgrid_pki::parse_ca_pem(&answer.ca_pem, Path::new("the join answer"))?;
    anyhow::ensure!(
        vgrid_pki::Fingerprint::of(&ca) == token.ca,
        "the controller answered with a CA that is not the one its join token names"
    );
    let creds = crate::credentials::Credentials {
        format: crate::credentials::FORMAT,
        controller: controller.to_string(),
        name: answer.node.clone(),
        token: answer.token.clone(),
        ca_pem: answer.ca_pem.clone(),
    };
    creds.write(file)?;
    crate::logging::say(&format!("joined {controller} as node `{}`", answer.node));
    Ok((answer.token, Some(vgrid_pki::client_config(ca)?)))
}

/// The agent's token: from `--token-file`, else from `VGRID_TOKEN`.
fn agent_token(file: Option<&Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        None => std::env::var("VGRID_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "no credential: give --join-token-file FILE (the controller's join-token), or --token-file FILE, or set VGRID_JOIN_TOKEN or VGRID_TOKEN"
            )
        })?,
    };
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the agent token is empty");
    Ok(token)
}

/// The QEMU driver over the node's VM runtime and image store.
pub fn driver(
    data_dir: &Path,
    cfg: vgrid_vm::RuntimeConfig,
    keep: vgrid_agent::qemu::KeepConfig,
) -> anyhow::Result<Arc<QemuDriver>> {
    let images = StoreImages::open(data_dir)?;
    let runtime = vgrid_vm::Runtime::open(cfg, Arc::new(images))?;
    Ok(Arc::new(QemuDriver::with_keep(
        Arc::new(runtime),
        data_dir.join("agent"),
        keep,
    )?))
}

/// The agent's configuration with this machine's defaults filled in.
pub fn agent_config(
    data_dir: &Path,
    controller: String,
    token: String,
    name: Option<String>,
    cpus: Option<u32>,
    memory_mb: Option<u64>,
    mut labels: BTreeMap<String, String>,
) -> anyhow::Result<AgentConfig> {
    labels
        .entry("arch".into())
        .or_insert_with(|| std::env::consts::ARCH.to_string());
    let name = name.unwrap_or_else(host_name);
    Ok(AgentConfig {
        controller,
        token,
        tls: None,
        name,
        cpus: cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        memory_mb: memory_mb.unwrap_or_else(|| host_memory_mb() * 3 / 4),
        labels,
        state_dir: data_dir.join("agent"),
        // The node's cache of the controller's store (fetched images).
        cache_dir: Some(data_dir.join("agent").join("store")),
        watch_interval: Duration::from_millis(200),
    })
}

/// The host name, lower-cased to fit node names; `node` when unknown.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
        name
    } else {
        format!("node-{name}")
    }
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024)
}
