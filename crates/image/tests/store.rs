//! The image store against the real tools: importing disks with qemu-img,
//! and the stock build's cache (rebuilt only when an input changes).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use vgrid_image::{BuildOptions, ImageError, ImageKind, ImageStore};
use vgrid_testkit::{QemuTools, temp_dir};

fn qemu_img(tools: &QemuTools, args: &[&str], dir: &Path) {
    let status = Command::new(&tools.qemu_img)
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run qemu-img");
    assert!(status.success(), "qemu-img {args:?}");
}

#[test]
fn raw_and_qcow2_disks_are_imported_listed_and_removed() {
    let Some(tools) = vgrid_testkit::require_qemu() else {
        return;
    };
    let work = temp_dir();
    let data = temp_dir();
    let store = ImageStore::open(data.path()).unwrap();
    // A raw disk with recognisable content, and a qcow2 one.
    let raw = work.path().join("user.img");
    let mut bytes = vec![0u8; 4 << 20];
    bytes[..11].copy_from_slice(b"vgrid-disk!");
    std::fs::write(&raw, &bytes).unwrap();
    qemu_img(
        &tools,
        &["create", "-q", "-f", "qcow2", "user.qcow2", "64M"],
        work.path(),
    );

    let a = store.import("from-raw", &raw, false, &|_| {}).unwrap();
    let b = store
        .import("from-qcow2", &work.path().join("user.qcow2"), true, &|_| {})
        .unwrap();
    assert_eq!(a.kind(), ImageKind::Imported);
    assert_eq!(a.disk_format(), "qcow2");
    assert_eq!(a.manifest.disk_virtual_size, 4 << 20);
    assert_eq!(b.manifest.disk_virtual_size, 64 << 20);
    assert!(!a.has_agent() && b.has_agent());
    assert!(
        a.kernel().is_none(),
        "an imported disk boots through firmware"
    );
    a.verify().unwrap();

    // The import is a qcow2 copy holding the same bytes.
    let info = vgrid_image::disk_info(&a.disk()).unwrap();
    assert_eq!(info.format, "qcow2");
    let back = work.path().join("back.raw");
    let out = Command::new(&tools.qemu_img)
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(a.disk())
        .arg(&back)
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    let names: Vec<String> = store.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["from-qcow2", "from-raw"]);
    assert!(matches!(
        store.import("from-raw", &raw, false, &|_| {}),
        Err(ImageError::Exists(_))
    ));
    store.remove("from-raw").unwrap();
    store.remove("from-qcow2").unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn disks_with_a_backing_file_or_another_format_are_refused() {
    let Some(tools) = vgrid_testkit::require_qemu() else {
        return;
    };
    let work = temp_dir();
    let data = temp_dir();
    let store = ImageStore::open(data.path()).unwrap();
    qemu_img(
        &tools,
        &["create", "-q", "-f", "qcow2", "base.qcow2", "16M"],
        work.path(),
    );
    qemu_img(
        &tools,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "base.qcow2",
            "top.qcow2",
        ],
        work.path(),
    );
    qemu_img(
        &tools,
        &["create", "-q", "-f", "vmdk", "disk.vmdk", "16M"],
        work.path(),
    );

    let err = store
        .import("top", &work.path().join("top.qcow2"), false, &|_| {})
        .unwrap_err();
    assert!(matches!(err, ImageError::HasBackingFile { .. }), "{err}");
    assert!(err.to_string().contains("base.qcow2"), "{err}");
    let err = store
        .import("vm", &work.path().join("disk.vmdk"), false, &|_| {})
        .unwrap_err();
    assert!(
        matches!(err, ImageError::UnsupportedFormat { ref format, .. } if format == "vmdk"),
        "{err}"
    );
    let err = store
        .import("none", &work.path().join("missing.img"), false, &|_| {})
        .unwrap_err();
    assert!(err.to_string().contains("missing.img"), "{err}");
    // Nothing half-made is left behind.
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn the_stock_build_is_cached_and_rebuilt_only_when_an_input_changes() {
    let Some(_tools) = vgrid_testkit::require_qemu() else {
        return;
    };
    // Populates the shared .deb cache (or skips outside CI when the image
    // cannot be built at all).
    let Some(_shared) = vgrid_testkit::stock_image() else {
        return;
    };
    let cache = std::env::var_os("VGRID_IMAGE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| vgrid_testkit::test_root().join("cache"));
    let data = temp_dir();
    let store = ImageStore::open(data.path()).unwrap();
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
    let opts = |agent: Option<Vec<u8>>| BuildOptions {
        cache_dir: Some(cache.clone()),
        agent,
        force: false,
        progress: &progress,
    };

    let first = store.build_stock("cached", &opts(None)).unwrap();
    assert!(first.rebuilt);
    first.image.verify().unwrap();
    let disk_inode = std::fs::metadata(first.image.disk()).unwrap().ino();

    let second = store.build_stock("cached", &opts(None)).unwrap();
    assert!(!second.rebuilt, "same inputs: no rebuild");
    assert_eq!(second.image.manifest, first.image.manifest);
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("downloading")),
        "the cached .debs were reused: {:?}",
        lines.lock().unwrap()
    );

    // A different agent binary is a different input.
    let mut agent = vgrid_image::agent_binary(None).unwrap();
    agent.extend_from_slice(b"\0changed");
    let third = store.build_stock("cached", &opts(Some(agent))).unwrap();
    assert!(third.rebuilt);
    assert_ne!(
        third.image.manifest.inputs_hash,
        first.image.manifest.inputs_hash
    );
    let initrd = |img: &vgrid_image::Image| {
        img.manifest
            .files
            .iter()
            .find(|f| f.name == "initrd.img")
            .unwrap()
            .blake3
            .clone()
    };
    assert_ne!(initrd(&third.image), initrd(&first.image));
    // The scratch disk's recipe did not change: the same file is kept, so
    // overlays of running VMs stay valid.
    assert_eq!(
        std::fs::metadata(third.image.disk()).unwrap().ino(),
        disk_inode
    );
    third.image.verify().unwrap();
}

#[test]
fn an_image_published_on_one_host_is_installed_on_another_only_if_intact() {
    let Some(_tools) = vgrid_testkit::require_qemu() else {
        return;
    };
    let work = temp_dir();
    let here = ImageStore::open(temp_dir().path()).unwrap();
    let raw = work.path().join("disk.img");
    let mut bytes = vec![0u8; 3 << 20];
    for (i, b) in bytes.iter_mut().enumerate().take(1 << 20) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&raw, &bytes).unwrap();
    let original = here.import("app", &raw, true, &|_| {}).unwrap();
    let cas = vgrid_cas::Store::open(&work.path().join("cas")).unwrap();
    let published = here.publish("app", &cas).unwrap();
    assert_eq!(published.meta["name"], "app");

    // A node's store: the image appears whole, with the same checksums.
    let there_dir = temp_dir();
    let there = ImageStore::open(there_dir.path()).unwrap();
    assert!(!there.holds(&published));
    let installed = there.install_published(&published, &cas).unwrap();
    installed.verify().unwrap();
    assert_eq!(installed.manifest.files, original.manifest.files);
    assert!(there.holds(&published));
    // Installing again keeps what is there.
    there.install_published(&published, &cas).unwrap();

    // A damaged chunk is refused, and nothing half-installed is left.
    there.remove("app").unwrap();
    let chunk = published.files[0].chunk_ids().next().unwrap().0;
    let hex = chunk.hex();
    let object = work
        .path()
        .join("cas/objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let mut stored = std::fs::read(&object).unwrap();
    let last = stored.len() - 1;
    stored[last] ^= 0x55;
    std::fs::write(&object, stored).unwrap();
    let err = there.install_published(&published, &cas).unwrap_err();
    assert!(matches!(err, ImageError::Store(_)), "{err}");
    assert!(matches!(there.get("app"), Err(ImageError::NotFound(_))));
    let hidden: Vec<_> = std::fs::read_dir(there.images_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".build"))
        .collect();
    assert!(
        hidden.is_empty(),
        "no half-installed image is left: {hidden:?}"
    );
}
