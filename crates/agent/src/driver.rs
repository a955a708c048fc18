//! The edge between the agent and the hypervisor: a driver runs the VMs of
//! job attempts. The product's driver runs QEMU through `vgrid-vm`; tests
//! may script one.

use std::future::Future;
use std::path::PathBuf;

use vgrid_api::types::{CheckpointRef, VmStart};
use vgrid_model::JobSpec;

use crate::state::StateError;

/// One attempt of one job on this node: the unit a driver runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Unit {
    pub job: u64,
    pub attempt: u32,
}

/// Everything needed to start a unit.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub unit: Unit,
    pub spec: JobSpec,
    /// How many of the job's VMs run here.
    pub vms: u32,
    /// Restore from this checkpoint instead of booting fresh.
    pub restore: Option<CheckpointRef>,
    /// The job's owner (a kept VM serves only its owner's jobs).
    pub owner: String,
    /// The job's inputs, exported from its input data by the agent: one
    /// file per input, named as the job's inputs are in the guest (see
    /// `JobSpec::staging`). `None` for a job without inputs, or one that
    /// resumes from a checkpoint (its inputs are in the VM already).
    pub input_dir: Option<PathBuf>,
}

/// Where a unit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitStatus {
    /// The VMs are starting or the command runs.
    Running,
    /// The command ended with this status (outputs staged out of the
    /// guest, see [`VmDriver::collect_outputs`]).
    Exited(i32),
    /// The VMs died or could not run the command.
    Failed(String),
}

/// A checkpoint a driver took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCheckpoint {
    /// Where its files are.
    pub location: String,
    /// Work the unit had done, including the work of the checkpoint it was
    /// restored from.
    pub work_ms: i64,
    /// Bytes of the unit's own output (since its start or restore) when the
    /// VMs were paused for the checkpoint.
    pub output_bytes: u64,
    /// How long the VMs were held paused for it, at most (the controller
    /// does not count that time as work).
    pub paused_ms: u64,
}

/// Why a driver call failed. [`DriverError::sentence`] (the error with
/// its causes) is what the job's history says.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A published image could not be installed on this node.
    #[error("cannot install the image")]
    Image(#[source] vgrid_image::ImageError),
    /// A VM of the unit (or a kept VM for it) did not start.
    #[error("cannot start VM `{vm}`")]
    Start {
        vm: String,
        #[source]
        source: Box<vgrid_vm::StartError>,
    },
    /// The job could not be given to a kept VM as a run.
    #[error("cannot run the job in kept VM `{vm}`")]
    Exec {
        vm: String,
        #[source]
        source: Box<vgrid_vm::ExecError>,
    },
    /// A saved kept VM could not be restored.
    #[error("cannot restore VM `{vm}` from {}", checkpoint.display())]
    Restore {
        vm: String,
        checkpoint: PathBuf,
        #[source]
        source: Box<vgrid_vm::RestoreError>,
    },
    /// The job's own checkpoint could not be restored.
    #[error("restore from checkpoint {seq}")]
    RestoreCheckpoint {
        seq: u64,
        #[source]
        source: Box<vgrid_vm::RestoreError>,
    },
    /// The job's checkpoint does not say which run of a kept VM it holds.
    #[error("checkpoint {seq} is not of a kept VM's run")]
    NotKeptRun {
        seq: u64,
        #[source]
        source: StateError,
    },
    /// The unit's VMs were not checkpointed.
    #[error("cannot checkpoint the unit's VMs")]
    Checkpoint(#[source] Box<vgrid_vm::CheckpointError>),
    /// Looking at or acting on one of the unit's VMs failed.
    #[error("cannot {action} VM `{vm}`")]
    Vm {
        action: &'static str,
        vm: String,
        #[source]
        source: Box<vgrid_vm::VmError>,
    },
    /// The runtime cannot list its VMs.
    #[error("cannot list the VMs of this node")]
    List(#[source] Box<vgrid_vm::VmError>),
    /// The guest agent's output cannot be read.
    #[error("cannot read the unit's output")]
    Output(#[source] vgrid_vm::error::FileError),
    /// The job does not fit this node or its files cannot be staged.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The agent's own state files.
    #[error(transparent)]
    State(#[from] StateError),
    /// The kept-VM pool does not hold what the driver expects.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The driver has no such unit.
    #[error("unknown unit {}.{}", .0.job, .0.attempt)]
    UnknownUnit(Unit),
    /// `VGRID_KEEP_IDLE_S` is not a number of seconds.
    #[error("VGRID_KEEP_IDLE_S `{0}`: expected a number of seconds")]
    KeepIdle(String),
    /// An error of another driver (a scripted one in tests).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl DriverError {
    /// The error and its causes in one sentence, for the job's history.
    pub fn sentence(&self) -> String {
        vgrid_vm::error::report(self)
    }

    /// An error of another driver, in words.
    pub fn other(message: impl Into<String>) -> Self {
        DriverError::Other(message.into().into())
    }
}

/// A job that does not fit this node, or whose staged files cannot be
/// moved.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's staging cannot work (checked when its file was read, too).
    #[error(transparent)]
    Staging(#[from] vgrid_model::StagingError),
    /// The job has inputs, but the agent did not fetch them.
    #[error("the job's inputs were not fetched to this node")]
    InputsNotFetched,
    /// The job has outputs, but the node keeps no store to collect them in.
    #[error("this node keeps no cache of the controller's store to collect the job's outputs in")]
    NoCache,
    /// A host path of the job lies outside its owner's directories.
    #[error(transparent)]
    HostPaths(#[from] vgrid_model::HostPathError),
    /// The owner has no directory below the allowed roots.
    #[error(transparent)]
    Owner(#[from] vgrid_vm::error::SpecError),
    /// A host path cannot be opened inside the owner's directories.
    #[error(transparent)]
    HostPath(#[from] vgrid_vm::error::FsError),
    /// An output in the staging share is not a regular file reached without links.
    #[error("staged output `{rel}` cannot be read")]
    StagedOutput {
        rel: String,
        #[source]
        source: Box<vgrid_vm::error::FsError>,
    },
    /// An output could not be put into the node's store.
    #[error("cannot keep staged output `{rel}` in the node's store")]
    KeepOutput {
        rel: String,
        #[source]
        source: Box<vgrid_cas::CasError>,
    },
    /// The owner's directory could not be made.
    #[error("cannot create the job owner's directory {}", dir.display())]
    OwnerDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The kept-VM pool does not hold what the driver expects.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// An entry is not in the state the driver just put it in.
    #[error("the kept-VM pool is inconsistent")]
    Inconsistent,
    /// An entry the driver holds is gone.
    #[error("the kept-VM pool lost entry {0}")]
    LostEntry(u64),
    /// A thread panicked while holding the driver's state.
    #[error("a lock of the driver's state is poisoned (a thread panicked)")]
    Poisoned,
}

/// Runs VMs for the agent. Every call names the unit; calls for a unit the
/// driver does not know fail.
pub trait VmDriver: Send + Sync + 'static {
    /// Boots (or restores, or reuses) the unit's VMs; returns once the
    /// command runs, saying how the VM came to run it.
    fn start(&self, req: StartRequest)
    -> impl Future<Output = Result<VmStart, DriverError>> + Send;
    /// Units whose VMs exist here, alive or ended but not yet removed (so
    /// that an agent restart finds them and reports their end).
    fn units(&self) -> impl Future<Output = Result<Vec<Unit>, DriverError>> + Send;
    fn status(&self, unit: Unit) -> impl Future<Output = Result<UnitStatus, DriverError>> + Send;
    /// The unit's output from byte `from` of its own output stream.
    fn output(
        &self,
        unit: Unit,
        from: u64,
    ) -> impl Future<Output = Result<Vec<u8>, DriverError>> + Send;
    /// A consistent checkpoint of all the unit's VMs into `dir`; with
    /// `stop`, the VMs are stopped afterwards (also when saving failed).
    fn checkpoint(
        &self,
        unit: Unit,
        dir: PathBuf,
        stop: bool,
    ) -> impl Future<Output = Result<SavedCheckpoint, DriverError>> + Send;
    fn pause(&self, unit: Unit) -> impl Future<Output = Result<(), DriverError>> + Send;
    fn resume(&self, unit: Unit) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the VMs now (no checkpoint).
    fn kill(&self, unit: Unit) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Forgets an ended unit and frees its files. A VM kept for the next
    /// job (the `persistent` and `save-restore` modes) goes back to the
    /// driver's pool instead.
    fn remove(&self, unit: Unit) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// The images this node holds, by name (for placement).
    fn images(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether the node holds the image a published manifest describes,
    /// of the same build.
    fn holds_image(&self, _published: &vgrid_cas::Manifest) -> bool {
        true
    }
    /// Reads the staged outputs of a unit whose command has exited (its
    /// status said so; before [`VmDriver::remove`]) into `cache`, as the
    /// files of a data manifest named as the job's outputs. `None` for a
    /// unit without outputs. The staging share is written by the guest:
    /// an output that is not a regular file reached without links fails.
    fn collect_outputs(
        &self,
        _unit: Unit,
        _cache: Option<&vgrid_cas::Store>,
    ) -> impl Future<Output = Result<Option<Vec<vgrid_cas::FileEntry>>, DriverError>> + Send {
        async { Ok(None) }
    }
    /// Installs a published image whose chunks are all in `cache`.
    fn install_image(
        &self,
        _published: &vgrid_cas::Manifest,
        _cache: &vgrid_cas::Store,
    ) -> impl Future<Output = Result<(), DriverError>> + Send {
        async { Ok(()) }
    }
    /// The node's size, so that VMs kept between jobs never crowd out the
    /// jobs the controller places here.
    fn set_capacity(&self, _cpus: u32, _memory_mb: u64) {}
    /// Called every few seconds: stops VMs kept idle for too long.
    fn housekeeping(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
