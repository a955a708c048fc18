//! Where the chunks of a manifest can be read from for sending: a store,
//! or the files the manifest describes, where they lie.
//!
//! A node sends a checkpoint from its own files: copying gigabytes of
//! memory into its cache first would only double the disk it needs. A
//! whole file is cut and hashed once, and each chunk read back (and
//! compressed) only when the other side lacks it; a packed file's chunks
//! are sent in the form the file keeps them.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chunk::{self, ChunkId, Codec};
use crate::manifest::FileEntry;
use crate::store::{CasError, Store};

/// Gives the stored form (codec byte, then bytes) of a chunk.
pub trait ChunkSource: Send + Sync {
    fn stored(&self, id: &ChunkId) -> Result<Vec<u8>, CasError>;
}

impl ChunkSource for Store {
    fn stored(&self, id: &ChunkId) -> Result<Vec<u8>, CasError> {
        self.get_stored(id)
    }
}

/// Where one chunk is.
#[derive(Debug, Clone)]
struct Place {
    path: PathBuf,
    offset: u64,
    len: u32,
    /// `None`: raw bytes, encoded when sent. `Some(codec)`: a packed
    /// file's body in that codec.
    packed: Option<Codec>,
}

/// One chunk of a packed file, as the file keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub compressed: bool,
}

/// Chunks of files on disk, by id.
#[derive(Debug, Default)]
pub struct Located {
    places: HashMap<ChunkId, Place>,
}

impl Located {
    pub fn new() -> Located {
        Located::default()
    }

    /// Cuts and hashes the file at `path` (nothing is stored) and
    /// describes it as `name`.
    pub fn add_file(&mut self, path: &Path, name: &str, mode: u32) -> Result<FileEntry, CasError> {
        let file = File::open(path).map_err(|e| io("open", path, e))?;
        let mut entry = FileEntry {
            path: name.to_string(),
            size: 0,
            mode,
            chunks: Vec::new(),
            packed: None,
        };
        chunk::cut_stream(std::io::BufReader::with_capacity(1 << 20, file), |raw| {
            let id = ChunkId::of(raw);
            self.places.entry(id).or_insert_with(|| Place {
                path: path.to_path_buf(),
                offset: entry.size,
                len: raw.len() as u32,
                packed: None,
            });
            entry.chunks.push((id.hex(), raw.len() as u32));
            entry.size += raw.len() as u64;
            Ok(())
        })
        .map_err(|e| io("read", path, e))?;
        Ok(entry)
    }

    /// Takes `entry`, described earlier from the file at `path` (which has
    /// not changed since), without reading the file again.
    pub fn add_described(&mut self, path: &Path, entry: &FileEntry) {
        let mut offset = 0;
        for (id, len) in entry.chunk_ids() {
            self.places.entry(id).or_insert_with(|| Place {
                path: path.to_path_buf(),
                offset,
                len,
                packed: None,
            });
            offset += u64::from(len);
        }
    }

    /// Describes the packed file at `path` from its chunk table (in file
    /// order, back to back) as `name`. `None` when the table does not
    /// cover the file exactly: it is then better described as a whole file.
    pub fn add_packed(
        &mut self,
        path: &Path,
        name: &str,
        mode: u32,
        table: &[PackedChunk],
    ) -> Result<Option<FileEntry>, CasError> {
        let size = std::fs::metadata(path)
            .map_err(|e| io("read", path, e))?
            .len();
        let mut at = 0;
        for c in table {
            if c.offset != at || c.stored_len == 0 || c.raw_len > chunk::MAX_CHUNK {
                return Ok(None);
            }
            at += u64::from(c.stored_len);
        }
        if at != size {
            return Ok(None);
        }
        let mut entry = FileEntry {
            path: name.to_string(),
            size,
            mode,
            chunks: Vec::with_capacity(table.len()),
            packed: Some(String::with_capacity(table.len())),
        };
        for c in table {
            entry.chunks.push((c.id.hex(), c.raw_len));
            if let Some(codes) = entry.packed.as_mut() {
                codes.push(if c.compressed { 'z' } else { 'r' });
            }
            self.places.entry(c.id).or_insert_with(|| Place {
                path: path.to_path_buf(),
                offset: c.offset,
                len: c.stored_len,
                packed: Some(if c.compressed {
                    Codec::Zstd
                } else {
                    Codec::Raw
                }),
            });
        }
        Ok(Some(entry))
    }

    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }
}

impl ChunkSource for Located {
    fn stored(&self, id: &ChunkId) -> Result<Vec<u8>, CasError> {
        let place = self
            .places
            .get(id)
            .ok_or(CasError::MissingChunk { id: *id })?;
        let file = File::open(&place.path).map_err(|e| io("open", &place.path, e))?;
        let mut bytes = vec![0; place.len as usize];
        file.read_exact_at(&mut bytes, place.offset)
            .map_err(|e| io("read", &place.path, e))?;
        match place.packed {
            None => {
                // The file changed since it was described: say so rather
                // than send another chunk under this name.
                if ChunkId::of(&bytes) != *id {
                    return Err(CasError::Changed {
                        path: place.path.clone(),
                    });
                }
                Ok(chunk::encode(&bytes))
            }
            Some(codec) => {
                let mut stored = Vec::with_capacity(bytes.len() + 1);
                stored.push(codec as u8);
                stored.extend_from_slice(&bytes);
                Ok(stored)
            }
        }
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> CasError {
    CasError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).expect("read");
        v
    }
    use crate::manifest::{Manifest, ManifestKind};

    /// Text that compresses and noise that does not, `len` bytes.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    b"checkpoint "[i % 11]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn a_whole_file_goes_from_its_place_into_a_store_and_out_the_same() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("disk.qcow2");
        let bytes = data(700_000, 3);
        std::fs::write(&path, &bytes).expect("write");
        let mut src = Located::new();
        let entry = src.add_file(&path, "1/v0/disk.qcow2", 0o600).expect("add");
        assert_eq!(entry.size, bytes.len() as u64);
        let store = Store::open(&tmp.path().join("store")).expect("store");
        let mut m = Manifest::new(ManifestKind::Checkpoint);
        m.files.push(entry);
        for id in m.chunk_ids() {
            store
                .put_stored(&id, &src.stored(&id).expect("stored"))
                .expect("put");
        }
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("out");
        store.export(&m, &out).expect("export");
        let back = read_all(File::open(out.join("1/v0/disk.qcow2")).expect("open"));
        assert_eq!(back, bytes);

        // A file changed after it was described is not sent as it was.
        std::fs::write(&path, data(700_000, 4)).expect("rewrite");
        let e = (m.chunk_ids().iter())
            .find_map(|id| src.stored(id).err())
            .expect("a changed chunk is noticed");
        assert!(matches!(e, CasError::Changed { .. }), "{e}");
    }

    /// A pack of chunk bodies (some compressed, some not) comes out of a
    /// store byte for byte, also when the store keeps a chunk otherwise.
    #[test]
    fn a_packed_file_comes_out_byte_for_byte_whatever_form_the_store_keeps() {
        let tmp = tempfile::tempdir().expect("tmp");
        let stream = data(900_000, 7);
        let mut pack = Vec::new();
        let mut table = Vec::new();
        for (i, (start, len)) in chunk::cut(&stream).into_iter().enumerate() {
            let raw = &stream[start..start + len];
            let z = chunk::compress(raw).expect("compress");
            // Some compressible chunks kept raw, as a pack may.
            let compressed = z.len() < raw.len() && i % 3 != 0;
            let body: &[u8] = if compressed { &z } else { raw };
            table.push(PackedChunk {
                id: ChunkId::of(raw),
                raw_len: len as u32,
                offset: pack.len() as u64,
                stored_len: body.len() as u32,
                compressed,
            });
            pack.extend_from_slice(body);
        }
        let path = tmp.path().join("memory.pack");
        std::fs::write(&path, &pack).expect("write");
        let mut src = Located::new();
        let entry = src
            .add_packed(&path, "2/v0/memory.pack", 0o600, &table)
            .expect("read")
            .expect("the table covers the pack");
        let store = Store::open(&tmp.path().join("store")).expect("store");
        // The store already holds the first chunk in its own encoding.
        let first = &stream[..table[0].raw_len as usize];
        store.put_chunk(first).expect("put");
        let mut m = Manifest::new(ManifestKind::Checkpoint);
        m.files.push(entry);
        let m = Manifest::parse(&m.to_bytes()).expect("a packed manifest parses");
        for id in store.missing(&m) {
            store
                .put_stored(&id, &src.stored(&id).expect("stored"))
                .expect("put");
        }
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("out");
        store.export(&m, &out).expect("export");
        assert_eq!(
            read_all(File::open(out.join("2/v0/memory.pack")).expect("open")),
            pack
        );

        // A table with a hole is not a pack.
        let mut holed = table.clone();
        holed[1].offset += 1;
        assert!(
            src.add_packed(&path, "x", 0o600, &holed)
                .expect("read")
                .is_none()
        );
    }
}
