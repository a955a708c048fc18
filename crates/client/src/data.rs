//! A user's data: a job's inputs go up from the submitter's files, its
//! outputs come down into a directory.
//!
//! Inputs are cut into chunks where they lie, twice: once to learn their
//! chunks (the manifest) and ask the controller which it lacks, once to
//! send those. Nothing is copied to a local store first, so submitting a
//! large file costs no local disk; a file that changes between the two
//! reads is refused. Outputs are fetched chunk by chunk through the job
//! (`/v1/jobs/{id}/outputs/...`, the owner's or an admin's), every chunk
//! checked against its name, each file written beside its final name and
//! renamed into place.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinSet;
use vgrid_cas::chunk::{self, ChunkId};
use vgrid_cas::{FileEntry, Manifest, ManifestId, ManifestKind};

use crate::transfer::{Moved, TransferError};
use crate::{Client, ClientError};

/// How many chunks are in flight at once.
const IN_FLIGHT: usize = 8;

/// A file on this machine that goes into a data manifest as `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: PathBuf,
    pub name: String,
}

/// How far a transfer is: bytes done of the bytes to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Why a user's data could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while it was uploaded; submit again", path.display())]
    Changed { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("the controller sent outputs that are not a data manifest")]
    BadManifest(#[source] vgrid_cas::manifest::BadManifest),
    #[error("chunk {id} of `{file}` from the controller is damaged")]
    BadChunk {
        file: String,
        id: ChunkId,
        #[source]
        source: chunk::BadChunk,
    },
}

impl From<ClientError> for DataError {
    fn from(e: ClientError) -> Self {
        DataError::Transfer(TransferError::Client(e))
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.to_path_buf();
    move |source| DataError::Read { path, source }
}

/// Cuts each file and returns its entry: its chunks and their lengths.
fn describe(files: &[LocalFile]) -> Result<Vec<FileEntry>, DataError> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let file = File::open(&f.path).map_err(read_err(&f.path))?;
        let mut entry = FileEntry {
            path: f.name.clone(),
            size: 0,
            mode: 0o600,
            chunks: Vec::new(),
            packed: None,
        };
        chunk::cut_stream(std::io::BufReader::with_capacity(1 << 20, file), |raw| {
            entry
                .chunks
                .push((ChunkId::of(raw).hex(), raw.len() as u32));
            entry.size += raw.len() as u64;
            Ok(())
        })
        .map_err(read_err(&f.path))?;
        out.push(entry);
    }
    Ok(out)
}

/// Cuts each file again and hands the chunks in `wanted` (stored form) to
/// `send`, once each; a file whose chunks differ from `entries` is
/// refused.
fn reread(
    files: &[LocalFile],
    entries: &[FileEntry],
    mut wanted: HashSet<ChunkId>,
    send: &tokio::sync::mpsc::Sender<(ChunkId, Vec<u8>, u64)>,
) -> Result<(), DataError> {
    for (f, entry) in files.iter().zip(entries) {
        if wanted.is_empty() {
            break;
        }
        let file = File::open(&f.path).map_err(read_err(&f.path))?;
        let mut expected = entry.chunks.iter();
        let mut changed = false;
        let mut stopped = false;
        let cut = chunk::cut_stream(std::io::BufReader::with_capacity(1 << 20, file), |raw| {
            let id = ChunkId::of(raw);
            if expected.next().is_none_or(|(h, _)| *h != id.hex()) {
                changed = true;
                return Err(std::io::Error::other("changed"));
            }
            if wanted.remove(&id)
                && send
                    .blocking_send((id, chunk::encode(raw), raw.len() as u64))
                    .is_err()
            {
                stopped = true;
                return Err(std::io::Error::other("stopped"));
            }
            Ok(())
        });
        if stopped {
            // The sending side failed; it says why.
            return Ok(());
        }
        if changed || (cut.is_ok() && expected.next().is_some()) {
            return Err(DataError::Changed {
                path: f.path.clone(),
            });
        }
        cut.map_err(read_err(&f.path))?;
    }
    Ok(())
}

/// Uploads `files` as one data manifest (each file named by its `name`):
/// the chunks the controller lacks, then the manifest. `progress` hears
/// of every chunk sent. Returns the manifest's id.
pub async fn upload_files(
    client: &Client,
    files: &[LocalFile],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(ManifestId, Manifest, Moved), DataError> {
    let list = files.to_vec();
    let entries = tokio::task::spawn_blocking(move || describe(&list))
        .await
        .map_err(|_| TransferError::Task)??;
    let mut m = Manifest::new(ManifestKind::Data);
    m.files = entries;
    let ids = m.chunk_ids();
    let missing: HashSet<ChunkId> = client.missing_chunks(&ids).await?.into_iter().collect();
    let total: u64 = {
        let mut seen = HashSet::new();
        m.files
            .iter()
            .flat_map(|f| f.chunk_ids())
            .filter(|(id, _)| missing.contains(id) && seen.insert(*id))
            .map(|(_, len)| u64::from(len))
            .sum()
    };
    let mut moved = Moved {
        chunks: ids.len(),
        sent: missing.len(),
        bytes: 0,
    };
    if !missing.is_empty() {
        progress(Progress { done: 0, total });
        let (tx, mut rx) = tokio::sync::mpsc::channel(2 * IN_FLIGHT);
        let (list, entries) = (files.to_vec(), m.files.clone());
        let reader = tokio::task::spawn_blocking(move || reread(&list, &entries, missing, &tx));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks: JoinSet<Result<u64, ClientError>> = JoinSet::new();
        let mut failed: Option<DataError> = None;
        while let Some((id, stored, raw_len)) = rx.recv().await {
            while tasks.len() >= IN_FLIGHT {
                if let Some(r) = tasks.join_next().await {
                    match r.map_err(|_| DataError::from(TransferError::Task)) {
                        Ok(Ok(n)) => moved.bytes += n,
                        Ok(Err(e)) => failed = Some(e.into()),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            if failed.is_some() {
                break;
            }
            let (client, counter) = (client.clone(), done.clone());
            let n = stored.len() as u64;
            tasks.spawn(async move {
                client.put_chunk(&id, stored).await?;
                counter.fetch_add(raw_len, Ordering::Relaxed);
                Ok(n)
            });
            progress(Progress {
                done: done.load(Ordering::Relaxed),
                total,
            });
        }
        drop(rx);
        while let Some(r) = tasks.join_next().await {
            match r.map_err(|_| DataError::from(TransferError::Task)) {
                Ok(Ok(n)) => moved.bytes += n,
                Ok(Err(e)) => failed = failed.or(Some(e.into())),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let read = reader.await.map_err(|_| TransferError::Task)?;
        if let Some(e) = failed {
            return Err(e);
        }
        read?;
        progress(Progress { done: total, total });
    }
    let bytes = m.to_bytes();
    let id = ManifestId::of(&bytes);
    client.put_manifest(&id, bytes).await?;
    Ok((id, m, moved))
}

/// A file [`fetch_outputs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// Its name in the job's outputs.
    pub name: String,
    /// Where it is now.
    pub path: PathBuf,
    pub size: u64,
}

/// Makes the directories of `rel` below `dir`, refusing to go through a
/// symbolic link or a file; returns the directory the file goes into.
fn make_parents(dir: &Path, rel: &str) -> Result<PathBuf, DataError> {
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(DataError::Unsafe {
                    path: at,
                    why: "is a symbolic link; outputs are written only into real directories below the target".into(),
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(DataError::Unsafe {
                    path: at,
                    why: "is not a directory".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(|source| DataError::Write {
                    path: at.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(DataError::Write { path: at, source }),
        }
    }
    Ok(at)
}

/// Fetches job `job`'s outputs into `dir` (which must exist): each file
/// below it under its name, never outside it (the manifest's names are
/// relative without `..`, and no symbolic link is followed below `dir`),
/// every chunk checked, each file written to a temporary name beside it
/// and renamed over its name when whole. `progress` hears of each chunk.
pub async fn fetch_outputs(
    client: &Client,
    job: u64,
    dir: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(ManifestId, Vec<Written>), DataError> {
    let bytes = client.job_outputs(job).await?;
    let id = ManifestId::of(&bytes);
    let m = Manifest::parse(&bytes).map_err(DataError::BadManifest)?;
    if m.kind != ManifestKind::Data {
        return Err(DataError::Unsafe {
            path: dir.to_path_buf(),
            why: "the controller's outputs manifest is not of data".into(),
        });
    }
    let total = m.size();
    let mut done = 0;
    progress(Progress { done, total });
    let mut written = Vec::new();
    for f in &m.files {
        let parent = make_parents(dir, &f.path)?;
        let name = f.path.rsplit('/').next().unwrap_or(&f.path);
        let dest = parent.join(name);
        let tmp = parent.join(format!(".{name}.vgrid-{}.part", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| DataError::Write {
                path: tmp.clone(),
                source,
            })?;
        let result = async {
            let chunks: Vec<ChunkId> = f.chunk_ids().map(|(c, _)| c).collect();
            for batch in chunks.chunks(IN_FLIGHT) {
                let mut tasks = Vec::with_capacity(batch.len());
                for c in batch {
                    let (client, c) = (client.clone(), *c);
                    tasks.push(tokio::spawn(async move {
                        client.job_output_chunk(job, &c).await
                    }));
                }
                for (t, c) in tasks.into_iter().zip(batch) {
                    let stored = t.await.map_err(|_| TransferError::Task)??;
                    let raw = chunk::decode(&stored, c).map_err(|source| DataError::BadChunk {
                        file: f.path.clone(),
                        id: *c,
                        source,
                    })?;
                    out.write_all(&raw).map_err(|source| DataError::Write {
                        path: tmp.clone(),
                        source,
                    })?;
                    done += raw.len() as u64;
                    progress(Progress { done, total });
                }
            }
            out.sync_all().map_err(|source| DataError::Write {
                path: tmp.clone(),
                source,
            })?;
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                return Err(DataError::Unsafe {
                    path: dest.clone(),
                    why: "is a directory".into(),
                });
            }
            fs::rename(&tmp, &dest).map_err(|source| DataError::Write {
                path: dest.clone(),
                source,
            })
        }
        .await;
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        written.push(Written {
            name: f.path.clone(),
            path: dest,
            size: f.size,
        });
    }
    Ok((id, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_made_below_the_target_and_links_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        assert_eq!(make_parents(dir, "a.txt").expect("flat"), dir);
        assert_eq!(
            make_parents(dir, "x/y/z.txt").expect("nested"),
            dir.join("x/y")
        );
        assert!(dir.join("x/y").is_dir());
        std::os::unix::fs::symlink("/etc", dir.join("l")).expect("link");
        let e = make_parents(dir, "l/passwd").expect_err("a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        fs::write(dir.join("f"), "").expect("file");
        assert!(make_parents(dir, "f/g").is_err());
    }

    #[test]
    fn a_file_is_described_as_its_chunks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("in.bin");
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&path, &data).expect("write");
        let files = [LocalFile {
            path: path.clone(),
            name: "in.bin".into(),
        }];
        let entries = describe(&files).expect("describe");
        assert_eq!(entries[0].size, data.len() as u64);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let wanted: HashSet<ChunkId> = entries[0].chunk_ids().map(|(c, _)| c).collect();
        reread(&files, &entries, wanted.clone(), &tx).expect("reread");
        drop(tx);
        let mut got = Vec::new();
        while let Ok((id, stored, _)) = rx.try_recv() {
            got.extend(chunk::decode(&stored, &id).expect("decodes"));
        }
        assert_eq!(got.len(), data.len());
        // A file that changed between the two reads is refused.
        fs::write(&path, b"something else").expect("rewrite");
        let (tx, _rx) = tokio::sync::mpsc::channel(1024);
        let e = reread(&files, &entries, wanted, &tx).expect_err("changed");
        assert!(matches!(e, DataError::Changed { .. }), "{e}");
    }
}
