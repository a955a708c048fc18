//! A job's data through the controller: inputs a user uploads and names
//! at submission, outputs a node uploads and reports, fetched back by the
//! job's owner only.

use std::path::Path;

use vgrid_api::types::{AgentAction, AgentEvent, Role, SubmitRequest};
use vgrid_client::Client;
use vgrid_client::data::{LocalFile, Progress, fetch_outputs, upload_files};
use vgrid_model::JobState;

use super::*;

fn quiet(_: Progress) {}

/// Uploads `files` (name, bytes) as `client`, from a directory of `dir`.
async fn upload(client: &Client, dir: &Path, files: &[(&str, &[u8])]) -> String {
    let local: Vec<LocalFile> = files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(format!("local-{}", name.replace('/', "_")));
            std::fs::write(&path, bytes).expect("local file");
            LocalFile {
                path,
                name: name.to_string(),
            }
        })
        .collect();
    let (id, _, _) = upload_files(client, &local, &quiet)
        .await
        .expect("uploaded");
    id.hex()
}

const WITH_DATA: &str = "image = \"tiny\"\ncommand = [\"/bin/true\"]\n\
    [[inputs]]\nfrom = \"a.txt\"\nto = \"/work/a.txt\"\n\
    [[inputs]]\nfrom = \"big.bin\"\nto = \"/work/big.bin\"\n\
    [[outputs]]\nfrom = \"/work/out/r.txt\"\nto = \"results/r.txt\"\n\
    [[outputs]]\nfrom = \"/work/log.txt\"\n";

async fn submit(client: &Client, text: &str, input_data: Option<&str>) -> Result<u64, ClientError> {
    client
        .submit_request(
            &SubmitRequest {
                file_name: "d.toml".into(),
                source: text.into(),
                hold: false,
                input_data: input_data.map(str::to_string),
            },
            None,
        )
        .await
}

fn big() -> Vec<u8> {
    (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_only_input_data_its_owner_uploaded() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let bob = cluster.h.user("bob", Role::User).await;
    let local = tempfile::tempdir().expect("tempdir");
    let big = big();
    let data = upload(
        &alice,
        local.path(),
        &[("a.txt", b"alpha\n"), ("big.bin", &big)],
    )
    .await;

    // Bob cannot name Alice's data, even knowing its id.
    let err = submit(&bob, WITH_DATA, Some(&data))
        .await
        .expect_err("not bob's");
    assert_eq!(err.status().unwrap_or_default(), 403);
    assert!(err.to_string().contains("not uploaded by bob"), "{err}");
    // Bob's own upload of the same bytes is his (the chunks are shared).
    let bobs = upload(
        &bob,
        local.path(),
        &[("a.txt", b"alpha\n"), ("big.bin", &big)],
    )
    .await;
    assert_eq!(bobs, data, "the same files make the same manifest");
    submit(&bob, WITH_DATA, Some(&bobs))
        .await
        .expect("bob's own upload");

    // Inputs need their data; data needs inputs; names must match.
    let err = submit(&alice, WITH_DATA, None).await.expect_err("no data");
    assert_eq!(err.status().unwrap_or_default(), 400);
    assert!(err.to_string().contains("input_data"), "{err}");
    let err = submit(&alice, JOB, Some(&data))
        .await
        .expect_err("no inputs");
    assert_eq!(api_status(err), 400);
    let renamed = upload(
        &alice,
        local.path(),
        &[("b.txt", b"alpha\n"), ("big.bin", &big)],
    )
    .await;
    let err = submit(&alice, WITH_DATA, Some(&renamed))
        .await
        .expect_err("other names");
    assert_eq!(err.status().unwrap_or_default(), 400);
    assert!(err.to_string().contains("`b.txt`"), "{err}");
    let err = submit(&alice, WITH_DATA, Some("zz"))
        .await
        .expect_err("not an id");
    assert_eq!(api_status(err), 400);

    // The job the node gets carries the data it may fetch.
    let id = submit(&alice, WITH_DATA, Some(&data))
        .await
        .expect("alice's data");
    // Bob's job (the first) starts too.
    let spec = loop {
        match n1.next_action().await {
            AgentAction::Start { job, spec, .. } if job == id => break spec,
            AgentAction::Start { .. } => {}
            other => panic!("expected a start, got {other:?}"),
        }
    };
    assert_eq!(spec.input_data.as_deref(), Some(data.as_str()));
    assert_eq!(spec.input_names(), vec!["a.txt", "big.bin"]);
    let shown = alice.job(id).await.expect("show");
    assert_eq!(shown.spec.input_data.as_deref(), Some(data.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_write_only_data_to_the_store_and_read_none_of_it_by_id() {
    let (cluster, alice, _n1) = one_node(10_000, 2).await;
    let local = tempfile::tempdir().expect("tempdir");
    let data = upload(&alice, local.path(), &[("a.txt", b"alpha\n")]).await;
    let id = vgrid_cas::ManifestId::parse(&data).expect("id");
    // Reading by id stays for nodes and admins.
    assert_eq!(
        api_status(
            alice
                .get_manifest(&id)
                .await
                .expect_err("users do not read")
        ),
        403
    );
    let chunk = vgrid_cas::ChunkId::of(b"alpha\n");
    assert_eq!(
        api_status(
            alice
                .get_chunk(&chunk)
                .await
                .expect_err("users do not read")
        ),
        403
    );
    cluster
        .h
        .admin
        .get_manifest(&id)
        .await
        .expect("an admin reads");
    // A user sends data manifests only.
    let mut image = vgrid_cas::Manifest::new(vgrid_cas::ManifestKind::Image);
    image.meta.insert("name".into(), "tiny".into());
    let bytes = image.to_bytes();
    let err = alice
        .put_manifest(&vgrid_cas::ManifestId::of(&bytes), bytes)
        .await
        .expect_err("not data");
    assert_eq!(api_status(err), 403);
    // The data is recorded as Alice's.
    let refs = cluster.dir.path().join("store/refs/data/alice");
    assert!(refs.join(&data).exists(), "{}", refs.display());

    // Bob learns nothing of Alice's chunks: they are "missing" to him, and
    // a manifest of his cannot name them until he sent them himself.
    let bob = cluster.h.user("bob", Role::User).await;
    assert_eq!(
        bob.missing_chunks(&[chunk]).await.expect("missing"),
        vec![chunk]
    );
    assert!(
        alice
            .missing_chunks(&[chunk])
            .await
            .expect("missing")
            .is_empty()
    );
    let alices = alice.get_manifest(&id).await.expect_err("not by id");
    assert_eq!(api_status(alices), 403);
    let mut borrowed = vgrid_cas::Manifest::new(vgrid_cas::ManifestKind::Data);
    borrowed.files.push(vgrid_cas::FileEntry {
        path: "a.txt".into(),
        size: 6,
        mode: 0o600,
        chunks: vec![(chunk.hex(), 6)],
        packed: None,
    });
    let bytes = borrowed.to_bytes();
    let borrowed_id = vgrid_cas::ManifestId::of(&bytes);
    let err = bob
        .put_manifest(&borrowed_id, bytes.clone())
        .await
        .expect_err("chunks bob never sent");
    assert_eq!(api_status(err), 409);
    bob.put_chunk(&chunk, vgrid_cas::chunk::encode(b"alpha\n"))
        .await
        .expect("bob sends the same bytes");
    bob.put_manifest(&borrowed_id, bytes)
        .await
        .expect("now they are his too");
}

/// The node's side of a job's end: it uploads the outputs (as the node's
/// agent would, from its cache) and reports the exit with their manifest.
async fn exit_with_outputs(
    n1: &FakeAgent,
    dir: &Path,
    id: u64,
    attempt: u32,
    files: &[(&str, &[u8])],
) -> String {
    let manifest = upload(&n1.client, dir, files).await;
    n1.report(AgentEvent::Exited {
        job: id,
        attempt,
        exit_code: 0,
        outputs: Some(manifest.clone()),
    })
    .await;
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_reach_their_owner_only_and_outlive_a_restart() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let bob = cluster.h.user("bob", Role::User).await;
    let local = tempfile::tempdir().expect("tempdir");
    let text = "image = \"tiny\"\ncommand = [\"/bin/true\"]\n\
        [[outputs]]\nfrom = \"/work/out/r.txt\"\nto = \"results/r.txt\"\n\
        [[outputs]]\nfrom = \"/work/big.bin\"\n";
    let id = alice
        .submit("o.toml", text, false)
        .await
        .expect("submitted");
    // Not ended: said so.
    let err = alice.job_outputs(id).await.expect_err("running");
    assert_eq!(err.status().unwrap_or_default(), 409);
    assert!(err.to_string().contains("has not ended"), "{err}");
    let attempt = run_next(&mut n1, &alice, id).await;
    let big = big();
    let manifest = exit_with_outputs(
        &n1,
        local.path(),
        id,
        attempt,
        &[("results/r.txt", b"result\n"), ("big.bin", &big)],
    )
    .await;
    wait_state(&alice, id, JobState::Done).await;
    let shown = alice.job(id).await.expect("show");
    assert_eq!(shown.outputs.as_deref(), Some(manifest.as_str()));
    assert!(
        shown.job.reason.contains("outputs collected"),
        "{:?}",
        shown.job
    );

    // Another user gets what a missing job gets, for the manifest and for
    // every chunk.
    assert_eq!(
        api_status(bob.job_outputs(id).await.expect_err("hidden")),
        404
    );
    let m = vgrid_cas::Manifest::parse(&alice.job_outputs(id).await.expect("owner"))
        .expect("a manifest");
    let first = m.chunk_ids()[0];
    assert_eq!(
        api_status(bob.job_output_chunk(id, &first).await.expect_err("hidden")),
        404
    );
    // A chunk the outputs do not list is not given, even to the owner.
    let other = vgrid_cas::ChunkId::of(b"not an output");
    assert_eq!(
        api_status(
            alice
                .job_output_chunk(id, &other)
                .await
                .expect_err("not listed")
        ),
        404
    );
    let into = tempfile::tempdir().expect("tempdir");
    let (got, written) = fetch_outputs(&alice, id, into.path(), &quiet)
        .await
        .expect("fetched");
    assert_eq!(got.hex(), manifest);
    assert_eq!(written.len(), 2);
    assert_eq!(
        std::fs::read(into.path().join("results/r.txt")).expect("r"),
        b"result\n"
    );
    assert_eq!(
        std::fs::read(into.path().join("big.bin")).expect("big"),
        big
    );
    // The admin may fetch them too.
    fetch_outputs(&cluster.h.admin, id, into.path(), &quiet)
        .await
        .expect("an admin fetches");
    assert!(
        cluster
            .dir
            .path()
            .join(format!("store/refs/outputs/{id}"))
            .exists(),
        "the store keeps the outputs by the job"
    );

    // A job without outputs says so.
    let plain = alice.submit("p.toml", JOB, false).await.expect("submitted");
    let attempt = run_next(&mut n1, &alice, plain).await;
    run_to_end(&n1, plain, attempt).await;
    wait_state(&alice, plain, JobState::Done).await;
    let err = alice.job_outputs(plain).await.expect_err("none");
    assert_eq!(err.status().unwrap_or_default(), 404);
    assert!(err.to_string().contains("names none"), "{err}");

    // The outputs are the database's: they outlive the controller.
    let Cluster { mut h, dir } = cluster;
    drop(n1);
    h.stop();
    drop(h);
    let h = Harness::start(dir.path(), 10_000).await;
    let again = tempfile::tempdir().expect("tempdir");
    let (got, _) = fetch_outputs(&h.admin, id, again.path(), &quiet)
        .await
        .expect("after a restart");
    assert_eq!(got.hex(), manifest);
    assert_eq!(
        std::fs::read(again.path().join("big.bin")).expect("big"),
        big
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_are_not_the_jobs_fail_it_saying_why() {
    let (cluster, alice, mut n1) = one_node(10_000, 2).await;
    let local = tempfile::tempdir().expect("tempdir");
    let text = "image = \"tiny\"\ncommand = [\"/bin/true\"]\n[[outputs]]\nfrom = \"/work/r.txt\"\n";
    let id = alice
        .submit("o.toml", text, false)
        .await
        .expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    // A manifest of other names than the job's outputs.
    exit_with_outputs(&n1, local.path(), id, attempt, &[("secret.txt", b"x")]).await;
    wait_state(&alice, id, JobState::Failed).await;
    let shown = alice.job(id).await.expect("show");
    assert!(shown.job.reason.contains("refused"), "{:?}", shown.job);
    assert_eq!(shown.outputs, None);
    // A manifest the store does not have.
    let id = alice
        .submit("o.toml", text, false)
        .await
        .expect("submitted");
    let attempt = run_next(&mut n1, &alice, id).await;
    n1.report(AgentEvent::Exited {
        job: id,
        attempt,
        exit_code: 0,
        outputs: Some("ab".repeat(32)),
    })
    .await;
    wait_state(&alice, id, JobState::Failed).await;
    let shown = alice.job(id).await.expect("show");
    assert!(
        shown.job.reason.contains("not in the store"),
        "{:?}",
        shown.job
    );
    drop(cluster);
}
