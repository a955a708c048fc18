//! The three VM modes (GridWay's persistent VMs, save/restore and
//! stop/start) through `vgrid serve` on real QEMU. The same three tasks run
//! in each mode; task 1 leaves a file in the guest's /tmp (memory only), and
//! the later tasks show whether they ran in the same VM (persistent), in a
//! saved and restored VM (save-restore) or in a fresh one (stop-start). Each
//! job's output and exit status are its own in every mode. Skipped, saying
//! why, when QEMU or the stock image is missing; under `CI=true` that fails
//! instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A guard against hanging only (TCG boots take seconds).
const LIMIT: Duration = Duration::from_secs(600);

use vgrid_testkit::local::Local as Server;

fn serve(data: &Path) -> Server {
    Server::serve(
        Path::new(env!("CARGO_BIN_EXE_vgrid")),
        data,
        &["--cpus", "2", "--memory-mb", "2048"],
    )
}

fn log_of(data: &Path) -> String {
    std::fs::read_to_string(data.join("serve.log")).unwrap_or_default()
}

fn vgrid(data: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgrid"));
    cmd.args(args)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN");
    if let Some(t) = token {
        cmd.env("VGRID_TOKEN", t);
    }
    cmd.output().expect("vgrid runs")
}

fn ok(data: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = vgrid(data, token, args);
    assert!(
        out.status.success(),
        "vgrid {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log_of(data)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vm_dirs(data: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data.join("vms"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The kept VMs' directories (`k<entry>-<generation>`) with a live QEMU.
fn live_kept_vms(data: &Path) -> Vec<(String, i32)> {
    vm_dirs(data)
        .into_iter()
        .filter_map(|d| {
            let name = d.file_name()?.to_string_lossy().into_owned();
            let pid = read_pid(&d.join("qemu.pid"))?;
            (name.starts_with('k') && alive(pid)).then_some((name, pid))
        })
        .collect()
}

/// One finished job: its output, exit status and history reasons.
struct Ran {
    /// The output's lines, sorted: stdout and stderr are two pipes in the
    /// guest, so their relative order is not fixed.
    output: String,
    status: Option<i32>,
    reasons: Vec<String>,
}

fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Submits a job running `script` in `mode`, waits for it, and reads it.
fn run_task(data: &Path, token: Option<&str>, mode: &str, n: u32, script: &str) -> Ran {
    let file = data.join(format!("{mode}-{n}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{mode}-{n}\"\nimage = \"tiny\"\ncpus = 1\nmemory_mb = 256\nmode = \"{mode}\"\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\n"
        ),
    )
    .expect("job file");
    let id = ok(data, token, &["submit", file.to_str().expect("utf-8")])
        .trim()
        .to_string();
    let waited = vgrid(data, token, &["wait", &id]);
    let output = ok(data, token, &["logs", &id]);
    let job: serde_json::Value =
        serde_json::from_str(&ok(data, token, &["show", &id, "--json"])).expect("json");
    let reasons = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str().map(str::to_string))
        .collect();
    Ran {
        output: sorted_lines(&output),
        status: waited.status.code(),
        reasons,
    }
}

/// The three tasks: the first leaves a mark in /tmp and fails with 3, the
/// second reads the mark, adds to it and writes to stderr, the third reads.
const TASKS: [&str; 3] = [
    "cat /tmp/mark 2>/dev/null || echo no-mark; echo m1 > /tmp/mark; exit 3",
    "cat /tmp/mark 2>/dev/null || echo no-mark; echo m2 >> /tmp/mark; echo to-stderr >&2",
    "cat /tmp/mark 2>/dev/null || echo no-mark",
];

fn says(ran: &Ran, words: &str) -> bool {
    ran.reasons.iter().any(|r| r.contains(words))
}

#[test]
fn persistent_save_restore_and_stop_start_vms_between_tasks() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let _server = serve(data);

    // persistent: one VM, kept running, serves all three tasks.
    let t1 = run_task(data, None, "persistent", 1, TASKS[0]);
    assert_eq!((t1.output.as_str(), t1.status), ("no-mark\n", Some(3)));
    assert!(says(&t1, "VM booted"), "{:?}", t1.reasons);
    let kept = live_kept_vms(data);
    assert_eq!(kept.len(), 1, "one VM kept running after task 1: {kept:?}");
    let t2 = run_task(data, None, "persistent", 2, TASKS[1]);
    assert_eq!(
        (t2.output.as_str(), t2.status),
        ("m1\nto-stderr\n", Some(0))
    );
    assert!(says(&t2, "reused running VM"), "{:?}", t2.reasons);
    let t3 = run_task(data, None, "persistent", 3, TASKS[2]);
    assert_eq!((t3.output.as_str(), t3.status), ("m1\nm2\n", Some(0)));
    assert!(says(&t3, "reused running VM"), "{:?}", t3.reasons);
    assert_eq!(
        live_kept_vms(data),
        kept,
        "the same QEMU process served every task"
    );

    // Another owner never gets that VM.
    let bob = ok(data, None, &["users", "add", "bob"]).trim().to_string();
    let b1 = run_task(data, Some(&bob), "persistent", 4, TASKS[2]);
    assert_eq!((b1.output.as_str(), b1.status), ("no-mark\n", Some(0)));
    assert!(says(&b1, "VM booted"), "{:?}", b1.reasons);

    // save-restore: after each task the VM is saved and stopped; the next
    // task restores it in a new QEMU process, /tmp intact.
    let before: Vec<String> = live_kept_vms(data).into_iter().map(|(n, _)| n).collect();
    let s1 = run_task(data, None, "save-restore", 1, TASKS[0]);
    assert_eq!((s1.output.as_str(), s1.status), ("no-mark\n", Some(3)));
    assert!(says(&s1, "VM booted"), "{:?}", s1.reasons);
    vgrid_testkit::wait_for("the VM of task 1 to be saved", LIMIT, || {
        saved_checkpoints(data) == 1 && live_kept_vms(data).iter().all(|(n, _)| before.contains(n))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_of(data)));
    let s2 = run_task(data, None, "save-restore", 2, TASKS[1]);
    assert_eq!(
        (s2.output.as_str(), s2.status),
        ("m1\nto-stderr\n", Some(0))
    );
    assert!(says(&s2, "restored saved VM"), "{:?}", s2.reasons);
    vgrid_testkit::wait_for("the VM of task 2 to be saved", LIMIT, || {
        saved_checkpoints(data) == 2
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_of(data)));
    let s3 = run_task(data, None, "save-restore", 3, TASKS[2]);
    assert_eq!((s3.output.as_str(), s3.status), ("m1\nm2\n", Some(0)));
    assert!(says(&s3, "restored saved VM"), "{:?}", s3.reasons);

    // stop-start: a fresh VM every time, so the mark is never there.
    for (n, task) in TASKS.iter().enumerate() {
        let r = run_task(data, None, "stop-start", n as u32 + 1, task);
        let expected = match n {
            0 => ("no-mark\n", Some(3)),
            1 => ("no-mark\nto-stderr\n", Some(0)),
            _ => ("no-mark\n", Some(0)),
        };
        assert_eq!((r.output.as_str(), r.status), expected);
        assert!(says(&r, "VM booted"), "{:?}", r.reasons);
    }
}

/// Checkpoints written by saves of kept VMs (`kept/<entry>/<n>/`).
fn saved_checkpoints(data: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data.join("kept")) else {
        return 0;
    };
    entries
        .flatten()
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|c| c.path().join("manifest.json").exists())
        .count()
}
