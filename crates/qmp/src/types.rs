//! Typed answers of the QMP commands vgrid uses.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// QEMU's version, from the greeting or `query-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// QEMU's run state (`query-status`). States this client does not know are
/// kept by name rather than refused, so a newer QEMU still works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Prelaunch,
    InMigrate,
    PostMigrate,
    FinishMigrate,
    Shutdown,
    GuestPanicked,
    InternalError,
    IoError,
    Suspended,
    Watchdog,
    RestoreVm,
    SaveVm,
    Debug,
    Other(String),
}

impl RunState {
    pub fn from_name(name: &str) -> Self {
        match name {
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "prelaunch" => RunState::Prelaunch,
            "inmigrate" => RunState::InMigrate,
            "postmigrate" => RunState::PostMigrate,
            "finish-migrate" => RunState::FinishMigrate,
            "shutdown" => RunState::Shutdown,
            "guest-panicked" => RunState::GuestPanicked,
            "internal-error" => RunState::InternalError,
            "io-error" => RunState::IoError,
            "suspended" => RunState::Suspended,
            "watchdog" => RunState::Watchdog,
            "restore-vm" => RunState::RestoreVm,
            "save-vm" => RunState::SaveVm,
            "debug" => RunState::Debug,
            other => RunState::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Prelaunch => "prelaunch",
            RunState::InMigrate => "inmigrate",
            RunState::PostMigrate => "postmigrate",
            RunState::FinishMigrate => "finish-migrate",
            RunState::Shutdown => "shutdown",
            RunState::GuestPanicked => "guest-panicked",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Suspended => "suspended",
            RunState::Watchdog => "watchdog",
            RunState::RestoreVm => "restore-vm",
            RunState::SaveVm => "save-vm",
            RunState::Debug => "debug",
            RunState::Other(name) => name,
        }
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(RunState::from_name(&name))
    }
}

/// The answer of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// Whether the vCPUs are running.
    pub running: bool,
    pub status: RunState,
}

/// The state of a migration (`query-migrate`, `MIGRATION` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    None,
    Setup,
    Cancelling,
    Cancelled,
    Active,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecover,
    Completed,
    Failed,
    Colo,
    PreSwitchover,
    Device,
    WaitUnplug,
    Other(String),
}

impl MigrationStatus {
    pub fn from_name(name: &str) -> Self {
        match name {
            "none" => MigrationStatus::None,
            "setup" => MigrationStatus::Setup,
            "cancelling" => MigrationStatus::Cancelling,
            "cancelled" => MigrationStatus::Cancelled,
            "active" => MigrationStatus::Active,
            "postcopy-active" => MigrationStatus::PostcopyActive,
            "postcopy-paused" => MigrationStatus::PostcopyPaused,
            "postcopy-recover" => MigrationStatus::PostcopyRecover,
            "completed" => MigrationStatus::Completed,
            "failed" => MigrationStatus::Failed,
            "colo" => MigrationStatus::Colo,
            "pre-switchover" => MigrationStatus::PreSwitchover,
            "device" => MigrationStatus::Device,
            "wait-unplug" => MigrationStatus::WaitUnplug,
            other => MigrationStatus::Other(other.to_string()),
        }
    }

    /// Whether the migration has ended, well or badly.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }
}

impl<'de> Deserialize<'de> for MigrationStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(MigrationStatus::from_name(&name))
    }
}

/// RAM counters of a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationRam {
    #[serde(default)]
    pub transferred: u64,
    #[serde(default)]
    pub remaining: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub duplicate: u64,
    #[serde(default)]
    pub normal: u64,
    #[serde(default)]
    pub dirty_sync_count: u64,
}

/// The answer of `query-migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// Absent before any migration was started.
    #[serde(default)]
    pub status: Option<MigrationStatus>,
    #[serde(default)]
    pub ram: Option<MigrationRam>,
    /// Total time in milliseconds, once completed.
    #[serde(default)]
    pub total_time: Option<u64>,
    /// Downtime in milliseconds, once completed.
    #[serde(default)]
    pub downtime: Option<u64>,
    /// Why the migration failed.
    #[serde(default)]
    pub error_desc: Option<String>,
}

/// The answer of `add-fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AddFdInfo {
    pub fdset_id: u64,
    pub fd: i64,
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name, e.g. `STOP`, `RESUME`, `SHUTDOWN`, `MIGRATION`.
    pub name: String,
    /// The event's data (`null` when it has none).
    pub data: Value,
    /// When QEMU emitted it, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

impl Event {
    /// For a `MIGRATION` event, the new status.
    pub fn migration_status(&self) -> Option<MigrationStatus> {
        if self.name != "MIGRATION" {
            return None;
        }
        self.data
            .get("status")
            .and_then(Value::as_str)
            .map(MigrationStatus::from_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_run_states_are_kept_by_name() {
        let s: StatusInfo =
            serde_json::from_str(r#"{"running":false,"status":"brand-new-state"}"#).unwrap();
        assert_eq!(s.status, RunState::Other("brand-new-state".into()));
        assert_eq!(s.status.name(), "brand-new-state");
        let s: StatusInfo =
            serde_json::from_str(r#"{"running":true,"singlestep":false,"status":"running"}"#)
                .unwrap();
        assert_eq!(s.status, RunState::Running);
    }

    #[test]
    fn migration_info_reads_a_qemu_answer() {
        let info: MigrationInfo = serde_json::from_str(
            r#"{"status":"completed","total-time":120,"downtime":3,
                "ram":{"transferred":1000,"remaining":0,"total":4096,"duplicate":9,
                       "normal":2,"normal-bytes":8192,"dirty-sync-count":1,"mbps":1.5}}"#,
        )
        .unwrap();
        assert_eq!(info.status, Some(MigrationStatus::Completed));
        assert!(info.status.as_ref().unwrap().is_final());
        assert_eq!(info.ram.unwrap().total, 4096);
        let empty: MigrationInfo = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.status, None);
    }

    #[test]
    fn migration_event_status() {
        let ev = Event {
            name: "MIGRATION".into(),
            data: serde_json::json!({"status": "failed"}),
            timestamp_us: 0,
        };
        assert_eq!(ev.migration_status(), Some(MigrationStatus::Failed));
        let other = Event {
            name: "STOP".into(),
            data: Value::Null,
            timestamp_us: 0,
        };
        assert_eq!(other.migration_status(), None);
    }
}
