//! Live migration of a VM to a new QEMU on this host, over loopback TCP.
//!
//! Disks: both QEMUs use the same layer files (the new VM directory
//! hard-links the old one's), which is QEMU's shared-storage migration:
//! the destination opens the images inactive, the source releases them at
//! the switch-over and the destination takes them. The agent output and
//! the console are hard-linked the same way and opened in append mode, so
//! output written before, during and after the switch lands in one file.
//! Afterwards the old directory is removed; the links keep the files.

use std::fs;
use std::time::{Duration, Instant};

use serde::Serialize;
use vgrid_qmp::RunState;

use crate::checkpoint::{migration_error, prepare_migration, wait_migration};
use crate::error::{FileError, MigrateError, MigrationError, VmError};
use crate::fsutil;
use crate::layout::check_vm_name;
use crate::process::{self, Sig};
use crate::qemu::LaunchMode;
use crate::record::{Intent, VmRecord, new_vm_id};
use crate::runtime::{Runtime, VmInfo, VmLock};

/// What a live migration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    pub vm: VmInfo,
    /// Bytes sent over the migration connection.
    pub transferred_bytes: u64,
    /// How long the guest was stopped at the switch-over, as QEMU measured.
    pub downtime_ms: Option<u64>,
    pub total_ms: u64,
}

impl Runtime {
    /// Moves the running VM `name` into a new QEMU process named `new_name`
    /// without stopping it; afterwards `name` is gone.
    pub async fn migrate(
        &self,
        name: &str,
        new_name: &str,
    ) -> Result<MigrationReport, MigrateError> {
        let started = Instant::now();
        check_vm_name(new_name)?;
        let old_dir = self.existing(name)?;
        let new_dir = self.vm_dir(new_name);
        new_dir.check_socket_paths()?;
        if new_dir.root().exists() {
            return Err(MigrateError::Exists(new_name.to_string()));
        }
        let _lock = VmLock::acquire(&old_dir, name)
            .await
            .map_err(VmError::from)?;
        let old = self.live_and_saveable(&old_dir, name, "migrate it").await?;
        if !old.publish.is_empty() {
            return Err(MigrateError::PublishesPorts {
                name: name.to_string(),
            });
        }

        fs::create_dir(new_dir.root())
            .map_err(|e| FileError::new("create directory", new_dir.root(), e))?;
        let prepared = async {
            fsutil::create_dir_mode(new_dir.root(), 0o700)?;
            // Share the files that belong to the old directory.
            let mut disks = Vec::new();
            for (i, layer) in old.disks.iter().enumerate() {
                if layer.starts_with(old_dir.root()) {
                    let dst = new_dir.disk_layer(i);
                    fs::hard_link(layer, &dst).map_err(|e| FileError::new("link", &dst, e))?;
                    disks.push(dst);
                } else {
                    disks.push(layer.clone());
                }
            }
            for (src, dst) in [
                (old_dir.agent_out(), new_dir.agent_out()),
                (old_dir.console(), new_dir.console()),
            ] {
                if src.exists() {
                    fs::hard_link(&src, &dst).map_err(|e| FileError::new("link", &dst, e))?;
                }
            }
            if old_dir.context().exists() {
                fs::copy(old_dir.context(), new_dir.context())
                    .map_err(|e| FileError::new("copy", new_dir.context(), e))?;
            }
            if old.staging_tag.is_some() {
                fsutil::create_dir_mode(&new_dir.stage(), 0o700)?;
            }
            let rec = VmRecord {
                id: new_vm_id(new_name),
                name: new_name.to_string(),
                disks,
                intent: Intent::Run,
                ..old.clone()
            };
            rec.save(&new_dir.record())?;
            self.give_to_vm_user(&new_dir)?;
            Ok::<_, MigrateError>(rec)
        }
        .await;
        let new_rec = match prepared {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_dir_all(new_dir.root());
                return Err(e);
            }
        };

        let moved = async {
            let dst = self
                .boot(&new_dir, &new_rec, LaunchMode { incoming: true })
                .await?;
            prepare_migration(&dst, new_name).await?;
            dst.migrate_incoming("tcp:127.0.0.1:0")
                .await
                .map_err(|e| MigrateError::qmp(new_name, e))?;
            let port = incoming_port(&dst, new_name).await?;
            let src = self.connect(&old_dir, name).await?;
            prepare_migration(&src, name).await?;
            let mut src_events = src.events();
            let mut dst_events = dst.events();
            match src.migrate(&format!("tcp:127.0.0.1:{port}")).await {
                Ok(()) => {}
                Err(vgrid_qmp::QmpError::Command { desc, .. }) => {
                    return Err(migration_error(name, desc).into());
                }
                Err(e) => return Err(MigrateError::qmp(name, e)),
            }
            let info =
                wait_migration(&src, &mut src_events, name, Duration::from_secs(3600)).await?;
            // The destination finishes loading after the source completes.
            wait_migration(&dst, &mut dst_events, new_name, Duration::from_secs(600)).await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let status = dst
                    .query_status()
                    .await
                    .map_err(|e| MigrateError::qmp(new_name, e))?;
                match status.status {
                    RunState::Running | RunState::Paused => break,
                    _ if Instant::now() > deadline => {
                        return Err(MigrationError::Destination {
                            name: new_name.to_string(),
                            state: status.status.name().to_string(),
                        }
                        .into());
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let _ = src.quit().await;
            Ok::<_, MigrateError>(info)
        }
        .await;
        let info = match moved {
            Ok(info) => info,
            Err(e) => {
                if let Some(pid) = self.qemu_pid(&new_dir) {
                    process::signal(pid, Sig::KILL);
                    self.wait_gone(&new_dir, Duration::from_secs(10)).await;
                }
                self.kill_passt(&new_dir);
                let _ = fs::remove_dir_all(new_dir.root());
                return Err(e);
            }
        };
        if !self.wait_gone(&old_dir, Duration::from_secs(30)).await
            && let Some(pid) = self.qemu_pid(&old_dir)
        {
            process::signal(pid, Sig::KILL);
            self.wait_gone(&old_dir, Duration::from_secs(10)).await;
        }
        self.kill_passt(&old_dir);
        let mut old_final = old.clone();
        old_final.intent = Intent::Stop;
        let _ = old_final.save(&old_dir.record());
        let _ = fs::remove_dir_all(old_dir.root());

        let vm = self.inspect(new_name).await?;
        Ok(MigrationReport {
            vm,
            transferred_bytes: info.ram.map(|r| r.transferred).unwrap_or(0),
            downtime_ms: info.downtime,
            total_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// The port QEMU listens on for `migrate-incoming tcp:127.0.0.1:0`.
async fn incoming_port(qmp: &vgrid_qmp::Qmp, name: &str) -> Result<u16, MigrationError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = qmp
            .execute("query-migrate", None)
            .await
            .map_err(|e| MigrationError::qmp(name, e))?;
        let port = v
            .get("socket-address")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.get("port"))
            .and_then(|p| match p {
                serde_json::Value::String(s) => s.parse::<u16>().ok(),
                serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            });
        if let Some(port) = port.filter(|p| *p != 0) {
            return Ok(port);
        }
        if Instant::now() > deadline {
            return Err(MigrationError::NoPort {
                name: name.to_string(),
                answer: v.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
