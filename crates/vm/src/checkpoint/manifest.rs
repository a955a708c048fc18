//! The checkpoint manifest and the verification of a checkpoint chain.
//!
//! A checkpoint directory holds:
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | this manifest, written last and atomically |
//! | `memory.idx`, `memory.pack` | the memory stream as chunks (see `chunks`) |
//! | `disk-N.qcow2` | the disk layers written since the parent checkpoint |
//! | `agent.out` | the guest agent's output up to the checkpoint |
//! | `console.log` | the serial console up to the checkpoint |
//!
//! The manifest lists every other file with its size and BLAKE3 hash, and
//! names its parent by relative path and by the hash of the parent's
//! manifest, so a chain moved as a whole (to another node) stays valid
//! and a swapped parent is noticed.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::chunks::{ChunkLocator, MemoryIndex};
use crate::error::{CheckpointFileError, FileError};
use crate::fsutil;
use crate::record::VmRecord;

/// The manifest format this crate writes and reads.
///
/// NOTICE: checkpoints are persisted, moved between nodes and restored by
/// later vgrids: any change to [`Manifest`], to the types in it (the
/// [`VmRecord`] included) or to the files it describes that an older vgrid
/// could not read, or would read wrongly, needs a new format number here,
/// and [`load`] must then read the older formats or refuse them saying
/// what to do.
pub const CHECKPOINT_FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const MEMORY_IDX: &str = "memory.idx";
pub const MEMORY_PACK: &str = "memory.pack";
pub const AGENT_OUT: &str = "agent.out";
pub const CONSOLE: &str = "console.log";

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
}

/// The parent checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent's directory relative to this checkpoint's directory.
    pub path: String,
    /// The parent's directory as an absolute path when this was written
    /// (a fallback when the chain was not moved as a whole).
    pub absolute: PathBuf,
    /// BLAKE3 of the parent's `manifest.json`.
    pub manifest_blake3: String,
}

/// Sizes of the memory stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// Length of QEMU's migration stream.
    pub stream_bytes: u64,
    /// BLAKE3 over the BLAKE3 hashes of the stream's chunks, in order.
    pub stream_blake3: String,
    pub chunks: u64,
    /// Chunks stored here (the rest are in ancestors).
    pub new_chunks: u64,
    /// Bytes of `memory.pack`.
    pub pack_bytes: u64,
    pub compressed: bool,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_unix: u64,
    /// `qemu-system-x86_64 --version` of the QEMU that wrote the stream.
    pub qemu_version: String,
    /// The VM as it was: machine, devices, image identity, job context.
    pub vm: VmRecord,
    pub parent: Option<ParentRef>,
    /// This checkpoint's own disk layers, bottom to top; the full chain is
    /// the image's base, the ancestors' layers, then these.
    pub disk_layers: Vec<String>,
    pub memory: MemoryInfo,
    /// Every file except the manifest itself.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Total bytes this checkpoint stores (its own files).
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// One checkpoint of a loaded chain.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_blake3: String,
}

/// Reads a checkpoint's manifest (no verification of the other files),
/// refusing one of another format (see [`CHECKPOINT_FORMAT`]) with what
/// to do about it.
pub fn load(dir: &Path) -> Result<Loaded, CheckpointFileError> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointFileError::Damaged {
                path,
                reason: "missing: the directory is not a checkpoint, or the checkpoint was never completed".into(),
            });
        }
        Err(e) => return Err(FileError::new("read", &path, e).into()),
    };
    let parse = |source| CheckpointFileError::Parse {
        path: path.clone(),
        source,
    };
    // The format first, so that a manifest of another format is named as
    // such rather than as a field that does not fit.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let FormatOnly { format } = serde_json::from_slice(&bytes).map_err(parse)?;
    let (found, supported) = (format, CHECKPOINT_FORMAT);
    if found > supported {
        return Err(CheckpointFileError::Newer {
            path,
            found,
            supported,
        });
    }
    if found < supported {
        return Err(CheckpointFileError::Older {
            path,
            found,
            supported,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(parse)?;
    for name in manifest
        .files
        .iter()
        .map(|f| f.name.as_str())
        .chain(manifest.disk_layers.iter().map(String::as_str))
    {
        if !is_plain_name(name) {
            return Err(CheckpointFileError::Damaged {
                path,
                reason: format!("file name `{name}` is not a plain name in the checkpoint"),
            });
        }
    }
    Ok(Loaded {
        dir: dir.to_path_buf(),
        manifest,
        manifest_blake3: blake3::hash(&bytes).to_hex().to_string(),
    })
}

fn is_plain_name(name: &str) -> bool {
    let mut comps = Path::new(name).components();
    matches!(comps.next(), Some(Component::Normal(_))) && comps.next().is_none()
}

/// Loads the chain ending at `dir`, root first. Parents are found by their
/// relative path, else their recorded absolute path, and must have the
/// recorded manifest hash.
pub fn load_chain(dir: &Path) -> Result<Vec<Loaded>, CheckpointFileError> {
    let mut chain = vec![load(dir)?];
    while let Some(parent) = chain.last().and_then(|c| c.manifest.parent.clone()) {
        if chain.len() > 10_000 {
            return Err(CheckpointFileError::Damaged {
                path: dir.to_path_buf(),
                reason: "the parent chain loops".into(),
            });
        }
        let child_dir = chain.last().map(|c| c.dir.clone()).unwrap_or_default();
        let candidates = [child_dir.join(&parent.path), parent.absolute.clone()];
        let mut found = None;
        let mut why = Vec::new();
        for cand in candidates.iter() {
            match load(cand) {
                Ok(l) if l.manifest_blake3 == parent.manifest_blake3 => {
                    found = Some(l);
                    break;
                }
                Ok(_) => why.push(format!("{} is a different checkpoint", cand.display())),
                Err(e) => why.push(e.to_string()),
            }
        }
        match found {
            Some(l) => chain.push(l),
            None => {
                return Err(CheckpointFileError::Damaged {
                    path: child_dir.join(MANIFEST),
                    reason: format!("its parent checkpoint cannot be found ({})", why.join("; ")),
                });
            }
        }
    }
    chain.reverse();
    Ok(chain)
}

/// Checks every file of every checkpoint in the chain against its size and
/// hash, and that the memory stream can be reassembled. Returns the chunk
/// locator and the last checkpoint's memory index.
pub fn verify_chain(chain: &[Loaded]) -> Result<(ChunkLocator, MemoryIndex), CheckpointFileError> {
    let mut locator = ChunkLocator::new();
    let mut last_index = MemoryIndex::default();
    for ck in chain {
        for f in &ck.manifest.files {
            let path = ck.dir.join(&f.name);
            let meta =
                std::fs::metadata(&path).map_err(|source| CheckpointFileError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
            if meta.len() != f.bytes {
                return Err(CheckpointFileError::Damaged {
                    path,
                    reason: format!(
                        "{} bytes, the manifest says {} (truncated or altered)",
                        meta.len(),
                        f.bytes
                    ),
                });
            }
            let (_, hash) = fsutil::hash_file(&path)?;
            if hash != f.blake3 {
                return Err(CheckpointFileError::Damaged {
                    path,
                    reason: "content does not match the manifest's BLAKE3 checksum (corrupt)"
                        .into(),
                });
            }
        }
        for layer in &ck.manifest.disk_layers {
            if !ck.manifest.files.iter().any(|f| &f.name == layer) {
                return Err(CheckpointFileError::Damaged {
                    path: ck.dir.join(MANIFEST),
                    reason: format!("disk layer `{layer}` has no checksum entry"),
                });
            }
        }
        for needed in [MEMORY_IDX, MEMORY_PACK] {
            if !ck.manifest.files.iter().any(|f| f.name == needed) {
                return Err(CheckpointFileError::Damaged {
                    path: ck.dir.join(MANIFEST),
                    reason: format!("`{needed}` has no checksum entry"),
                });
            }
        }
        let idx_path = ck.dir.join(MEMORY_IDX);
        let bytes = std::fs::read(&idx_path).map_err(|e| FileError::new("read", &idx_path, e))?;
        let index = MemoryIndex::decode(&bytes, &idx_path)?;
        if index.stream_len != ck.manifest.memory.stream_bytes {
            return Err(CheckpointFileError::Damaged {
                path: idx_path,
                reason: "stream length differs from the manifest".into(),
            });
        }
        locator.add_pack(ck.dir.join(MEMORY_PACK), &index);
        last_index = index;
    }
    if let Some(last) = chain.last() {
        locator.check_complete(&last_index, &last.dir.join(MEMORY_IDX))?;
    }
    Ok((locator, last_index))
}

/// `to` relative to `from` (both absolute), e.g. `../ckpt-1`.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/c/ck2"), Path::new("/c/ck1")),
            PathBuf::from("../ck1")
        );
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/x")),
            PathBuf::from("../../x")
        );
        assert_eq!(
            relative_path(Path::new("/a"), Path::new("/a")),
            PathBuf::from(".")
        );
    }

    #[test]
    fn names_in_manifests_must_be_plain() {
        assert!(is_plain_name("disk-0.qcow2"));
        for bad in ["../x", "/etc/passwd", "a/b", "", ".."] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_directory_without_manifest_is_named_as_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
        assert!(err.to_string().contains("never completed"), "{err}");
        std::fs::write(dir.path().join(MANIFEST), b"{\"format\": 1").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(report(&err).contains("line 1"), "{err}");
    }

    #[test]
    fn manifests_of_other_formats_are_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST);
        std::fs::write(&path, br#"{"format": 2, "a field of format 2": []}"#).unwrap();
        let newer = report(&load(dir.path()).unwrap_err());
        assert!(newer.contains("manifest.json"), "{newer}");
        assert!(newer.contains("format 2, newer"), "{newer}");
        assert!(newer.contains("restore it with the newer vgrid"), "{newer}");
        std::fs::write(&path, br#"{"format": 0}"#).unwrap();
        let older = report(&load(dir.path()).unwrap_err());
        assert!(older.contains("format 0, older"), "{older}");
        assert!(
            older.contains("restore it with the vgrid that took it"),
            "{older}"
        );
    }
}
