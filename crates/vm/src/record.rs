//! The saved record of a VM (`vm.json`): what it runs, on which disks, and
//! what vgrid last asked of it. Live state (is QEMU alive, paused, has the
//! command exited) is never stored here; it is read from QEMU and the agent
//! output each time, so a record cannot go stale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vgrid_guest_proto::JobContext;

use crate::accel::Accel;
use crate::error::{FileError, RecordError, SpecError};
use crate::fsutil;

/// The record format this crate writes and reads.
///
/// NOTICE: `vm.json` is persisted and read back by later vgrids (a VM
/// outlives the vgrid that started it): any change to [`VmRecord`] or to
/// the types in it that an older vgrid could not read, or would read
/// wrongly, needs a new format number here, and [`VmRecord::load`] must
/// then read the older formats or refuse them saying what to do.
pub const RECORD_FORMAT: u32 = 1;

pub use vgrid_model::ImageKind;

/// An image as the runtime needs it to boot a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootImage {
    pub name: String,
    pub kind: ImageKind,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line (after vgrid's own `console=ttyS0 ...`).
    #[serde(default)]
    pub append: String,
    /// The read-only base disk; every VM gets an overlay on it.
    pub disk: PathBuf,
    /// `qcow2` or `raw`.
    pub disk_format: String,
    /// Whether the vgrid guest agent runs inside.
    pub agent: bool,
    /// Identifies the image content (a BLAKE3 hash); a checkpoint restores
    /// only onto an image with the same identity.
    pub checksum: String,
}

/// A data repository exported to the guest over virtio-9p.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub tag: String,
    /// The resolved host directory (inside an allowed root).
    pub host_path: PathBuf,
    pub guest_path: String,
    pub readonly: bool,
}

/// A published port: host TCP port -> guest TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host: u16,
    pub guest: u16,
}

impl PortMap {
    /// Parses `HOSTPORT:GUESTPORT` (an entry of the request's `publish`).
    pub fn parse(s: &str) -> Result<PortMap, SpecError> {
        let bad = |why: &str| SpecError::new("publish", s, why);
        let (h, g) = s
            .split_once(':')
            .ok_or_else(|| bad("expected HOSTPORT:GUESTPORT"))?;
        let port = |p: &str| -> Result<u16, SpecError> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad("ports are numbers from 1 to 65535")),
                Ok(n) => Ok(n),
            }
        };
        Ok(PortMap {
            host: port(h)?,
            guest: port(g)?,
        })
    }
}

/// What vgrid last asked of the VM; with QEMU's liveness it decides the
/// state shown (a QEMU that vanished while meant to run has crashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intent {
    Run,
    Pause,
    Stop,
    Kill,
    /// Stopped after a checkpoint that stops the VM ([`CheckpointOptions::stop`](crate::checkpoint::CheckpointOptions)).
    Saved,
    /// The guest powered itself off (images without the agent).
    GuestOff,
}

/// The saved record of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub format: u32,
    /// Unique id (16 hex digits); the MAC address derives from it.
    pub id: String,
    pub name: String,
    pub created_unix: u64,
    pub image: BootImage,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Virtual size of the VM's disk in bytes.
    pub disk_bytes: u64,
    pub accel: Accel,
    pub accel_reason: String,
    pub cpu_model: String,
    /// The versioned machine type, e.g. `pc-q35-7.2`.
    pub machine: String,
    pub mac: String,
    pub mounts: Vec<MountRecord>,
    /// The staging share's tag, when the job stages files.
    pub staging_tag: Option<String>,
    pub publish: Vec<PortMap>,
    pub network: bool,
    /// The job context handed to the agent (stock images).
    pub context: Option<JobContext>,
    /// The disk chain, bottom (the image's base) to top (writable).
    pub disks: Vec<PathBuf>,
    /// How many layers above the base are stored in `last_checkpoint` and
    /// its ancestors; the next checkpoint stores the rest.
    pub checkpointed_layers: usize,
    pub last_checkpoint: Option<PathBuf>,
    /// The checkpoint this VM was restored from, if any.
    pub restored_from: Option<PathBuf>,
    /// The user QEMU and passt run as (`None`: the invoking user).
    pub run_as: Option<String>,
    pub qemu_version: String,
    pub intent: Intent,
    /// The owner of the job the VM runs: its host paths (inputs, mounts,
    /// and those of later runs in a kept VM) resolve inside `<root>/<owner>/`
    /// of each allowed root. `None` (a VM started by hand): the whole roots.
    #[serde(default)]
    pub owner: Option<String>,
}

impl VmRecord {
    /// Reads a record, refusing one of another format (see
    /// [`RECORD_FORMAT`]) with what to do about it.
    pub fn load(path: &Path) -> Result<VmRecord, RecordError> {
        let bytes = std::fs::read(path).map_err(|e| FileError::new("read", path, e))?;
        let parse = |source| RecordError::Parse {
            path: path.to_path_buf(),
            source,
        };
        // The format first, so that a record of another format is named
        // as such rather than as a field that does not fit.
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let FormatOnly { format } = serde_json::from_slice(&bytes).map_err(parse)?;
        let (found, supported) = (format, RECORD_FORMAT);
        if found > supported {
            return Err(RecordError::Newer {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        if found < supported {
            return Err(RecordError::Older {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        let rec: VmRecord = serde_json::from_slice(&bytes).map_err(parse)?;
        if rec.disks.len() < 2 {
            return Err(RecordError::NoDisks {
                path: path.to_path_buf(),
            });
        }
        Ok(rec)
    }

    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| RecordError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(fsutil::write_atomic(path, &bytes, 0o600)?)
    }

    /// The writable top layer.
    pub fn top_disk(&self) -> &Path {
        // `load` and every constructor guarantee at least two layers.
        &self.disks[self.disks.len() - 1]
    }

    /// Whether QEMU can migrate (so checkpoint) this VM at all: virtio-9p
    /// data repositories stay mounted for the whole run, and QEMU 7.2
    /// refuses to migrate while one is mounted.
    pub fn checkpoint_blocker(&self) -> Option<String> {
        if self.mounts.is_empty() {
            None
        } else {
            let tags: Vec<&str> = self.mounts.iter().map(|m| m.tag.as_str()).collect();
            Some(format!(
                "it has data repositories mounted over virtio-9p ({}), and QEMU cannot migrate or save a VM while a 9p share is mounted; use staging (files copied in and out) for jobs that must be checkpointable",
                tags.join(", ")
            ))
        }
    }
}

/// A MAC address in QEMU's locally administered range, from the VM id.
pub fn mac_for(id: &str) -> String {
    let h = blake3::hash(id.as_bytes());
    let b = h.as_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// A new VM id: 16 hex digits from the name, time, process and a counter.
pub fn new_vm_id(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize().to_hex()[..16].to_string()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[test]
    fn ports_parse_with_clear_errors() {
        assert_eq!(
            PortMap::parse("8080:80").unwrap(),
            PortMap {
                host: 8080,
                guest: 80
            }
        );
        for bad in ["8080", "0:80", "a:80", "80:70000", ""] {
            let err = PortMap::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("publish `"), "{err}");
        }
    }

    #[test]
    fn macs_are_local_and_distinct() {
        let a = mac_for(&new_vm_id("a"));
        let b = mac_for(&new_vm_id("a"));
        assert!(a.starts_with("52:54:00:"));
        assert_eq!(a.len(), 17);
        assert_ne!(a, b);
    }

    #[test]
    fn broken_records_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.json");
        std::fs::write(&p, b"{\"format\": 1,").unwrap();
        let err = VmRecord::load(&p).unwrap_err();
        assert!(err.to_string().contains("vm.json"), "{err}");
        assert!(report(&err).contains("line 1"), "{err}");
    }

    #[test]
    fn records_of_other_formats_are_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vm.json");
        std::fs::write(&p, br#"{"format": 2, "a field of format 2": true}"#).unwrap();
        let newer = report(&VmRecord::load(&p).unwrap_err());
        assert!(newer.contains("vm.json"), "{newer}");
        assert!(newer.contains("format 2, newer"), "{newer}");
        assert!(
            newer.contains("manage the VM with the newer vgrid"),
            "{newer}"
        );
        std::fs::write(&p, br#"{"format": 0}"#).unwrap();
        let older = report(&VmRecord::load(&p).unwrap_err());
        assert!(older.contains("format 0, older"), "{older}");
        assert!(older.contains("`vgrid vm rm`"), "{older}");
    }
}
