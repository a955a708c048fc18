//! A job's data across separate hosts (`vgrid_testkit::cluster`): a user
//! on a client host submits a job whose inputs are files of the client;
//! it runs in a real VM on one of two node hosts (neither has the image,
//! which only the controller's host built); its outputs go to the
//! controller, so they are fetched on the client after the node that
//! produced them is gone.
//!
//! Skipped, saying why, without root, iproute2, QEMU or the stock image;
//! under `CI=true` that fails instead.

use std::process::Output;
use std::time::Duration;

use vgrid_testkit::cluster::{Host, HostCommand, HostProcess, Topology};

fn vgrid(host: &Host) -> HostCommand<'_> {
    host.command(env!("CARGO_BIN_EXE_vgrid"))
        .env("VGRID_LOG", "info")
}

/// `vgrid` on the client host, as the user logged in there.
fn as_user(client: &Host) -> HostCommand<'_> {
    vgrid(client).env("XDG_CONFIG_HOME", client.dir().join("config"))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

/// Each node's state as `vgrid nodes` on `host` lists it.
fn node_states(host: &Host) -> Vec<(String, String)> {
    let nodes = json(vgrid(host).args(["nodes", "--json"]).output());
    let mut states: Vec<(String, String)> = nodes
        .as_array()
        .expect("an array")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_string(),
                n["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    states.sort();
    states
}

fn states(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// `vgrid serve --no-agent` on `ctl`; returns it and its https URL once
/// it has published the host's images.
fn serve_on(ctl: &Host) -> (HostProcess, String) {
    let listen = format!("{}:0", ctl.ip());
    let serve = vgrid(ctl)
        .args(["serve", "--no-agent", "--listen", &listen])
        .args(["--heartbeat-ms", "300", "--lost-after-ms", "3000"])
        .spawn("serve");
    let url_file = ctl.dir().join("url");
    vgrid_testkit::wait_for("vgrid serve to listen", Duration::from_secs(60), || {
        std::fs::read_to_string(&url_file).is_ok_and(|u| u.starts_with("https://"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    vgrid_testkit::wait_for(
        "the image to be published",
        Duration::from_secs(120),
        || serve.log().contains("published image(s) tiny"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    let url = std::fs::read_to_string(&url_file)
        .expect("url")
        .trim()
        .to_string();
    (serve, url)
}

/// A node joins with the controller's join token, carried by the test.
fn join(lab: &Topology, name: &str, url: &str) -> HostProcess {
    let join =
        std::fs::read_to_string(lab.host("ctl").dir().join("join-token")).expect("join token");
    let node = lab.host(name);
    let token_file = node.put_file("join-token", join);
    vgrid(node)
        .args(["agent", "--controller", url, "--name", name])
        .args(["--cpus", "2", "--memory-mb", "1024"])
        .arg("--join-token-file")
        .arg(&token_file)
        .spawn("agent")
}

/// Bytes that do not compress, so that they travel as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[test]
fn a_jobs_outputs_are_fetched_after_the_host_that_produced_them_is_gone() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(stock) = vgrid_testkit::stock_image() else {
        return;
    };
    let Some(lab) = Topology::new(&["ctl", "n1", "n2", "client"]) else {
        return;
    };
    // The image is built only on the controller's host.
    let ctl = lab.host("ctl");
    ctl.install_stock_image(&stock);
    let (serve, url) = serve_on(ctl);
    for name in ["n1", "n2"] {
        assert!(!lab.host(name).dir().join("images/tiny").exists());
        join(&lab, name, &url);
    }
    let both_up = states(&[("n1", "up"), ("n2", "up")]);
    vgrid_testkit::wait_for("both nodes to register", Duration::from_secs(60), || {
        node_states(ctl) == both_up
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", node_states(ctl), serve.log()));

    // The admin makes a user; the credentials travel to the client host,
    // where the user logs in (into the client's own directory).
    let creds = ctl.dir().join("alice.json");
    ok(vgrid(ctl)
        .args(["users", "add", "alice", "--credentials"])
        .arg(&creds)
        .output());
    let client = lab.host("client");
    let creds = client.put_file(
        "alice.json",
        std::fs::read(&creds).expect("the credentials file"),
    );
    std::fs::create_dir_all(client.dir().join("config")).expect("config dir");
    ok(as_user(client).arg("login").arg(&creds).output());

    // The job's inputs are files of the client host only.
    std::fs::create_dir_all(client.dir().join("work")).expect("work dir");
    let text = "line one\nline two\nline three\n";
    client.put_file("work/lines.txt", text);
    let blob = noise(2 << 20);
    client.put_file("work/blob.bin", &blob);
    client.put_file(
        "work/job.toml",
        r#"image = "tiny"
memory_mb = 256
command = ["/bin/sh", "-c", "wc -l < lines.txt > count.txt && mkdir -p out && cat blob.bin lines.txt > out/joined.bin"]
[[inputs]]
from = "lines.txt"
to = "/work/lines.txt"
[[inputs]]
from = "blob.bin"
to = "/work/blob.bin"
[[outputs]]
from = "/work/count.txt"
[[outputs]]
from = "/work/out/joined.bin"
to = "results/joined.bin"
"#,
    );
    let id = ok(as_user(client)
        .current_dir(client.dir().join("work"))
        .args(["submit", "job.toml"])
        .output());
    let waited = as_user(client).args(["wait", &id]).output();
    let shown = json(as_user(client).args(["show", &id, "--json"]).output());
    assert!(
        waited.status.success(),
        "{shown:#}\n{}\n{}\n{}",
        serve.log(),
        lab.host("n1").logs(),
        lab.host("n2").logs()
    );
    let node = shown["job"]["node"].as_str().expect("a node").to_string();
    let reasons: Vec<&str> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("image tiny fetched")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("input data fetched: 2 file(s)")),
        "{reasons:?}"
    );
    assert!(shown["outputs"].is_string(), "{shown:#}");

    // The host that ran the job is gone: its processes killed, its link
    // cut; the controller counts it as lost.
    let gone = lab.host(&node);
    gone.lose();
    let other = if node == "n1" { "n2" } else { "n1" };
    let mut after: Vec<(&str, &str)> = vec![(node.as_str(), "lost"), (other, "up")];
    after.sort();
    vgrid_testkit::wait_for(
        "the controller to lose the node",
        Duration::from_secs(60),
        || node_states(ctl) == states(&after),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", node_states(ctl)));

    // The outputs come from the controller all the same.
    let listed = json(
        as_user(client)
            .args(["output", &id, "--to"])
            .arg(client.dir().join("back"))
            .arg("--json")
            .output(),
    );
    assert_eq!(
        listed["files"].as_array().map(Vec::len),
        Some(2),
        "{listed:#}"
    );
    assert_eq!(
        std::fs::read_to_string(client.dir().join("back/count.txt")).expect("count"),
        "3\n"
    );
    let mut joined = blob.clone();
    joined.extend_from_slice(text.as_bytes());
    assert!(
        std::fs::read(client.dir().join("back/results/joined.bin")).expect("joined") == joined,
        "the outputs are the guest's bytes"
    );
}
