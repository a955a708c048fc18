//! A store on a local disk: the controller's, and each node's cache.
//!
//! ```text
//! <root>/objects/ab/cdef...       a chunk: one codec byte, then its bytes
//! <root>/manifests/ab/cdef...     a manifest's bytes
//! <root>/refs/<name>              a manifest id (hex), e.g. refs/images/tiny
//! <root>/senders/<who>/ab/cdef... an empty file: `who` sent that chunk
//! ```
//!
//! Every file is written to a temporary file beside it, fsynced and renamed:
//! a full disk or a crash leaves no half object, and the store as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chunk::{self, BadChunk, ChunkId};
use crate::manifest::{BadManifest, FileEntry, Manifest, ManifestId};

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk {id} is not in the store")]
    MissingChunk { id: ChunkId },
    #[error("chunk {id} in the store was damaged (it is removed, to be fetched again)")]
    BadChunk {
        id: ChunkId,
        #[source]
        source: BadChunk,
    },
    #[error("chunk {id} sent to the store is not what its name says")]
    RefusedChunk {
        id: ChunkId,
        #[source]
        source: BadChunk,
    },
    #[error("manifest {id} is not in the store")]
    MissingManifest { id: ManifestId },
    #[error("manifest {id}")]
    BadManifest {
        id: ManifestId,
        #[source]
        source: BadManifest,
    },
    #[error("the bytes sent as manifest {id} hash to {found}")]
    ManifestHash { id: ManifestId, found: ManifestId },
    #[error("`{0}` is not a ref name (letters, digits, `.`, `_`, `-`, in parts separated by `/`)")]
    BadRef(String),
    #[error("{path} changed since it was cut into chunks")]
    Changed { path: PathBuf },
    #[error("{path} came out {found} bytes long, but its manifest says {expected}")]
    ExportSize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot compress chunk {id} as its packed file keeps it")]
    Compress {
        id: ChunkId,
        #[source]
        source: std::io::Error,
    },
    #[error("ref `{name}` holds `{text}`, not a manifest id")]
    DamagedRef { name: String, text: String },
}

impl CasError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CasError {
        let path = path.to_path_buf();
        move |source| CasError::Io {
            action,
            path,
            source,
        }
    }

    /// Whether the disk is full (a retry after freeing space may work).
    pub fn is_full(&self) -> bool {
        matches!(self, CasError::Io { source, .. }
            if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull)
    }
}

pub type Result<T> = std::result::Result<T, CasError>;

/// A store rooted at a directory.
pub struct Store {
    root: PathBuf,
    /// Makes temporary names unique among this process's writers.
    tmp_seq: AtomicU64,
}

impl Store {
    /// Opens (creating, 0700) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in ["objects", "manifests", "refs", "senders", "tmp"] {
            let dir = root.join(sub);
            create_private_dir(&dir)?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            tmp_seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    fn manifest_path(&self, id: &ManifestId) -> PathBuf {
        let hex = id.hex();
        self.root.join("manifests").join(&hex[..2]).join(&hex[2..])
    }

    /// Makes every chunk written so far durable (one `syncfs` for all:
    /// chunks are written without an fsync each, and are safe to publish
    /// only after this).
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.root).map_err(CasError::io("open", &self.root))?;
        rustix::fs::syncfs(&dir).map_err(|e| CasError::io("sync", &self.root)(e.into()))
    }

    /// Writes `bytes` to `path` whole or not at all; `durable`: fsynced
    /// before the rename. Chunks are not (a chunk damaged by a crash fails
    /// its hash check and is fetched again); what names them is, after
    /// [`Store::sync`].
    fn write_whole(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{seq}", std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(CasError::io("create", &tmp))?;
            f.write_all(bytes)
                .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
                .map_err(CasError::io("write", &tmp))?;
            if let Some(dir) = path.parent() {
                create_private_dir(dir)?;
            }
            fs::rename(&tmp, path).map_err(CasError::io("rename into", path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Whether manifest `id` is here (a manifest here is complete).
    pub fn has_manifest(&self, id: &ManifestId) -> bool {
        self.manifest_path(id).exists()
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.object_path(id).exists()
    }

    /// Drops a chunk (a cache's copy that is no longer needed).
    pub fn remove_chunk(&self, id: &ChunkId) {
        let _ = fs::remove_file(self.object_path(id));
    }

    /// Stores the raw bytes of a chunk; returns its id.
    pub fn put_chunk(&self, raw: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(raw);
        if !self.has_chunk(&id) {
            self.write_whole(&self.object_path(&id), &chunk::encode(raw), false)?;
        }
        Ok(id)
    }

    /// Stores a chunk received in its stored form, after checking that it
    /// is the chunk `id` names. Returns whether it was new.
    pub fn put_stored(&self, id: &ChunkId, stored: &[u8]) -> Result<bool> {
        chunk::decode(stored, id).map_err(|source| CasError::RefusedChunk { id: *id, source })?;
        if self.has_chunk(id) {
            return Ok(false);
        }
        self.write_whole(&self.object_path(id), stored, false)?;
        Ok(true)
    }

    /// A chunk's stored form, verified; a damaged one is removed.
    pub fn get_stored(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let path = self.object_path(id);
        let stored = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CasError::MissingChunk { id: *id });
            }
            Err(e) => return Err(CasError::io("read", &path)(e)),
        };
        if let Err(source) = chunk::decode(&stored, id) {
            let _ = fs::remove_file(&path);
            return Err(CasError::BadChunk { id: *id, source });
        }
        Ok(stored)
    }

    /// A chunk's raw bytes, verified; a damaged one is removed.
    pub fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let stored = self.get_stored(id)?;
        chunk::decode(&stored, id).map_err(|source| CasError::BadChunk { id: *id, source })
    }

    /// Stores a manifest; returns its id.
    pub fn put_manifest(&self, m: &Manifest) -> Result<ManifestId> {
        let bytes = m.to_bytes();
        let id = ManifestId::of(&bytes);
        let path = self.manifest_path(&id);
        if !path.exists() {
            self.sync()?;
            self.write_whole(&path, &bytes, true)?;
        }
        Ok(id)
    }

    /// Stores a manifest received as bytes, after checking that they hash
    /// to `id` and parse.
    pub fn put_manifest_bytes(&self, id: &ManifestId, bytes: &[u8]) -> Result<Manifest> {
        let found = ManifestId::of(bytes);
        if found != *id {
            return Err(CasError::ManifestHash { id: *id, found });
        }
        let m =
            Manifest::parse(bytes).map_err(|source| CasError::BadManifest { id: *id, source })?;
        let path = self.manifest_path(id);
        if !path.exists() {
            self.sync()?;
            self.write_whole(&path, bytes, true)?;
        }
        Ok(m)
    }

    /// A manifest's bytes, verified.
    pub fn get_manifest_bytes(&self, id: &ManifestId) -> Result<Vec<u8>> {
        let path = self.manifest_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CasError::MissingManifest { id: *id });
            }
            Err(e) => return Err(CasError::io("read", &path)(e)),
        };
        let found = ManifestId::of(&bytes);
        if found != *id {
            let _ = fs::remove_file(&path);
            return Err(CasError::ManifestHash { id: *id, found });
        }
        Ok(bytes)
    }

    pub fn get_manifest(&self, id: &ManifestId) -> Result<Manifest> {
        let bytes = self.get_manifest_bytes(id)?;
        Manifest::parse(&bytes).map_err(|source| CasError::BadManifest { id: *id, source })
    }

    /// The chunks of `m` this store lacks.
    pub fn missing(&self, m: &Manifest) -> Vec<ChunkId> {
        m.chunk_ids()
            .into_iter()
            .filter(|id| !self.has_chunk(id))
            .collect()
    }

    /// Cuts the file at `path` into chunks, stores them, and describes it
    /// as `name` in a manifest.
    pub fn import_file(&self, path: &Path, name: &str, mode: u32) -> Result<FileEntry> {
        let file = File::open(path).map_err(CasError::io("open", path))?;
        self.import_reader(file, path, name, mode)
    }

    /// Cuts what `reader` gives (an open file, read to its end) into
    /// chunks, stores them, and describes it as `name` in a manifest.
    /// `path` names the source in errors.
    pub fn import_reader(
        &self,
        reader: impl Read,
        path: &Path,
        name: &str,
        mode: u32,
    ) -> Result<FileEntry> {
        let mut entry = FileEntry {
            path: name.to_string(),
            size: 0,
            mode,
            chunks: Vec::new(),
            packed: None,
        };
        let mut failed = None;
        let cut =
            chunk::cut_stream(
                std::io::BufReader::with_capacity(1 << 20, reader),
                |raw| match self.put_chunk(raw) {
                    Ok(id) => {
                        entry.chunks.push((id.hex(), raw.len() as u32));
                        entry.size += raw.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        failed = Some(e);
                        Err(std::io::Error::other("store"))
                    }
                },
            );
        if let Some(e) = failed {
            return Err(e);
        }
        cut.map_err(CasError::io("read", path))?;
        Ok(entry)
    }

    /// Writes the files of `m` below `dir` (which must exist), every chunk
    /// verified; each file goes through a temporary name and a rename.
    pub fn export(&self, m: &Manifest, dir: &Path) -> Result<()> {
        for f in &m.files {
            let dest = dir.join(&f.path);
            if let Some(parent) = dest.parent() {
                create_private_dir(parent)?;
            }
            let tmp = dest.with_file_name(format!(
                ".{}.part",
                dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")
            ));
            let _ = fs::remove_file(&tmp);
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.mode & 0o777)
                .open(&tmp)
                .map_err(CasError::io("create", &tmp))?;
            let mut written = 0u64;
            let codes = f.packed.as_deref().map(str::as_bytes);
            for (i, (id, _)) in f.chunk_ids().enumerate() {
                let bytes = match codes.and_then(|c| c.get(i)) {
                    None => self.get_chunk(&id)?,
                    Some(&code) => self.packed_body(&id, code == b'z')?,
                };
                out.write_all(&bytes).map_err(CasError::io("write", &tmp))?;
                written += bytes.len() as u64;
            }
            if written != f.size {
                let _ = fs::remove_file(&tmp);
                return Err(CasError::ExportSize {
                    path: dest,
                    expected: f.size,
                    found: written,
                });
            }
            out.sync_all().map_err(CasError::io("write", &tmp))?;
            fs::rename(&tmp, &dest).map_err(CasError::io("rename into", &dest))?;
        }
        Ok(())
    }

    /// A chunk as a packed file keeps it: its raw bytes, or compressed.
    /// Taken from the stored form when that is the same; compression is
    /// deterministic, so either way the packed file comes out as it was.
    fn packed_body(&self, id: &ChunkId, compressed: bool) -> Result<Vec<u8>> {
        let stored = self.get_stored(id)?;
        let stored_compressed = stored.first() == Some(&(chunk::Codec::Zstd as u8));
        if stored_compressed == compressed {
            return Ok(stored[1..].to_vec());
        }
        let raw =
            chunk::decode(&stored, id).map_err(|source| CasError::BadChunk { id: *id, source })?;
        if compressed {
            chunk::compress(&raw).map_err(|source| CasError::Compress { id: *id, source })
        } else {
            Ok(raw)
        }
    }

    fn sender_path(&self, who: &str, id: &ChunkId) -> Result<PathBuf> {
        let ok = !who.is_empty()
            && who != "."
            && who != ".."
            && who
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(CasError::BadRef(who.to_string()));
        }
        let hex = id.hex();
        Ok(self
            .root
            .join("senders")
            .join(who)
            .join(&hex[..2])
            .join(&hex[2..]))
    }

    /// Records that `who` (a user name) sent chunk `id`, so that the
    /// store can tell what a user may name in a manifest of theirs (what
    /// they sent, never what others did). Not made durable: a record lost
    /// in a crash only makes the user send the chunk again.
    pub fn mark_sender(&self, who: &str, id: &ChunkId) -> Result<()> {
        let path = self.sender_path(who, id)?;
        if path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(CasError::io("create", &path)(e)),
        }
    }

    /// Whether `who` sent chunk `id` (and the store still has it).
    pub fn sent_by(&self, who: &str, id: &ChunkId) -> bool {
        self.has_chunk(id) && self.sender_path(who, id).is_ok_and(|p| p.exists())
    }

    fn ref_path(&self, name: &str) -> Result<PathBuf> {
        let ok = !name.is_empty()
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
        if !ok {
            return Err(CasError::BadRef(name.to_string()));
        }
        Ok(self.root.join("refs").join(name))
    }

    /// Points ref `name` at manifest `id`.
    pub fn set_ref(&self, name: &str, id: &ManifestId) -> Result<()> {
        let path = self.ref_path(name)?;
        self.write_whole(&path, id.hex().as_bytes(), true)
    }

    /// The manifest ref `name` points at, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<ManifestId>> {
        let path = self.ref_path(name)?;
        let mut text = String::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)
                    .map_err(CasError::io("read", &path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CasError::io("open", &path)(e)),
        }
        ManifestId::parse(text.trim())
            .map(Some)
            .ok_or_else(|| CasError::DamagedRef {
                name: name.to_string(),
                text: text.trim().chars().take(80).collect(),
            })
    }

    /// Removes ref `name` (not the objects: they may be shared).
    pub fn remove_ref(&self, name: &str) -> Result<()> {
        let path = self.ref_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CasError::io("remove", &path)(e)),
        }
    }

    /// Removes every ref below `prefix` (a job's checkpoints).
    pub fn remove_refs(&self, prefix: &str) -> Result<()> {
        let dir = self.ref_path(prefix)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CasError::io("remove", &dir)(e)),
        }
    }

    /// The names of the refs below `prefix` (e.g. `images`).
    pub fn list_refs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.ref_path(prefix)?;
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str() {
                out.push(format!("{prefix}/{name}"));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes the chunks take on disk (for the store's growth).
    pub fn object_bytes(&self) -> u64 {
        let mut total = 0;
        let Ok(dirs) = fs::read_dir(self.root.join("objects")) else {
            return 0;
        };
        for d in dirs.flatten() {
            if let Ok(files) = fs::read_dir(d.path()) {
                total += files
                    .flatten()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>();
            }
        }
        total
    }
}

/// Makes `dir` and its parents, private to vgrid (0700).
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CasError::io("create directory", dir))
}

#[cfg(test)]
mod tests;
