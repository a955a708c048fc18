//! Helpers for vgrid's real-VM tests (a dev-dependency only).
//!
//! ```no_run
//! # fn test() {
//! let Some(qemu) = vgrid_testkit::require_qemu() else { return };
//! let Some(image) = vgrid_testkit::stock_image() else { return };
//! let data = vgrid_testkit::data_dir_with_stock_image(&image);
//! // ... start VMs with $VGRID_DATA_DIR = data.path() ...
//! # let _ = (qemu, data);
//! # }
//! ```
//!
//! - [`require_qemu`]: the QEMU tools, or `None` with a printed reason so
//!   the test can skip. With `CI=true` a missing tool panics instead: CI
//!   never skips a real-VM test.
//! - [`stock_image`]: the stock image, built once for all test binaries
//!   (guarded by a file lock) under `<workspace>/target/vgrid-test/data`,
//!   with the `.deb` cache in `<workspace>/target/vgrid-test/cache` (or
//!   `$VGRID_IMAGE_CACHE`), both kept across runs.
//! - [`data_dir_with_stock_image`]: a fresh temporary `VGRID_DATA_DIR`
//!   whose `images/tiny` points at that image.
//! - [`wait_for`]: polls a condition until a (generous) deadline, so a
//!   broken guest fails the test instead of hanging it.
//! - [`read_messages`]: decodes an `agent.out` file.
//! - [`handboot`]: boots the stock image with hand-written QEMU arguments
//!   (the image's own tests; the product's launcher is `vgrid-vm`).
//! - [`cluster`]: separate hosts on one machine (network namespaces on a
//!   bridge, a mount namespace per process that sees only its host's data
//!   directory), for multi-host tests.
//! - [`local`]: `vgrid serve` and `vgrid agent` on this machine, stopped
//!   with their VMs when dropped.
//! - [`browser`]: a headless Chromium driven over the DevTools protocol
//!   (the dashboard's tests).

pub mod browser;
pub mod cluster;
pub mod handboot;
pub mod local;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vgrid_guest_proto::{FrameDecoder, GuestMessage};
use vgrid_image::{BuildOptions, FileLock, Image, ImageStore};

/// The name of the stock image in test data directories.
pub const STOCK_IMAGE: &str = "tiny";

/// Paths of the host tools real-VM tests use.
#[derive(Debug, Clone)]
pub struct QemuTools {
    pub qemu_system: PathBuf,
    pub qemu_img: PathBuf,
    pub passt: PathBuf,
}

/// Whether we run under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns `None`, printing why) or, under CI, panics.
fn skip_or_panic<T>(reason: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true and {reason}: real-VM tests must run in CI (run scripts/install-deps.sh)");
    }
    eprintln!(
        "SKIPPED: {reason} (install it with scripts/install-deps.sh; under CI=true this fails)"
    );
    None
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/sbin".into(),
            "/bin".into(),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// QEMU, qemu-img and passt, or `None` (test skipped) when one is missing
/// outside CI.
pub fn require_qemu() -> Option<QemuTools> {
    let mut found = Vec::new();
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("passt", "passt"),
    ] {
        match find_in_path(tool) {
            Some(p) => found.push(p),
            None => {
                return skip_or_panic(&format!(
                    "`{tool}` (Debian package {package}) is not installed"
                ));
            }
        }
    }
    let mut it = found.into_iter();
    Some(QemuTools {
        qemu_system: it.next()?,
        qemu_img: it.next()?,
        passt: it.next()?,
    })
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// `<workspace>/target/vgrid-test`: state shared by test runs (whatever
/// `CARGO_TARGET_DIR` is, so every helper's build shares one image).
pub fn test_root() -> PathBuf {
    workspace_root().join("target").join("vgrid-test")
}

/// The stock image, built for the tests.
#[derive(Debug, Clone)]
pub struct StockImage {
    /// The data directory the image lives in.
    pub data_dir: PathBuf,
    pub image: Image,
}

/// Builds the stock image once per test process (and, through a file lock
/// and the build cache, once for all processes), or skips outside CI when
/// it cannot be built.
pub fn stock_image() -> Option<StockImage> {
    static BUILT: OnceLock<Result<StockImage, String>> = OnceLock::new();
    match BUILT.get_or_init(build_stock_image) {
        Ok(image) => Some(image.clone()),
        Err(reason) => skip_or_panic(reason),
    }
}

fn build_stock_image() -> Result<StockImage, String> {
    let root = test_root();
    let data_dir = root.join("data");
    let cache = std::env::var_os("VGRID_IMAGE_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("cache"));
    // The store locks per image too; this lock also keeps two test
    // processes from both printing a build.
    let _lock = FileLock::acquire(&root.join("stock-image.lock"))
        .map_err(|e| format!("cannot lock the test image: {e}"))?;
    let store = ImageStore::open(&data_dir).map_err(|e| e.to_string())?;
    let progress = |line: &str| eprintln!("vgrid-testkit: image: {line}");
    let started = Instant::now();
    let outcome = store
        .build_stock(
            STOCK_IMAGE,
            &BuildOptions {
                cache_dir: Some(cache),
                agent: None,
                force: false,
                progress: &progress,
            },
        )
        .map_err(|e| format!("the stock image cannot be built: {e}"))?;
    if outcome.rebuilt {
        eprintln!(
            "vgrid-testkit: stock image built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(StockImage {
        data_dir,
        image: outcome.image,
    })
}

/// A temporary `VGRID_DATA_DIR` (removed on drop, mode 0700) whose
/// `images/tiny` is a link to the shared stock image (`images/` 0700, as
/// vgrid makes it). Created under `target/vgrid-test/tmp` so that paths
/// stay short (unix socket paths are limited to 107 bytes).
pub fn data_dir_with_stock_image(stock: &StockImage) -> tempfile::TempDir {
    let dir = temp_dir();
    link_stock_image(stock, dir.path());
    dir
}

/// Links the shared stock image as `images/tiny` of the data directory
/// `data` (which must exist), creating `images/` 0700 when missing.
pub fn link_stock_image(stock: &StockImage, data: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let images = data.join("images");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&images)
        .expect("create images dir");
    std::os::unix::fs::symlink(&stock.image.dir, images.join(STOCK_IMAGE))
        .expect("link the stock image");
}

/// A fresh temporary directory under `target/vgrid-test/tmp`, mode 0700
/// like `mktemp -d` makes it: a data directory only root may enter, which
/// VMs must work in (QEMU and passt drop to an unprivileged user).
pub fn temp_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = test_root().join("tmp");
    std::fs::create_dir_all(&base).expect("create target/vgrid-test/tmp");
    tempfile::Builder::new()
        .prefix("t")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .expect("create a temporary directory")
}

/// Polls `condition` every 50 ms until it holds or `limit` passes. The
/// limit is a guard against hanging, not a performance assertion: pick one
/// far above the expected time (minutes for a VM under TCG).
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    // Conditions often run a `vgrid` command (tens of milliseconds of CPU
    // each): polling slower as the wait grows leaves the CPU to the VMs.
    let mut pause = Duration::from_millis(50);
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "gave up waiting for {what} after {} s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 5 / 4).min(Duration::from_millis(250));
    }
}

/// Every message in an `agent.out` file (a partial frame at the end is
/// "not yet written" and ignored; garbage would be a bug, so it panics).
pub fn read_messages(path: &Path) -> Vec<GuestMessage> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes);
    let mut out = Vec::new();
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => match GuestMessage::from_frame(&frame) {
                Ok(m) => out.push(m),
                Err(e) => panic!("{}: undecodable message: {e}", path.display()),
            },
            Ok(None) => return out,
            Err(e) => panic!("{}: garbage in the agent stream: {e}", path.display()),
        }
    }
}

/// The concatenated stdout of a message list.
pub fn stdout_of(messages: &[GuestMessage]) -> String {
    let mut out = Vec::new();
    for m in messages {
        if let GuestMessage::Stdout(b) = m {
            out.extend_from_slice(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The concatenated stderr of a message list.
pub fn stderr_of(messages: &[GuestMessage]) -> String {
    let mut out = Vec::new();
    for m in messages {
        if let GuestMessage::Stderr(b) = m {
            out.extend_from_slice(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The exit status, if the command has ended.
pub fn exit_of(messages: &[GuestMessage]) -> Option<vgrid_guest_proto::ExitStatus> {
    messages.iter().find_map(|m| match m {
        GuestMessage::Exited(s) => Some(*s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_gives_up_with_a_reason() {
        let err = wait_for("nothing", Duration::from_millis(10), || false).unwrap_err();
        assert!(err.contains("nothing"));
        let mut n = 0;
        wait_for("a counter", Duration::from_secs(60), || {
            n += 1;
            n > 3
        })
        .unwrap();
    }

    #[test]
    fn messages_are_read_back_from_a_file() {
        let dir = temp_dir();
        let path = dir.path().join("agent.out");
        let mut bytes = GuestMessage::Stdout(b"hi ".to_vec()).encode();
        bytes.extend(GuestMessage::Stdout(b"there".to_vec()).encode());
        bytes.extend(GuestMessage::Stderr(b"oops".to_vec()).encode());
        let exited = GuestMessage::Exited(vgrid_guest_proto::ExitStatus {
            code: Some(4),
            signal: None,
        });
        bytes.extend(exited.encode());
        // A frame still being written is not an error.
        bytes.extend(&GuestMessage::Stdout(b"partial".to_vec()).encode()[..5]);
        std::fs::write(&path, bytes).unwrap();
        let msgs = read_messages(&path);
        assert_eq!(stdout_of(&msgs), "hi there");
        assert_eq!(stderr_of(&msgs), "oops");
        assert_eq!(exit_of(&msgs).and_then(|s| s.code), Some(4));
    }

    #[test]
    fn the_test_root_is_inside_the_workspace() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(test_root().starts_with(workspace_root()));
    }
}
