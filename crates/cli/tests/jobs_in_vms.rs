//! Jobs in real QEMU VMs through `vgrid serve` (controller, API and local
//! node agent in one process) and the CLI. Skipped, saying why, when QEMU or
//! the stock image is missing; under `CI=true` that fails instead.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn vgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
}

/// A `vgrid serve` process, SIGKILLed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path) -> Server {
    let _ = std::fs::remove_file(data.join("url"));
    let log = std::fs::File::create(data.join("serve.log")).expect("log file");
    let server = Server(
        vgrid()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cpus",
                "2",
                "--memory-mb",
                "2048",
            ])
            .env("VGRID_DATA_DIR", data)
            .env("VGRID_LOG", "info")
            .env_remove("VGRID_URL")
            .env_remove("VGRID_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("vgrid serve starts"),
    );
    vgrid_testkit::wait_for("vgrid serve to listen", Duration::from_secs(60), || {
        std::fs::read_to_string(data.join("url")).is_ok_and(|u| u.starts_with("http://"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    server
}

fn server_log(data: &Path) -> String {
    std::fs::read_to_string(data.join("serve.log")).unwrap_or_default()
}

fn run(data: &Path, args: &[&str]) -> Output {
    vgrid()
        .args(args)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN")
        .output()
        .expect("vgrid runs")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "vgrid {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log(data)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn submit(data: &Path, name: &str, text: &str) -> String {
    let file = data.join(name);
    std::fs::write(&file, text).expect("job file");
    ok(data, &["submit", file.to_str().expect("utf-8")])
        .trim()
        .to_string()
}

fn show(data: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(data, &["show", id, "--json"])).expect("json")
}

#[test]
fn a_job_runs_in_a_vm_and_its_output_and_exit_status_come_back() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let _server = serve(data);
    let id = submit(
        data,
        "hello.toml",
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nenv = { WHO = \"vgrid\" }\ncommand = [\"/bin/sh\", \"-c\", \"echo hello from $WHO; exit 3\"]\n",
    );
    let waited = run(data, &["wait", &id]);
    assert_eq!(waited.status.code(), Some(3), "{}", server_log(data));
    assert_eq!(ok(data, &["logs", &id]), "hello from vgrid\n");
    let job = show(data, &id);
    let states: Vec<&str> = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["pending", "staging", "booting", "running", "failed"]
    );
    assert_eq!(job["job"]["node"], "local");
}

#[test]
fn a_best_effort_job_preempted_by_a_normal_job_resumes_with_identical_output() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let _server = serve(data);
    let count = "i=0; while [ $i -lt 25 ]; do i=$((i+1)); echo $i; sleep 1; done";
    let be = submit(
        data,
        "count.toml",
        &format!(
            "image = \"tiny\"\ncpus = 2\nmemory_mb = 256\nclass = \"best-effort\"\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    vgrid_testkit::wait_for("the count to reach 5", Duration::from_secs(600), || {
        ok(data, &["logs", &be]).lines().count() >= 5
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    let urgent = submit(
        data,
        "urgent.toml",
        "image = \"tiny\"\ncpus = 2\nmemory_mb = 256\ncommand = [\"/bin/echo\", \"urgent\"]\n",
    );
    let done = run(data, &["wait", &urgent]);
    assert!(done.status.success(), "{}", server_log(data));
    assert_eq!(ok(data, &["logs", &urgent]), "urgent\n");
    let done = run(data, &["wait", &be]);
    assert!(done.status.success(), "{}", server_log(data));
    let expected: String = (1..=25).map(|i| format!("{i}\n")).collect();
    assert_eq!(ok(data, &["logs", &be]), expected, "{}", server_log(data));
    let job = show(data, &be);
    assert!(
        !job["checkpoints"]
            .as_array()
            .expect("checkpoints")
            .is_empty()
    );
    let states: Vec<&str> = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["state"].as_str())
        .collect();
    assert!(states.contains(&"preempted"), "{states:?}");
    assert_eq!(
        states.iter().filter(|s| **s == "running").count(),
        2,
        "{states:?}"
    );
}
