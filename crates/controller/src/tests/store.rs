//! The content-addressed store through the API: uploads that broke off,
//! manifests that lie, checkpoints that name what is not there.

use std::sync::Arc;

use vgrid_api::types::{AgentAction, AgentEvent, AgentReport};
use vgrid_cas::{Manifest, ManifestKind, Store};
use vgrid_client::transfer;

use super::{JOB, api_status, one_node, run_next, saved, wait_state};
use vgrid_model::JobState;

/// Bytes that compress badly (so that chunks are many and real).
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

/// A node's local store with one 2 MiB file in it, and its manifest.
fn local_thing(dir: &std::path::Path) -> (Arc<Store>, Manifest) {
    let store = Arc::new(Store::open(&dir.join("cache")).expect("store"));
    let path = dir.join("memory.raw");
    std::fs::write(&path, noise(2 << 20, 11)).expect("write");
    let mut m = Manifest::new(ManifestKind::Checkpoint);
    m.files.push(
        store
            .import_file(&path, "1/v0/memory.raw", 0o600)
            .expect("import"),
    );
    (store, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_broke_off_goes_on_where_it_stopped() {
    let (cluster, _alice, n1) = one_node(60_000, 2).await;
    let (local, m) = local_thing(cluster.dir.path());
    let ids = m.chunk_ids();
    assert!(ids.len() > 10, "{} chunks", ids.len());
    // The first half went up before the link broke.
    let half = ids.len() / 2;
    for id in &ids[..half] {
        let stored = local.get_stored(id).expect("local chunk");
        n1.client.put_chunk(id, stored).await.expect("chunk");
    }
    // A manifest whose chunks are not all there is not taken.
    let bytes = m.to_bytes();
    let early = n1
        .client
        .put_manifest(&m.id(), bytes.clone())
        .await
        .expect_err("incomplete");
    assert_eq!(api_status(early), 409);
    // The upload again: only what is missing travels.
    let (id, moved) = transfer::upload(&n1.client, &local, &m)
        .await
        .expect("upload");
    assert_eq!(id, m.id());
    assert_eq!(moved.chunks, ids.len());
    assert_eq!(moved.sent, ids.len() - half);
    // And everything is there, verified, for another node.
    let other = Arc::new(Store::open(&cluster.dir.path().join("other")).expect("store"));
    let (back, fetched) = transfer::download(&n1.client, &other, &id)
        .await
        .expect("download");
    assert_eq!(back, m);
    assert_eq!(fetched.sent, ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_lying_manifests_and_chunks_are_refused() {
    let (cluster, _alice, n1) = one_node(60_000, 2).await;
    let (local, m) = local_thing(cluster.dir.path());
    transfer::upload(&n1.client, &local, &m)
        .await
        .expect("upload");
    let bytes = m.to_bytes();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let e = n1
        .client
        .put_manifest(&vgrid_cas::ManifestId::of(&cut), cut)
        .await
        .expect_err("truncated");
    assert_eq!(api_status(e), 400);
    // Bytes that are not what their name says.
    let e = n1
        .client
        .put_manifest(&vgrid_cas::ManifestId::of(b"other"), bytes)
        .await
        .expect_err("lying id");
    assert_eq!(api_status(e), 400);
    let id = m.chunk_ids()[0];
    let e = n1
        .client
        .put_chunk(&id, b"\x00not it".to_vec())
        .await
        .expect_err("lying chunk");
    assert_eq!(api_status(e), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_taken_only_with_a_manifest_the_store_holds() {
    let (cluster, alice, mut n1) = one_node(60_000, 2).await;
    let id = alice.submit("a.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    alice.control(id, "checkpoint").await.expect("checkpoint");
    let AgentAction::Checkpoint { seq, .. } = n1.next_action().await else {
        panic!("expected a checkpoint");
    };
    let with = |manifest: Option<String>| match saved(id, attempt, seq, false) {
        AgentEvent::Checkpointed {
            job,
            attempt,
            seq,
            location,
            work_ms,
            stopped,
            paused_ms,
            ..
        } => AgentEvent::Checkpointed {
            job,
            attempt,
            seq,
            location,
            manifest,
            work_ms,
            // No output was written.
            log_offset: 0,
            stopped,
            paused_ms,
            took_ms: None,
            sent_bytes: None,
        },
        other => other,
    };
    let report = |event| AgentReport {
        node: "n1".into(),
        events: vec![event],
    };
    let nowhere = "ab".repeat(32);
    let e = n1
        .client
        .report(&report(with(Some(nowhere))))
        .await
        .expect_err("a manifest the store lacks");
    assert_eq!(api_status(e), 400);
    let (local, m) = local_thing(cluster.dir.path());
    let (manifest, _) = transfer::upload(&n1.client, &local, &m)
        .await
        .expect("upload");
    n1.client
        .report(&report(with(Some(manifest.hex()))))
        .await
        .expect("taken");
    wait_state(&alice, id, JobState::Running).await;
    let shown = alice.job(id).await.expect("show");
    assert_eq!(shown.checkpoints.len(), 1);
    assert_eq!(
        shown.checkpoints[0].manifest.as_deref(),
        Some(manifest.hex().as_str())
    );
    assert_eq!(shown.checkpoints[0].location, format!("{id}/{seq}"));
    // The store names it while the job lives.
    let named = cluster
        .dir
        .path()
        .join(format!("store/refs/checkpoints/{id}/{seq}"));
    assert!(named.exists());
}
