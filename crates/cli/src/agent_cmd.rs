//! `vgrid agent`: a node agent that runs jobs' VMs for a controller. Also
//! the local agent that `vgrid serve` runs in its own process.

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
/// `$VGRID_DATA_DIR`; give each agent on one machine its own.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The controller's URL, e.g. http://10.0.0.1:7777.
    #[arg(long, env = "VGRID_URL")]
    controller: String,
    /// A file holding the node's token: an agent token made with
    /// `vgrid users add NODE --role agent` (it acts only for node NODE), or
    /// the admin's. Or set VGRID_TOKEN; a token is never taken on the
    /// command line, where `ps` would show it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The node's name (default: the host name); an agent token only works
    /// for the node named like its user.
    #[arg(long)]
    name: Option<String>,
    /// CPUs offered to VMs (default: all).
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory offered to VMs, in MiB (default: 3/4 of RAM).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// A node label for requirement and rank expressions, KEY=VALUE.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
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
    let data_dir = crate::data_dir::data_dir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let labels = args.labels.into_iter().collect();
    let token = agent_token(args.token_file.as_deref())?;
    let cfg = agent_config(
        &data_dir,
        args.controller,
        token,
        args.name,
        args.cpus,
        args.memory_mb,
        labels,
    )?;
    rt.block_on(async {
        let driver = driver(&data_dir)?;
        eprintln!(
            "vgrid: agent {} ({} CPUs, {} MiB) for {}",
            cfg.name, cfg.cpus, cfg.memory_mb, cfg.controller
        );
        vgrid_agent::run(cfg, driver, crate::serve_cmd::shutdown_signal())
            .await
            .context("the agent failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The agent's token: from `--token-file`, else from `VGRID_TOKEN`.
fn agent_token(file: Option<&Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        None => std::env::var("VGRID_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "no token: give --token-file FILE (a file holding the node's agent token) or set VGRID_TOKEN"
            )
        })?,
    };
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the agent token is empty");
    Ok(token)
}

/// The QEMU driver over the node's VM runtime and image store.
pub fn driver(data_dir: &Path) -> anyhow::Result<Arc<QemuDriver>> {
    let cfg = vgrid_vm::RuntimeConfig::from_env(data_dir)?;
    let images = StoreImages::open(data_dir)?;
    let runtime = vgrid_vm::Runtime::open(cfg, Arc::new(images))?;
    Ok(Arc::new(QemuDriver::new(
        Arc::new(runtime),
        data_dir.join("agent"),
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
    let name = match name {
        Some(n) => n,
        None => host_name(),
    };
    Ok(AgentConfig {
        controller,
        token,
        name,
        cpus: cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        memory_mb: memory_mb.unwrap_or_else(|| host_memory_mb() * 3 / 4),
        labels,
        state_dir: data_dir.join("agent"),
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
