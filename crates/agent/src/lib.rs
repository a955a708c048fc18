//! The node agent of vgrid.
//!
//! It registers its node with the controller, long-polls for actions (each
//! poll is also its heartbeat), runs every job attempt (a [`Unit`]) in its
//! own task through a [`VmDriver`], and reports the unit's events and output
//! back. The agent keeps no state the controller needs: after a restart it
//! lists the units its driver still has and registers with them, so the
//! controller reattaches instead of restarting them.
//!
//! A unit's output goes to the controller at job offsets: a unit restored
//! from a checkpoint starts writing at the output length recorded with that
//! checkpoint, which cuts off what the lost run printed after it. The base
//! offset of each unit is kept in a small file under the agent's state
//! directory so that a restarted agent sends at the right place.

pub mod ckstore;
mod data;
mod driver;
pub mod kept;
mod private;
pub mod qemu;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vgrid_api::types::{AgentAction, AgentEvent, AgentReport, RegisterNode, RunningJob};
use vgrid_client::transfer::TransferError;
use vgrid_client::{Client, ClientError};

pub use driver::{
    DriverError, JobError, PoolError, SavedCheckpoint, StartRequest, Unit, UnitStatus, VmDriver,
};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller's base URL.
    pub controller: String,
    /// A token with the agent (or admin) role.
    pub token: String,
    /// For an https:// controller: whom to trust (its CA).
    pub tls: Option<rustls::ClientConfig>,
    /// The node's name, unique among the controller's nodes.
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    /// Where the agent keeps the output offsets of its units.
    pub state_dir: PathBuf,
    /// How often a running unit's status and output are looked at.
    pub watch_interval: Duration,
    /// The node's cache of the controller's store (images fetched from
    /// it, jobs' inputs and outputs); without it the node uses only the
    /// images it has and runs no job with inputs or outputs.
    pub cache_dir: Option<PathBuf>,
}

impl AgentConfig {
    /// Where the node keeps the checkpoints of `job`: `<seq>/` each.
    pub fn job_checkpoints(&self, job: u64) -> PathBuf {
        self.state_dir.join("checkpoints").join(job.to_string())
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bad controller URL or token")]
    Client(#[from] ClientError),
    #[error("cannot open the image cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: vgrid_cas::CasError,
    },
    #[error("cannot use the state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

enum Control {
    Checkpoint { seq: u64, stop: bool },
    Kill,
    Suspend,
    Resume,
}

struct Shared<D> {
    cfg: AgentConfig,
    client: Client,
    driver: Arc<D>,
    units: Mutex<HashMap<Unit, mpsc::UnboundedSender<Control>>>,
    cache: Option<Arc<vgrid_cas::Store>>,
    /// Bumped at every successful registration; reports refused because
    /// the node was not registered wait for the next one.
    epoch: watch::Sender<u64>,
    /// Closed when [`run`] ends or is dropped: unit tasks end with it, as
    /// they would with the agent's process (their VMs live on).
    alive: watch::Receiver<()>,
}

/// Runs the agent until `shutdown` completes. Units keep running when the
/// agent stops: a new agent on the same state reattaches to them.
pub async fn run<D: VmDriver>(
    cfg: AgentConfig,
    driver: Arc<D>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let units_dir = cfg.state_dir.join("units");
    private::create_dir_all(&units_dir).map_err(|source| AgentError::StateDir {
        path: units_dir.clone(),
        source,
    })?;
    data::sweep_inputs(&cfg.state_dir);
    let client = match &cfg.tls {
        Some(tls) => Client::with_tls(&cfg.controller, &cfg.token, tls.clone())?,
        None => Client::new(&cfg.controller, &cfg.token)?,
    };
    let (epoch, _) = watch::channel(0);
    let (_alive, alive_rx) = watch::channel(());
    driver.set_capacity(cfg.cpus, cfg.memory_mb);
    let cache = match &cfg.cache_dir {
        Some(dir) => Some(Arc::new(vgrid_cas::Store::open(dir).map_err(|e| {
            AgentError::Cache {
                path: dir.clone(),
                source: e,
            }
        })?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        cfg,
        client,
        driver,
        cache,
        units: Mutex::new(HashMap::new()),
        epoch,
        alive: alive_rx,
    });
    tokio::select! {
        () = shutdown => Ok(()),
        () = main_loop(shared.clone()) => Ok(()),
        () = housekeeping(shared.clone()) => Ok(()),
    }
}

/// How often the driver may tidy up (idle kept VMs).
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// A job's checkpoints on a node that ran it are kept this long after
/// their last change when the node no longer runs it: the job may have
/// ended elsewhere (its checkpoints are in the controller's store), or may
/// come back here (and restore without fetching).
const KEEP_LOCAL_CHECKPOINTS: Duration = Duration::from_secs(7 * 24 * 3600);

async fn housekeeping<D: VmDriver>(shared: Arc<Shared<D>>) {
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(HOUSEKEEPING).await;
        shared.driver.housekeeping().await;
        if last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            last_sweep = Some(std::time::Instant::now());
            sweep_checkpoints(&shared);
        }
    }
}

/// Removes the checkpoints of jobs this node has not run for
/// [`KEEP_LOCAL_CHECKPOINTS`].
fn sweep_checkpoints<D>(shared: &Shared<D>) {
    let root = shared.cfg.state_dir.join("checkpoints");
    let running: std::collections::HashSet<u64> = shared
        .units
        .lock()
        .map(|t| t.keys().map(|u| u.job).collect())
        .unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for e in entries.flatten() {
        let Some(job) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_LOCAL_CHECKPOINTS);
        if old && !running.contains(&job) {
            tracing::info!(
                job,
                "removing the checkpoints of a job this node no longer runs"
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn main_loop<D: VmDriver>(shared: Arc<Shared<D>>) {
    loop {
        let Some(heartbeat_ms) = register(&shared).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut after = 0;
        loop {
            match shared
                .client
                .actions(&shared.cfg.name, after, heartbeat_ms)
                .await
            {
                Ok(actions) => {
                    for a in actions {
                        after = a.seq;
                        dispatch(&shared, a.action).await;
                    }
                }
                Err(e) if e.status() == Some(409) => {
                    tracing::info!("the controller does not know this node now; registering again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot poll the controller; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Registers with every unit the driver or a task has; returns the
/// heartbeat period.
async fn register<D: VmDriver>(shared: &Arc<Shared<D>>) -> Option<u64> {
    let mut units = match shared.driver.units().await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the units on this node");
            Vec::new()
        }
    };
    if let Ok(tasks) = shared.units.lock() {
        units.extend(tasks.keys().copied());
    }
    units.sort();
    units.dedup();
    // Units found on disk without a task (the agent restarted): watch them
    // again.
    for unit in &units {
        let has_task = shared
            .units
            .lock()
            .map(|t| t.contains_key(unit))
            .unwrap_or(true);
        if !has_task {
            tracing::info!(
                job = unit.job,
                attempt = unit.attempt,
                "reattaching to a unit"
            );
            spawn_unit(shared, *unit, None);
        }
    }
    let req = RegisterNode {
        name: shared.cfg.name.clone(),
        cpus: shared.cfg.cpus,
        memory_mb: shared.cfg.memory_mb,
        labels: shared.cfg.labels.clone(),
        running: units
            .iter()
            .map(|u| RunningJob {
                job: u.job,
                attempt: u.attempt,
            })
            .collect(),
        images: shared.driver.images(),
    };
    match shared.client.register(&req).await {
        Ok(resp) => {
            shared.epoch.send_modify(|e| *e += 1);
            tracing::info!(node = %shared.cfg.name, "registered with the controller");
            Some(resp.heartbeat_ms.max(10))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot register with the controller; retrying");
            None
        }
    }
}

async fn dispatch<D: VmDriver>(shared: &Arc<Shared<D>>, action: AgentAction) {
    let (unit, control) = match action {
        AgentAction::Start {
            job,
            attempt,
            spec,
            vms,
            restore,
            owner,
        } => {
            let unit = Unit { job, attempt };
            let known = shared
                .units
                .lock()
                .map(|t| t.contains_key(&unit))
                .unwrap_or(true);
            if known {
                return; // Sent again after a reconnect; already running.
            }
            let base = restore.as_ref().map_or(0, |c| c.log_offset);
            let state = UnitState {
                base_offset: base,
                checkpoint_dir: shared.cfg.job_checkpoints(job),
            };
            if let Err(e) = state.save(&shared.cfg.state_dir, unit) {
                tracing::error!(error = %vgrid_vm::error::report(&e), "cannot record a unit's state");
            }
            let req = StartRequest {
                unit,
                spec: *spec,
                vms,
                restore,
                owner,
                input_dir: None,
            };
            spawn_unit(shared, unit, Some(req));
            return;
        }
        AgentAction::Checkpoint {
            job,
            attempt,
            seq,
            stop,
        } => (Unit { job, attempt }, Control::Checkpoint { seq, stop }),
        AgentAction::Kill { job, attempt } => (Unit { job, attempt }, Control::Kill),
        AgentAction::Suspend { job, attempt } => (Unit { job, attempt }, Control::Suspend),
        AgentAction::Resume { job, attempt } => (Unit { job, attempt }, Control::Resume),
    };
    let sender = shared.units.lock().ok().and_then(|t| t.get(&unit).cloned());
    match sender {
        Some(tx) => {
            let _ = tx.send(control);
        }
        None if matches!(control, Control::Kill) => {
            // A leftover the controller no longer wants.
            let _ = shared.driver.kill(unit).await;
            let _ = shared.driver.remove(unit).await;
            UnitState::forget(&shared.cfg.state_dir, unit);
        }
        None => tracing::warn!(
            job = unit.job,
            attempt = unit.attempt,
            "action for an unknown unit"
        ),
    }
}

/// What the agent remembers of a unit across its own restarts: a state
/// file `units/<job>.<attempt>` (see [`state`] for its version).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct UnitState {
    base_offset: u64,
    /// The job's checkpoints on this node (kept for older agents; the
    /// place is always [`AgentConfig::job_checkpoints`]).
    checkpoint_dir: PathBuf,
}

impl UnitState {
    fn path(state_dir: &Path, unit: Unit) -> PathBuf {
        state_dir
            .join("units")
            .join(format!("{}.{}", unit.job, unit.attempt))
    }

    fn save(&self, state_dir: &Path, unit: Unit) -> Result<(), state::StateError> {
        state::save(&Self::path(state_dir, unit), self)
    }

    fn load(state_dir: &Path, unit: Unit) -> Result<Option<UnitState>, state::StateError> {
        let path = Self::path(state_dir, unit);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(vgrid_vm::error::FileError::new("read", &path, e).into()),
        };
        if bytes.first() == Some(&b'{') {
            return state::parse(&path, &bytes).map(Some);
        }
        // Written before versions: the offset and the directory, one a line.
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines();
        let old = lines.next().and_then(|l| l.parse().ok()).zip(lines.next());
        Ok(old.map(|(base_offset, dir)| UnitState {
            base_offset,
            checkpoint_dir: PathBuf::from(dir),
        }))
    }

    fn forget(state_dir: &Path, unit: Unit) {
        let _ = std::fs::remove_file(Self::path(state_dir, unit));
    }
}

fn spawn_unit<D: VmDriver>(shared: &Arc<Shared<D>>, unit: Unit, start: Option<StartRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut t) = shared.units.lock() {
        t.insert(unit, tx);
    }
    let shared = shared.clone();
    let mut alive = shared.alive.clone();
    tokio::spawn(async move {
        let base = match UnitState::load(&shared.cfg.state_dir, unit) {
            Ok(Some(s)) => s.base_offset,
            Ok(None) => 0,
            Err(e) => {
                tracing::error!(
                    job = unit.job,
                    attempt = unit.attempt,
                    error = %vgrid_vm::error::report(&e),
                    "the unit's state file is refused; its output goes from offset 0"
                );
                0
            }
        };
        let mut task = UnitTask {
            shared: shared.clone(),
            unit,
            base,
            sent: 0,
        };
        tokio::select! {
            () = task.run(start, rx) => {}
            // The agent is gone: stop watching, leave the VMs and the
            // unit's state for the next agent.
            _ = alive.changed() => return,
        }
        if let Ok(mut t) = shared.units.lock() {
            t.remove(&unit);
        }
        UnitState::forget(&shared.cfg.state_dir, unit);
    });
}

/// How long a checkpoint's output may take to reach the controller.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(120);

/// How long a checkpoint or a job's outputs may take to reach the
/// controller's store (a large one over a slow link takes what it takes;
/// this bounds retries).
const STORE_PATIENCE: Duration = Duration::from_secs(600);

/// How many failed looks at a unit in a row end it as failed.
const STATUS_ERRORS_TO_FAIL: u32 = 3;

/// Runs one unit from start (or reattach) to its end.
struct UnitTask<D> {
    shared: Arc<Shared<D>>,
    unit: Unit,
    /// Job output offset of the unit's first byte.
    base: u64,
    /// Unit output bytes already written to the controller.
    sent: u64,
}

impl<D: VmDriver> UnitTask<D> {
    async fn run(&mut self, start: Option<StartRequest>, mut rx: mpsc::UnboundedReceiver<Control>) {
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        let driver = self.shared.driver.clone();
        if let Some(mut req) = start {
            if let Err(e) = self.fetch_image(&req.spec.image).await {
                self.report(AgentEvent::Failed {
                    job,
                    attempt,
                    reason: format!("cannot fetch image `{}`: {e}", req.spec.image),
                })
                .await;
                return;
            }
            // A restore is timed from the fetch of its files to the VMs'
            // start (for the controller's metrics).
            let restore_started = std::time::Instant::now();
            if let Some(c) = req.restore.as_mut() {
                match self.checkpoint_files(c).await {
                    Ok(dir) => c.location = dir.display().to_string(),
                    Err(reason) => {
                        let seq = c.seq;
                        self.restore_failed(seq, reason).await;
                        return;
                    }
                }
            }
            let restoring = req.restore.as_ref().map(|c| c.seq);
            req.input_dir = match self.stage_inputs(&req).await {
                Ok(dir) => dir,
                Err(reason) => {
                    self.report(AgentEvent::Failed {
                        job,
                        attempt,
                        reason,
                    })
                    .await;
                    return;
                }
            };
            self.report(AgentEvent::Booting { job, attempt }).await;
            let started = driver.start(req).await;
            // The VMs have their inputs now (or will not need them).
            self.forget_inputs();
            match started {
                Ok(how) => {
                    let took = restore_started.elapsed().as_millis() as u64;
                    self.report(AgentEvent::Running {
                        job,
                        attempt,
                        vm: Some(how),
                        restore_ms: restoring.map(|_| took),
                    })
                    .await;
                }
                Err(e) => {
                    let _ = driver.remove(self.unit).await;
                    match restoring {
                        Some(seq) => {
                            let reason = format!("cannot restore the VMs: {}", e.sentence());
                            self.restore_failed(seq, reason).await;
                        }
                        None => {
                            self.report(AgentEvent::Failed {
                                job,
                                attempt,
                                reason: format!("cannot start the VMs: {}", e.sentence()),
                            })
                            .await;
                            self.forget_checkpoints();
                        }
                    }
                    return;
                }
            }
        }
        // Looking at a VM can fail for a moment (QMP slow to answer on a
        // loaded host); only errors in a row end the unit.
        let mut errors_in_a_row = 0;
        loop {
            self.send_output(None).await;
            let status = match driver.status(self.unit).await {
                Err(e) if errors_in_a_row + 1 < STATUS_ERRORS_TO_FAIL => {
                    errors_in_a_row += 1;
                    tracing::warn!(job, attempt, error = %e.sentence(), "cannot read the unit's state; trying again");
                    Ok(UnitStatus::Running)
                }
                Err(e) => Err(e.sentence()),
                Ok(s) => {
                    errors_in_a_row = 0;
                    Ok(s)
                }
            };
            match status {
                Ok(UnitStatus::Running) => {}
                Ok(UnitStatus::Exited(exit_code)) => {
                    self.deliver_output(None, OUTPUT_PATIENCE).await;
                    // The outputs reach the store before the exit is said.
                    let end = self.exited(exit_code).await;
                    self.report(end).await;
                    let _ = driver.remove(self.unit).await;
                    self.forget_checkpoints();
                    return;
                }
                Ok(UnitStatus::Failed(reason)) | Err(reason) => {
                    self.deliver_output(None, OUTPUT_PATIENCE).await;
                    self.report(AgentEvent::Failed {
                        job,
                        attempt,
                        reason,
                    })
                    .await;
                    let _ = driver.remove(self.unit).await;
                    // Kept: the job may resume (here or elsewhere) from
                    // its last checkpoint.
                    return;
                }
            }
            let control = tokio::select! {
                c = rx.recv() => c,
                () = tokio::time::sleep(self.shared.cfg.watch_interval) => continue,
            };
            let Some(control) = control else { return };
            if self.control(control).await {
                return;
            }
        }
    }

    /// Fetches the job's image from the controller's store when the node
    /// does not hold it (of the build the controller has), and installs
    /// it; shown as the job's staging step. An image the controller does
    /// not have is the node's own affair: the start says if it is missing.
    async fn fetch_image(&self, name: &str) -> Result<(), String> {
        let Some(cache) = &self.shared.cache else {
            return Ok(());
        };
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        let client = &self.shared.client;
        let sentence = vgrid_vm::error::report;
        let published = match client.images().await {
            Ok(list) => list.into_iter().find(|i| i.name == name),
            // A controller without a store (404) has nothing to give.
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(sentence(&e)),
        };
        let Some(published) = published else {
            return Ok(());
        };
        let id = vgrid_cas::ManifestId::parse(&published.manifest)
            .ok_or_else(|| format!("the controller names it by `{}`", published.manifest))?;
        let started = std::time::Instant::now();
        // A chunk damaged in the cache is removed when found: the second
        // try fetches it again.
        let mut last = String::new();
        for _ in 0..2 {
            let manifest = client
                .get_manifest(&id)
                .await
                .map_err(|e| sentence(&e))
                .and_then(|b| vgrid_cas::Manifest::parse(&b).map_err(|e| e.to_string()))?;
            if self.shared.driver.holds_image(&manifest) {
                return Ok(());
            }
            self.report(AgentEvent::Staging {
                job,
                attempt,
                detail: format!(
                    "fetching image {name} ({} MiB) from the controller",
                    published.size.div_ceil(1 << 20)
                ),
            })
            .await;
            let (m, moved) = vgrid_client::transfer::download(client, cache, &id)
                .await
                .map_err(|e| sentence(&e))?;
            match self.shared.driver.install_image(&m, cache).await {
                Ok(()) => {
                    let images = self.shared.driver.images();
                    if let Err(e) = client.node_images(&self.shared.cfg.name, images).await {
                        tracing::warn!(error = %e, "cannot tell the controller about a fetched image");
                    }
                    self.report(AgentEvent::Staging {
                        job,
                        attempt,
                        detail: format!(
                            "image {name} fetched: {} of its {} chunks ({} KiB) in {:.1} s",
                            moved.sent,
                            moved.chunks,
                            moved.bytes / 1024,
                            started.elapsed().as_secs_f64()
                        ),
                    })
                    .await;
                    return Ok(());
                }
                Err(e) => last = e.sentence(),
            }
        }
        Err(last)
    }

    /// Puts checkpoint `seq` (with its chain) into the controller's store;
    /// its manifest id and the bytes sent, or `None` when this node or the
    /// controller has no store. Retried until [`STORE_PATIENCE`] has passed: a transfer that
    /// broke off goes on where it stopped.
    async fn store_checkpoint(&self, seq: u64) -> Result<Option<(String, u64)>, String> {
        if self.shared.cache.is_none() {
            return Ok(None);
        }
        let job = self.unit.job;
        let dir = self.shared.cfg.job_checkpoints(job);
        let started = std::time::Instant::now();
        let sent = self
            .patiently(
                "a checkpoint",
                |e: &ckstore::CkStoreError| match e {
                    ckstore::CkStoreError::Transfer(TransferError::Client(e)) => Some(e),
                    _ => None,
                },
                || ckstore::upload(&self.shared.client, &dir, job, seq),
            )
            .await
            .map_err(|why| format!("cannot put it into the controller's store: {why}"))?;
        let Some((id, moved)) = sent else {
            return Ok(None);
        };
        tracing::info!(
            job,
            seq,
            manifest = %id,
            chunks = moved.chunks,
            sent = moved.sent,
            kib = moved.bytes / 1024,
            seconds = started.elapsed().as_secs_f64(),
            "checkpoint in the controller's store"
        );
        Ok(Some((id.hex(), moved.bytes)))
    }

    /// Runs `send` until it succeeds. While what fails is the controller
    /// (`controller_side` finds its error), it is tried again with growing
    /// pauses, after a new registration when the controller answers 409
    /// (it does not know the node, or a manifest's chunks are not all
    /// there yet), for [`STORE_PATIENCE`]; a failure on this node's side
    /// ends it at once. Transfers ask what is missing first, so a retry
    /// goes on where the last try stopped.
    async fn patiently<T, E, F>(
        &self,
        what: &str,
        controller_side: impl Fn(&E) -> Option<&vgrid_client::ClientError>,
        mut send: impl FnMut() -> F,
    ) -> Result<T, String>
    where
        E: std::error::Error + 'static,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
        let mut pause = Duration::from_millis(500);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let e = match send().await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let why = vgrid_vm::error::report(&e);
            let Some(client_error) = controller_side(&e) else {
                return Err(why);
            };
            if client_error.status() == Some(409) {
                self.wait_for_registration().await;
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(format!(
                    "{tries} tries in {} s; the last: {why}",
                    STORE_PATIENCE.as_secs()
                ));
            }
            tracing::warn!(job = self.unit.job, error = %why, "cannot send {what}; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(15));
        }
    }

    /// The directory of checkpoint `c` on this node: fetched from the
    /// controller's store when the node lacks files of it, shown as the
    /// job's staging step.
    async fn checkpoint_files(
        &self,
        c: &vgrid_api::types::CheckpointRef,
    ) -> Result<PathBuf, String> {
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        let job_dir = self.shared.cfg.job_checkpoints(job);
        let (Some(cache), Some(manifest)) = (&self.shared.cache, &c.manifest) else {
            // Taken without a store: on this node, or (written before the
            // store) a directory every node reads.
            let legacy = Path::new(&c.location);
            return Ok(if legacy.is_absolute() {
                legacy.to_path_buf()
            } else {
                job_dir.join(c.seq.to_string())
            });
        };
        let id = vgrid_cas::ManifestId::parse(manifest)
            .ok_or_else(|| format!("the controller names it by `{manifest}`"))?;
        let started = std::time::Instant::now();
        let seq = c.seq;
        let announce = async |bytes: u64| {
            self.report(AgentEvent::Staging {
                job,
                attempt,
                detail: format!(
                    "fetching checkpoint {seq} ({} MiB this node lacks) from the controller",
                    bytes.div_ceil(1 << 20)
                ),
            })
            .await;
        };
        let fetched = ckstore::fetch(&self.shared.client, cache, &job_dir, job, &id, announce)
            .await
            .map_err(|e| format!("cannot fetch it: {}", vgrid_vm::error::report(&e)))?;
        if fetched.missing_bytes > 0 {
            self.report(AgentEvent::Staging {
                job,
                attempt,
                detail: format!(
                    "checkpoint {seq} fetched: {} of its {} chunks ({} KiB) in {:.1} s",
                    fetched.moved.sent,
                    fetched.moved.chunks,
                    fetched.moved.bytes / 1024,
                    started.elapsed().as_secs_f64()
                ),
            })
            .await;
        }
        Ok(fetched.dir)
    }

    /// Restoring checkpoint `seq` failed: the controller tries again (here
    /// or elsewhere). A copy fetched from the store is dropped, so that a
    /// damaged file is fetched again rather than tried again.
    async fn restore_failed(&self, seq: u64, reason: String) {
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        tracing::warn!(job, seq, %reason, "restoring a checkpoint failed");
        if self.shared.cache.is_some() {
            self.forget_checkpoints();
        }
        self.report(AgentEvent::RestoreFailed {
            job,
            attempt,
            seq,
            reason,
        })
        .await;
    }

    /// Removes the node's copies of the job's checkpoints (its end).
    fn forget_checkpoints(&self) {
        let dir = self.shared.cfg.job_checkpoints(self.unit.job);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a job's checkpoints");
        }
    }

    /// Carries out a control message; true when the unit has ended.
    async fn control(&mut self, control: Control) -> bool {
        let (job, attempt) = (self.unit.job, self.unit.attempt);
        let driver = self.shared.driver.clone();
        match control {
            Control::Checkpoint { seq, stop } => {
                let started = std::time::Instant::now();
                let dir = self.shared.cfg.job_checkpoints(job).join(seq.to_string());
                match driver.checkpoint(self.unit, dir, stop).await {
                    Ok(saved)
                        if !self
                            .deliver_output(Some(saved.output_bytes), OUTPUT_PATIENCE)
                            .await =>
                    {
                        self.report(AgentEvent::CheckpointFailed {
                            job,
                            attempt,
                            seq,
                            reason: "the output up to the checkpoint could not be sent to the controller".into(),
                            stopped: stop,
                        })
                        .await;
                        if stop {
                            let _ = driver.kill(self.unit).await;
                        }
                    }
                    Ok(saved) => match self.store_checkpoint(seq).await {
                        // Output up to the pause belongs to the checkpoint
                        // (it is at the controller now), and so do its
                        // files: it can be restored anywhere.
                        Ok(stored) => {
                            let (manifest, sent_bytes) = stored.unzip();
                            self.report(AgentEvent::Checkpointed {
                                job,
                                attempt,
                                seq,
                                location: saved.location,
                                manifest,
                                work_ms: saved.work_ms,
                                log_offset: self.base + saved.output_bytes,
                                stopped: stop,
                                paused_ms: saved.paused_ms,
                                took_ms: Some(started.elapsed().as_millis() as u64),
                                sent_bytes,
                            })
                            .await;
                        }
                        Err(reason) => {
                            self.report(AgentEvent::CheckpointFailed {
                                job,
                                attempt,
                                seq,
                                reason,
                                stopped: stop,
                            })
                            .await;
                        }
                    },
                    Err(e) => {
                        self.report(AgentEvent::CheckpointFailed {
                            job,
                            attempt,
                            seq,
                            reason: e.sentence(),
                            stopped: stop,
                        })
                        .await;
                        if stop {
                            let _ = driver.kill(self.unit).await;
                        }
                    }
                }
                if stop {
                    let _ = driver.remove(self.unit).await;
                }
                stop
            }
            Control::Kill => {
                let _ = driver.kill(self.unit).await;
                let _ = driver.remove(self.unit).await;
                // The job ended, or resumes from the controller's store.
                if self.shared.cache.is_some() {
                    self.forget_checkpoints();
                }
                self.report(AgentEvent::Stopped { job, attempt }).await;
                true
            }
            Control::Suspend => {
                match driver.pause(self.unit).await {
                    Ok(()) => self.report(AgentEvent::Suspended { job, attempt }).await,
                    Err(e) => tracing::warn!(error = %e, job, "cannot suspend"),
                }
                false
            }
            Control::Resume => {
                match driver.resume(self.unit).await {
                    Ok(()) => self.report(AgentEvent::Resumed { job, attempt }).await,
                    Err(e) => tracing::warn!(error = %e, job, "cannot resume"),
                }
                false
            }
        }
    }

    /// Sends new output (up to `limit` bytes of the unit's stream, when
    /// given) to the controller. Returns whether everything asked was
    /// delivered (or refused for good: a write past the job's output limit
    /// is dropped, as retrying cannot help).
    async fn send_output(&mut self, limit: Option<u64>) -> bool {
        let mut data = match self.shared.driver.output(self.unit, self.sent).await {
            Ok(data) => data,
            Err(e) => {
                // Asking again cannot help: only the controller's side is
                // worth retrying.
                tracing::warn!(job = self.unit.job, error = %e, "cannot read the unit's output");
                return true;
            }
        };
        if let Some(limit) = limit {
            data.truncate(limit.saturating_sub(self.sent) as usize);
        }
        if data.is_empty() {
            return true;
        }
        let len = data.len() as u64;
        let offset = self.base + self.sent;
        for _ in 0..3 {
            match self
                .shared
                .client
                .write_output(
                    self.unit.job,
                    &self.shared.cfg.name,
                    self.unit.attempt,
                    offset,
                    data.clone(),
                )
                .await
            {
                Ok(()) => {
                    self.sent += len;
                    return true;
                }
                Err(e) if e.status() == Some(409) => self.wait_for_registration().await,
                Err(e) if e.status() == Some(400) => {
                    tracing::warn!(job = self.unit.job, error = %e, "the controller refuses output; dropping it");
                    self.sent += len;
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send output; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        false
    }

    /// [`UnitTask::send_output`] until it is through or `patience` has
    /// passed: a checkpoint's output must be at the controller before the
    /// checkpoint is reported, or a resume would leave a hole.
    async fn deliver_output(&mut self, limit: Option<u64>, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if self.send_output(limit).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reports an event; retries until the controller has it, waiting for
    /// a new registration when it does not know the node. A controller that
    /// cannot write its database (503) is asked again later.
    async fn report(&self, event: AgentEvent) {
        let report = AgentReport {
            node: self.shared.cfg.name.clone(),
            events: vec![event],
        };
        loop {
            match self.shared.client.report(&report).await {
                Ok(()) => return,
                Err(e) if e.status() == Some(409) => self.wait_for_registration().await,
                Err(e) if e.status().is_some_and(|s| s < 500) => {
                    tracing::error!(error = %e, "the controller refused a report");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot report; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn wait_for_registration(&self) {
        let mut rx = self.shared.epoch.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
    }
}

#[cfg(test)]
mod tests;
