//! A VM kept running between tasks (`vgrid_vm::exec`) on real QEMU with the
//! stock guest: several runs in one VM share its memory (/tmp), each run's
//! output and exit status are its own, and a kept VM saved with a
//! checkpoint and restored goes on serving runs with that memory intact.

use std::sync::Arc;
use std::time::Duration;

use vgrid_vm::checkpoint::{CheckpointOptions, RestoreOptions};
use vgrid_vm::exec::{RunEnd, RunReader};
use vgrid_vm::{Runtime, RuntimeConfig, StagingSpec, StoreImages, Task, VmSpec};

/// A guard against hanging only (TCG boots take seconds), not a timing
/// assertion.
const LIMIT: Duration = Duration::from_secs(600);

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

fn node() -> Option<Node> {
    vgrid_testkit::require_qemu()?;
    let stock = vgrid_testkit::stock_image()?;
    let data = vgrid_testkit::data_dir_with_stock_image(&stock);
    let mut cfg = RuntimeConfig::new(data.path());
    cfg.start_timeout = LIMIT;
    let images = StoreImages::open(data.path()).expect("image store");
    let rt = Runtime::open(cfg, Arc::new(images)).expect("runtime");
    Some(Node { rt, data })
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Reads the run to its end; returns its output and end.
async fn finish(mut reader: RunReader) -> (String, RunEnd) {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        out.extend(reader.drain().expect("read agent.out"));
        if let Some(end) = reader.end() {
            return (String::from_utf8_lossy(&out).into_owned(), end.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {} did not end",
            reader.run()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_share_a_kept_vm_and_survive_a_save_and_restore() {
    let Some(node) = node() else {
        return;
    };
    let rt = &node.rt;
    let mut spec = VmSpec::new(
        "kept",
        "tiny",
        sh("echo one > /tmp/mark; echo first; exit 3"),
    );
    spec.network = false;
    let (out, end) = finish(rt.start_kept(spec, 1).await.expect("start_kept")).await;
    assert_eq!(out, "first\n");
    assert_eq!(end.status.shell_code(), 3);
    assert_eq!(end.error, None);
    let pid_before = rt.inspect("kept").await.expect("inspect").pid;
    assert!(pid_before.is_some(), "the VM is still running");

    // Run 2 sees run 1's file in the guest's memory (/tmp is a tmpfs).
    let mut task = Task::new(sh("cat /tmp/mark; echo two >> /tmp/mark; echo err >&2"));
    task.env.insert("X".into(), "y".into());
    let (out, end) = finish(rt.exec("kept", 2, &task).await.expect("exec 2")).await;
    assert_eq!(out, "one\nerr\n");
    assert_eq!(end.status.shell_code(), 0);
    assert_eq!(rt.inspect("kept").await.expect("inspect").pid, pid_before);

    // A run whose command does not exist ends with 127, like a fresh VM's.
    let (_, end) = finish(
        rt.exec("kept", 3, &Task::new(vec!["/no/such".into()]))
            .await
            .expect("exec 3"),
    )
    .await;
    assert_eq!(end.status.shell_code(), 127);

    // Staging through the kept VM's share: an input in, an output back.
    let repos = node.data.path().join("repos");
    std::fs::create_dir_all(&repos).expect("repos");
    std::fs::write(repos.join("in.txt"), "staged\n").expect("input");
    let mut task = Task::new(sh("tr a-z A-Z < in.txt > out.txt"));
    task.workdir = Some("/work/job4".into());
    task.staging = Some(StagingSpec {
        inputs: vec![repos.join("in.txt")],
        outputs: vec!["out.txt".into()],
        input_dir: None,
    });
    let (_, end) = finish(rt.exec("kept", 4, &task).await.expect("exec 4")).await;
    assert_eq!(end.error, None);
    let stage = rt.stage_dir("kept").expect("stage dir");
    assert_eq!(
        std::fs::read_to_string(stage.join("out.txt")).expect("output staged out"),
        "STAGED\n"
    );

    // Save (checkpoint and stop), restore as a new QEMU, and run again.
    let ck = node.data.path().join("ck");
    rt.checkpoint(
        "kept",
        &ck,
        CheckpointOptions {
            stop: true,
            ..Default::default()
        },
    )
    .await
    .expect("checkpoint with stop");
    assert_eq!(rt.inspect("kept").await.expect("inspect").pid, None);
    let restored = rt
        .restore(&ck, "kept2", RestoreOptions::default())
        .await
        .expect("restore");
    assert_ne!(restored.vm.pid, pid_before, "a new QEMU process");
    rt.set_guest_clock("kept2").await.expect("set the clock");
    let (out, end) = finish(
        rt.exec("kept2", 5, &Task::new(sh("cat /tmp/mark")))
            .await
            .expect("exec after restore"),
    )
    .await;
    assert_eq!(out, "one\ntwo\n");
    assert_eq!(end.status.shell_code(), 0);

    // A stop powers the kept VM off.
    let info = rt
        .stop("kept2", Duration::from_secs(5))
        .await
        .expect("stop");
    assert_eq!(info.pid, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_started_for_one_command_refuses_runs() {
    let Some(node) = node() else {
        return;
    };
    let mut spec = VmSpec::new("once", "tiny", sh("sleep 600"));
    spec.network = false;
    spec.task.staging = Some(StagingSpec::default());
    node.rt.start(spec).await.expect("start");
    let err = node
        .rt
        .exec("once", 1, &Task::new(sh("true")))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not kept running"), "{err}");
    let _ = node.rt.kill("once").await;
}
