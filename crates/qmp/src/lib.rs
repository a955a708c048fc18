//! A small typed async client for the QEMU Machine Protocol (QMP).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), vgrid_qmp::QmpError> {
//! use std::time::Duration;
//! let qmp = vgrid_qmp::Qmp::connect("/run/vm/qmp.sock", Duration::from_secs(5)).await?;
//! let status = qmp.query_status().await?;
//! println!("QEMU {} is {:?}", qmp.version(), status.status);
//! qmp.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # Protocol, as this client speaks it
//!
//! QEMU greets with `{"QMP": {...}}`; the client answers `qmp_capabilities`
//! and only then may send commands. Every command carries a numeric `id`;
//! QEMU answers `{"return": ..., "id": N}` or
//! `{"error": {"class": ..., "desc": ...}, "id": N}`, possibly interleaved
//! with asynchronous events `{"event": NAME, "data": {...}, "timestamp":
//! {...}}`. A background task reads the socket, routes answers to their
//! callers by id and broadcasts events to every [`EventStream`].
//!
//! File descriptors (for `getfd` and `add-fd`) travel as `SCM_RIGHTS`
//! ancillary data on the very message that carries the command, as QEMU
//! requires.

mod client;
mod error;
mod types;

pub use client::{EventStream, Qmp};
pub use error::QmpError;
pub use types::{
    AddFdInfo, Event, MigrationInfo, MigrationRam, MigrationStatus, QemuVersion, RunState,
    StatusInfo,
};
