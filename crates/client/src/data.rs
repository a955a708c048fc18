//! A user's data: a job's inputs go up from the submitter's files, its
//! outputs come down into a directory.
//!
//! Inputs are cut into chunks where they lie: once to learn their chunks
//! (the manifest) and ask the controller which it lacks, then those are
//! read back and sent (`vgrid_cas::Located`). Nothing is copied to a local
//! store first, so submitting a large file costs no local disk; a file
//! that changes between the two reads is refused. Outputs are fetched chunk by chunk through the job
//! (`/v1/jobs/{id}/outputs/...`, the owner's or an admin's), every chunk
//! checked against its name, each file written beside its final name and
//! renamed into place.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vgrid_cas::chunk::{self, ChunkId};
use vgrid_cas::{CasError, Located, Manifest, ManifestId, ManifestKind};

pub use crate::transfer::Progress;
use crate::transfer::{Moved, TransferError, upload_reporting};
use crate::{Client, ClientError};

/// How many chunks are in flight at once.
const IN_FLIGHT: usize = 8;

/// A file on this machine that goes into a data manifest as `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub path: PathBuf,
    pub name: String,
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

/// A file's problem as the user's, not the transfer's.
fn from_cas(e: CasError) -> DataError {
    match e {
        CasError::Io { path, source, .. } => DataError::Read { path, source },
        CasError::Changed { path } => DataError::Changed { path },
        e => DataError::Transfer(TransferError::Store(e)),
    }
}

/// Uploads `files` as one data manifest (each file named by its `name`):
/// the chunks the controller lacks, read where the files lie, then the
/// manifest. `progress` hears of every chunk sent. Returns the
/// manifest's id.
pub async fn upload_files(
    client: &Client,
    files: &[LocalFile],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(ManifestId, Manifest, Moved), DataError> {
    let list = files.to_vec();
    let (located, m) = tokio::task::spawn_blocking(move || {
        let mut located = Located::new();
        let mut m = Manifest::new(ManifestKind::Data);
        for f in &list {
            m.files.push(located.add_file(&f.path, &f.name, 0o600)?);
        }
        Ok::<_, CasError>((located, m))
    })
    .await
    .map_err(|_| TransferError::Task)?
    .map_err(from_cas)?;
    let (id, moved) = upload_reporting(client, &Arc::new(located), &m, progress)
        .await
        .map_err(|e| match e {
            TransferError::Store(e) => from_cas(e),
            e => DataError::Transfer(e),
        })?;
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
    fn a_file_is_read_where_it_lies_and_one_that_changed_is_refused() {
        use vgrid_cas::ChunkSource;
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("in.bin");
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&path, &data).expect("write");
        let mut located = Located::new();
        let entry = located.add_file(&path, "in.bin", 0o600).expect("cut");
        assert_eq!(entry.size, data.len() as u64);
        let mut got = Vec::new();
        for (id, _) in entry.chunk_ids() {
            let stored = located.stored(&id).expect("read back");
            got.extend(vgrid_cas::chunk::decode(&stored, &id).expect("decodes"));
        }
        assert_eq!(got, data);
        // A file that changed between the two reads is refused.
        fs::write(&path, vec![7u8; data.len()]).expect("rewrite");
        let (first, _) = entry.chunk_ids().next().expect("a chunk");
        let e = from_cas(located.stored(&first).expect_err("changed"));
        assert!(matches!(e, DataError::Changed { .. }), "{e}");
        assert!(
            e.to_string().contains("changed while it was uploaded"),
            "{e}"
        );
    }
}
