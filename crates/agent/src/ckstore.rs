//! Checkpoints to and from the controller's store.
//!
//! A node keeps its checkpoints below its own `checkpoints/<job>/`, one
//! directory per sequence number (`<seq>/v0`, `<seq>/v1`, … for the job's
//! VMs). Each checkpoint names its parent by relative path, so a chain
//! moved as a whole, in the same layout, stays valid.
//!
//! - [`describe`] lists the files of a checkpoint and of every ancestor it
//!   needs as one store manifest (kind `checkpoint`), with paths relative
//!   to the job's directory. A memory pack goes in as it is: its chunks
//!   are the store's chunks (same cuts, names and codec), so nothing is cut
//!   twice; other files are cut once and remembered by the checkpoint's own
//!   manifest hash (`.cas/`).
//! - [`fetch`] writes the files a node lacks of such a manifest below the
//!   job's directory and says where the checkpoint is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use vgrid_cas::{CasError, FileEntry, Located, Manifest, ManifestId, ManifestKind, PackedChunk};
use vgrid_client::Client;
use vgrid_client::transfer::{self, Moved, TransferError};
use vgrid_vm::checkpoint::chunks::MemoryIndex;
use vgrid_vm::checkpoint::manifest::{self, MANIFEST, MEMORY_IDX, MEMORY_PACK};
use vgrid_vm::error::CheckpointFileError;

/// Meta keys of a checkpoint manifest.
const META_JOB: &str = "job";
const META_SEQ: &str = "seq";
/// Where the checkpoint is, relative to the files' base: `<seq>`, or a
/// longer path when its chain reaches outside the job's directory (a kept
/// VM's saves).
const META_ROOT: &str = "root";

/// Where a chain that reaches outside its job's directory is put on the
/// node that fetches it (below the job's directory).
const IMPORTED: &str = "imported";

/// The memo of cut files, by checkpoint manifest hash.
const MEMO_DIR: &str = ".cas";

/// Why a checkpoint cannot go to the store or come from it.
#[derive(Debug, thiserror::Error)]
pub enum CkStoreError {
    #[error("checkpoint {0} has no VM directories (v0, v1, …)")]
    NoVms(PathBuf),
    #[error("the checkpoint chain")]
    Chain(#[from] CheckpointFileError),
    #[error("the files of the checkpoint")]
    Cas(#[from] CasError),
    #[error("moving the checkpoint")]
    Transfer(#[from] TransferError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {id} is not a checkpoint of job {job}: {why}")]
    NotCheckpoint {
        id: ManifestId,
        job: u64,
        why: String,
    },
    #[error("a task failed")]
    Task,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CkStoreError {
    let path = path.to_path_buf();
    move |source| CkStoreError::Io {
        action,
        path,
        source,
    }
}

/// A checkpoint described for the store, and where its chunks are read.
pub struct Described {
    pub manifest: Manifest,
    pub source: Located,
}

/// Describes checkpoint `seq` below `job_dir` with its whole chain.
pub fn describe(job_dir: &Path, job: u64, seq: u64) -> Result<Described, CkStoreError> {
    let job_dir = job_dir.canonicalize().map_err(io("open", job_dir))?;
    let seq_dir = job_dir.join(seq.to_string());
    let mut vm_dirs = Vec::new();
    let mut top_files = Vec::new();
    for e in std::fs::read_dir(&seq_dir).map_err(io("read", &seq_dir))? {
        let e = e.map_err(io("read", &seq_dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let kind = e.file_type().map_err(io("read", &e.path()))?;
        if kind.is_dir() && is_vm_dir(&name) {
            vm_dirs.push(e.path());
        } else if kind.is_file() {
            top_files.push(name);
        }
    }
    if vm_dirs.is_empty() {
        return Err(CkStoreError::NoVms(seq_dir));
    }
    vm_dirs.sort();
    top_files.sort();
    // Every checkpoint directory of every VM's chain, once.
    let mut chain: BTreeMap<PathBuf, manifest::Loaded> = BTreeMap::new();
    for dir in &vm_dirs {
        for mut l in manifest::load_chain(dir)? {
            l.dir = l.dir.canonicalize().map_err(io("open", &l.dir))?;
            chain.entry(l.dir.clone()).or_insert(l);
        }
    }
    let base = chain
        .keys()
        .fold(job_dir.clone(), |acc, d| common_ancestor(&acc, d));
    let rel = |p: &Path| -> String {
        p.strip_prefix(&base)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let root = rel(&seq_dir);
    let memo_dir = job_dir.join(MEMO_DIR);
    let mut source = Located::new();
    let mut m = Manifest::new(ManifestKind::Checkpoint);
    for (dir, loaded) in &chain {
        let prefix = rel(dir);
        let memo_path = memo_dir.join(format!("{}.json", loaded.manifest_blake3));
        let memo: Option<Vec<FileEntry>> = std::fs::read(&memo_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut whole = Vec::new();
        let mut names: Vec<&str> = loaded
            .manifest
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        names.push(MANIFEST);
        for name in names {
            let path = dir.join(name);
            let cas_name = format!("{prefix}/{name}");
            if name == MEMORY_PACK
                && let Some(entry) = packed_entry(&mut source, dir, &cas_name)?
            {
                m.files.push(entry);
                continue;
            }
            let remembered = memo
                .as_ref()
                .and_then(|v| v.iter().find(|f| f.path == name));
            let entry = match remembered {
                Some(f) => {
                    source.add_described(&path, f);
                    FileEntry {
                        path: cas_name,
                        ..f.clone()
                    }
                }
                None => source.add_file(&path, &cas_name, 0o600)?,
            };
            whole.push(FileEntry {
                path: name.to_string(),
                ..entry.clone()
            });
            m.files.push(entry);
        }
        if memo.is_none() {
            // Only a speed-up: a memo that cannot be written is cut again.
            let _ = vgrid_vm::fsutil::create_private_dir_all(&memo_dir);
            if let Ok(json) = serde_json::to_vec(&whole) {
                let _ = vgrid_vm::fsutil::write_atomic(&memo_path, &json, 0o600);
            }
        }
    }
    for name in top_files {
        let path = seq_dir.join(&name);
        m.files
            .push(source.add_file(&path, &format!("{root}/{name}"), 0o600)?);
    }
    m.meta.insert(META_JOB.into(), job.to_string());
    m.meta.insert(META_SEQ.into(), seq.to_string());
    m.meta.insert(META_ROOT.into(), root);
    Ok(Described {
        manifest: m,
        source,
    })
}

fn is_vm_dir(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

/// The memory pack of checkpoint `dir` as the store's chunks, from its
/// index; `None` when the index does not describe the pack exactly (it is
/// then cut as a whole file).
fn packed_entry(
    source: &mut Located,
    dir: &Path,
    name: &str,
) -> Result<Option<FileEntry>, CkStoreError> {
    let idx_path = dir.join(MEMORY_IDX);
    let bytes = std::fs::read(&idx_path).map_err(io("read", &idx_path))?;
    let index = MemoryIndex::decode(&bytes, &idx_path)?;
    let mut table: Vec<PackedChunk> = index
        .stored
        .iter()
        .map(|c| PackedChunk {
            id: vgrid_cas::ChunkId(c.hash),
            raw_len: c.raw_len,
            offset: c.offset,
            stored_len: c.stored_len,
            compressed: c.compressed,
        })
        .collect();
    table.sort_by_key(|c| c.offset);
    Ok(source.add_packed(&dir.join(MEMORY_PACK), name, 0o600, &table)?)
}

/// Sends checkpoint `seq` with its chain: the chunks the controller lacks,
/// then the manifest. `None` when the controller has no store.
pub async fn upload(
    client: &Client,
    job_dir: &Path,
    job: u64,
    seq: u64,
) -> Result<Option<(ManifestId, Moved)>, CkStoreError> {
    let dir = job_dir.to_path_buf();
    let described = tokio::task::spawn_blocking(move || describe(&dir, job, seq))
        .await
        .map_err(|_| CkStoreError::Task)??;
    let source = Arc::new(described.source);
    match transfer::upload(client, &source, &described.manifest).await {
        Ok(done) => Ok(Some(done)),
        Err(TransferError::Client(e)) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a fetch found and did.
#[derive(Debug)]
pub struct Fetched {
    /// The checkpoint's directory on this node.
    pub dir: PathBuf,
    /// Bytes of the files this node lacked.
    pub missing_bytes: u64,
    pub moved: Moved,
}

/// Makes checkpoint manifest `id` of `job` whole below `job_dir`: the
/// files this node lacks are fetched (the chunks its cache lacks) and
/// written; files it has are kept (a restore verifies every one of them).
/// `announce` hears the size of what is missing before it travels.
pub async fn fetch(
    client: &Client,
    cache: &Arc<vgrid_cas::Store>,
    job_dir: &Path,
    job: u64,
    id: &ManifestId,
    announce: impl AsyncFnOnce(u64),
) -> Result<Fetched, CkStoreError> {
    let bytes = client
        .get_manifest(id)
        .await
        .map_err(TransferError::Client)?;
    let m = Manifest::parse(&bytes).map_err(|source| TransferError::BadManifest {
        id: *id,
        source: CasError::BadManifest { id: *id, source },
    })?;
    let refuse = |why: &str| CkStoreError::NotCheckpoint {
        id: *id,
        job,
        why: why.to_string(),
    };
    if m.kind != ManifestKind::Checkpoint {
        return Err(refuse("it is not a checkpoint"));
    }
    if m.meta.get(META_JOB).map(String::as_str) != Some(job.to_string().as_str()) {
        return Err(refuse("it is another job's"));
    }
    let root = m
        .meta
        .get(META_ROOT)
        .filter(|r| is_plain_relative(r))
        .ok_or_else(|| refuse("it does not say where the checkpoint is"))?;
    let base = if Path::new(root).components().count() == 1 {
        job_dir.to_path_buf()
    } else {
        job_dir.join(IMPORTED)
    };
    vgrid_vm::fsutil::create_private_dir_all(&base).map_err(|e| CkStoreError::Chain(e.into()))?;
    let mut lacking = Manifest::new(ManifestKind::Checkpoint);
    lacking.files = m
        .files
        .iter()
        .filter(|f| {
            std::fs::symlink_metadata(base.join(&f.path))
                .map_or(true, |md| !md.is_file() || md.len() != f.size)
        })
        .cloned()
        .collect();
    let missing_bytes = lacking.size();
    if !lacking.files.is_empty() {
        announce(missing_bytes).await;
    }
    let moved = transfer::fetch_chunks(client, cache, &lacking).await?;
    let (cache2, base2) = (cache.clone(), base.clone());
    tokio::task::spawn_blocking(move || {
        let written = cache2.export(&lacking, &base2);
        // The chunks were only needed to write the files: the cache keeps
        // images, not checkpoints.
        for c in lacking.chunk_ids() {
            cache2.remove_chunk(&c);
        }
        written
    })
    .await
    .map_err(|_| CkStoreError::Task)??;
    Ok(Fetched {
        dir: base.join(root),
        missing_bytes,
        moved,
    })
}

fn is_plain_relative(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The sequence numbers of checkpoints a node holds for a job (for tests
/// and tidying).
pub fn local_checkpoints(job_dir: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(job_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}
