//! vgrid on separate hosts (`vgrid_testkit::cluster`): a controller on one
//! network namespace host, node agents on two others, each host seeing
//! only its own data directory. No VM is started here.
//!
//! Skipped, saying why, without root, iproute2 or QEMU (the agent's VM
//! runtime looks for it at start); under `CI=true` that fails instead.

use std::process::Output;
use std::time::Duration;

use vgrid_testkit::cluster::{Host, HostCommand, Topology};

fn vgrid(host: &Host) -> HostCommand<'_> {
    host.command(env!("CARGO_BIN_EXE_vgrid"))
        .env("VGRID_LOG", "info")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The state of each node `vgrid nodes` lists on `host`.
fn node_states(host: &Host) -> Vec<(String, String)> {
    let out = vgrid(host).args(["nodes", "--json"]).output();
    let nodes: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
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

#[test]
fn agents_on_two_hosts_register_with_a_controller_on_a_third() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(lab) = Topology::new(&["ctl", "n1", "n2"]) else {
        return;
    };
    let ctl = lab.host("ctl");

    // The controller listens on its bridge address only.
    let listen = format!("{}:0", ctl.ip());
    let serve = vgrid(ctl)
        .args(["serve", "--no-agent", "--listen", &listen])
        .args(["--heartbeat-ms", "300", "--lost-after-ms", "2000"])
        .spawn("serve");
    let url_file = ctl.dir().join("url");
    vgrid_testkit::wait_for("vgrid serve to listen", Duration::from_secs(60), || {
        std::fs::read_to_string(&url_file).is_ok_and(|u| u.starts_with("https://"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    let url = std::fs::read_to_string(&url_file)
        .expect("url")
        .trim()
        .to_string();
    assert!(url.starts_with(&format!("https://{}:", ctl.ip())), "{url}");
    let join = std::fs::read_to_string(ctl.dir().join("join-token")).expect("join token");
    let join = join.trim();
    let (pin, secret) = join
        .strip_prefix("vgj_")
        .and_then(|r| r.split_once('_'))
        .expect("a join token");

    // A node with a join token of another controller (another CA) is
    // refused before it sends anything, and says which CA it expected;
    // one with this CA but another secret is refused by the controller.
    let n1 = lab.host("n1");
    let other_ca = format!("vgj_{}_{secret}", "ab".repeat(32));
    let out = vgrid(n1)
        .args(["agent", "--controller", &url, "--name", "n1"])
        .args(["--join-token", &other_ca])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not the one the join token names"), "{err}");
    assert!(err.contains(&"ab".repeat(32)), "{err}");
    let other_secret = format!("vgj_{pin}_{}", "cd".repeat(32));
    let out = vgrid(n1)
        .args(["agent", "--controller", &url, "--name", "n1"])
        .args(["--join-token", &other_secret])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("secret is not this controller's"), "{err}");
    assert!(!n1.dir().join("agent/credentials.json").exists());

    // Each node joins with the controller's join token, carried to its
    // data directory by the test (the "outside"), and keeps its own
    // credential and the controller's CA.
    for name in ["n1", "n2"] {
        let node = lab.host(name);
        let token_file = node.put_file("join-token", format!("{join}\n"));
        vgrid(node)
            .args(["agent", "--controller", &url, "--name", name])
            .args(["--cpus", "1", "--memory-mb", "512"])
            .arg("--join-token-file")
            .arg(&token_file)
            .spawn("agent");
    }
    let both_up = states(&[("n1", "up"), ("n2", "up")]);
    vgrid_testkit::wait_for("both agents to register", Duration::from_secs(60), || {
        node_states(ctl) == both_up
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", node_states(ctl), lab.host("n1").logs()));
    for name in ["n1", "n2"] {
        let creds = lab.host(name).dir().join("agent/credentials.json");
        let text = std::fs::read_to_string(&creds).expect("the node kept its credential");
        assert!(!text.contains(secret), "the join secret is not kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds)
            .expect("credentials")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A node host has none of the controller's files: `vgrid` there finds
    // no controller through the controller's data directory (it is not
    // there, and cannot be made).
    let out = vgrid(lab.host("n1"))
        .args(["nodes"])
        .env("VGRID_DATA_DIR", ctl.dir())
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(ctl.dir().to_str().expect("utf-8")), "{err}");

    // The agents talk over the bridge: cut n1's link and the controller
    // loses it; plug it back and it comes back by itself.
    lab.host("n1").cut_link();
    let n1_lost = states(&[("n1", "lost"), ("n2", "up")]);
    vgrid_testkit::wait_for("n1 to count as lost", Duration::from_secs(60), || {
        node_states(ctl) == n1_lost
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", node_states(ctl)));
    lab.host("n1").restore_link();
    vgrid_testkit::wait_for("n1 to come back", Duration::from_secs(60), || {
        node_states(ctl) == both_up
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", node_states(ctl), lab.host("n1").logs()));

    // A restarted agent needs no join token: it has its credential.
    let n2 = lab.host("n2");
    n2.kill_all();
    std::fs::remove_file(n2.dir().join("join-token")).expect("join token on n2");
    let again = vgrid(n2)
        .args(["agent", "--controller", &url, "--name", "n2"])
        .args(["--cpus", "1", "--memory-mb", "512"])
        .env("VGRID_LOG", "info")
        .spawn("agent again");
    vgrid_testkit::wait_for(
        "the restarted agent to register",
        Duration::from_secs(60),
        || again.log().contains("registered with the controller"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", again.log()));
    vgrid_testkit::wait_for(
        "n2 up with its kept credential",
        Duration::from_secs(60),
        || node_states(ctl) == both_up,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", node_states(ctl), n2.logs()));
}

/// `vgrid serve --no-agent` on `ctl`, waiting for its https URL.
fn serve_on(lab: &Topology) -> (vgrid_testkit::cluster::HostProcess, String) {
    let ctl = lab.host("ctl");
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
    let url = std::fs::read_to_string(&url_file)
        .expect("url")
        .trim()
        .to_string();
    (serve, url)
}

/// A node joins with the controller's join token.
fn join(lab: &Topology, name: &str, url: &str) -> vgrid_testkit::cluster::HostProcess {
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

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

#[test]
fn a_job_placed_on_a_node_without_its_image_fetches_it_and_runs() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(stock) = vgrid_testkit::stock_image() else {
        return;
    };
    let Some(lab) = Topology::new(&["ctl", "n1"]) else {
        return;
    };
    // The image is built only on the controller's host.
    let ctl = lab.host("ctl");
    ctl.install_stock_image(&stock);
    let (serve, url) = serve_on(&lab);
    vgrid_testkit::wait_for(
        "the image to be published",
        Duration::from_secs(120),
        || serve.log().contains("published image(s) tiny"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    let n1 = lab.host("n1");
    assert!(!n1.dir().join("images/tiny").exists());
    let _agent = join(&lab, "n1", &url);
    vgrid_testkit::wait_for("n1 to register", Duration::from_secs(60), || {
        node_states(ctl) == states(&[("n1", "up")])
    })
    .unwrap_or_else(|e| panic!("{e}: {}", n1.logs()));

    let job = ctl.put_file(
        "hello.toml",
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/echo\", \"hello from n1\"]\n",
    );
    let id = ok(vgrid(ctl).args(["submit"]).arg(&job).output());
    let waited = vgrid(ctl).args(["wait", &id]).output();
    let shown = json(vgrid(ctl).args(["show", &id, "--json"]).output());
    assert!(
        waited.status.success(),
        "{:#}\n{}\n{}",
        shown,
        serve.log(),
        n1.logs()
    );
    assert_eq!(ok(vgrid(ctl).args(["logs", &id]).output()), "hello from n1");
    let reasons: Vec<String> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("fetching image tiny")),
        "the fetch is the job's staging step: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("image tiny fetched")),
        "{reasons:?}"
    );
    // The node holds the image now, says so, and keeps it.
    assert!(n1.dir().join("images/tiny/manifest.json").exists());
    let nodes = json(vgrid(ctl).args(["nodes", "--json"]).output());
    assert_eq!(nodes[0]["images"], serde_json::json!(["tiny"]), "{nodes:#}");
}
