//! `vgrid serve` and its configuration file through the real binary:
//! flags over environment over file over defaults, errors that name the
//! file and line, the `[scheduler]` table, and serving as a controller
//! only when QEMU is missing. No VM is started.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn vgrid() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgrid"));
    // Nothing of the machine's or the caller's settings leaks in.
    for var in [
        "VGRID_CONFIG",
        "VGRID_URL",
        "VGRID_TOKEN",
        "VGRID_LISTEN",
        "VGRID_NO_AGENT",
        "VGRID_INSECURE_HTTP",
        "VGRID_DATA_DIR",
        "STATE_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A `vgrid serve` process, killed and reaped when dropped.
struct Server {
    child: Child,
    /// What it wrote to stderr up to and including its `serving` line.
    stderr: String,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (a `vgrid serve`) and waits for its `vgrid: serving URL`
/// line; panics with its output when it ends first.
fn serve(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vgrid serve starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(rest) = line.strip_prefix("vgrid: serving ") {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    return Server {
                        child,
                        stderr: seen,
                        url,
                    };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vgrid serve did not serve; it said:\n{seen}");
            }
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vgrid.toml");
    // Distinct loopback addresses tell the layers apart; port 0 is free.
    write(
        &config,
        "[serve]\nlisten = \"127.0.0.2:0\"\nno_agent = true\ninsecure_http = true\n",
    );
    let base = || {
        let mut cmd = vgrid();
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("VGRID_DATA_DIR", dir.path().join("data"));
        cmd
    };

    let from_file = serve(base());
    assert!(
        from_file.url.starts_with("http://127.0.0.2:"),
        "{}",
        from_file.url
    );
    assert!(
        !from_file.stderr.contains("local node agent"),
        "{}",
        from_file.stderr
    );
    drop(from_file);

    let mut cmd = base();
    cmd.env("VGRID_LISTEN", "127.0.0.3:0");
    let from_env = serve(cmd);
    assert!(
        from_env.url.starts_with("http://127.0.0.3:"),
        "{}",
        from_env.url
    );
    drop(from_env);

    let mut cmd = base();
    cmd.env("VGRID_LISTEN", "127.0.0.3:0")
        .args(["--listen", "127.0.0.4:0"]);
    let from_flag = serve(cmd);
    assert!(
        from_flag.url.starts_with("http://127.0.0.4:"),
        "{}",
        from_flag.url
    );
    drop(from_flag);

    // The file says plain HTTP; the environment says no.
    let mut cmd = base();
    cmd.env("VGRID_INSECURE_HTTP", "false");
    let https = serve(cmd);
    assert!(https.url.starts_with("https://127.0.0.2:"), "{}", https.url);
}

#[test]
fn the_file_names_the_data_directory_and_vgrid_config_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("elsewhere.toml");
    let data = dir.path().join("state");
    write(
        &config,
        &format!(
            "[serve]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nno_agent = true\n",
            data.display()
        ),
    );
    let mut cmd = vgrid();
    cmd.arg("serve").env("VGRID_CONFIG", &config);
    let server = serve(cmd);
    let url = std::fs::read_to_string(data.join("url")).expect("the url file in data_dir");
    assert_eq!(url.trim(), server.url);
}

#[test]
fn a_bad_file_is_refused_with_its_name_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vgrid.toml");
    write(
        &config,
        "[serve]\nno_agent = true\nlisen = \"0.0.0.0:7777\"\n",
    );
    let err = failed(
        vgrid()
            .args(["serve", "--config"])
            .arg(&config)
            .env("VGRID_DATA_DIR", dir.path().join("data"))
            .output()
            .expect("runs"),
    );
    assert!(
        err.contains(&format!(
            "{}:3: unknown key `serve.lisen` (did you mean `listen`?)",
            config.display()
        )),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    let err = failed(
        vgrid()
            .arg("agent")
            .env("VGRID_CONFIG", &missing)
            .env("VGRID_DATA_DIR", dir.path().join("data"))
            .output()
            .expect("runs"),
    );
    assert!(
        err.contains(&format!(
            "cannot read the configuration file {}",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn the_agent_asks_for_a_controller_in_flags_environment_or_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vgrid.toml");
    write(&config, "[agent]\nname = \"n1\"\n");
    let err = failed(
        vgrid()
            .args(["agent", "--config"])
            .arg(&config)
            .env("VGRID_DATA_DIR", dir.path().join("data"))
            .output()
            .expect("runs"),
    );
    assert!(
        err.contains("no controller: give --controller URL, set VGRID_URL, or set `controller`"),
        "{err}"
    );
}

#[test]
fn the_scheduler_table_sets_the_policy_and_history_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("vgrid.toml");
    let with_policy = |policy: &str| {
        write(
            &config,
            &format!(
                "[serve]\nlisten = \"127.0.0.1:0\"\nno_agent = true\n[scheduler]\npolicy = \"{policy}\"\n"
            ),
        );
        let mut cmd = vgrid();
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("VGRID_DATA_DIR", &data);
        cmd
    };
    let server = serve(with_policy("conservative"));
    let settings = std::fs::read_to_string(data.join("scheduler.json")).expect("scheduler.json");
    assert!(
        settings.contains("\"policy\": \"conservative\""),
        "{settings}"
    );

    // A job makes history: the scheduler log now holds its submission.
    let client = |args: &[&str]| {
        vgrid()
            .args(args)
            .env("VGRID_DATA_DIR", &data)
            .output()
            .expect("runs")
    };
    let alice = client(&["users", "add", "alice"]);
    assert!(
        alice.status.success(),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let token = String::from_utf8_lossy(&alice.stdout).trim().to_string();
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello.toml");
    let submitted = vgrid()
        .arg("submit")
        .arg(&hello)
        .env("VGRID_DATA_DIR", &data)
        .env("VGRID_TOKEN", &token)
        .output()
        .expect("runs");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    drop(server);

    // Another policy would replay that history wrongly: refused, saying why.
    let err = failed(
        with_policy("fcfs")
            .stdout(Stdio::null())
            .output()
            .expect("runs"),
    );
    assert!(err.contains("policy conservative"), "{err}");
    assert!(err.contains("policy fcfs"), "{err}");
    assert!(err.contains("scheduler.json"), "{err}");
    // The same policy starts again.
    drop(serve(with_policy("conservative")));
}

#[test]
fn without_qemu_serve_runs_as_a_controller_only_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).expect("mkdir");
    let mut cmd = vgrid();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        // A PATH without qemu-system-x86_64 (nor anything else).
        .env("PATH", &empty)
        .env("VGRID_DATA_DIR", dir.path().join("data"))
        .env_remove("VGRID_QEMU");
    let server = serve(cmd);
    assert!(
        server.stderr.contains(
            "vgrid: warning: qemu-system-x86_64 was not found; install it with `apt-get install qemu-system-x86`: running as a controller only, without a local node agent"
        ),
        "{}",
        server.stderr
    );
    assert!(
        !server.stderr.contains("local node agent:"),
        "{}",
        server.stderr
    );
    // It serves: the admin lists the nodes, and there are none.
    let nodes = vgrid()
        .args(["nodes"])
        .env("VGRID_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("runs");
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    assert!(!String::from_utf8_lossy(&nodes.stdout).contains("local"));
}
