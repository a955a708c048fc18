//! Jobs in real QEMU VMs through `vgrid serve` (controller, API and local
//! node agent in one process) and the CLI. Skipped, saying why, when QEMU or
//! the stock image is missing; under `CI=true` that fails instead.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn vgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
}

use vgrid_testkit::local::{Local as Server, kill_vms};

fn serve(data: &Path) -> Server {
    serve_with(data, &["--cpus", "2", "--memory-mb", "2048"])
}

/// `vgrid serve` on a free port with `extra` arguments; waits until it
/// listens.
fn serve_with(data: &Path, extra: &[&str]) -> Server {
    Server::serve(Path::new(env!("CARGO_BIN_EXE_vgrid")), data, extra)
}

/// A `vgrid agent` for the controller whose state is in `controller`.
fn agent(controller: &Path, data: &Path, name: &str) -> Server {
    Server::agent(
        Path::new(env!("CARGO_BIN_EXE_vgrid")),
        controller,
        data,
        name,
    )
}

fn history_states(job: &serde_json::Value) -> Vec<String> {
    job["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["state"].as_str().map(str::to_string))
        .collect()
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

/// `vgrid wait ID`, which must succeed; otherwise the failure shows what
/// `wait` said, the job with its history and the server's log.
fn wait_done(data: &Path, id: &str) {
    let done = run(data, &["wait", id]);
    assert!(
        done.status.success(),
        "vgrid wait {id}: {}\n{:#}\n{}",
        String::from_utf8_lossy(&done.stderr),
        show(data, id),
        server_log(data)
    );
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
    assert_eq!(
        waited.status.code(),
        Some(3),
        "{}\n{:#}\n{}",
        String::from_utf8_lossy(&waited.stderr),
        show(data, &id),
        server_log(data)
    );
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
    wait_done(data, &urgent);
    assert_eq!(ok(data, &["logs", &urgent]), "urgent\n");
    wait_done(data, &be);
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

#[test]
fn an_agent_killed_with_sigkill_loses_its_job_which_resumes_on_another_from_its_checkpoint() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let controller_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let a_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let b_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = controller_dir.path();
    let _server = serve_with(
        data,
        &[
            "--no-agent",
            "--heartbeat-ms",
            "500",
            "--lost-after-ms",
            "3000",
        ],
    );
    let node_a = agent(data, a_dir.path(), "node-a");
    let count = "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo $i; sleep 1; done";
    let id = submit(
        data,
        "count.toml",
        &format!(
            "image = \"tiny\"\ncpus = 2\nmemory_mb = 256\nclass = \"best-effort\"\ncheckpoint_interval_s = 4\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    vgrid_testkit::wait_for("a periodic checkpoint", Duration::from_secs(600), || {
        let job = show(data, &id);
        !job["checkpoints"].as_array().is_none_or(Vec::is_empty)
            && ok(data, &["logs", &id]).lines().count() >= 8
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    // Node A dies without notice: its agent and its VMs are SIGKILLed.
    drop(node_a);
    kill_vms(a_dir.path());
    let _node_b = agent(data, b_dir.path(), "node-b");
    wait_done(data, &id);
    let expected: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(ok(data, &["logs", &id]), expected, "{}", server_log(data));
    let job = show(data, &id);
    assert_eq!(job["job"]["node"], "node-b");
    let lost = job["history"].as_array().expect("history").iter().any(|h| {
        h["reason"]
            .as_str()
            .is_some_and(|r| r.contains("node was lost"))
    });
    assert!(lost, "{:?}", job["history"]);
    // It resumed: the second run restored a checkpoint.
    let reasons: Vec<&str> = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("resuming from checkpoint")),
        "{reasons:?}"
    );
}

#[test]
fn a_controller_killed_with_sigkill_restarts_with_nothing_lost_and_reattaches_its_vms() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let server = serve(data);
    let count = "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo $i; sleep 1; done";
    let running = submit(
        data,
        "count.toml",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    let waiting = submit(
        data,
        "held.toml",
        "image = \"tiny\"\ncpus = 2\nmemory_mb = 256\ncommand = [\"/bin/echo\", \"later\"]\n",
    );
    ok(data, &["hold", &waiting]);
    vgrid_testkit::wait_for("the count to reach 4", Duration::from_secs(600), || {
        ok(data, &["logs", &running]).lines().count() >= 4
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    // SIGKILL the whole server (controller and local agent); the VM lives.
    server.crash();
    let _server = serve(data);
    let held = show(data, &waiting);
    assert_eq!(held["job"]["state"], "held", "accepted changes survive");
    ok(data, &["release", &waiting]);
    wait_done(data, &running);
    let expected: String = (1..=20).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        ok(data, &["logs", &running]),
        expected,
        "{}",
        server_log(data)
    );
    let states = history_states(&show(data, &running));
    assert_eq!(
        states.iter().filter(|s| *s == "staging").count(),
        1,
        "reattached, not started again: {states:?}"
    );
    wait_done(data, &waiting);
    assert_eq!(ok(data, &["logs", &waiting]), "later\n");
}

#[test]
fn a_job_whose_qemu_is_sigkilled_resumes_from_the_checkpoint_its_user_took() {
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
    // No periodic checkpoints: the only one is `vgrid checkpoint`'s.
    let id = submit(
        data,
        "count.toml",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    vgrid_testkit::wait_for("the count to reach 5", Duration::from_secs(600), || {
        ok(data, &["logs", &id]).lines().count() >= 5
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    ok(data, &["checkpoint", &id]);
    vgrid_testkit::wait_for("the user's checkpoint", Duration::from_secs(600), || {
        let job = show(data, &id);
        !job["checkpoints"].as_array().is_none_or(Vec::is_empty) && job["job"]["state"] == "running"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    // QEMU dies; the agent and the node live on.
    kill_vms(data);
    wait_done(data, &id);
    let expected: String = (1..=25).map(|i| format!("{i}\n")).collect();
    assert_eq!(ok(data, &["logs", &id]), expected, "{}", server_log(data));
    let reasons: Vec<String> = show(data, &id)["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str().map(str::to_string))
        .collect();
    let said = |prefix: &str| reasons.iter().any(|r| r.starts_with(prefix));
    assert!(
        said("requeued, VMs lost") && said("resuming from checkpoint 1 "),
        "{reasons:?}"
    );
}

#[test]
fn migrate_moves_a_running_job_to_another_agent_without_losing_its_output() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let controller_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let a_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let b_dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = controller_dir.path();
    let _server = serve_with(data, &["--no-agent"]);
    let _node_a = agent(data, a_dir.path(), "node-a");
    let count = "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo $i; sleep 1; done";
    let id = submit(
        data,
        "count.toml",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    vgrid_testkit::wait_for("the count to reach 5", Duration::from_secs(600), || {
        ok(data, &["logs", &id]).lines().count() >= 5
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    let _node_b = agent(data, b_dir.path(), "node-b");
    vgrid_testkit::wait_for("node-b to register", Duration::from_secs(60), || {
        ok(data, &["nodes"]).contains("node-b")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", server_log(data)));
    let moved = ok(data, &["migrate", &id, "--to", "node-b"]);
    assert!(moved.contains("migrating"), "{moved}");
    wait_done(data, &id);
    let expected: String = (1..=20).map(|i| format!("{i}\n")).collect();
    assert_eq!(ok(data, &["logs", &id]), expected, "{}", server_log(data));
    let job = show(data, &id);
    assert_eq!(job["job"]["node"], "node-b");
    assert!(history_states(&job).iter().any(|s| s == "migrating"));
    // It resumed on node-b from the checkpoint the move took, not from the
    // beginning (the output alone cannot tell: a resume rewinds it).
    let history = job["history"].as_array().expect("history");
    let resumed_on_b = history.iter().any(|h| {
        h["state"] == "staging"
            && h["node"] == "node-b"
            && h["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("resuming from checkpoint"))
    });
    assert!(resumed_on_b, "{history:?}");
    let starts_on_b = history
        .iter()
        .filter(|h| {
            h["state"] == "staging"
                && h["node"] == "node-b"
                && h["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("resuming") || r.starts_with("placed"))
        })
        .count();
    assert_eq!(starts_on_b, 1, "{history:?}");
    // node-b has a data directory of its own: the checkpoint came to it
    // through the controller's store, as its staging step.
    let fetched = history.iter().any(|h| {
        h["node"] == "node-b"
            && h["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("fetching checkpoint 1"))
    });
    assert!(fetched, "{history:?}");
}
