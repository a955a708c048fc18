//! `--log-format json` on a real `vgrid serve`: every line on stderr is a
//! JSON object, with one line per HTTP request and one per job
//! transition. And a client's error in JSON when `VGRID_LOG_FORMAT=json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn vgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
}

fn hello() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello.toml")
}

/// A `vgrid serve` process, killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vgrid --log-format json serve` without a local agent; its stderr goes
/// to `log`.
fn serve_json(data: &Path, log: &Path) -> Server {
    let stderr = std::fs::File::create(log).expect("log file");
    let server = Server(
        vgrid()
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-agent",
            ])
            .env("VGRID_DATA_DIR", data)
            .env("VGRID_LOG", "info")
            .env_remove("VGRID_LOG_FORMAT")
            .env_remove("VGRID_URL")
            .env_remove("VGRID_TOKEN")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("vgrid serve starts"),
    );
    for _ in 0..600 {
        if std::fs::read_to_string(data.join("url")).is_ok_and(|u| u.starts_with("https://")) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vgrid serve did not write its URL");
}

fn run(data: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = vgrid();
    cmd.args(args)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_LOG_FORMAT")
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN");
    if let Some(t) = token {
        cmd.env("VGRID_TOKEN", t);
    }
    cmd.output().expect("vgrid runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every line of the log, each parsed as JSON (a line that is not JSON
/// fails the test).
fn json_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).expect("log");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    &line["fields"][name]
}

#[test]
fn serve_logs_requests_and_transitions_as_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let server = serve_json(&data, &log);
    let alice = ok(run(&data, None, &["users", "add", "alice"]));
    let hello = hello();
    let id: u64 = ok(run(
        &data,
        Some(&alice),
        &["submit", "--hold", hello.to_str().expect("utf-8")],
    ))
    .parse()
    .expect("submit prints the job id");
    ok(run(&data, Some(&alice), &["cancel", &id.to_string()]));

    // The lines are written as things happen; wait for the last one.
    let is_cancel = |l: &Value| {
        l["target"] == "vgrid::job" && field(l, "job") == id && field(l, "to") == "cancelled"
    };
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = json_lines(&log);
        if lines.iter().any(is_cancel) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let lines_text = || {
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };

    // What `vgrid serve` tells its operator is JSON too.
    assert!(
        lines.iter().any(|l| field(l, "message")
            .as_str()
            .is_some_and(|m| m.starts_with("serving https://"))),
        "{}",
        lines_text()
    );
    // One request line per request, with the route's template and the user.
    let submit = lines
        .iter()
        .find(|l| {
            l["target"] == "vgrid::request"
                && field(l, "method") == "POST"
                && field(l, "path") == "/v1/jobs"
        })
        .unwrap_or_else(|| panic!("no request line for the submission:\n{}", lines_text()));
    assert_eq!(field(submit, "user"), "alice", "{submit}");
    assert!(
        field(submit, "status")
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        "{submit}"
    );
    assert!(
        field(submit, "ms").as_f64().is_some_and(|ms| ms >= 0.0),
        "{submit}"
    );
    assert_eq!(submit["level"], "INFO", "{submit}");
    let cancel = lines
        .iter()
        .find(|l| l["target"] == "vgrid::request" && field(l, "path") == "/v1/jobs/{id}/{verb}")
        .unwrap_or_else(|| panic!("no request line for the cancel:\n{}", lines_text()));
    assert_eq!(field(cancel, "user"), "alice", "{cancel}");
    // The token never reaches the log.
    assert!(!lines_text().contains(&alice), "a token in the log");

    // One line per transition: the submission (held), then the cancel.
    let held = lines
        .iter()
        .find(|l| l["target"] == "vgrid::job" && field(l, "job") == id)
        .unwrap_or_else(|| panic!("no transition line:\n{}", lines_text()));
    assert_eq!(
        (field(held, "from"), field(held, "to")),
        (&Value::from("none"), &Value::from("held")),
        "{held}"
    );
    let cancel = lines
        .iter()
        .find(|l| is_cancel(l))
        .unwrap_or_else(|| panic!("no cancel transition:\n{}", lines_text()));
    assert_eq!(field(cancel, "from"), "held", "{cancel}");
    assert!(
        field(cancel, "reason")
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{cancel}"
    );
}

#[test]
fn a_client_error_is_one_json_line_with_the_environment_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = vgrid()
        .args(["show", "1"])
        .env("VGRID_LOG_FORMAT", "json")
        .env("VGRID_DATA_DIR", dir.path().join("none"))
        .env("VGRID_URL", "https://127.0.0.1:9")
        .env("VGRID_TOKEN", "nothing")
        .output()
        .expect("vgrid runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR", "{stderr}");
    assert!(
        field(&lines[0], "message")
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{stderr}"
    );
    // And text by default, without colour codes when not on a terminal.
    let out = vgrid()
        .args(["show", "1"])
        .env_remove("VGRID_LOG_FORMAT")
        .env("VGRID_DATA_DIR", dir.path().join("none"))
        .env("VGRID_URL", "https://127.0.0.1:9")
        .env("VGRID_TOKEN", "nothing")
        .output()
        .expect("vgrid runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("vgrid: error: "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}
