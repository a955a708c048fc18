//! The validated job: what the rest of vgrid stores, schedules and runs.
//!
//! These types carry no source positions; they are the result of a job file
//! that passed every check. They serialize to JSON for the store and the API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Expression;

impl JobSpec {
    /// A job of one VM with the smallest defaults: a normal job, one CPU,
    /// 256 MiB, stop-start. For programs that make jobs without a file.
    pub fn minimal(name: &str, image: &str, command: Vec<String>) -> JobSpec {
        JobSpec {
            name: name.into(),
            image: image.into(),
            cpus: 1,
            memory_mb: 256,
            vms: 1,
            command,
            env: BTreeMap::new(),
            user: None,
            inputs: Vec::new(),
            input_data: None,
            outputs: Vec::new(),
            mounts: Vec::new(),
            class: JobClass::Normal,
            priority: 0,
            requirements: None,
            rank: None,
            checkpoint_interval_s: None,
            mode: VmMode::StopStart,
            walltime_s: None,
        }
    }
}

/// A validated job request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A short human name; not unique.
    pub name: String,
    /// The guest image name, as known to `vgrid image ls`.
    pub image: String,
    /// Virtual CPUs per VM.
    pub cpus: u32,
    /// Memory per VM, in MiB.
    pub memory_mb: u64,
    /// How many VMs the job runs (all with the same shape).
    pub vms: u32,
    /// The program and its arguments, run inside the guest (no shell).
    pub command: Vec<String>,
    /// Environment of the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The guest user that runs the command; the guest's default when unset.
    #[serde(default)]
    pub user: Option<String>,
    /// Files copied into the guest before the command runs: `from` on the
    /// submitter's machine (uploaded by `vgrid submit`), `to` in the guest
    /// (see [`JobSpec::staging`]).
    #[serde(default)]
    pub inputs: Vec<Transfer>,
    /// The data manifest (64 hexadecimal digits) in the controller's store
    /// that holds the inputs, one file per input named by
    /// [`JobSpec::input_names`]. Set by the controller at submission from
    /// what the submitter uploaded; never read from a job file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
    /// Files collected after the command ends: `from` in the guest, `to`
    /// the relative name they get in the job's outputs.
    #[serde(default)]
    pub outputs: Vec<Transfer>,
    /// Host directories (data repositories) mounted into the guest.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The scheduling class.
    pub class: JobClass,
    /// Higher runs first within a class.
    #[serde(default)]
    pub priority: i32,
    /// Requirement expression over node attributes, checked by the scheduler.
    #[serde(default)]
    pub requirements: Option<Expression>,
    /// Rank expression over node attributes: higher is preferred.
    #[serde(default)]
    pub rank: Option<Expression>,
    /// Take a checkpoint every this many seconds while running.
    #[serde(default)]
    pub checkpoint_interval_s: Option<u64>,
    /// What happens to the VM between tasks.
    pub mode: VmMode,
    /// The longest the command may run, in seconds.
    #[serde(default)]
    pub walltime_s: Option<u64>,
}

/// A file staged in or out. For inputs `from` is a path on the
/// submitter's machine (as the job file gives it) and `to` an absolute
/// guest path; for outputs `from` is an absolute guest path and `to` a
/// relative name in the job's outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// A host directory mounted into the guest (virtio-9p), never copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

/// The scheduling class of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JobClass {
    /// Runs as soon as resources allow.
    Normal,
    /// Runs only on idle capacity; checkpointed and requeued when a normal
    /// job needs the node.
    BestEffort,
    /// Runs in a fixed window, given as Unix seconds (UTC).
    Reservation { start_unix_s: i64, end_unix_s: i64 },
}

impl JobClass {
    /// The class name as written in job files.
    pub fn name(&self) -> &'static str {
        match self {
            JobClass::Normal => "normal",
            JobClass::BestEffort => "best-effort",
            JobClass::Reservation { .. } => "reservation",
        }
    }
}

/// What happens to the job's VM between tasks (GridWay's three
/// configurations): a fresh VM each time, a VM saved and restored, or a VM
/// kept running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VmMode {
    #[default]
    StopStart,
    SaveRestore,
    Persistent,
}

impl VmMode {
    /// The mode name as written in job files.
    pub fn name(&self) -> &'static str {
        match self {
            VmMode::StopStart => "stop-start",
            VmMode::SaveRestore => "save-restore",
            VmMode::Persistent => "persistent",
        }
    }
}
