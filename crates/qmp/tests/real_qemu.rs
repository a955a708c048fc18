//! The QMP client against a real QEMU (no guest: SeaBIOS is enough to
//! answer QMP, pause, resume and produce a migration stream).

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vgrid_qmp::{MigrationStatus, Qmp, QmpError, RunState};

const T: Duration = Duration::from_secs(30);

/// QEMU's path, or `None` (with the reason printed) when it is missing and
/// skipping is allowed. Under `CI=true` a missing QEMU fails the test.
fn qemu() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("qemu-system-x86_64 not found and CI=true: run scripts/install-deps.sh");
        }
        eprintln!("SKIP: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
    }
    found
}

/// A QEMU process killed when the test ends.
struct Vm {
    child: Child,
    _dir: tempfile::TempDir,
    qmp_path: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_qemu(qemu: &Path, extra: &[&str]) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let qmp_path = dir.path().join("qmp.sock");
    let mut qmp_arg = std::ffi::OsString::from("unix:");
    qmp_arg.push(&qmp_path);
    qmp_arg.push(",server=on,wait=off");
    let child = Command::new(qemu)
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "64",
        ])
        .args(extra)
        .arg("-qmp")
        .arg(qmp_arg)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn qemu");
    let vm = Vm {
        child,
        _dir: dir,
        qmp_path,
    };
    // QEMU creates the socket during start-up; wait for it (not a timing
    // assertion: the bound only guards against a QEMU that never starts).
    for _ in 0..600 {
        if vm.qmp_path.exists() {
            return vm;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("QEMU did not create its QMP socket");
}

#[tokio::test]
async fn status_pause_resume_and_events() {
    let Some(qemu) = qemu() else { return };
    let vm = start_qemu(&qemu, &["-S"]);
    let qmp = Qmp::connect(&vm.qmp_path, T).await.unwrap();
    assert_eq!(qmp.query_version().await.unwrap(), qmp.version());
    assert!(qmp.version().major >= 7);

    let status = qmp.query_status().await.unwrap();
    assert_eq!(status.status, RunState::Prelaunch);
    assert!(!status.running);

    let mut events = qmp.events();
    qmp.cont().await.unwrap();
    events.wait_for("RESUME", T).await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap().status, RunState::Running);

    qmp.stop().await.unwrap();
    events.wait_for("STOP", T).await.unwrap();
    let status = qmp.query_status().await.unwrap();
    assert_eq!(status.status, RunState::Paused);
    assert!(!status.running);
}

#[tokio::test]
async fn qemu_refusals_are_typed() {
    let Some(qemu) = qemu() else { return };
    let vm = start_qemu(&qemu, &["-S"]);
    let qmp = Qmp::connect(&vm.qmp_path, T).await.unwrap();
    match qmp.execute("no-such-command", None).await.unwrap_err() {
        QmpError::Command { class, .. } => assert_eq!(class, "CommandNotFound"),
        other => panic!("unexpected {other:?}"),
    }
    // A refused command does not break the connection.
    qmp.query_status().await.unwrap();
    let err = qmp.closefd("never-given").await.unwrap_err();
    assert!(err.is_command_error(), "{err:?}");
}

#[tokio::test]
async fn migration_stream_goes_to_a_passed_fd() {
    let Some(qemu) = qemu() else { return };
    let vm = start_qemu(&qemu, &[]);
    let qmp = Qmp::connect(&vm.qmp_path, T).await.unwrap();
    let mut events = qmp.events();
    qmp.stop().await.unwrap();
    qmp.migrate_set_parameters(serde_json::json!({"max-bandwidth": 1u64 << 40}))
        .await
        .unwrap();
    qmp.migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();

    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let reader = std::fs::File::from(reader);
    qmp.getfd("stream", writer.as_fd()).await.unwrap();
    drop(writer); // QEMU holds its own copy; EOF comes when it closes it.
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut all = Vec::new();
        reader.read_to_end(&mut all).map(|_| all)
    });
    qmp.migrate("fd:stream").await.unwrap();
    events
        .next_matching(T, "migration completed", |e| {
            e.migration_status()
                .is_some_and(|s| s == MigrationStatus::Completed || s.is_final())
        })
        .await
        .unwrap();
    let info = qmp.query_migrate().await.unwrap();
    assert_eq!(info.status, Some(MigrationStatus::Completed), "{info:?}");
    let stream = drain.join().unwrap().unwrap();
    // QEMU_VM_FILE_MAGIC, then the stream version 3.
    assert_eq!(&stream[..4], b"QEVM");
    assert_eq!(&stream[4..8], &[0, 0, 0, 3]);
    let ram = info.ram.unwrap();
    // Guest RAM plus the firmware and option ROM blocks.
    assert!(ram.total >= 64 << 20, "{ram:?}");
    // Zero pages are sent as page headers, so the stream is far below RAM.
    assert!((stream.len() as u64) < ram.total, "{} bytes", stream.len());
}

#[tokio::test]
async fn quit_ends_qemu_and_the_connection() {
    let Some(qemu) = qemu() else { return };
    let mut vm = start_qemu(&qemu, &["-S"]);
    let qmp = Qmp::connect(&vm.qmp_path, T).await.unwrap();
    qmp.quit().await.unwrap();
    let status = vm.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader notices the closed socket; later commands fail cleanly.
    for _ in 0..200 {
        if !qmp.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(matches!(
        qmp.query_status().await.unwrap_err(),
        QmpError::Disconnected
    ));
}
