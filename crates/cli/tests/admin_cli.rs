//! Administrators' verbs and why a job waits, through the `vgrid` binary
//! against a real `vgrid serve` (TLS, SQLite), without a node agent (the
//! drain of a node with a running job is tested with the controller's
//! scripted agent, `crates/controller/src/tests/admin.rs`).

mod common;

use std::time::Duration;

use common::{failed, ok, run, serve};

#[test]
fn users_are_listed_removed_and_tokens_rotated_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let _server = serve(data);
    let alice = ok(run(data, None, &["users", "add", "alice"]));
    let bob = ok(run(data, None, &["users", "add", "bob"]));

    // A job no node can hold waits, and `show` says why.
    let job = data.join("gpu.toml");
    std::fs::write(
        &job,
        "image = \"tiny\"\ncommand = [\"/bin/true\"]\nrequirements = \"cores >= 1 && gpus >= 1\"\n",
    )
    .expect("job file");
    let id = ok(run(
        data,
        Some(&alice),
        &["submit", job.to_str().expect("utf-8")],
    ));
    let mut shown = String::new();
    for _ in 0..200 {
        shown = ok(run(data, Some(&alice), &["show", &id]));
        if shown.contains("why it waits: requirements") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(shown.contains("why it waits: requirements"), "{shown}");
    assert!(shown.contains("expected start: unknown"), "{shown}");
    assert!(
        shown.contains("requirement `gpus >= 1`: 0 of 0 nodes fail it"),
        "{shown}"
    );
    let ps = ok(run(data, Some(&alice), &["ps"]));
    assert!(ps.contains("START") && ps.contains("requirements"), "{ps}");

    let ls = ok(run(data, None, &["users", "ls"]));
    assert!(ls.contains("alice") && ls.contains("bob"), "{ls}");
    assert!(failed(run(data, Some(&bob), &["users", "ls"])).contains("admin"));
    let busy = failed(run(data, None, &["users", "rm", "alice"]));
    assert!(busy.contains("cancel them first"), "{busy}");
    ok(run(data, Some(&alice), &["cancel", &id]));
    ok(run(data, None, &["users", "rm", "alice"]));
    assert!(failed(run(data, Some(&alice), &["ps"])).contains("not valid"));

    let new = ok(run(data, None, &["users", "token", "rotate", "bob"]));
    assert!(new.starts_with("vgt_") && new != bob);
    assert!(failed(run(data, Some(&bob), &["ps"])).contains("not valid"));
    ok(run(data, Some(&new), &["ps"]));
    ok(run(data, None, &["users", "token", "revoke", "bob"]));
    assert!(failed(run(data, Some(&new), &["ps"])).contains("not valid"));
    let users: serde_json::Value =
        serde_json::from_str(&ok(run(data, None, &["users", "ls", "--json"]))).expect("json");
    let names: Vec<&str> = users
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    assert!(users[1]["token_revoked_unix_ms"].is_i64());

    let missing = failed(run(data, None, &["nodes", "drain", "nosuch"]));
    assert!(
        missing.contains("node `nosuch` does not exist"),
        "{missing}"
    );
}
