//! The memory stream as content-defined chunks.
//!
//! QEMU's migration stream always carries all of RAM, so storing it whole
//! would make every checkpoint as large as the first. Instead the stream
//! is cut with FastCDC (boundaries depend on content, so an unchanged page
//! range yields the same chunks however the rest moved), every chunk is
//! named by its BLAKE3 hash, and a checkpoint stores only the chunks that
//! no ancestor stores. Chunks are zstd-compressed when that makes them
//! smaller and appended to one pack file per checkpoint (one sequential
//! write, no file per chunk).
//!
//! `memory.idx` (binary, little-endian):
//!
//! ```text
//! "VGMIDX01"                       magic
//! u64 stream_len                   bytes of the original stream
//! u64 n                            stream entries, in stream order:
//!   [32] hash  u32 raw_len
//! u64 m                            chunks stored in this checkpoint's pack:
//!   [32] hash  u64 offset  u32 stored_len  u32 raw_len  u8 codec (0 raw, 1 zstd)
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, VmError};

pub const IDX_MAGIC: &[u8; 8] = b"VGMIDX01";
const MIN_CHUNK: u32 = 16 * 1024;
const AVG_CHUNK: u32 = 64 * 1024;
const MAX_CHUNK: u32 = 256 * 1024;

pub type Hash = [u8; 32];

/// Where a stored chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChunk {
    pub hash: Hash,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

/// The parsed `memory.idx` of one checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryIndex {
    pub stream_len: u64,
    pub order: Vec<(Hash, u32)>,
    pub stored: Vec<StoredChunk>,
}

impl MemoryIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.order.len() * 36 + self.stored.len() * 49);
        out.extend_from_slice(IDX_MAGIC);
        out.extend_from_slice(&self.stream_len.to_le_bytes());
        out.extend_from_slice(&(self.order.len() as u64).to_le_bytes());
        for (h, len) in &self.order {
            out.extend_from_slice(h);
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&(self.stored.len() as u64).to_le_bytes());
        for c in &self.stored {
            out.extend_from_slice(&c.hash);
            out.extend_from_slice(&c.offset.to_le_bytes());
            out.extend_from_slice(&c.stored_len.to_le_bytes());
            out.extend_from_slice(&c.raw_len.to_le_bytes());
            out.push(u8::from(c.compressed));
        }
        out
    }

    /// Parses an index; `path` only names the file in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<MemoryIndex> {
        let bad = |why: &str| VmError::BadCheckpoint {
            path: path.to_path_buf(),
            reason: why.to_string(),
        };
        let mut r = Cursor { bytes, pos: 0 };
        if r.take(8).ok_or_else(|| bad("truncated"))? != IDX_MAGIC {
            return Err(bad("not a memory index (bad magic)"));
        }
        let stream_len = r.u64().ok_or_else(|| bad("truncated"))?;
        let n = r.u64().ok_or_else(|| bad("truncated"))?;
        if n > (bytes.len() as u64) / 36 {
            return Err(bad("entry count larger than the file"));
        }
        let mut order = Vec::with_capacity(n as usize);
        let mut total = 0u64;
        for _ in 0..n {
            let h = r.hash().ok_or_else(|| bad("truncated"))?;
            let len = r.u32().ok_or_else(|| bad("truncated"))?;
            total += u64::from(len);
            order.push((h, len));
        }
        if total != stream_len {
            return Err(bad("chunk lengths do not add up to the stream length"));
        }
        let m = r.u64().ok_or_else(|| bad("truncated"))?;
        if m > (bytes.len() as u64) / 49 {
            return Err(bad("stored-chunk count larger than the file"));
        }
        let mut stored = Vec::with_capacity(m as usize);
        for _ in 0..m {
            let hash = r.hash().ok_or_else(|| bad("truncated"))?;
            let offset = r.u64().ok_or_else(|| bad("truncated"))?;
            let stored_len = r.u32().ok_or_else(|| bad("truncated"))?;
            let raw_len = r.u32().ok_or_else(|| bad("truncated"))?;
            let codec = r.take(1).ok_or_else(|| bad("truncated"))?[0];
            if codec > 1 {
                return Err(bad("unknown chunk codec"));
            }
            stored.push(StoredChunk {
                hash,
                offset,
                stored_len,
                raw_len,
                compressed: codec == 1,
            });
        }
        if r.pos != bytes.len() {
            return Err(bad("trailing bytes after the index"));
        }
        Ok(MemoryIndex {
            stream_len,
            order,
            stored,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn hash(&mut self) -> Option<Hash> {
        self.take(32)?.try_into().ok()
    }
}

/// Where every chunk of a checkpoint chain is: pack files and offsets.
#[derive(Debug, Default)]
pub struct ChunkLocator {
    packs: Vec<PathBuf>,
    map: HashMap<Hash, (usize, StoredChunk)>,
}

impl ChunkLocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the chunks stored in one checkpoint's pack.
    pub fn add_pack(&mut self, pack: PathBuf, index: &MemoryIndex) {
        let i = self.packs.len();
        self.packs.push(pack);
        for c in &index.stored {
            self.map.entry(c.hash).or_insert((i, *c));
        }
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.map.contains_key(h)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Checks that every chunk of `index`'s stream can be found.
    pub fn check_complete(&self, index: &MemoryIndex, idx_path: &Path) -> Result<()> {
        for (h, _) in &index.order {
            if !self.contains(h) {
                return Err(VmError::BadCheckpoint {
                    path: idx_path.to_path_buf(),
                    reason: format!(
                        "chunk {} is stored in no pack of the checkpoint chain",
                        hex(h)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Writes the stream of `index` to `out`, verifying every chunk's hash.
    pub fn write_stream(&self, index: &MemoryIndex, out: &mut impl Write) -> Result<u64> {
        let mut files: Vec<Option<File>> = (0..self.packs.len()).map(|_| None).collect();
        let mut stored = Vec::new();
        let mut written = 0u64;
        for (h, len) in &index.order {
            let Some(&(pack, c)) = self.map.get(h) else {
                return Err(VmError::BadCheckpoint {
                    path: self.packs.first().cloned().unwrap_or_default(),
                    reason: format!("chunk {} is missing", hex(h)),
                });
            };
            let path = &self.packs[pack];
            if files[pack].is_none() {
                files[pack] = Some(File::open(path).map_err(|e| VmError::io("open", path, e))?);
            }
            let Some(f) = files[pack].as_ref() else {
                continue;
            };
            stored.resize(c.stored_len as usize, 0);
            f.read_exact_at(&mut stored, c.offset)
                .map_err(|e| VmError::io("read", path, e))?;
            let raw = if c.compressed {
                zstd::bulk::decompress(&stored, c.raw_len as usize).map_err(|e| {
                    VmError::BadCheckpoint {
                        path: path.clone(),
                        reason: format!("chunk {} does not decompress: {e}", hex(h)),
                    }
                })?
            } else {
                std::mem::take(&mut stored)
            };
            if raw.len() != *len as usize || blake3::hash(&raw).as_bytes() != h {
                return Err(VmError::BadCheckpoint {
                    path: path.clone(),
                    reason: format!("chunk {} does not match its hash", hex(h)),
                });
            }
            out.write_all(&raw)
                .map_err(|e| VmError::io("write", "the restore stream", e))?;
            written += raw.len() as u64;
            if !c.compressed {
                stored = raw;
            }
        }
        out.flush()
            .map_err(|e| VmError::io("write", "the restore stream", e))?;
        Ok(written)
    }
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// What saving a stream produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedStream {
    pub index: MemoryIndex,
    /// BLAKE3 over the stream's chunk hashes in order: identifies the whole
    /// stream without hashing its bytes a second time.
    pub stream_blake3: String,
    /// Bytes written to the pack (new chunks, after compression).
    pub pack_bytes: u64,
    pub new_chunks: u64,
}

/// Where chunk bytes go; a trait so tests can make writes fail like a full
/// disk does.
pub trait PackSink: Write {
    fn finish(&mut self) -> std::io::Result<()>;
}

/// A pack file on disk; it hashes what it writes, so the manifest's
/// checksum needs no second read.
pub struct FilePack {
    inner: BufWriter<File>,
    hasher: blake3::Hasher,
    written: u64,
}

impl FilePack {
    pub fn create(path: &Path) -> Result<FilePack> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| VmError::io("create", path, e))?;
        Ok(FilePack {
            inner: BufWriter::with_capacity(4 << 20, f),
            hasher: blake3::Hasher::new(),
            written: 0,
        })
    }

    /// Size and BLAKE3 of everything written.
    pub fn digest(&self) -> (u64, String) {
        (self.written, self.hasher.finalize().to_hex().to_string())
    }
}

impl Write for FilePack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl PackSink for FilePack {
    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.flush()?;
        self.inner.get_ref().sync_all()
    }
}

/// Reads the stream from `src` to its end, chunking, deduplicating against
/// `known` (the ancestors' chunks) and this stream itself, compressing, and
/// appending new chunks to `pack`. `pack_name` names the pack in errors.
pub fn save_stream(
    src: impl Read,
    known: &ChunkLocator,
    pack: &mut dyn PackSink,
    pack_name: &Path,
    compress: bool,
) -> Result<SavedStream> {
    let mut out = SavedStream::default();
    let mut here: HashSet<Hash> = HashSet::new();
    let mut stream_hash = blake3::Hasher::new();
    let mut offset = 0u64;
    // One compression context for the whole stream (making one per chunk
    // costs more than compressing).
    let mut compressor = if compress {
        Some(zstd::bulk::Compressor::new(1).map_err(|e| VmError::io("compress", pack_name, e))?)
    } else {
        None
    };
    let chunker = fastcdc::v2020::StreamCDC::new(src, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
    for chunk in chunker {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => VmError::io("read", "the migration stream", io),
            other => VmError::io(
                "read",
                "the migration stream",
                std::io::Error::other(other.to_string()),
            ),
        })?;
        let data = &chunk.data;
        let h: Hash = *blake3::hash(data).as_bytes();
        stream_hash.update(&h);
        let raw_len = data.len() as u32;
        out.index.order.push((h, raw_len));
        out.index.stream_len += u64::from(raw_len);
        if known.contains(&h) || !here.insert(h) {
            continue;
        }
        let packed = match compressor.as_mut() {
            Some(z) => {
                if worth_compressing(z, data) {
                    z.compress(data).ok().filter(|c| c.len() < data.len())
                } else {
                    None
                }
            }
            None => None,
        };
        let (bytes, compressed) = match &packed {
            Some(c) => (c.as_slice(), true),
            None => (data.as_slice(), false),
        };
        pack.write_all(bytes)
            .map_err(|e| VmError::io("write", pack_name, e))?;
        out.index.stored.push(StoredChunk {
            hash: h,
            offset,
            stored_len: bytes.len() as u32,
            raw_len,
            compressed,
        });
        offset += bytes.len() as u64;
        out.new_chunks += 1;
    }
    pack.finish()
        .map_err(|e| VmError::io("write", pack_name, e))?;
    out.pack_bytes = offset;
    out.stream_blake3 = stream_hash.finalize().to_hex().to_string();
    Ok(out)
}

/// Whether zstd is likely to shrink a chunk: a 4 KiB sample from its middle
/// is compressed first. Random data (encrypted or compressed files, a
/// guest's random pages) fails the sample and is stored raw, saving the
/// full compression attempt, which costs more than chunking and hashing
/// together.
fn worth_compressing(z: &mut zstd::bulk::Compressor<'_>, data: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
    match z.compress(sample) {
        Ok(c) => c.len() < SAMPLE * 97 / 100,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_chunks_skip_compression_and_text_does_not() {
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        assert!(!worth_compressing(&mut z, &noise(65536, 9)));
        let text: Vec<u8> = b"the quick brown fox "
            .iter()
            .cycle()
            .take(65536)
            .copied()
            .collect();
        assert!(worth_compressing(&mut z, &text));
        assert!(worth_compressing(&mut z, &[0u8; 1000]));
    }

    /// A pseudo-random stream (xorshift), deterministic per seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    struct MemPack(Vec<u8>);
    impl Write for MemPack {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl PackSink for MemPack {
        fn finish(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn save_to_file(
        dir: &Path,
        name: &str,
        stream: &[u8],
        known: &ChunkLocator,
    ) -> (PathBuf, SavedStream) {
        let pack = dir.join(format!("{name}.pack"));
        let mut sink = FilePack::create(&pack).unwrap();
        let saved = save_stream(stream, known, &mut sink, &pack, true).unwrap();
        assert_eq!(sink.digest(), crate::fsutil::hash_file(&pack).unwrap());
        (pack, saved)
    }

    #[test]
    fn a_stream_round_trips_and_a_small_change_stores_little() {
        let dir = tempfile::tempdir().unwrap();
        // 8 MiB: random pages with zero runs, like a guest's memory.
        let mut stream = noise(8 << 20, 7);
        for z in stream.chunks_mut(1 << 20).step_by(2) {
            z.fill(0);
        }
        let (pack1, s1) = save_to_file(dir.path(), "one", &stream, &ChunkLocator::new());
        assert_eq!(crate::fsutil::hash_file(&pack1).unwrap().0, s1.pack_bytes);
        assert_eq!(s1.index.stream_len, stream.len() as u64);
        let mut list = blake3::Hasher::new();
        for (h, _) in &s1.index.order {
            list.update(h);
        }
        assert_eq!(s1.stream_blake3, list.finalize().to_hex().to_string());
        // Zero regions dedupe and compress.
        assert!(
            s1.pack_bytes < stream.len() as u64 * 3 / 4,
            "{}",
            s1.pack_bytes
        );

        let mut loc = ChunkLocator::new();
        loc.add_pack(pack1.clone(), &s1.index);
        let mut back = Vec::new();
        loc.write_stream(&s1.index, &mut back).unwrap();
        assert_eq!(back, stream);

        // Change 100 bytes in the middle: the child stores a few chunks.
        let mut changed = stream.clone();
        changed[3_000_000..3_000_100].fill(0xee);
        let (pack2, s2) = save_to_file(dir.path(), "two", &changed, &loc);
        assert!(s2.new_chunks <= 3, "{} new chunks", s2.new_chunks);
        assert!(s2.pack_bytes <= 3 * u64::from(MAX_CHUNK));
        loc.add_pack(pack2, &s2.index);
        let mut back = Vec::new();
        loc.write_stream(&s2.index, &mut back).unwrap();
        assert_eq!(back, changed);
    }

    #[test]
    fn index_encoding_round_trips_and_rejects_damage() {
        let mut sink = MemPack(Vec::new());
        let saved = save_stream(
            &noise(300_000, 3)[..],
            &ChunkLocator::new(),
            &mut sink,
            Path::new("mem"),
            false,
        )
        .unwrap();
        let bytes = saved.index.encode();
        let p = Path::new("memory.idx");
        assert_eq!(MemoryIndex::decode(&bytes, p).unwrap(), saved.index);
        for cut in [0, 7, 20, bytes.len() - 1] {
            let err = MemoryIndex::decode(&bytes[..cut], p).unwrap_err();
            assert!(err.to_string().contains("memory.idx"), "{err}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(MemoryIndex::decode(&bad, p).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MemoryIndex::decode(&longer, p).is_err());
    }

    #[test]
    fn a_corrupt_pack_is_detected_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        let stream = noise(1 << 20, 11);
        let (pack, saved) = save_to_file(dir.path(), "p", &stream, &ChunkLocator::new());
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&pack, &bytes).unwrap();
        let mut loc = ChunkLocator::new();
        loc.add_pack(pack, &saved.index);
        let err = loc.write_stream(&saved.index, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, VmError::BadCheckpoint { .. }), "{err}");
    }

    #[test]
    fn a_failing_sink_is_an_error_naming_the_pack() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl PackSink for Full {
            fn finish(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = save_stream(
            &noise(500_000, 5)[..],
            &ChunkLocator::new(),
            &mut Full,
            Path::new("/ckpt/memory.pack"),
            true,
        )
        .unwrap_err();
        assert!(err.is_disk_full(), "{err:?}");
        assert!(err.to_string().contains("/ckpt/memory.pack"), "{err}");
    }
}
