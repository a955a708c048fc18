//! The edge between the agent and the hypervisor: a driver runs the VMs of
//! job attempts. The product's driver runs QEMU through `vgrid-vm`; tests
//! may script one.

use std::future::Future;
use std::path::PathBuf;

use vgrid_api::types::{CheckpointRef, VmStart};
use vgrid_model::JobSpec;

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
}

/// Where a unit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitStatus {
    /// The VMs are starting or the command runs.
    Running,
    /// The command ended with this status (outputs staged back).
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

/// Why a driver call failed, in words for the job's history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

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
    /// The node's size, so that VMs kept between jobs never crowd out the
    /// jobs the controller places here.
    fn set_capacity(&self, _cpus: u32, _memory_mb: u64) {}
    /// Called every few seconds: stops VMs kept idle for too long.
    fn housekeeping(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
