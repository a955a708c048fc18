//! The CLI's contract with scripts, against a real `vgrid serve` over TLS:
//! exit codes by kind of failure (docs/api.md, "The CLI: exit codes and
//! JSON"), `--json` on every command that prints, several ids per control
//! verb, and `ps` filters. No VM is started: without a node, jobs stay
//! pending.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

// The codes of crates/cli/src/exit.rs, written out: a test that imported
// them would not notice a changed number.
const INVALID_INPUT: i32 = 65;
const NOT_FOUND: i32 = 66;
const UNREACHABLE: i32 = 69;
const CONFLICT: i32 = 75;
const FORBIDDEN: i32 = 77;
const CONFIG: i32 = 78;
const USAGE: i32 = 2;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A `vgrid serve` process, SIGKILLed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A controller on a free port with its own data directory and home (so
/// that no credentials file of the machine's user is read).
struct Cluster {
    dir: tempfile::TempDir,
    _server: Server,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        let mut cmd = vgrid_in(dir.path());
        let server = Server(
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-agent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("vgrid serve starts"),
        );
        for _ in 0..600 {
            if std::fs::read_to_string(dir.path().join("data/url"))
                .is_ok_and(|u| u.starts_with("https://"))
            {
                return Cluster {
                    dir,
                    _server: server,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vgrid serve did not write its URL");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        std::fs::read_to_string(self.data().join("url"))
            .expect("url")
            .trim()
            .to_string()
    }

    /// A client command as the holder of `token` (the admin's when None).
    fn run(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = vgrid_in(self.dir.path());
        cmd.args(args);
        if let Some(t) = token {
            cmd.env("VGRID_TOKEN", t);
        }
        cmd.output().expect("vgrid runs")
    }

    fn add_user(&self, name: &str) -> String {
        stdout_of(self.run(None, &["users", "add", name]))
    }

    /// Submits examples/hello.toml held (it could not run anyway).
    fn submit_held(&self, token: &str) -> String {
        let hello = examples().join("hello.toml");
        stdout_of(self.run(
            Some(token),
            &["submit", "--hold", hello.to_str().expect("utf-8")],
        ))
    }
}

/// `vgrid` with its data directory and home under `top`, and no
/// controller settings from the environment.
fn vgrid_in(top: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgrid"));
    cmd.env("VGRID_DATA_DIR", top.join("data"))
        .env("HOME", top.join("home"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN")
        .env_remove("VGRID_CA");
    cmd
}

fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn json_of(out: Output) -> Value {
    let text = stdout_of(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts the exit code and returns stderr.
fn exits_with(out: Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    stderr
}

/// A loopback port nobody listens on: bound, then let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn exit_codes_tell_failures_apart() {
    let cluster = Cluster::start();
    let alice = cluster.add_user("alice");
    let bob = cluster.add_user("bob");
    let id = cluster.submit_held(&alice);

    // A job file refused: 65, with the place and the hint.
    let bad = examples().join("bad/wrong-type.toml");
    let err = exits_with(
        cluster.run(Some(&alice), &["submit", bad.to_str().expect("utf-8")]),
        INVALID_INPUT,
    );
    assert!(err.contains("wrong-type.toml:4:8: field `cpus`"), "{err}");
    let typo = cluster.dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "image = \"tiny\"\ncommand = [\"/bin/true\"]\ncores = 2\n",
    )
    .expect("write");
    let err = exits_with(
        cluster.run(Some(&alice), &["submit", typo.to_str().expect("utf-8")]),
        INVALID_INPUT,
    );
    assert!(
        err.contains("typo.toml:3:1: field `cores`: unknown field `cores`: did you mean `cpus`?"),
        "{err}"
    );
    // A job file that is not there: not found, like a job.
    let missing = cluster.dir.path().join("absent.toml");
    exits_with(
        cluster.run(Some(&alice), &["submit", missing.to_str().expect("utf-8")]),
        NOT_FOUND,
    );

    // An unknown job id: 66, for every command that names one.
    for args in [
        &["show", "999"][..],
        &["cancel", "999"],
        &["wait", "999"],
        &["logs", "999"],
    ] {
        let err = exits_with(cluster.run(Some(&alice), args), NOT_FOUND);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
    }

    // Another user's job is not found either (ids reveal nothing); listing
    // another user's jobs is forbidden, as is a wrong token.
    exits_with(cluster.run(Some(&bob), &["show", &id]), NOT_FOUND);
    exits_with(cluster.run(Some(&bob), &["cancel", &id]), NOT_FOUND);
    let err = exits_with(cluster.run(Some(&bob), &["ps", "--all"]), FORBIDDEN);
    assert!(err.contains("admin"), "{err}");
    exits_with(
        cluster.run(Some(&bob), &["ps", "--user", "alice"]),
        FORBIDDEN,
    );
    exits_with(cluster.run(Some("vgt_not-a-token"), &["ps"]), FORBIDDEN);

    // The job's state does not allow it: 75.
    stdout_of(cluster.run(Some(&alice), &["cancel", &id]));
    let err = exits_with(cluster.run(Some(&alice), &["cancel", &id]), CONFLICT);
    assert!(err.contains("already ended"), "{err}");

    // An unreachable controller: a closed port, then a TLS handshake with
    // a controller whose certificate another CA signed.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let mut cmd = vgrid_in(cluster.dir.path());
    let out = cmd
        .args(["ps"])
        .env("VGRID_URL", &closed)
        .env("VGRID_TOKEN", &alice)
        .output()
        .expect("runs");
    let err = exits_with(out, UNREACHABLE);
    assert!(err.contains("cannot reach the vgrid controller"), "{err}");
    let other = cluster.dir.path().join("other-ca");
    vgrid_pki::ServerPki::load_or_create(&other, &["localhost".into()]).expect("another CA");
    let mut cmd = vgrid_in(cluster.dir.path());
    let out = cmd
        .args(["show", &id])
        .env("VGRID_URL", cluster.url())
        .env("VGRID_TOKEN", &alice)
        .env("VGRID_CA", other.join("ca.pem"))
        .output()
        .expect("runs");
    exits_with(out, UNREACHABLE);

    // Settings that cannot work: plain http to another machine.
    let mut cmd = vgrid_in(cluster.dir.path());
    let out = cmd
        .args(["ps"])
        .env("VGRID_URL", "http://192.0.2.1:8080")
        .env("VGRID_TOKEN", &alice)
        .output()
        .expect("runs");
    exits_with(out, CONFIG);

    // A wrong command line stays clap's 2.
    exits_with(cluster.run(Some(&alice), &["cancel"]), USAGE);
    exits_with(
        cluster.run(Some(&alice), &["ps", "--state", "sleeping"]),
        USAGE,
    );
}

#[test]
fn cancel_several_ids_reports_each_and_fails_if_one_failed() {
    let cluster = Cluster::start();
    let alice = cluster.add_user("alice");
    let a = cluster.submit_held(&alice);
    let b = cluster.submit_held(&alice);
    let c = cluster.submit_held(&alice);

    let out = cluster.run(Some(&alice), &["cancel", &a, "999", &b]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let err = exits_with(out, NOT_FOUND);
    assert!(err.contains("cancel 999:"), "{err}");
    assert!(
        stdout.contains(&format!("job {a}: cancelled"))
            && stdout.contains(&format!("job {b}: cancelled")),
        "{stdout}"
    );
    // The bad id did not stop the one after it.
    let listed = json_of(cluster.run(Some(&alice), &["ps", "--json"]));
    let state_of = |id: &str| {
        listed
            .as_array()
            .expect("array")
            .iter()
            .find(|j| j["id"].to_string().as_str() == id)
            .map(|j| j["state"].clone())
    };
    assert_eq!(state_of(&a), Some("cancelled".into()));
    assert_eq!(state_of(&b), Some("cancelled".into()));
    assert_eq!(state_of(&c), Some("held".into()));

    // Failures of different kinds: 1. With --json, one entry per id.
    let out = cluster.run(Some(&alice), &["release", &c, &a, "999", "--json"]);
    assert_eq!(out.status.code(), Some(1), "not found and conflict differ");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let entries = doc.as_array().expect("array");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["job"]["state"], "pending");
    assert_eq!(entries[1]["error"]["exit_code"], CONFLICT);
    assert_eq!(entries[1]["error"]["status"], 409);
    assert_eq!(entries[2]["error"]["exit_code"], NOT_FOUND);
    assert_eq!(entries[2]["error"]["error"], "not-found");

    // All fine: 0.
    stdout_of(cluster.run(Some(&alice), &["hold", &c]));
    stdout_of(cluster.run(Some(&alice), &["release", &c]));
}

#[test]
fn every_printing_command_takes_json() {
    let cluster = Cluster::start();
    let added = json_of(cluster.run(None, &["users", "add", "alice", "--json"]));
    assert_eq!(added["name"], "alice");
    let alice = added["token"].as_str().expect("token").to_string();
    assert!(alice.starts_with("vgt_"));

    let hello = examples().join("hello.toml");
    let hello = hello.to_str().expect("utf-8");
    let submitted = json_of(cluster.run(Some(&alice), &["submit", "--hold", "--json", hello]));
    let id = submitted["id"].as_u64().expect("id");
    let ids = id.to_string();

    let listed = json_of(cluster.run(Some(&alice), &["ps", "--json"]));
    assert_eq!(listed[0]["id"], id);
    let shown = json_of(cluster.run(Some(&alice), &["show", &ids, "--json"]));
    assert_eq!(shown["job"]["state"], "held");
    for (verb, state) in [("release", "pending"), ("hold", "held")] {
        let done = json_of(cluster.run(Some(&alice), &[verb, &ids, "--json"]));
        assert_eq!(done[0]["id"], id);
        assert_eq!(done[0]["job"]["state"], state, "{verb}");
    }
    let done = json_of(cluster.run(Some(&alice), &["cancel", &ids, "--json"]));
    assert_eq!(done[0]["job"]["state"], "cancelled");
    // `wait` prints the ended job, and still exits with its status.
    let out = cluster.run(Some(&alice), &["wait", &ids, "--json"]);
    assert_eq!(out.status.code(), Some(1), "a cancelled job has no status");
    let waited: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(waited["state"], "cancelled");

    assert_eq!(
        json_of(cluster.run(None, &["nodes", "--json"])),
        Value::Array(vec![])
    );
    assert!(json_of(cluster.run(None, &["image", "ls", "--json"])).is_array());

    // A credentials file, then logging in with it.
    let file = cluster.dir.path().join("bob.json");
    let file_s = file.to_str().expect("utf-8");
    let added = json_of(cluster.run(
        None,
        &["users", "add", "bob", "--credentials", file_s, "--json"],
    ));
    assert_eq!(added["name"], "bob");
    assert_eq!(added["credentials"], file_s);
    assert!(added.get("token").is_none(), "the token stays in the file");
    let mut login = vgrid_in(cluster.dir.path());
    let logged = json_of(
        login
            .args(["login", file_s, "--json"])
            .output()
            .expect("runs"),
    );
    assert_eq!(logged["name"], "bob");
    assert_eq!(logged["controller"], cluster.url());
    assert!(
        Path::new(logged["credentials"].as_str().expect("path")).exists(),
        "{logged}"
    );
}

#[test]
fn ps_filters_by_state_and_user_and_prints_chosen_columns() {
    let cluster = Cluster::start();
    let alice = cluster.add_user("alice");
    let bob = cluster.add_user("bob");
    let held = cluster.submit_held(&alice);
    let cancelled = cluster.submit_held(&alice);
    stdout_of(cluster.run(Some(&alice), &["cancel", &cancelled]));
    let pending = cluster.submit_held(&alice);
    stdout_of(cluster.run(Some(&alice), &["release", &pending]));
    let bobs = cluster.submit_held(&bob);

    let ids = |out: Output| -> Vec<String> {
        json_of(out)
            .as_array()
            .expect("array")
            .iter()
            .map(|j| j["id"].to_string())
            .collect()
    };
    assert_eq!(
        ids(cluster.run(Some(&alice), &["ps", "--state", "pending", "--json"])),
        [pending.as_str()]
    );
    assert_eq!(
        ids(cluster.run(Some(&alice), &["ps", "--state", "held,cancelled", "--json"])),
        [held.as_str(), cancelled.as_str()]
    );
    // The admin picks a user; a user may name themselves.
    assert_eq!(
        ids(cluster.run(None, &["ps", "--user", "bob", "--json"])),
        [bobs.as_str()]
    );
    assert_eq!(
        ids(cluster.run(
            None,
            &["ps", "--user", "alice", "--state", "held", "--json"]
        )),
        [held.as_str()]
    );
    assert_eq!(
        ids(cluster.run(Some(&alice), &["ps", "--user", "alice", "--json"])).len(),
        3
    );
    assert!(ids(cluster.run(None, &["ps", "--user", "nobody", "--json"])).is_empty());

    // Chosen columns: tab-separated, no header, in the order asked.
    let text = stdout_of(cluster.run(None, &["ps", "--all", "--format", "id,state,owner"]));
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows,
        [
            format!("{held}\theld\talice"),
            format!("{cancelled}\tcancelled\talice"),
            format!("{pending}\tpending\talice"),
            format!("{bobs}\theld\tbob"),
        ]
    );
    let err = exits_with(cluster.run(None, &["ps", "--format", "id,colour"]), USAGE);
    assert!(err.contains("columns: id, name"), "{err}");
}
