//! The memory stream as content-defined chunks.
//!
//! QEMU's migration stream always carries all of RAM, so storing it whole
//! would make every checkpoint as large as the first. Instead the stream
//! is cut with FastCDC (boundaries depend on content, so an unchanged page
//! range yields the same chunks however the rest moved), every chunk is
//! named by its BLAKE3 hash, and a checkpoint stores only the chunks that
//! no ancestor stores. Chunks are zstd-compressed when that makes them
//! smaller and appended to one pack file per checkpoint (one sequential
//! write, no file per chunk). Reading and cutting, hashing, compressing
//! and writing run on four threads at once ([`save_stream`]).
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
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use fastcdc::v2020::FastCDC;
use serde::Serialize;

use crate::error::{CheckpointFileError, FileError};

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
    pub fn decode(bytes: &[u8], path: &Path) -> Result<MemoryIndex, CheckpointFileError> {
        let bad = |why: &str| CheckpointFileError::Damaged {
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
    pub fn check_complete(
        &self,
        index: &MemoryIndex,
        idx_path: &Path,
    ) -> Result<(), CheckpointFileError> {
        for (h, _) in &index.order {
            if !self.contains(h) {
                return Err(CheckpointFileError::Damaged {
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
    pub fn write_stream(
        &self,
        index: &MemoryIndex,
        out: &mut impl Write,
    ) -> Result<u64, CheckpointFileError> {
        let mut files: Vec<Option<File>> = (0..self.packs.len()).map(|_| None).collect();
        let mut stored = Vec::new();
        let mut written = 0u64;
        for (h, len) in &index.order {
            let Some(&(pack, c)) = self.map.get(h) else {
                return Err(CheckpointFileError::Damaged {
                    path: self.packs.first().cloned().unwrap_or_default(),
                    reason: format!("chunk {} is missing", hex(h)),
                });
            };
            let path = &self.packs[pack];
            if files[pack].is_none() {
                files[pack] = Some(File::open(path).map_err(|e| FileError::new("open", path, e))?);
            }
            let Some(f) = files[pack].as_ref() else {
                continue;
            };
            stored.resize(c.stored_len as usize, 0);
            f.read_exact_at(&mut stored, c.offset)
                .map_err(|e| FileError::new("read", path, e))?;
            let raw = if c.compressed {
                zstd::bulk::decompress(&stored, c.raw_len as usize).map_err(|e| {
                    CheckpointFileError::Damaged {
                        path: path.clone(),
                        reason: format!("chunk {} does not decompress: {e}", hex(h)),
                    }
                })?
            } else {
                std::mem::take(&mut stored)
            };
            if raw.len() != *len as usize || blake3::hash(&raw).as_bytes() != h {
                return Err(CheckpointFileError::Damaged {
                    path: path.clone(),
                    reason: format!("chunk {} does not match its hash", hex(h)),
                });
            }
            out.write_all(&raw)
                .map_err(|e| FileError::new("write", "the restore stream", e))?;
            written += raw.len() as u64;
            if !c.compressed {
                stored = raw;
            }
        }
        out.flush()
            .map_err(|e| FileError::new("write", "the restore stream", e))?;
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
    /// Where the time went.
    pub stages: StreamStages,
}

/// Busy and waiting times of the stages that save a stream, in
/// milliseconds. The stages run on their own threads at once, so the
/// figures overlap; the largest busy time bounds the throughput.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamStages {
    /// Reader: blocked reading the stream (QEMU not producing fast enough).
    pub read_wait_ms: u64,
    /// Reader: finding chunk boundaries (FastCDC).
    pub cut_ms: u64,
    /// Hasher: BLAKE3 of every chunk, dedup.
    pub hash_ms: u64,
    /// Packer: zstd samples and compression of the new chunks.
    pub compress_ms: u64,
    /// Writer: appending to the pack (and hashing what it writes).
    pub write_ms: u64,
    /// Writer: the final fsync of the pack.
    pub sync_ms: u64,
    /// From the first read to the synced pack.
    pub total_ms: u64,
}

/// Where chunk bytes go; a trait so tests can make writes fail like a full
/// disk does.
pub trait PackSink: Write {
    fn finish(&mut self) -> std::io::Result<()>;
}

/// Bytes gathered before one direct write to the pack.
const STAGE: usize = 8 << 20;
/// Staging buffers per pack: one filling while the others are written.
const STAGES: usize = 3;
/// Alignment of direct writes (buffer, length and offset): the largest
/// logical block size in use.
const ALIGN: usize = 4096;
/// Written bytes after which a buffered pack asks the kernel to start
/// writing them back, so the final fsync does not wait for all at once.
const WRITEBACK_STEP: u64 = 32 << 20;

/// A pack file on disk; it hashes what it writes, so the manifest's
/// checksum needs no second read.
///
/// The pack is written with `O_DIRECT` when the file system allows it:
/// bytes are gathered in aligned 8 MiB buffers that a write-behind thread
/// hands to the device while the next one fills, without a copy into the
/// page cache (that copy costs as much CPU as cutting the stream and would
/// compete with it for the same cores). Where `O_DIRECT` is refused (tmpfs,
/// some network file systems) it writes through the page cache and starts
/// writeback as it goes. The last partial buffer is always written
/// through the page cache.
pub struct FilePack {
    file: File,
    hasher: blake3::Hasher,
    written: u64,
    /// Present while the file is open with `O_DIRECT`.
    direct: Option<WriteBehind>,
    /// Buffered mode: everything before this offset went to writeback.
    flushed: u64,
    /// Bytes that went to the device directly.
    direct_bytes: u64,
}

/// An aligned `STAGE`-byte window inside an over-allocated vector.
struct Staging {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Staging {
    fn new() -> Staging {
        let mem = vec![0u8; STAGE + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Staging { mem, start, len: 0 }
    }
    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// The filling buffer and the thread writing full ones.
struct WriteBehind {
    fill: Staging,
    /// File offset of `fill`'s first byte.
    fill_at: u64,
    allocated: usize,
    in_flight: usize,
    jobs: Option<SyncSender<(Staging, u64)>>,
    /// Written buffers come back (with whether they went directly), or the
    /// error that ended the thread.
    done: Receiver<std::io::Result<(Staging, bool)>>,
}

impl WriteBehind {
    fn start(file: File) -> WriteBehind {
        let (jobs, todo) = mpsc::sync_channel::<(Staging, u64)>(STAGES);
        let (finished, done) = mpsc::sync_channel(STAGES);
        std::thread::spawn(move || {
            let mut direct = true;
            while let Ok((stage, at)) = todo.recv() {
                let result = write_block(&file, &stage, at, direct).map(|went_direct| {
                    direct = went_direct;
                    (stage, went_direct)
                });
                let failed = result.is_err();
                if finished.send(result).is_err() || failed {
                    return;
                }
            }
        });
        WriteBehind {
            fill: Staging::new(),
            fill_at: 0,
            allocated: 1,
            in_flight: 0,
            jobs: Some(jobs),
            done,
        }
    }

    /// Waits for one written buffer; returns it and the bytes that went
    /// directly.
    fn collect(&mut self) -> std::io::Result<(Staging, u64)> {
        let (stage, direct) = self.done.recv().map_err(|_| {
            std::io::Error::other("the pack's write-behind thread ended unexpectedly")
        })??;
        self.in_flight -= 1;
        let direct = if direct { stage.len as u64 } else { 0 };
        Ok((stage, direct))
    }

    /// Sends the full buffer to be written and takes an empty one; returns
    /// the bytes known to have gone directly meanwhile.
    fn hand_off(&mut self) -> std::io::Result<u64> {
        let mut direct = 0;
        let mut next = if self.allocated < STAGES {
            self.allocated += 1;
            Staging::new()
        } else {
            let (stage, d) = self.collect()?;
            direct += d;
            stage
        };
        next.len = 0;
        let full = std::mem::replace(&mut self.fill, next);
        let at = self.fill_at;
        self.fill_at += full.len as u64;
        let sent = match &self.jobs {
            Some(jobs) => jobs.send((full, at)).is_ok(),
            None => false,
        };
        if !sent {
            // The thread ended on an error; it is waiting in `done`.
            return Err(match self.done.recv() {
                Ok(Err(e)) => e,
                _ => std::io::Error::other("the pack's write-behind thread ended unexpectedly"),
            });
        }
        self.in_flight += 1;
        Ok(direct)
    }

    /// Waits for every buffer in flight; returns the bytes that went
    /// directly and what is left to write (the partial last buffer).
    fn drain(&mut self) -> std::io::Result<(u64, &Staging, u64)> {
        self.jobs = None;
        let mut direct = 0;
        while self.in_flight > 0 {
            direct += self.collect()?.1;
        }
        Ok((direct, &self.fill, self.fill_at))
    }
}

/// Writes one full staging buffer at `at`; `Ok(false)` when it went
/// through the page cache because the file system refused direct IO after
/// all (now or for an earlier buffer: `direct` is false then).
fn write_block(file: &File, stage: &Staging, at: u64, direct: bool) -> std::io::Result<bool> {
    match file.write_all_at(stage.bytes(), at) {
        Ok(()) => Ok(direct),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            file.write_all_at(stage.bytes(), at)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | rustix::fs::OFlags::DIRECT
    } else {
        flags - rustix::fs::OFlags::DIRECT
    };
    Ok(rustix::fs::fcntl_setfl(file, flags)?)
}

impl FilePack {
    pub fn create(path: &Path) -> Result<FilePack, CheckpointFileError> {
        Self::create_with(path, true)
    }

    /// `try_direct: false` always writes through the page cache (what
    /// file systems without direct IO get; tests use it).
    fn create_with(path: &Path, try_direct: bool) -> Result<FilePack, CheckpointFileError> {
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(flags)
                .open(path)
        };
        let first = if try_direct { libc::O_DIRECT } else { 0 };
        let (file, direct) = match open(first) {
            Ok(f) if !try_direct => (f, None),
            Ok(f) => {
                let writer = f.try_clone().map_err(|e| FileError::new("open", path, e))?;
                (f, Some(WriteBehind::start(writer)))
            }
            // The file system does not do direct IO.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                open(0).map_err(|e| FileError::new("create", path, e))?,
                None,
            ),
            Err(e) => return Err(FileError::new("create", path, e).into()),
        };
        Ok(FilePack {
            file,
            hasher: blake3::Hasher::new(),
            written: 0,
            direct,
            flushed: 0,
            direct_bytes: 0,
        })
    }

    /// Size and BLAKE3 of everything written.
    pub fn digest(&self) -> (u64, String) {
        (self.written, self.hasher.finalize().to_hex().to_string())
    }

    /// Bytes written with direct IO (all but the last partial buffer, when
    /// the file system allows it).
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Buffered mode: starts writeback of what was written since the last
    /// call, without waiting for it.
    fn start_writeback(&mut self) {
        let len = self.written - self.flushed;
        if len < WRITEBACK_STEP {
            return;
        }
        // SAFETY: plain syscall on a descriptor this struct owns; no memory
        // is passed. A failure only means the final fsync does all the work.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.flushed as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.flushed = self.written;
    }
}

impl Write for FilePack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.direct.as_mut() {
            Some(d) => {
                let n = buf.len().min(STAGE - d.fill.len);
                let at = d.fill.start + d.fill.len;
                d.fill.mem[at..at + n].copy_from_slice(&buf[..n]);
                d.fill.len += n;
                if d.fill.len == STAGE {
                    self.direct_bytes += d.hand_off()?;
                }
                n
            }
            None => self.file.write(buf)?,
        };
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        if self.direct.is_none() {
            self.start_writeback();
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PackSink for FilePack {
    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(mut d) = self.direct.take() {
            let (direct, last, at) = d.drain()?;
            self.direct_bytes += direct;
            // The last partial buffer goes through the page cache: a
            // direct write must be whole blocks.
            set_direct(&self.file, false)?;
            self.file.write_all_at(last.bytes(), at)?;
        }
        self.file.sync_all()
    }
}

/// Bytes of stream read at a time; chunks are cut inside a segment and the
/// uncut tail moves to the next one. Small enough that a segment is still
/// in the CPU's cache when the next stage takes it (measured: 2 MiB
/// segments checkpoint about 8% faster than 8 MiB ones).
const SEGMENT: usize = 2 << 20;
/// Segments in flight between the stages: the pipeline's memory is
/// `SEGMENTS * SEGMENT` plus compressed copies, allocated once.
const SEGMENTS: usize = 6;

/// One segment of the stream on its way through the stages. The same
/// `SEGMENTS` values circle from the writer back to the reader, so no
/// buffer is allocated per segment or per chunk.
struct Batch {
    /// Stream bytes; the first `cut_len` of them are cut into `chunks`.
    buf: Vec<u8>,
    /// `(start, len)` in `buf`, in stream order.
    chunks: Vec<(usize, usize)>,
    /// The chunks to store (no ancestor and no earlier part of the stream
    /// has them): index into `chunks` and hash.
    fresh: Vec<(usize, Hash)>,
    /// Compressed chunk bytes, back to back.
    packed: Vec<u8>,
    /// What to append to the pack, in order: adjacent new chunks merged
    /// into one write.
    writes: Vec<Piece>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Raw(usize, usize),
    Packed(usize, usize),
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: vec![0; SEGMENT],
            chunks: Vec::new(),
            fresh: Vec::new(),
            packed: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Queues `len` bytes at `start` of `buf` (raw) or of `packed`, merging
    /// with the previous piece when they are adjacent.
    fn push(&mut self, piece: Piece) {
        match (self.writes.last_mut(), piece) {
            (Some(Piece::Raw(s, l)), Piece::Raw(start, len)) if *s + *l == start => *l += len,
            (Some(Piece::Packed(s, l)), Piece::Packed(start, len)) if *s + *l == start => *l += len,
            _ => self.writes.push(piece),
        }
    }
}

/// Reads the stream from `src` to its end, chunking, deduplicating against
/// `known` (the ancestors' chunks) and this stream itself, compressing, and
/// appending new chunks to `pack`. `pack_name` names the pack in errors.
///
/// Four stages run at once, so that a checkpoint uses more than one core:
/// a reader thread reads segments and cuts them into chunks (FastCDC), a
/// hasher thread names every chunk (BLAKE3) and drops known ones, a packer
/// thread compresses, and the calling thread writes the pack. Bounded
/// channels carry a fixed set of segment buffers around the loop.
pub fn save_stream(
    src: impl Read + Send,
    known: &ChunkLocator,
    pack: &mut dyn PackSink,
    pack_name: &Path,
    compress: bool,
) -> Result<SavedStream, CheckpointFileError> {
    let started = Instant::now();
    let (free_tx, free_rx) = mpsc::sync_channel::<Batch>(SEGMENTS);
    let (cut_tx, cut_rx) = mpsc::sync_channel::<Batch>(SEGMENTS);
    let (hashed_tx, hashed_rx) = mpsc::sync_channel::<Batch>(SEGMENTS);
    let (packed_tx, packed_rx) = mpsc::sync_channel::<Batch>(SEGMENTS);
    for _ in 0..SEGMENTS {
        let _ = free_tx.send(Batch::new());
    }
    let compressor = if compress {
        Some(zstd::bulk::Compressor::new(1).map_err(|e| FileError::new("compress", pack_name, e))?)
    } else {
        None
    };
    std::thread::scope(|s| {
        let reader = s.spawn(move || read_and_cut(src, free_rx, cut_tx));
        let hasher = s.spawn(move || hash_chunks(cut_rx, hashed_tx, known));
        let packer = s.spawn(move || pack_chunks(hashed_rx, packed_tx, compressor));
        let written = write_pack(packed_rx, free_tx, pack, pack_name);
        let panicked = |what: &str| {
            FileError::new(
                "save",
                pack_name,
                std::io::Error::other(format!("the {what} thread panicked")),
            )
        };
        let read = reader.join();
        let hashed = hasher.join();
        let packed = packer.join();
        // The writer's error comes first: the other stages stop because of
        // it (a full disk), not the other way round.
        let (write_ms, sync_ms) = written?;
        let (read_wait_ms, cut_ms) = read
            .map_err(|_| panicked("stream reader"))?
            .map_err(|e| FileError::new("read", "the migration stream", e))?;
        let mut out = hashed.map_err(|_| panicked("chunk hasher"))?;
        let packed = packed.map_err(|_| panicked("chunk packer"))?;
        out.index.stored = packed.index.stored;
        out.pack_bytes = packed.pack_bytes;
        out.new_chunks = packed.new_chunks;
        out.stages = StreamStages {
            read_wait_ms,
            cut_ms,
            write_ms,
            sync_ms,
            hash_ms: out.stages.hash_ms,
            compress_ms: packed.stages.compress_ms,
            total_ms: ms(started.elapsed()),
        };
        Ok(out)
    })
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The reader stage: fills segments from the stream and cuts each into
/// chunks exactly where a whole-stream FastCDC would. A chunk is cut only
/// when a full `MAX_CHUNK` window (or the end of the stream) is in view, so
/// segment borders never move a boundary; the uncut tail is carried over.
/// Returns the milliseconds spent waiting for input and cutting.
fn read_and_cut(
    mut src: impl Read,
    free: Receiver<Batch>,
    cut: SyncSender<Batch>,
) -> std::io::Result<(u64, u64)> {
    let max = MAX_CHUNK as usize;
    let mut carry: Vec<u8> = Vec::with_capacity(max);
    let (mut wait, mut cutting) = (Duration::ZERO, Duration::ZERO);
    let mut eof = false;
    while !eof {
        // No free segment: the writer stopped (its error is reported).
        let Ok(mut b) = free.recv() else {
            break;
        };
        b.chunks.clear();
        b.buf[..carry.len()].copy_from_slice(&carry);
        let mut filled = carry.len();
        carry.clear();
        let t = Instant::now();
        while filled < b.buf.len() {
            match src.read(&mut b.buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        wait += t.elapsed();
        let t = Instant::now();
        let cdc = FastCDC::new(&b.buf[..filled], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
        let mut pos = 0;
        while pos < filled && (eof || filled - pos >= max) {
            let (_, end) = cdc.cut(pos, filled - pos);
            if end <= pos {
                break;
            }
            b.chunks.push((pos, end - pos));
            pos = end;
        }
        carry.extend_from_slice(&b.buf[pos..filled]);
        cutting += t.elapsed();
        if cut.send(b).is_err() {
            break;
        }
    }
    Ok((ms(wait), ms(cutting)))
}

/// The hasher stage: names chunks, records the stream's order and picks
/// the chunks no ancestor and no earlier part of the stream has.
fn hash_chunks(
    cut: Receiver<Batch>,
    hashed: SyncSender<Batch>,
    known: &ChunkLocator,
) -> SavedStream {
    let mut out = SavedStream::default();
    let mut here: HashSet<Hash> = HashSet::new();
    let mut stream_hash = blake3::Hasher::new();
    let mut busy = Duration::ZERO;
    while let Ok(mut b) = cut.recv() {
        let t = Instant::now();
        b.fresh.clear();
        for (i, &(start, len)) in b.chunks.iter().enumerate() {
            let h: Hash = *blake3::hash(&b.buf[start..start + len]).as_bytes();
            stream_hash.update(&h);
            out.index.order.push((h, len as u32));
            out.index.stream_len += len as u64;
            if !known.contains(&h) && here.insert(h) {
                b.fresh.push((i, h));
            }
        }
        busy += t.elapsed();
        if hashed.send(b).is_err() {
            break;
        }
    }
    out.stream_blake3 = stream_hash.finalize().to_hex().to_string();
    out.stages.hash_ms = ms(busy);
    out
}

/// The packer stage: decides how each new chunk is stored (zstd when that
/// makes it smaller) and where in the pack; the writer appends in the same
/// order. Compression has its own thread because on compressible memory it
/// costs more than hashing.
fn pack_chunks(
    hashed: Receiver<Batch>,
    packed: SyncSender<Batch>,
    mut compressor: Option<zstd::bulk::Compressor<'static>>,
) -> SavedStream {
    let mut out = SavedStream::default();
    let mut busy = Duration::ZERO;
    // Compression output goes to one reused buffer, large enough for any
    // chunk (zstd's bound), then is copied into the batch.
    let mut scratch: Vec<u8> =
        Vec::with_capacity(zstd::zstd_safe::compress_bound(MAX_CHUNK as usize));
    while let Ok(mut b) = hashed.recv() {
        let t = Instant::now();
        b.packed.clear();
        b.writes.clear();
        for k in 0..b.fresh.len() {
            let (i, hash) = b.fresh[k];
            let (start, len) = b.chunks[i];
            let data = &b.buf[start..start + len];
            let compressed = match compressor.as_mut() {
                Some(z) => {
                    worth_compressing(z, data, &mut scratch)
                        && z.compress_to_buffer(data, &mut scratch)
                            .is_ok_and(|n| n < len)
                }
                None => false,
            };
            let stored_len = if compressed {
                let at = b.packed.len();
                b.packed.extend_from_slice(&scratch);
                b.push(Piece::Packed(at, scratch.len()));
                scratch.len()
            } else {
                b.push(Piece::Raw(start, len));
                len
            };
            out.index.stored.push(StoredChunk {
                hash,
                offset: out.pack_bytes,
                stored_len: stored_len as u32,
                raw_len: len as u32,
                compressed,
            });
            out.pack_bytes += stored_len as u64;
            out.new_chunks += 1;
        }
        busy += t.elapsed();
        if packed.send(b).is_err() {
            break;
        }
    }
    out.stages.compress_ms = ms(busy);
    out
}

/// The writer stage (the calling thread): appends each batch's pieces to
/// the pack, hands the segment back to the reader, and syncs the pack at
/// the end. Returns the milliseconds spent writing and syncing.
fn write_pack(
    hashed: Receiver<Batch>,
    free: SyncSender<Batch>,
    pack: &mut dyn PackSink,
    pack_name: &Path,
) -> Result<(u64, u64), CheckpointFileError> {
    let mut busy = Duration::ZERO;
    // Returning on error drops `hashed` and `free`: the hasher's next send
    // and the reader's next wait for a segment fail, and both stop.
    while let Ok(b) = hashed.recv() {
        let t = Instant::now();
        for piece in &b.writes {
            let bytes = match *piece {
                Piece::Raw(start, len) => &b.buf[start..start + len],
                Piece::Packed(start, len) => &b.packed[start..start + len],
            };
            pack.write_all(bytes)
                .map_err(|e| FileError::new("write", pack_name, e))?;
        }
        busy += t.elapsed();
        // The reader may already have ended; the segment is then dropped.
        let _ = free.send(b);
    }
    let t = Instant::now();
    pack.finish()
        .map_err(|e| FileError::new("write", pack_name, e))?;
    Ok((ms(busy), ms(t.elapsed())))
}

/// Whether zstd is likely to shrink a chunk: a 4 KiB sample from its middle
/// is compressed first (into `scratch`). Random data (encrypted or
/// compressed files, a guest's random pages) fails the sample and is stored
/// raw, saving the full compression attempt, which costs more than
/// chunking and hashing together.
fn worth_compressing(
    z: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    scratch: &mut Vec<u8>,
) -> bool {
    const SAMPLE: usize = 4096;
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
    match z.compress_to_buffer(sample, scratch) {
        Ok(n) => n < SAMPLE * 97 / 100,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_chunks_skip_compression_and_text_does_not() {
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let mut scratch = Vec::with_capacity(zstd::zstd_safe::compress_bound(MAX_CHUNK as usize));
        let scratch = &mut scratch;
        assert!(!worth_compressing(&mut z, &noise(65536, 9), scratch));
        let text: Vec<u8> = b"the quick brown fox "
            .iter()
            .cycle()
            .take(65536)
            .copied()
            .collect();
        assert!(worth_compressing(&mut z, &text, scratch));
        assert!(worth_compressing(&mut z, &[0u8; 1000], scratch));
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
        assert!(matches!(err, CheckpointFileError::Damaged { .. }), "{err}");
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

    /// Hands out at most `step` bytes per read, like a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn segments_cut_exactly_where_one_pass_over_the_stream_does() {
        // 21 MiB plus an odd tail: several segments, chunks across their
        // borders, short reads, zero runs (chunks at the maximum size).
        let mut stream = noise((21 << 20) + 12_345, 17);
        for z in stream.chunks_mut(3 << 20).step_by(3) {
            z.fill(0);
        }
        let expected: Vec<u32> =
            fastcdc::v2020::StreamCDC::new(&stream[..], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                .map(|c| c.unwrap().length as u32)
                .collect();
        let mut sink = MemPack(Vec::new());
        let src = Trickle {
            data: &stream,
            step: 1_000_003,
        };
        let saved =
            save_stream(src, &ChunkLocator::new(), &mut sink, Path::new("p"), false).unwrap();
        let got: Vec<u32> = saved.index.order.iter().map(|(_, l)| *l).collect();
        assert_eq!(got, expected);
        let mut pos = 0usize;
        for (h, len) in &saved.index.order {
            let len = *len as usize;
            assert_eq!(blake3::hash(&stream[pos..pos + len]).as_bytes(), h);
            pos += len;
        }
        assert_eq!(pos, stream.len());
        // Zero chunks repeat: each is stored once, the pack holds exactly
        // the new chunks, in offset order.
        assert!(saved.new_chunks < saved.index.order.len() as u64);
        let mut offset = 0;
        for c in &saved.index.stored {
            assert_eq!(c.offset, offset);
            offset += u64::from(c.stored_len);
        }
        assert_eq!(offset, sink.0.len() as u64);
        assert_eq!(saved.pack_bytes, offset);
    }

    #[test]
    fn a_disk_filling_up_midway_stops_every_stage() {
        /// Accepts `room` bytes, then fails like a full disk.
        struct Fills {
            room: usize,
        }
        impl Write for Fills {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.room == 0 {
                    return Err(std::io::Error::from_raw_os_error(28));
                }
                let n = b.len().min(self.room);
                self.room -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl PackSink for Fills {
            fn finish(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // Much longer than the segments in flight: the reader must notice
        // that the writer is gone instead of waiting forever.
        let stream = noise(SEGMENT * (SEGMENTS + 4), 23);
        let err = save_stream(
            &stream[..],
            &ChunkLocator::new(),
            &mut Fills { room: 5 << 20 },
            Path::new("/ckpt/memory.pack"),
            true,
        )
        .unwrap_err();
        assert!(err.is_disk_full(), "{err:?}");
        assert!(err.to_string().contains("/ckpt/memory.pack"), "{err}");
    }

    #[test]
    fn a_broken_stream_is_an_error_naming_it() {
        struct Breaks(usize);
        impl Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
                }
                let n = buf.len().min(self.0).min(100_000);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let err = save_stream(
            Breaks(3 << 20),
            &ChunkLocator::new(),
            &mut MemPack(Vec::new()),
            Path::new("memory.pack"),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("migration stream"), "{err}");
    }

    #[test]
    fn a_file_pack_holds_exactly_what_was_written() {
        // Odd piece sizes across several staging buffers and a tail that is
        // not a whole block; on tmpfs too (no direct IO there on older
        // kernels), when the machine has one.
        let data = noise((STAGES + 2) * STAGE + 3 * ALIGN + 1234, 29);
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        for (dir, direct) in dirs.iter().flat_map(|d| [(d, true), (d, false)]) {
            let path = dir.path().join(format!("memory-{direct}.pack"));
            let mut pack = FilePack::create_with(&path, direct).unwrap();
            for piece in data.chunks(1_000_003) {
                pack.write_all(piece).unwrap();
            }
            pack.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{}", path.display());
            assert_eq!(pack.digest(), crate::fsutil::hash_file(&path).unwrap());
            assert_eq!(pack.digest().0, data.len() as u64);
            if !direct {
                assert_eq!(pack.direct_bytes(), 0);
            }
        }
    }
}
