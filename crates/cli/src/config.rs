//! The configuration file of `vgrid serve` and `vgrid agent`:
//! `/etc/vgrid/vgrid.toml`, or the file `--config FILE` / `VGRID_CONFIG`
//! names (docs/config.md lists every key).
//!
//! A setting comes from, first found: the command-line flag, its
//! environment variable, this file, the built-in default. Clap reads the
//! first two into `Option`s; the commands fill what is still `None` from
//! here. A missing default file is an empty configuration; a missing file
//! that was asked for, an unknown key or a value of the wrong type is an
//! error naming the file and line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use vgrid_core::{CostModel, Policy, PreemptionMode};

/// Where the file is looked for when none is named.
pub const DEFAULT_PATH: &str = "/etc/vgrid/vgrid.toml";

/// The `--config` option of the commands that read the file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArg {
    /// The configuration file [default: /etc/vgrid/vgrid.toml, skipped when
    /// missing]; flags and environment variables override it.
    #[arg(long = "config", env = "VGRID_CONFIG", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration: the named file (which must exist), else the
    /// default file when it exists, else empty.
    pub fn load(&self) -> anyhow::Result<FileConfig> {
        match &self.path {
            Some(path) => load_file(path),
            None => match std::fs::metadata(DEFAULT_PATH) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
                _ => load_file(Path::new(DEFAULT_PATH)),
            },
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub serve: ServeFile,
    pub agent: AgentFile,
    pub vm: VmFile,
    pub scheduler: SchedulerFile,
}

/// `[serve]`: the options of `vgrid serve`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub no_agent: Option<bool>,
    pub heartbeat_ms: Option<u64>,
    pub lost_after_ms: Option<u64>,
    pub insecure_http: Option<bool>,
}

/// `[agent]`: the options of `vgrid agent`. No token itself: a file that
/// is world-readable must not hold secrets, it names the files that do.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentFile {
    pub data_dir: Option<PathBuf>,
    pub controller: Option<String>,
    pub join_token_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub name: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

/// `[vm]`: how a node runs VMs (the agent of `vgrid agent` and the local
/// one of `vgrid serve`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmFile {
    pub qemu: Option<PathBuf>,
    pub accel: Option<vgrid_vm::Accel>,
    pub user: Option<String>,
    pub mount_roots: Option<Vec<PathBuf>>,
    pub keep_idle_s: Option<u64>,
}

/// `[scheduler]`: the scheduling core's settings in `vgrid serve`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerFile {
    pub policy: Option<Policy>,
    pub preemption: Option<PreemptionMode>,
    pub checkpoint_cost: Option<CostModel>,
    pub restore_cost: Option<CostModel>,
}

impl VmFile {
    /// The node's VM runtime: defaults, then this table, then the
    /// environment (`VGRID_QEMU`, `VGRID_ACCEL`, ...).
    pub fn runtime_config(&self, data_dir: &Path) -> anyhow::Result<vgrid_vm::RuntimeConfig> {
        let mut cfg = vgrid_vm::RuntimeConfig::new(data_dir);
        if let Some(qemu) = &self.qemu {
            cfg.qemu = Some(qemu.clone());
        }
        if self.accel.is_some() {
            cfg.accel = self.accel;
        }
        if let Some(user) = &self.user {
            cfg.vm_user = user.clone();
        }
        if let Some(roots) = &self.mount_roots {
            cfg.mount_roots = roots.clone();
        }
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// How long VMs are kept for reuse: default, this table, then
    /// `VGRID_KEEP_IDLE_S`.
    pub fn keep_config(&self) -> anyhow::Result<vgrid_agent::qemu::KeepConfig> {
        let mut keep = vgrid_agent::qemu::KeepConfig::default();
        if let Some(secs) = self.keep_idle_s {
            keep.idle_timeout = std::time::Duration::from_secs(secs);
        }
        keep.apply_env()?;
        Ok(keep)
    }
}

impl SchedulerFile {
    /// Sets the controller's scheduler settings named in the table.
    pub fn apply(&self, cfg: &mut vgrid_controller::Config) {
        if let Some(policy) = self.policy {
            cfg.policy = policy;
        }
        if let Some(preemption) = self.preemption {
            cfg.preemption = preemption;
        }
        if let Some(cost) = self.checkpoint_cost {
            cfg.checkpoint_cost = cost;
        }
        if let Some(cost) = self.restore_cost {
            cfg.restore_cost = cost;
        }
    }
}

/// The keys of each table. `agent.labels` is free-form (label names).
const TABLES: &[(&str, &[&str])] = &[
    ("", &["serve", "agent", "vm", "scheduler"]),
    (
        "serve",
        &[
            "data_dir",
            "listen",
            "cpus",
            "memory_mb",
            "no_agent",
            "heartbeat_ms",
            "lost_after_ms",
            "insecure_http",
        ],
    ),
    (
        "agent",
        &[
            "data_dir",
            "controller",
            "join_token_file",
            "token_file",
            "ca_file",
            "name",
            "cpus",
            "memory_mb",
            "labels",
        ],
    ),
    (
        "vm",
        &["qemu", "accel", "user", "mount_roots", "keep_idle_s"],
    ),
    (
        "scheduler",
        &["policy", "preemption", "checkpoint_cost", "restore_cost"],
    ),
    ("scheduler.checkpoint_cost", &["fixed_ms", "ms_per_gb"]),
    ("scheduler.restore_cost", &["fixed_ms", "ms_per_gb"]),
];

/// Tables whose keys are the user's (not checked).
const FREE_FORM: &[&str] = &["agent.labels"];

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    parse(path, &text)
}

/// Parses the file's text: syntax, then keys, then types.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<FileConfig> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))?;
    check_keys(path, text, &table, "")?;
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e)))
}

/// toml's message (`TOML parse error at line 2, column 9` and a drawing of
/// the line) in one line: `line 2, column 9: invalid type ...`.
fn one_line(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let place = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("TOML parse error at "))
        .map(str::to_string);
    let why = e.message().trim();
    match place {
        Some(place) => format!("{place}: {why}"),
        None => why.to_string(),
    }
}

fn check_keys(path: &Path, text: &str, table: &toml::Table, prefix: &str) -> anyhow::Result<()> {
    let Some((_, known)) = TABLES.iter().find(|(name, _)| *name == prefix) else {
        return Ok(());
    };
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if !known.contains(&key.as_str()) {
            let line = line_of(text, prefix, key).map_or(String::new(), |l| format!(":{l}"));
            let hint = did_you_mean(key, known)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            let table_name = if prefix.is_empty() {
                "the file's tables".to_string()
            } else {
                format!("[{prefix}]")
            };
            anyhow::bail!(
                "{}{line}: unknown key `{full}`{hint}; the keys of {table_name} are: {}",
                path.display(),
                known.join(", ")
            );
        }
        if let toml::Value::Table(inner) = value
            && !FREE_FORM.contains(&full.as_str())
        {
            check_keys(path, text, inner, &full)?;
        }
    }
    Ok(())
}

/// The line (from 1) where `key` of table `prefix` is written: as
/// `key = ...` in that table's section (or inside an inline table of the
/// section above it), or as a `[key]` header at the top level. `None` when
/// written some other way.
fn line_of(text: &str, prefix: &str, key: &str) -> Option<usize> {
    let parent = prefix.rsplit_once('.').map(|(parent, _)| parent);
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            section = header.split(']').next().unwrap_or("").trim().to_string();
            if prefix.is_empty() && section.split('.').next() == Some(key) {
                return Some(i + 1);
            }
            continue;
        }
        let here = section == prefix && assigns(trimmed, key, false);
        let inline = parent == Some(section.as_str()) && assigns(trimmed, key, true);
        if here || inline {
            return Some(i + 1);
        }
    }
    None
}

/// Whether `line` assigns `key` (`key = `, `"key" = `), at its start or,
/// with `inline`, after a `{` or `,` of an inline table.
fn assigns(line: &str, key: &str, inline: bool) -> bool {
    let quoted = format!("\"{key}\"");
    let mut starts = vec![0];
    if inline {
        starts.extend(
            line.char_indices()
                .filter(|(_, c)| *c == '{' || *c == ',')
                .map(|(i, _)| i + 1),
        );
    }
    starts.into_iter().any(|at| {
        let rest = line[at..].trim_start();
        [key, quoted.as_str()].iter().any(|k| {
            rest.strip_prefix(k)
                .is_some_and(|after| after.trim_start().starts_with('='))
        })
    })
}

/// The known key nearest to `key`, when near enough to be a typo.
fn did_you_mean<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
