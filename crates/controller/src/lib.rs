//! The live controller of vgrid.
//!
//! One thread (the *actor*) owns all state: the scheduling core, the jobs,
//! the nodes and the database. Transports (the HTTP API) reach it through a
//! [`ControllerHandle`], which implements [`vgrid_server::Backend`]: each
//! [`vgrid_server::Command`] goes over a channel to the actor.
//!
//! # The actor's loop
//!
//! 1. Take every command waiting in the channel (at least one, or none when
//!    a timer is due).
//! 2. Apply them to memory and to the core, collecting database changes.
//! 3. Run a scheduling pass when anything changed or the core asked to be
//!    woken, and turn its actions into agent actions and job transitions.
//! 4. Write all changes of the round in one transaction (group commit: one
//!    fsync for the whole batch).
//! 5. Only then answer the commands and hand actions to agents.
//!
//! **Invariant: nothing is acknowledged before it is durable.** A reply, an
//! agent action or a token becomes visible only after the transaction that
//! recorded it committed. A crash loses only unacknowledged work.
//!
//! **Invariant: the core's state is a function of the scheduler log.** Every
//! input given to the core is logged in the same transaction as its effects;
//! after a restart, replaying the log into a fresh core gives back the same
//! state (the core is deterministic), and running VMs are reattached when
//! their agents register again.

mod actor;
mod book;
mod handle;
mod handlers;
mod mailbox;
mod metrics;
mod output;
mod sched_settings;
mod schedlog;
mod setup;
#[cfg(test)]
mod tests;
mod transitions;
mod views;

use std::path::PathBuf;

pub use handle::ControllerHandle;
pub use sched_settings::{SETTINGS_FILE, SchedulerSettings};
use vgrid_core::{CostModel, Policy, PreemptionMode};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, job output and the store live.
    pub data_dir: PathBuf,
    /// Agents poll at least this often; it is their heartbeat.
    pub heartbeat_ms: u64,
    /// A node whose agent was silent this long is lost: its jobs resume
    /// elsewhere from their last checkpoint.
    pub lost_after_ms: u64,
    /// The backfilling policy of the core.
    pub policy: Policy,
    /// What preemption does to a running job (the core's).
    pub preemption: PreemptionMode,
    /// The core's estimate of a checkpoint's cost, for expected ends.
    pub checkpoint_cost: CostModel,
    /// The core's estimate of a restore's cost, for expected ends.
    pub restore_cost: CostModel,
    /// The most output a job may write, in bytes; writes beyond it are
    /// refused.
    pub max_output_bytes: u64,
    /// How nodes join: without it, `/v1/join` is refused (nodes then use
    /// tokens made with `vgrid users add NODE --role agent`).
    pub join: Option<JoinConfig>,
    /// The nodes' allowed roots for host paths (`VGRID_MOUNT_ROOTS`): a
    /// job's mounts must lie in `<root>/<owner>/`, checked at submit (the
    /// node checks again, links resolved). Inputs and outputs are no host
    /// paths: they travel through the store.
    pub staging_roots: Vec<PathBuf>,
}

impl Config {
    /// Defaults for a data directory: 2 s heartbeat, lost after 10 s, EASY.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            heartbeat_ms: 2_000,
            lost_after_ms: 10_000,
            policy: Policy::Easy,
            preemption: PreemptionMode::Checkpoint,
            checkpoint_cost: CostModel::default(),
            restore_cost: CostModel::default(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            join: None,
            staging_roots: vec![data_dir_repos(&data_dir)],
            data_dir,
        }
    }

    /// Where checkpoints were kept before they went to the store; what is
    /// left there is removed when its job ends.
    pub(crate) fn legacy_checkpoint_root(&self) -> PathBuf {
        self.data_dir.join("checkpoints")
    }
}

/// What a joining node must know, and what it is given.
#[derive(Clone)]
pub struct JoinConfig {
    /// BLAKE3 of the join token's secret.
    pub secret_hash: [u8; 32],
    /// The controller's CA certificate, for the node to check and keep.
    pub ca_pem: String,
}

impl std::fmt::Debug for JoinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinConfig").finish_non_exhaustive()
    }
}

/// The default allowed root of host paths: `repos/` in the data directory,
/// as the node agents' default.
fn data_dir_repos(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("repos")
}

/// The default limit of a job's output: 1 GiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// Why the controller could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot use the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database failed")]
    Store(#[from] vgrid_store::StoreError),
    #[error("cannot open the content-addressed store in {path}")]
    Cas {
        path: PathBuf,
        #[source]
        source: vgrid_cas::CasError,
    },
    #[error("{path}: {why}")]
    SchedulerSettings { path: PathBuf, why: String },
    #[error("the scheduler log is damaged at entry {seq}: {why}")]
    SchedulerLog { seq: u64, why: String },
    #[error("cannot write the admin token to {path}")]
    AdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running controller: its handle and its thread.
pub struct Controller {
    handle: ControllerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), ControllerError>>>,
}

impl Controller {
    /// Opens the database under `config.data_dir`, rebuilds the state, and
    /// starts the actor thread. Creates the admin user on first start and
    /// writes its token to `admin.token` (mode 0600) in the data directory.
    pub fn start(config: Config) -> Result<Controller, ControllerError> {
        let (handle, actor) = actor::Actor::open(config)?;
        let thread = std::thread::Builder::new()
            .name("vgrid-controller".into())
            .spawn(move || actor.run())
            .map_err(|source| ControllerError::DataDir {
                path: PathBuf::from("<thread>"),
                source,
            })?;
        Ok(Controller {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle for transports; cheap to clone.
    pub fn handle(&self) -> ControllerHandle {
        self.handle.clone()
    }

    /// Stops the actor after the round in progress and waits for it.
    pub fn stop(mut self) -> Result<(), ControllerError> {
        self.handle.stop();
        self.join()
    }

    /// Waits for the actor to end (it ends on [`Controller::stop`] or when a
    /// database write fails, which it returns).
    pub fn join(&mut self) -> Result<(), ControllerError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.handle.stop();
        let _ = self.join();
    }
}

/// The name of the admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
