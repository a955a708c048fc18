//! The VM runtime with the stock guest (kernel, initramfs, guest agent) on
//! real QEMU: output and exit status, checkpoint and restore of a running
//! program, live migration, coherent checkpoints of two VMs, data
//! repositories, corrupt checkpoints, reattaching, path escapes, network.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vgrid_guest_proto::GuestMessage;
use vgrid_testkit::StockImage;
use vgrid_vm::checkpoint::{CheckpointOptions, RestoreOptions};
use vgrid_vm::error::{CheckpointError, CheckpointFileError, FsError, RestoreError, StartError};
use vgrid_vm::{MountSpec, PortMap, Runtime, RuntimeConfig, StoreImages, VmError, VmSpec, VmState};

/// A guard against hanging only (TCG boots take seconds), not a timing
/// assertion.
const LIMIT: Duration = Duration::from_secs(600);

/// One node: a data directory with the stock image, and its runtime.
struct Node {
    rt: Runtime,
    data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Never leave QEMU or passt behind a test.
        let Ok(entries) = std::fs::read_dir(self.data.path().join("vms")) else {
            return;
        };
        for e in entries.flatten() {
            for pid_file in ["qemu.pid", "passt.pid"] {
                if let Ok(pid) = std::fs::read_to_string(e.path().join(pid_file)) {
                    let _ = std::process::Command::new("kill")
                        .arg("-9")
                        .arg(pid.trim())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn setup() -> Option<StockImage> {
    vgrid_testkit::require_qemu()?;
    vgrid_testkit::stock_image()
}

fn runtime(data: &Path) -> Runtime {
    let mut cfg = RuntimeConfig::new(data);
    cfg.start_timeout = LIMIT;
    let images = StoreImages::open(data).unwrap();
    Runtime::open(cfg, Arc::new(images)).unwrap()
}

fn node(stock: &StockImage) -> Node {
    let data = vgrid_testkit::data_dir_with_stock_image(stock);
    let rt = runtime(data.path());
    Node { rt, data }
}

fn sh(name: &str, script: &str) -> VmSpec {
    let mut spec = VmSpec::new(name, "tiny", vec!["sh".into(), "-c".into(), script.into()]);
    spec.network = false;
    spec
}

/// A program whose whole state is in memory: it prints 0, 1, 2, ...
const COUNTER: &str = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done";

fn stdout_of(rt: &Runtime, name: &str) -> String {
    let mut reader = rt.output(name).unwrap();
    let mut out = Vec::new();
    for m in reader.drain().unwrap() {
        if let GuestMessage::Stdout(b) = m {
            out.extend_from_slice(&b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn stderr_of(rt: &Runtime, name: &str) -> String {
    let mut reader = rt.output(name).unwrap();
    let mut out = Vec::new();
    for m in reader.drain().unwrap() {
        if let GuestMessage::Stderr(b) = m {
            out.extend_from_slice(&b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Checks that `seq` is 0, 1, 2, ... without gap, repetition or restart.
fn assert_consecutive(seq: &[u64]) {
    for (i, n) in seq.iter().enumerate() {
        assert_eq!(*n, i as u64, "the counter jumped or restarted: {seq:?}");
    }
}

async fn wait_lines(rt: &Runtime, name: &str, at_least: usize) -> Vec<u64> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let seq = numbers(&stdout_of(rt, name));
        if seq.len() >= at_least {
            return seq;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "VM {name} printed only {seq:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_and_its_output_and_exit_status_come_back() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    let mut spec = sh(
        "hello",
        "echo hello from $(hostname); echo oops >&2; echo user=$(id -u) x=$X; exit 3",
    );
    spec.task.env.insert("X".into(), "42".into());
    spec.task.user = Some("alice".into());
    let started = n.rt.start(spec).await.unwrap();
    assert!(matches!(
        started.state,
        VmState::Running | VmState::Exited { .. }
    ));
    let done = n.rt.wait("hello").await.unwrap();
    assert_eq!(
        done.state,
        VmState::Exited {
            code: Some(3),
            signal: None
        },
        "console: {}",
        std::fs::read_to_string(n.rt.console_path("hello").unwrap()).unwrap_or_default()
    );
    assert_eq!(
        stdout_of(&n.rt, "hello"),
        "hello from hello\nuser=1000 x=42\n"
    );
    assert_eq!(stderr_of(&n.rt, "hello"), "oops\n");
    // The VM is listed with its final state, and can be removed.
    let listed = n.rt.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state.word(), "exited(3)");
    n.rt.remove("hello").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_checkpointed_killed_and_restored_elsewhere_keeps_counting() {
    let Some(stock) = setup() else { return };
    let a = node(&stock);
    let b = node(&stock);
    a.rt.start(sh("count", COUNTER)).await.unwrap();
    wait_lines(&a.rt, "count", 10).await;

    let ckpts = vgrid_testkit::temp_dir();
    let c1 = ckpts.path().join("c1");
    let report =
        a.rt.checkpoint("count", &c1, CheckpointOptions::default())
            .await
            .unwrap();
    assert!(report.stream_bytes > 0);
    // What the counter had printed when it was saved.
    let saved = numbers(&vgrid_testkit::stdout_of(&vgrid_testkit::read_messages(
        &c1.join("agent.out"),
    )));
    assert!(saved.len() >= 10, "{saved:?}");

    // The original keeps running, then dies for good.
    wait_lines(&a.rt, "count", saved.len() + 5).await;
    a.rt.kill("count").await.unwrap();

    // Restored under another node's data directory.
    let restored =
        b.rt.restore(&c1, "count2", RestoreOptions::default())
            .await
            .unwrap();
    assert_eq!(restored.vm.state, VmState::Running);
    let seq = wait_lines(&b.rt, "count2", saved.len() + 20).await;
    // It went on from where it was saved: no restart from 0, no gap.
    assert_consecutive(&seq);
    b.rt.stop("count2", Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_moves_a_running_program() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    n.rt.start(sh("mover", COUNTER)).await.unwrap();
    let before = wait_lines(&n.rt, "mover", 5).await;
    let report = n.rt.migrate("mover", "moved").await.unwrap();
    assert_eq!(report.vm.state, VmState::Running);
    assert!(matches!(
        n.rt.inspect("mover").await.unwrap_err(),
        VmError::NotFound(_)
    ));
    let seq = wait_lines(&n.rt, "moved", before.len() + 20).await;
    assert_consecutive(&seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_are_checkpointed_coherently_and_both_restore() {
    let Some(stock) = setup() else { return };
    let a = node(&stock);
    let b = node(&stock);
    a.rt.start(sh("left", COUNTER)).await.unwrap();
    a.rt.start(sh("right", COUNTER)).await.unwrap();
    wait_lines(&a.rt, "left", 5).await;
    wait_lines(&a.rt, "right", 5).await;
    let ckpts = vgrid_testkit::temp_dir();
    let reports =
        a.rt.checkpoint_group(
            &[
                ("left".into(), ckpts.path().join("left")),
                ("right".into(), ckpts.path().join("right")),
            ],
            CheckpointOptions {
                stop: true,
                compress: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(reports.len(), 2);
    // One pause window covered both VMs.
    assert_eq!(reports[0].paused_ms, reports[1].paused_ms);
    for name in ["left", "right"] {
        assert_eq!(a.rt.inspect(name).await.unwrap().state, VmState::Saved);
    }
    for name in ["left", "right"] {
        let saved = numbers(&vgrid_testkit::stdout_of(&vgrid_testkit::read_messages(
            &ckpts.path().join(name).join("agent.out"),
        )));
        assert!(!saved.is_empty());
        b.rt.restore(&ckpts.path().join(name), name, RestoreOptions::default())
            .await
            .unwrap();
        let seq = wait_lines(&b.rt, name, saved.len() + 10).await;
        assert_consecutive(&seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_checkpoint_stores_little_and_a_corrupt_one_is_refused() {
    let Some(stock) = setup() else { return };
    let a = node(&stock);
    let b = node(&stock);
    a.rt.start(sh("idle", "sleep 100000")).await.unwrap();
    let ckpts = vgrid_testkit::temp_dir();
    let full =
        a.rt.checkpoint(
            "idle",
            &ckpts.path().join("full"),
            CheckpointOptions::default(),
        )
        .await
        .unwrap();
    let incr =
        a.rt.checkpoint(
            "idle",
            &ckpts.path().join("incr"),
            CheckpointOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        incr.parent.as_deref(),
        Some(ckpts.path().join("full").as_path())
    );
    assert!(
        incr.pack_bytes < full.pack_bytes,
        "full {full:?}\nincremental {incr:?}"
    );

    // Damage one byte of the parent's memory pack: the child's restore
    // verifies the whole chain and names the file.
    let pack = ckpts.path().join("full/memory.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&pack, &bytes).unwrap();
    let err =
        b.rt.restore(&ckpts.path().join("incr"), "bad", RestoreOptions::default())
            .await
            .unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Checkpoint(CheckpointFileError::Damaged { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("full/memory.pack"), "{err}");
    assert!(b.rt.names().unwrap().is_empty(), "no VM left behind");

    // A truncated disk layer and a missing manifest are refused too.
    let layer = ckpts.path().join("incr/disk-0.qcow2");
    let len = std::fs::metadata(&layer).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&layer)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    bytes[mid] ^= 0x5a;
    std::fs::write(&pack, &bytes).unwrap();
    let err =
        b.rt.restore(&ckpts.path().join("incr"), "bad", RestoreOptions::default())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("incr/disk-0.qcow2"), "{err}");
    std::fs::remove_file(ckpts.path().join("incr/manifest.json")).unwrap();
    let err =
        b.rt.restore(&ckpts.path().join("incr"), "bad", RestoreOptions::default())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_reattaches_and_never_kills() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    let info = n.rt.start(sh("long", COUNTER)).await.unwrap();
    let pid = info.pid.unwrap();
    wait_lines(&n.rt, "long", 3).await;
    // A second runtime (a restarted vgrid) on the same directory, dropped.
    {
        let again = runtime(n.data.path());
        let seen = again.inspect("long").await.unwrap();
        assert_eq!(seen.state, VmState::Running);
        assert_eq!(seen.pid, Some(pid));
        assert_eq!(again.pause("long").await.unwrap().state, VmState::Paused);
        assert_eq!(again.resume("long").await.unwrap().state, VmState::Running);
    }
    // The VM survived the drop and keeps counting.
    let before = numbers(&stdout_of(&n.rt, "long")).len();
    let seq = wait_lines(&n.rt, "long", before + 5).await;
    assert_consecutive(&seq);
    assert_eq!(n.rt.inspect("long").await.unwrap().pid, Some(pid));
    // A graceful stop goes through the agent.
    let stopped = n.rt.stop("long", Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(
            stopped.state,
            VmState::Exited {
                signal: Some(15),
                ..
            } | VmState::Exited {
                code: Some(143),
                ..
            } | VmState::Stopped
        ),
        "{:?}",
        stopped.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_repository_is_mounted_and_escapes_are_refused() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    let repo = n.data.path().join("repos/genome");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("input.txt"), "ACGT\n").unwrap();
    // The VM user reads the share through QEMU.
    use std::os::unix::fs::PermissionsExt;
    for p in [n.data.path().join("repos"), repo.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        repo.join("input.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let mut spec = sh(
        "reader",
        "cat /data/input.txt; touch /data/x 2>/dev/null && echo writable || echo read-only; sleep 100000",
    );
    spec.mounts
        .push(MountSpec::parse("genome:/data:ro").unwrap());
    n.rt.start(spec).await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !stdout_of(&n.rt, "reader").contains("read") {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stdout_of(&n.rt, "reader"), "ACGT\nread-only\n");
    // Mounted 9p shares block QEMU's migration: said plainly, nothing hangs.
    let ckpts = vgrid_testkit::temp_dir();
    let err =
        n.rt.checkpoint(
            "reader",
            &ckpts.path().join("c"),
            CheckpointOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::Vm(VmError::NotCheckpointable { .. })),
        "{err}"
    );
    assert!(!ckpts.path().join("c").exists());
    assert_eq!(
        n.rt.inspect("reader").await.unwrap().state,
        VmState::Running
    );

    // Escapes: `..`, and a symlink leading out of the allowed root.
    std::os::unix::fs::symlink("/etc", n.data.path().join("repos/etc")).unwrap();
    for bad in ["../vms:/data", "etc:/data", "/etc:/data"] {
        let mut spec = sh("escape", "true");
        spec.mounts.push(MountSpec::parse(bad).unwrap());
        let err = n.rt.start(spec).await.unwrap_err();
        assert!(
            matches!(err, StartError::HostPath(FsError::Escape { .. })),
            "{bad}: {err}"
        );
    }
    assert_eq!(n.rt.names().unwrap(), vec!["reader".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reaches_the_host_and_a_published_port_reaches_the_guest() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    // Outbound: a server on the host's loopback, reached through passt's
    // gateway mapping (no traffic leaves the machine).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 512];
        let _ = conn.read(&mut req);
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhost!\n")
            .unwrap();
    });
    // Inbound: a free host port published to the guest's port 8000.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "gw=$(ip -4 route | awk '/^default/ {{print $3}}'); wget -q -O - http://$gw:{port}/; \
         mkdir -p /tmp/www; echo guest-says-hi > /tmp/www/index.html; \
         exec httpd -f -p 8000 -h /tmp/www"
    );
    let mut spec = sh("net", &script);
    spec.network = true;
    spec.publish.push(PortMap {
        host: host_port,
        guest: 8000,
    });
    n.rt.start(spec).await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !stdout_of(&n.rt, "net").contains("host!") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stderr_of(&n.rt, "net")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.join().unwrap();
    // The guest's listener may not be up yet: retry until it answers.
    let mut answer = String::new();
    while !answer.contains("guest-says-hi") {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer: {answer:?}"
        );
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 256];
            let mut got = Vec::new();
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            answer = String::from_utf8_lossy(&got).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Answers one HTTP request on `listener` with `body`, in a thread that
/// ends after answering.
fn answer_once(listener: std::net::TcpListener, body: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 512];
        let _ = conn.read(&mut req);
        let reply = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(reply.as_bytes()).unwrap();
    })
}

/// The live passt of VM `name` under `data`, if any.
fn passt_of(data: &Path, name: &str) -> Option<i32> {
    let dir = data.join("vms").join(name);
    let pid: i32 = std::fs::read_to_string(dir.join("passt.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    (state != "Z").then_some(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_vm_runs_is_checkpointed_and_restored_in_private_data_directories() {
    let Some(stock) = setup() else { return };
    let a = node(&stock);
    let b = node(&stock);
    // Private, as `mktemp -d` makes them: when vgrid is root, QEMU and
    // passt run as the VM user, who cannot enter them.
    use std::os::unix::fs::PermissionsExt;
    for n in [&a, &b] {
        let mode = std::fs::metadata(n.data.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    // The guest fetches from the host once before the checkpoint and,
    // every tenth step of its counter, tries a second port that only
    // answers after the restore.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let before_port = listener.local_addr().unwrap().port();
    let before = answer_once(listener, "before!\n");
    let after_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "gw=$(ip -4 route | awk '/^default/ {{print $3}}'); wget -q -O - http://$gw:{before_port}/; \
         i=0; while :; do echo $i; i=$((i+1)); \
         [ $((i % 10)) = 0 ] && wget -q -O - http://$gw:{after_port}/ 2>/dev/null; sleep 0.1; done"
    );
    let mut spec = sh("net", &script);
    spec.network = true;
    a.rt.start(spec).await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !stdout_of(&a.rt, "net").contains("before!") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stderr_of(&a.rt, "net")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    before.join().unwrap();
    wait_lines(&a.rt, "net", 5).await;
    let passt = passt_of(a.data.path(), "net").expect("passt runs");

    let ckpts = vgrid_testkit::temp_dir();
    let ck = ckpts.path().join("net");
    a.rt.checkpoint("net", &ck, CheckpointOptions::default())
        .await
        .unwrap();
    let saved = numbers(&vgrid_testkit::stdout_of(&vgrid_testkit::read_messages(
        &ck.join("agent.out"),
    )));
    a.rt.kill("net").await.unwrap();
    // passt ends with its QEMU (the link closes).
    vgrid_testkit::wait_for("passt to end with QEMU", LIMIT, || {
        passt_of(a.data.path(), "net").is_none()
    })
    .unwrap_or_else(|e| panic!("{e}: passt {passt} {}", process_detail(passt)));

    let restored =
        b.rt.restore(&ck, "net2", RestoreOptions::default())
            .await
            .unwrap();
    assert_eq!(restored.vm.state, VmState::Running);
    let listener = std::net::TcpListener::bind(("127.0.0.1", after_port)).unwrap();
    let after = answer_once(listener, "after!\n");
    while !stdout_of(&b.rt, "net2").contains("after!") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stderr_of(&b.rt, "net2")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    after.join().unwrap();
    let seq = numbers(&stdout_of(&b.rt, "net2"));
    assert!(seq.len() > saved.len(), "{seq:?}");
    assert_consecutive(&seq);

    // A restarted vgrid reattaches to the VM and its passt.
    let passt = passt_of(b.data.path(), "net2").expect("passt runs");
    {
        let again = runtime(b.data.path());
        assert_eq!(again.inspect("net2").await.unwrap().state, VmState::Running);
    }
    assert_eq!(passt_of(b.data.path(), "net2"), Some(passt));
    b.rt.stop("net2", Duration::from_secs(5)).await.unwrap();
    vgrid_testkit::wait_for("passt to end with the VM", LIMIT, || {
        passt_of(b.data.path(), "net2").is_none()
    })
    .unwrap_or_else(|e| panic!("{e}: passt {passt} {}", process_detail(passt)));
}

/// What a process is doing and holds, for a failure message.
fn process_detail(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path()).unwrap_or_default();
                    format!(
                        "{} -> {}",
                        e.file_name().to_string_lossy(),
                        target.display()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}\nfds: {fds:?}",
        status.lines().take(8).collect::<Vec<_>>().join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_files_go_in_and_out_and_the_vm_stays_checkpointable() {
    let Some(stock) = setup() else { return };
    let n = node(&stock);
    let inputs = n.data.path().join("repos/inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("words.txt"), "pear\napple\n").unwrap();
    let mut spec = sh(
        "stager",
        "sort words.txt > sorted.txt; dd if=/dev/zero of=big.bin bs=1M count=16 2>/dev/null; echo sorted; sleep 15",
    );
    // A 16 MiB output takes the guest a while to copy out: the exit must
    // not be reported before it is all in the share.
    spec.task.staging = Some(vgrid_vm::StagingSpec {
        inputs: vec![inputs.join("words.txt")],
        outputs: vec!["sorted.txt".into(), "big.bin".into()],
        input_dir: None,
    });
    n.rt.start(spec).await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !stdout_of(&n.rt, "stager").contains("sorted") {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The staging share is not mounted while the command runs, so QEMU
    // can save the VM.
    let ckpts = vgrid_testkit::temp_dir();
    n.rt.checkpoint(
        "stager",
        &ckpts.path().join("c"),
        CheckpointOptions::default(),
    )
    .await
    .unwrap();
    // The node agent copies outputs from the share as soon as it sees the
    // exit, while the guest is still powering off: look the same way.
    let exited = loop {
        let info = n.rt.inspect("stager").await.unwrap();
        if !info.state.is_live() {
            break info.state;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stage = n.rt.stage_dir("stager").unwrap();
    let big = std::fs::metadata(stage.join("big.bin")).map(|m| m.len());
    assert_eq!(
        big.ok(),
        Some(16 << 20),
        "all of big.bin when the exit is seen"
    );
    assert_eq!(
        std::fs::read_to_string(stage.join("sorted.txt")).unwrap(),
        "apple\npear\n"
    );
    assert_eq!(
        exited,
        VmState::Exited {
            code: Some(0),
            signal: None
        }
    );
    n.rt.wait("stager").await.unwrap();
}

#[test]
fn the_accelerator_probe_recognises_a_booting_kernel() {
    let Some(stock) = setup() else { return };
    let kernel = stock.image.kernel().unwrap();
    let tools = vgrid_vm::host::HostTools::discover(None).unwrap();
    // Under TCG the stock kernel always boots: the probe must see it.
    vgrid_vm::accel::boots_linux(
        &tools,
        &kernel,
        vgrid_vm::Accel::Tcg,
        Duration::from_secs(300),
    )
    .unwrap();
    // Something that is not a kernel is refused with QEMU's reason.
    let junk = vgrid_testkit::temp_dir();
    let not_kernel = junk.path().join("junk");
    std::fs::write(&not_kernel, b"not a kernel").unwrap();
    let err = vgrid_vm::accel::boots_linux(
        &tools,
        &not_kernel,
        vgrid_vm::Accel::Tcg,
        Duration::from_secs(300),
    )
    .unwrap_err();
    assert!(err.contains("QEMU exited"), "{err}");
    // The node's choice (cached per boot) comes with its reason.
    let n = node(&stock);
    let choice = n.rt.accel();
    eprintln!(
        "this host runs VMs with {:?}: {}",
        choice.accel, choice.reason
    );
    assert!(!choice.reason.is_empty());
    if !std::path::Path::new("/dev/kvm").exists() {
        assert_eq!(choice.accel, vgrid_vm::Accel::Tcg);
    }
}
