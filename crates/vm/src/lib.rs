//! The node-local VM runtime on QEMU.
//!
//! # Layout
//!
//! - [`runtime`]: [`Runtime`], the entry point: start, inspect, list,
//!   pause, resume, stop, kill, wait, remove; reattaches to running VMs
//!   from their directories. A VM of one command and a VM kept for runs
//!   start on the same path.
//! - [`exec`]: runs (a [`Task`] each) in a VM kept running.
//! - [`error`]: an error enum per operation, built from typed parts.
//! - [`checkpoint`]: consistent checkpoints (memory through QEMU's
//!   migration stream, content-defined chunks, disk diff by overlay
//!   switch), restore, coherent checkpoints of several VMs.
//! - [`migrate`]: live migration between two QEMU processes over loopback.
//! - [`qemu`], [`passt`]: the command lines of QEMU and passt.
//! - [`accel`]: KVM or TCG, probed by booting a real kernel.
//! - [`host`]: host programs and the unprivileged VM user.
//! - [`output`]: the guest agent's output frames.
//! - [`record`], [`layout`]: what a VM directory holds.

pub mod accel;
pub mod checkpoint;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod host;
pub mod images;
pub mod layout;
pub mod migrate;
pub mod output;
pub mod passt;
pub mod process;
pub mod qemu;
pub mod record;
pub mod runtime;

pub use accel::{Accel, AccelChoice};
pub use error::{
    CheckpointError, ExecError, MigrateError, OpenError, RestoreError, StartError, VmError,
};
pub use images::{FixedImages, ImageSource, StoreImages};
pub use record::{BootImage, ImageKind, PortMap, VmRecord};
pub use runtime::{MountSpec, Runtime, RuntimeConfig, StagingSpec, Task, VmInfo, VmSpec, VmState};
/// The wire format of the guest agent (its messages appear in [`output`]).
pub use vgrid_guest_proto as guest_proto;
