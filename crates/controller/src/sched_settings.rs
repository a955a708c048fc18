//! The core's settings a controller's scheduler log was written under.
//!
//! The log is replayed into a fresh core at every start, and the core's
//! answers depend on its policy and preemption mode: replayed under other
//! settings, the log would no longer match (a job logged as running may not
//! even be placed). So the settings are kept next to the database, in
//! `scheduler.json`, and a controller with history refuses to start under
//! others instead of rebuilding a wrong state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vgrid_core::{CostModel, Policy, PreemptionMode};

use crate::{Config, ControllerError};

/// The file, in the data directory.
pub const SETTINGS_FILE: &str = "scheduler.json";

/// What of the core's configuration the controller sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerSettings {
    pub policy: Policy,
    pub preemption: PreemptionMode,
    pub checkpoint_cost: CostModel,
    pub restore_cost: CostModel,
}

impl SchedulerSettings {
    pub(crate) fn of(cfg: &Config) -> SchedulerSettings {
        SchedulerSettings {
            policy: cfg.policy,
            preemption: cfg.preemption,
            checkpoint_cost: cfg.checkpoint_cost,
            restore_cost: cfg.restore_cost,
        }
    }

    /// The settings of controllers from before this file existed: nothing
    /// could change them then.
    fn before_the_file() -> SchedulerSettings {
        let core = vgrid_core::Config::default();
        SchedulerSettings {
            policy: core.policy,
            preemption: core.preemption,
            checkpoint_cost: core.checkpoint_cost,
            restore_cost: core.restore_cost,
        }
    }
}

/// Checks `cfg`'s settings against those the log was written under (when
/// it holds anything) and records them when the log is empty.
pub(crate) fn check(cfg: &Config, log_is_empty: bool) -> Result<(), ControllerError> {
    let path = cfg.data_dir.join(SETTINGS_FILE);
    let wanted = SchedulerSettings::of(cfg);
    if log_is_empty {
        return write(&path, &wanted);
    }
    let written = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| ControllerError::SchedulerSettings {
                path: path.clone(),
                why: format!(
                    "unreadable ({e}); it names the settings the scheduler log was written under"
                ),
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SchedulerSettings::before_the_file(),
        Err(source) => return Err(ControllerError::DataDir { path, source }),
    };
    if written != wanted {
        return Err(ControllerError::SchedulerSettings {
            path,
            why: format!(
                "this controller's history was scheduled with {}, the configuration asks for {}; \
                 the scheduler log only replays under the settings it was written with: keep them, \
                 or start a new controller in a new data directory",
                describe(&written),
                describe(&wanted)
            ),
        });
    }
    Ok(())
}

fn describe(s: &SchedulerSettings) -> String {
    format!(
        "policy {:?}, preemption {:?}, checkpoint cost {}+{}/GiB ms, restore cost {}+{}/GiB ms",
        s.policy,
        s.preemption,
        s.checkpoint_cost.fixed_ms,
        s.checkpoint_cost.ms_per_gb,
        s.restore_cost.fixed_ms,
        s.restore_cost.ms_per_gb
    )
    .to_lowercase()
}

fn write(path: &Path, settings: &SchedulerSettings) -> Result<(), ControllerError> {
    let io = |source| ControllerError::DataDir {
        path: PathBuf::from(path),
        source,
    };
    let text = serde_json::to_string_pretty(settings).expect("plain data serializes");
    crate::setup::write_private(path, &text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config::new(dir.to_path_buf())
    }

    #[test]
    fn an_empty_log_takes_any_settings_and_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.policy = Policy::Conservative;
        check(&cfg, true).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap();
        assert!(text.contains("\"conservative\""), "{text}");
        // Later starts with history accept the same settings.
        check(&cfg, false).unwrap();
    }

    #[test]
    fn a_log_with_history_refuses_other_settings_and_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        check(&cfg, true).unwrap();
        cfg.preemption = PreemptionMode::Kill;
        let err = check(&cfg, false).unwrap_err().to_string();
        assert!(err.contains("preemption checkpoint"), "{err}");
        assert!(err.contains("preemption kill"), "{err}");
        assert!(err.contains(SETTINGS_FILE), "{err}");
    }

    #[test]
    fn history_from_before_the_file_counts_as_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        check(&cfg, false).unwrap();
        cfg.policy = Policy::Fcfs;
        let err = check(&cfg, false).unwrap_err().to_string();
        assert!(
            err.contains("policy easy") && err.contains("policy fcfs"),
            "{err}"
        );
    }
}
