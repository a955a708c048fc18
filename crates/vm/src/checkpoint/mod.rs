//! Checkpoints: consistent saves of one or several VMs, and restores.
//!
//! A checkpoint is taken with the VM paused: the disk is cut by switching
//! the VM to a new qcow2 layer (the frozen layer is the diff since the
//! parent checkpoint), the memory and device state go through QEMU's
//! migration stream into a pipe vgrid reads ([`chunks`]), the agent output
//! so far is copied, and the VM resumes. The manifest ([`manifest`]) is
//! written last into a temporary directory that is renamed into place, so
//! a failed checkpoint (a full disk) leaves nothing half-written and the
//! previous checkpoint untouched.

pub mod chunks;
pub mod manifest;
mod restore;
mod save;

use std::time::{Duration, Instant};

use vgrid_qmp::{EventStream, MigrationInfo, MigrationStatus, Qmp};

pub use restore::{RestoreOptions, RestoreReport};
pub use save::{CheckpointOptions, CheckpointReport};

use crate::error::MigrationError;

/// Migration parameters for saving to a local stream: no bandwidth cap
/// (QEMU's default is 32 MiB/s) and events on.
pub async fn prepare_migration(qmp: &Qmp, name: &str) -> Result<(), MigrationError> {
    qmp.migrate_set_capabilities(&[("events", true)])
        .await
        .map_err(|e| MigrationError::qmp(name, e))?;
    qmp.migrate_set_parameters(serde_json::json!({
        "max-bandwidth": 1u64 << 50,
        "downtime-limit": 2000,
    }))
    .await
    .map_err(|e| MigrationError::qmp(name, e))
}

/// Waits until the migration on `qmp` ends; an error unless it completed.
pub async fn wait_migration(
    qmp: &Qmp,
    events: &mut EventStream,
    name: &str,
    limit: Duration,
) -> Result<MigrationInfo, MigrationError> {
    let deadline = Instant::now() + limit;
    loop {
        let info = qmp
            .query_migrate()
            .await
            .map_err(|e| MigrationError::qmp(name, e))?;
        match &info.status {
            Some(MigrationStatus::Completed) => return Ok(info),
            Some(MigrationStatus::Failed) | Some(MigrationStatus::Cancelled) => {
                let reason = info
                    .error_desc
                    .clone()
                    .unwrap_or_else(|| "QEMU gave no reason".into());
                return Err(migration_error(name, reason));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = qmp.migrate_cancel().await;
            return Err(MigrationError::Timeout {
                name: name.to_string(),
                after: limit,
            });
        }
        // Wake on the next MIGRATION event, or poll again shortly.
        let _ = events
            .next_matching(Duration::from_millis(200), "MIGRATION", |e| {
                e.name == "MIGRATION"
            })
            .await;
    }
}

/// QEMU refuses to migrate a VM with a mounted 9p share; say why plainly.
pub fn migration_error(name: &str, reason: String) -> MigrationError {
    let name = name.to_string();
    if reason.contains("VirtFS") || reason.contains("9p") {
        MigrationError::NinePShare { name, reason }
    } else {
        MigrationError::Failed { name, reason }
    }
}
