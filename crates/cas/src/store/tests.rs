use super::*;
use crate::manifest::ManifestKind;

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_file_goes_in_as_chunks_and_comes_out_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let src = dir.path().join("disk.img");
    let mut data = pseudo_random(3_000_000, 7);
    data.extend(std::iter::repeat_n(0u8, 1_000_000));
    std::fs::write(&src, &data).expect("write");
    let entry = store.import_file(&src, "disk.img", 0o600).expect("import");
    assert_eq!(entry.size, data.len() as u64);
    let mut m = Manifest::new(ManifestKind::Image);
    m.files.push(entry);
    let id = store.put_manifest(&m).expect("manifest");
    assert_eq!(store.get_manifest(&id).expect("read back"), m);
    assert!(store.missing(&m).is_empty());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    store.export(&m, &out).expect("export");
    assert_eq!(std::fs::read(out.join("disk.img")).expect("read"), data);
    // Zeros compress: the store is smaller than the file.
    assert!(
        store.object_bytes() < data.len() as u64,
        "{}",
        store.object_bytes()
    );
    // The same file again adds nothing.
    let before = store.object_bytes();
    store.import_file(&src, "again.img", 0o600).expect("import");
    assert_eq!(store.object_bytes(), before);
}

#[test]
fn a_damaged_chunk_is_detected_removed_and_taken_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let raw = pseudo_random(70_000, 3);
    let id = store.put_chunk(&raw).expect("put");
    let path = store.object_path(&id);
    let mut bytes = std::fs::read(&path).expect("object");
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).expect("damage");
    let err = store.get_chunk(&id).expect_err("damaged");
    assert!(matches!(err, CasError::BadChunk { .. }), "{err}");
    assert!(!store.has_chunk(&id), "removed so that it is fetched again");
    assert!(matches!(
        store.get_chunk(&id),
        Err(CasError::MissingChunk { .. })
    ));
    // A chunk sent under a wrong name is refused.
    let other = ChunkId::of(b"other");
    assert!(matches!(
        store.put_stored(&other, &crate::chunk::encode(&raw)),
        Err(CasError::RefusedChunk { .. })
    ));
    assert!(
        store
            .put_stored(&id, &crate::chunk::encode(&raw))
            .expect("taken")
    );
    assert_eq!(store.get_chunk(&id).expect("back"), raw);
}

#[test]
fn manifests_are_checked_and_refs_name_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let m = Manifest::new(ManifestKind::Data);
    let bytes = m.to_bytes();
    let id = ManifestId::of(&bytes);
    assert!(matches!(
        store.put_manifest_bytes(&id, &bytes[..bytes.len() - 1]),
        Err(CasError::ManifestHash { .. })
    ));
    let cut = &bytes[..bytes.len() - 1];
    assert!(matches!(
        store.put_manifest_bytes(&ManifestId::of(cut), cut),
        Err(CasError::BadManifest { .. })
    ));
    store.put_manifest_bytes(&id, &bytes).expect("taken");
    store.set_ref("checkpoints/7/3", &id).expect("ref");
    assert_eq!(store.get_ref("checkpoints/7/3").expect("read"), Some(id));
    assert_eq!(store.get_ref("checkpoints/7/4").expect("read"), None);
    assert_eq!(
        store.list_refs("checkpoints/7").expect("list"),
        vec!["checkpoints/7/3".to_string()]
    );
    for bad in ["", "../x", "a//b", "a/./b", "a b", "/abs"] {
        assert!(
            matches!(store.set_ref(bad, &id), Err(CasError::BadRef(_))),
            "{bad}"
        );
    }
    store.remove_ref("checkpoints/7/3").expect("removed");
    assert_eq!(store.get_ref("checkpoints/7/3").expect("read"), None);
}

#[test]
fn the_store_remembers_who_sent_a_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let id = store.put_chunk(b"alice's bytes").expect("chunk");
    assert!(!store.sent_by("alice", &id));
    store.mark_sender("alice", &id).expect("mark");
    store.mark_sender("alice", &id).expect("marked twice");
    assert!(store.sent_by("alice", &id));
    assert!(!store.sent_by("bob", &id));
    // A record of a chunk the store does not have counts for nothing.
    let other = crate::ChunkId::of(b"not stored");
    store.mark_sender("alice", &other).expect("mark");
    assert!(!store.sent_by("alice", &other));
    for bad in ["", "..", "a/b"] {
        assert!(store.mark_sender(bad, &id).is_err(), "{bad:?}");
    }
}
