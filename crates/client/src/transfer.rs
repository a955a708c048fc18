//! Moving things between a local store (a node's cache) and the
//! controller's: a manifest and the chunks it lists.
//!
//! Both ways ask first what the other side lacks, so a transfer that broke
//! off goes on where it stopped, and what is already there (an image's
//! unchanged chunks, a checkpoint's unchanged memory) does not travel.
//! Several chunks are in flight at once; every chunk is checked by the
//! side that keeps it.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;

use vgrid_cas::{CasError, ChunkId, ChunkSource, Manifest, ManifestId, Store};

use crate::{Client, ClientError};

/// How many chunks are in flight at once.
const IN_FLIGHT: usize = 8;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the controller")]
    Client(#[from] ClientError),
    #[error("the local store")]
    Store(#[from] CasError),
    #[error("manifest {id} from the controller is not one")]
    BadManifest {
        id: ManifestId,
        #[source]
        source: CasError,
    },
    #[error("a transfer task failed")]
    Task,
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Chunks the manifest lists.
    pub chunks: usize,
    /// Chunks that had to travel.
    pub sent: usize,
    /// Bytes that travelled (stored form).
    pub bytes: u64,
}

/// How far a transfer is: bytes done of the bytes to move (as the files
/// hold them, before compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Sends `m` and the chunks the controller lacks, read from `source` (a
/// store, or the files themselves); the manifest last (the controller
/// takes it only when it is complete).
pub async fn upload<S: ChunkSource + ?Sized + 'static>(
    client: &Client,
    source: &Arc<S>,
    m: &Manifest,
) -> Result<(ManifestId, Moved), TransferError> {
    upload_reporting(client, source, m, &|_| {}).await
}

/// [`upload`], telling `progress` after each chunk sent (and once before
/// the first, when anything must travel).
pub async fn upload_reporting<S: ChunkSource + ?Sized + 'static>(
    client: &Client,
    source: &Arc<S>,
    m: &Manifest,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(ManifestId, Moved), TransferError> {
    let ids = m.chunk_ids();
    let missing = client.missing_chunks(&ids).await?;
    let mut moved = Moved {
        chunks: ids.len(),
        sent: missing.len(),
        bytes: 0,
    };
    let lens: std::collections::HashMap<ChunkId, u32> =
        m.files.iter().flat_map(|f| f.chunk_ids()).collect();
    let raw_len = |id: &ChunkId| u64::from(lens.get(id).copied().unwrap_or(0));
    let mut done = Progress {
        done: 0,
        total: missing.iter().map(raw_len).sum(),
    };
    if !missing.is_empty() {
        progress(done);
    }
    windowed(
        &missing,
        |id| {
            let (client, source) = (client.clone(), source.clone());
            async move {
                let stored = tokio::task::spawn_blocking(move || source.stored(&id))
                    .await
                    .map_err(|_| TransferError::Task)??;
                let n = stored.len() as u64;
                client.put_chunk(&id, stored).await?;
                Ok(n)
            }
        },
        |id, n| {
            moved.bytes += n;
            done.done += raw_len(&id);
            progress(done);
        },
    )
    .await?;
    let bytes = m.to_bytes();
    let id = ManifestId::of(&bytes);
    client.put_manifest(&id, bytes).await?;
    Ok((id, moved))
}

/// Fetches manifest `id` and the chunks `store` lacks; returns the
/// manifest once every chunk is in `store`.
pub async fn download(
    client: &Client,
    store: &Arc<Store>,
    id: &ManifestId,
) -> Result<(Manifest, Moved), TransferError> {
    let bytes = client.get_manifest(id).await?;
    let m = {
        let (store, id, bytes) = (store.clone(), *id, bytes.clone());
        tokio::task::spawn_blocking(move || store.put_manifest_bytes(&id, &bytes))
            .await
            .map_err(|_| TransferError::Task)?
            .map_err(|source| TransferError::BadManifest { id, source })?
    };
    let moved = fetch_chunks(client, store, &m).await?;
    Ok((m, moved))
}

/// Fetches the chunks of `m` that `store` lacks (`m` may be a part of a
/// manifest: the files a node does not have yet).
pub async fn fetch_chunks(
    client: &Client,
    store: &Arc<Store>,
    m: &Manifest,
) -> Result<Moved, TransferError> {
    let ids = m.chunk_ids();
    let missing: Vec<ChunkId> = ids
        .iter()
        .filter(|c| !store.has_chunk(c))
        .copied()
        .collect();
    let mut moved = Moved {
        chunks: ids.len(),
        sent: missing.len(),
        bytes: 0,
    };
    windowed(
        &missing,
        |c| {
            let (client, store) = (client.clone(), store.clone());
            async move {
                let stored = client.get_chunk(&c).await?;
                let n = stored.len() as u64;
                tokio::task::spawn_blocking(move || store.put_stored(&c, &stored))
                    .await
                    .map_err(|_| TransferError::Task)??;
                Ok(n)
            }
        },
        |_, n| moved.bytes += n,
    )
    .await?;
    Ok(moved)
}

/// Runs `task` for each chunk, [`IN_FLIGHT`] at a time: the next starts
/// as soon as one ends, so that one slow chunk does not hold the others
/// back. `each` hears of every chunk done; the first failure ends it all
/// (the tasks still running are dropped).
async fn windowed<F, Fut>(
    ids: &[ChunkId],
    task: F,
    mut each: impl FnMut(ChunkId, u64),
) -> Result<(), TransferError>
where
    F: Fn(ChunkId) -> Fut,
    Fut: Future<Output = Result<u64, TransferError>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut next = ids.iter().copied();
    loop {
        while running.len() < IN_FLIGHT {
            let Some(id) = next.next() else { break };
            let work = task(id);
            running.spawn(async move { (id, work.await) });
        }
        let Some(ended) = running.join_next().await else {
            return Ok(());
        };
        let (id, result) = ended.map_err(|_| TransferError::Task)?;
        each(id, result?);
    }
}
