//! The controller through the `vgrid` binary: `serve`, `users add`,
//! `submit`, `ps`, `show`, `hold`, `cancel`, across a SIGKILL of the server.
//! No VM is started here; the real-QEMU runs are in `jobs_in_vms.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{failed, ok, run, serve};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn submit_list_hide_hold_and_survive_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let mut server = serve(data);

    let alice = ok(run(data, None, &["users", "add", "alice"]));
    let bob = ok(run(data, None, &["users", "add", "bob"]));
    assert!(alice.starts_with("vgt_") && alice != bob);

    let hello = examples().join("hello.toml");
    let hello = hello.to_str().expect("utf-8 path");
    let id = ok(run(data, Some(&alice), &["submit", hello]));
    let id_num: u64 = id.parse().expect("submit prints the job id");

    let ps: serde_json::Value =
        serde_json::from_str(&ok(run(data, Some(&alice), &["ps", "--json"]))).expect("json");
    assert_eq!(ps.as_array().map(Vec::len), Some(1));
    assert_eq!(ps[0]["id"], id_num);
    assert_eq!(ps[0]["state"], "pending");
    assert_eq!(ps[0]["owner"], "alice");

    // Bob sees nothing of it and cannot touch it.
    let bob_ps: serde_json::Value =
        serde_json::from_str(&ok(run(data, Some(&bob), &["ps", "--json"]))).expect("json");
    assert_eq!(bob_ps.as_array().map(Vec::len), Some(0));
    assert!(failed(run(data, Some(&bob), &["show", &id])).contains("does not exist"));
    assert!(failed(run(data, Some(&bob), &["cancel", &id])).contains("does not exist"));
    assert!(failed(run(data, Some(&bob), &["ps", "--all"])).contains("admin"));

    // A malformed file is refused with file, line, column, field and why.
    let bad = examples().join("bad/wrong-type.toml");
    let err = failed(run(
        data,
        Some(&alice),
        &["submit", bad.to_str().expect("utf-8")],
    ));
    assert!(err.contains("wrong-type.toml:4:8: field `cpus`"), "{err}");
    assert!(err.contains("expected an integer"), "{err}");

    assert!(ok(run(data, Some(&alice), &["hold", &id])).contains("held"));

    // SIGKILL: nothing acknowledged may be lost.
    server.kill();
    let server = serve(data);
    let shown: serde_json::Value =
        serde_json::from_str(&ok(run(data, Some(&alice), &["show", &id, "--json"]))).expect("json");
    assert_eq!(shown["job"]["state"], "held");
    let states: Vec<&str> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["state"].as_str())
        .collect();
    assert_eq!(states, ["pending", "held"]);
    let text = ok(run(data, Some(&alice), &["show", &id]));
    assert!(
        text.contains("history:") && text.contains("held by alice"),
        "{text}"
    );
    assert!(ok(run(data, Some(&alice), &["cancel", &id])).contains("cancelled"));
    // `wait` exits with a failure status for a cancelled job.
    let waited = run(data, Some(&alice), &["wait", &id]);
    assert_eq!(waited.status.code(), Some(1));
    let nodes = ok(run(data, None, &["nodes", "--json"]));
    assert_eq!(nodes, "[]");
    drop(server);
}

/// SIGKILL the server again and again while clients submit: every
/// submission that was acknowledged is there after each restart.
#[test]
fn acknowledged_submissions_survive_repeated_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut server = serve(data);
    let token = ok(run(data, None, &["users", "add", "loader"]));
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..3u64 {
        let url = std::fs::read_to_string(data.join("url")).expect("url");
        let ca = vgrid_pki::read_ca(&data.join("tls/ca.pem")).expect("the controller's CA");
        let tls = vgrid_pki::client_config(ca).expect("TLS configuration");
        let client = vgrid_client::Client::with_tls(url.trim(), &token, tls).expect("client");
        // Eight clients submit until the server dies under them.
        let got = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..8 {
                let client = client.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let job = "image = \"tiny\"\ncommand = [\"/bin/true\"]\n";
                    while let Ok(id) = client.submit("j.toml", job, false).await {
                        if tx.send(id).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            let mut got = Vec::new();
            // Kill at a different point in every round.
            let kill_after = 150 + 97 * round as usize;
            while let Some(id) = rx.recv().await {
                got.push(id);
                if got.len() == kill_after {
                    server.kill();
                }
            }
            got
        });
        assert!(
            got.len() >= 150,
            "round {round}: only {} acknowledged",
            got.len()
        );
        acked.extend(got);
        server = serve(data);
        let listed: serde_json::Value =
            serde_json::from_str(&ok(run(data, Some(&token), &["ps", "--json"]))).expect("json");
        let mut ids: Vec<u64> = listed
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|j| j["id"].as_u64())
            .collect();
        ids.sort_unstable();
        for id in &acked {
            assert!(
                ids.binary_search(id).is_ok(),
                "round {round}: job {id} was acknowledged and lost"
            );
        }
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "a job id was given twice");
    }
    drop(server);
}

/// A small tmpfs mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (a skip) when not root, except under `CI=true`, where the
    /// test must run.
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            assert!(
                !vgrid_testkit::in_ci(),
                "a full disk is tested on a tmpfs, which needs root"
            );
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={megabytes}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount a tmpfs");
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0x5a; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..512]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let data = disk.path().join("state");
    std::fs::create_dir(&data).expect("data dir");
    let mut server = serve(&data);
    let hello = examples().join("hello.toml");
    let hello = hello.to_str().expect("utf-8");
    let first = ok(run(&data, None, &["submit", "--hold", hello]));

    let filler = disk.fill();
    let refused = failed(run(&data, None, &["submit", "--hold", hello]));
    assert!(refused.contains("database or disk is full"), "{refused}");
    // Reads go on.
    let listed = ok(run(&data, None, &["ps"]));
    assert!(listed.contains(&first), "{listed}");
    let shown = ok(run(&data, None, &["show", &first]));
    assert!(shown.contains("held"), "{shown}");
    assert!(
        server.0.try_wait().expect("status").is_none(),
        "the server runs"
    );

    // Space comes back: writes work again without a restart.
    std::fs::remove_file(filler).expect("free space");
    let mut second = None;
    for _ in 0..100 {
        let out = run(&data, None, &["submit", "--hold", hello]);
        if out.status.success() {
            second = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = second.expect("a submission works again once space is back");
    assert_ne!(second, first);
    let listed = ok(run(&data, None, &["ps"]));
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
    assert!(
        server.0.try_wait().expect("status").is_none(),
        "never restarted"
    );
    server.kill();
}
