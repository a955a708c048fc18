//! The agent's own state files: `units/<job>.<attempt>` (a unit's output
//! offset and checkpoint directory), `qemu-units/<job>.<attempt>` (what
//! the QEMU driver remembers of a unit) and `kept.json` (the kept VMs).
//!
//! Each is JSON with a version `v` beside its fields, written through
//! [`vgrid_vm::fsutil::write_atomic`] (temporary file, fsync, rename,
//! 0600): a crash leaves the old file or the new one.
//!
//! NOTICE: these files outlive the agent that wrote them (a restarted or
//! upgraded agent reads them to reattach to its VMs). Any change to the
//! form of one of them that an older agent could not read, or would read
//! wrongly, needs a new [`STATE_VERSION`], and [`load`] must then read the
//! older versions or refuse them saying what to do.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use vgrid_vm::error::FileError;

/// The version of the state files this agent writes. Files written before
/// versions have none (read as 0): they have the form of version 1.
pub const STATE_VERSION: u32 = 1;

/// A state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is not JSON of the expected form.
    #[error("agent state file {} cannot be parsed", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The state cannot be written as JSON.
    #[error("agent state file {} cannot be encoded", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer agent.
    #[error(
        "agent state file {} has version {found}, newer than this vgrid reads ({supported}): run the newer vgrid that wrote it",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

#[derive(Serialize)]
struct Versioned<'a, T> {
    v: u32,
    #[serde(flatten)]
    value: &'a T,
}

/// Writes `value` with the current version to `path`, atomically and
/// durably, readable by vgrid only.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(&Versioned {
        v: STATE_VERSION,
        value,
    })
    .map_err(|source| StateError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(vgrid_vm::fsutil::write_atomic(path, &bytes, 0o600)?)
}

/// Reads the state file `path`; `None` when there is none. A file of a
/// newer version is refused.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::new("read", path, e).into()),
    };
    parse(path, &bytes).map(Some)
}

/// Parses the content of the state file `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateError> {
    let parse_err = |source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    };
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        #[serde(default)]
        v: u32,
    }
    let VersionOnly { v } = serde_json::from_slice(bytes).map_err(parse_err)?;
    if v > STATE_VERSION {
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            found: v,
            supported: STATE_VERSION,
        });
    }
    // Version 0 (no `v`) and 1 have the same fields.
    serde_json::from_slice(bytes).map_err(parse_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Thing {
        a: u32,
        b: String,
    }

    #[test]
    fn files_carry_a_version_older_ones_read_newer_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thing");
        assert_eq!(load::<Thing>(&path).unwrap(), None);
        let thing = Thing {
            a: 7,
            b: "x".into(),
        };
        save(&path, &thing).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"v\": 1"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load::<Thing>(&path).unwrap(), Some(thing));

        // Written before versions: the same fields, no `v`.
        std::fs::write(&path, br#"{"a": 1, "b": "old"}"#).unwrap();
        assert_eq!(load::<Thing>(&path).unwrap().unwrap().b, "old");

        std::fs::write(&path, br#"{"v": 2, "a": 1, "b": "new", "c": []}"#).unwrap();
        let err = load::<Thing>(&path).unwrap_err();
        let text = vgrid_vm::error::report(&err);
        assert!(text.contains("version 2, newer"), "{text}");
        assert!(text.contains("run the newer vgrid"), "{text}");
    }
}
