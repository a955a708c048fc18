//! Manifests: the files of one thing, as chunks.
//!
//! Persisted and sent: a change of the form needs a new [`FORMAT`];
//! [`Manifest::parse`] reads this one and refuses others saying so.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, MAX_CHUNK, hex, parse_hex32};

/// The form of manifests this build writes and reads.
pub const FORMAT: u32 = 1;

/// The name of a manifest: the BLAKE3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub [u8; 32]);

impl ManifestId {
    pub fn of(bytes: &[u8]) -> ManifestId {
        ManifestId(*blake3::hash(bytes).as_bytes())
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    pub fn parse(text: &str) -> Option<ManifestId> {
        parse_hex32(text).map(ManifestId)
    }
}

impl std::fmt::Display for ManifestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// What a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// A guest image's files.
    Image,
    /// A checkpoint of a job's VMs, with the whole chain it needs.
    Checkpoint,
    /// Files a job reads or wrote.
    Data,
}

/// One file: its path inside the thing, its length, its mode bits and its
/// chunks in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    #[serde(default = "default_mode")]
    pub mode: u32,
    /// `(chunk, length)` in file order, the chunk as hex.
    pub chunks: Vec<(String, u32)>,
    /// A packed file (a checkpoint's `memory.pack`) is its chunks' stored
    /// bodies back to back, not their raw bytes: one letter a chunk says
    /// how the file keeps it, `r` raw or `z` zstd-compressed (level 1, as
    /// [`crate::chunk::encode`] does). `size` is then the file's length,
    /// which the raw lengths do not add up to. Such chunks travel as they
    /// are kept, under their own names: nothing is cut twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<String>,
}

fn default_mode() -> u32 {
    0o600
}

impl FileEntry {
    /// The chunk ids, parsed (a manifest that parsed has only valid ones).
    pub fn chunk_ids(&self) -> impl Iterator<Item = (ChunkId, u32)> + '_ {
        self.chunks
            .iter()
            .filter_map(|(h, len)| ChunkId::parse(h).map(|id| (id, *len)))
    }
}

/// A manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: ManifestKind,
    pub files: Vec<FileEntry>,
    /// Facts about the thing (an image's name and kind, a checkpoint's
    /// job and sequence number), for people and for checks.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// Why bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadManifest {
    #[error("it does not parse (truncated or damaged?): {0}")]
    Parse(String),
    #[error(
        "it has format {found}, but this vgrid reads only {FORMAT}: use a vgrid of the same version"
    )]
    Format { found: u32 },
    #[error("file `{path}`: {why}")]
    File { path: String, why: String },
}

impl Manifest {
    pub fn new(kind: ManifestKind) -> Manifest {
        Manifest {
            format: FORMAT,
            kind,
            files: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    /// The bytes that name and carry it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn id(&self) -> ManifestId {
        ManifestId::of(&self.to_bytes())
    }

    /// Parses and checks a manifest: every path stays inside (relative, no
    /// `..`), every chunk id is one, lengths add up.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BadManifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BadManifest::Parse(e.to_string()))?;
        if m.format != FORMAT {
            return Err(BadManifest::Format { found: m.format });
        }
        for f in &m.files {
            let bad = |why: &str| BadManifest::File {
                path: f.path.clone(),
                why: why.to_string(),
            };
            if f.path.is_empty()
                || Path::new(&f.path).is_absolute()
                || !f
                    .path
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
            {
                return Err(bad("the path must be relative, without `..`"));
            }
            if let Some(codes) = &f.packed
                && (codes.len() != f.chunks.len() || !codes.bytes().all(|c| c == b'r' || c == b'z'))
            {
                return Err(bad("its packing says `r` or `z` for each chunk"));
            }
            let mut total = 0u64;
            for (h, len) in &f.chunks {
                if ChunkId::parse(h).is_none() {
                    return Err(bad("a chunk id is not 64 hexadecimal digits"));
                }
                if *len == 0 || *len > MAX_CHUNK {
                    return Err(bad("a chunk length is out of range"));
                }
                total += u64::from(*len);
            }
            if f.packed.is_none() && total != f.size {
                return Err(bad("its chunks do not add up to its size"));
            }
        }
        Ok(m)
    }

    /// Every chunk the manifest needs, each once.
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = self
            .files
            .iter()
            .flat_map(|f| f.chunk_ids().map(|(id, _)| id))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Bytes of all files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::new(ManifestKind::Image);
        let id = ChunkId::of(b"hello");
        m.files.push(FileEntry {
            path: "disk.raw".into(),
            size: 5,
            mode: 0o600,
            chunks: vec![(id.hex(), 5)],
            packed: None,
        });
        m.meta.insert("name".into(), "tiny".into());
        m
    }

    #[test]
    fn a_manifest_round_trips_and_its_id_is_its_bytes() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes).expect("parses"), m);
        assert_eq!(m.id(), ManifestId::of(&bytes));
        assert_eq!(m.chunk_ids(), vec![ChunkId::of(b"hello")]);
    }

    #[test]
    fn truncated_and_lying_manifests_are_refused() {
        let bytes = sample().to_bytes();
        let cut = Manifest::parse(&bytes[..bytes.len() / 2]).expect_err("truncated");
        assert!(cut.to_string().contains("truncated"), "{cut}");
        for (path, size, why) in [
            ("../etc/passwd", 5, "relative"),
            ("/abs", 5, "relative"),
            ("a/./b", 5, "relative"),
            ("disk.raw", 6, "add up"),
        ] {
            let mut m = sample();
            m.files[0].path = path.into();
            m.files[0].size = size;
            let e = Manifest::parse(&m.to_bytes()).expect_err(path);
            assert!(e.to_string().contains(why), "{path}: {e}");
        }
        let mut m = sample();
        m.format = 99;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(BadManifest::Format { found: 99 })
        ));
    }
}
