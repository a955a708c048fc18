//! vgrid on separate hosts (`vgrid_testkit::cluster`): a controller on one
//! network namespace host, node agents (and a user's client) on others,
//! each host seeing only its own data directory: joining, images,
//! checkpoints and a job's data that move between hosts by themselves.
//!
//! Skipped, saying why, without root, iproute2 or QEMU (the agent's VM
//! runtime looks for it at start); under `CI=true` that fails instead.

use std::process::Output;
use std::time::Duration;

use vgrid_testkit::cluster::{Host, HostCommand, HostProcess, Topology};

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
    let (_serve, url) = serve_on(&lab);
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
fn serve_on(lab: &Topology) -> (HostProcess, String) {
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

/// A node joins with the controller's join token (2 CPUs).
fn join(lab: &Topology, name: &str, url: &str) -> HostProcess {
    join_with(lab, name, url, 2)
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

/// A counting job whose every line depends on all before it (a running
/// sum kept in the guest's memory): resumed from a wrong place, or with
/// its memory not restored, its output differs from an uninterrupted run.
fn counting_job(class: &str, steps: u32, extra: &str) -> String {
    let script = format!(
        "i=0; s=0; while [ $i -lt {steps} ]; do i=$((i+1)); s=$((s+i*i)); echo $i $s; sleep 1; done"
    );
    format!(
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nclass = \"{class}\"\n{extra}command = [\"/bin/sh\", \"-c\", \"{script}\"]\n"
    )
}

/// What [`counting_job`] prints when nothing interrupts it.
fn counted(steps: u32) -> String {
    let mut s = 0u64;
    (1..=u64::from(steps))
        .map(|i| {
            s += i * i;
            format!("{i} {s}\n")
        })
        .collect()
}

/// The controller on `ctl` with the image (built only there) published.
fn controller_with_image(lab: &Topology) -> (HostProcess, String) {
    let stock = vgrid_testkit::stock_image().expect("the stock image");
    lab.host("ctl").install_stock_image(&stock);
    let (serve, url) = serve_on(lab);
    vgrid_testkit::wait_for(
        "the image to be published",
        Duration::from_secs(120),
        || serve.log().contains("published image(s) tiny"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    (serve, url)
}

fn wait_registered(ctl: &Host, names: &[&str]) {
    vgrid_testkit::wait_for("the nodes to register", Duration::from_secs(60), || {
        let up = node_states(ctl);
        names
            .iter()
            .all(|n| up.iter().any(|(name, s)| name == n && s == "up"))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", node_states(ctl)));
}

/// Hosts `names`: the controller on `ctl` with the image, and node `n1`
/// (room for one job) registered. `None` when the test is skipped.
fn controller_and_n1(names: &[&str]) -> Option<(Topology, HostProcess, String, HostProcess)> {
    vgrid_testkit::require_qemu()?;
    vgrid_testkit::stock_image()?;
    let lab = Topology::new(names)?;
    let (serve, url) = controller_with_image(&lab);
    let n1 = join_with(&lab, "n1", &url, 1);
    wait_registered(lab.host("ctl"), &["n1"]);
    Some((lab, serve, url, n1))
}

fn show(ctl: &Host, id: &str) -> serde_json::Value {
    json(vgrid(ctl).args(["show", id, "--json"]).output())
}

fn wait_state(lab: &Topology, id: &str, state: &str, limit: Duration) -> serde_json::Value {
    let ctl = lab.host("ctl");
    let mut last = serde_json::Value::Null;
    let reached = vgrid_testkit::wait_for(&format!("job {id} to be {state}"), limit, || {
        last = show(ctl, id);
        last["job"]["state"] == state
    });
    if let Err(e) = reached {
        let logs: String = lab.hosts().iter().map(|h| h.logs()).collect();
        panic!("{e}: {last:#}\n{logs}");
    }
    last
}

fn reasons(shown: &serde_json::Value) -> Vec<(String, String)> {
    shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["node"].as_str().unwrap_or_default().to_string(),
                h["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_best_effort_job_preempted_on_one_host_resumes_on_another_with_identical_output() {
    // n1 alone, with room for one job.
    let Some((lab, _serve, url, _n1)) = controller_and_n1(&["ctl", "n1", "n2", "n3"]) else {
        return;
    };
    let ctl = lab.host("ctl");
    let steps = 30;
    let be = ctl.put_file("be.toml", counting_job("best-effort", steps, ""));
    let be = ok(vgrid(ctl).args(["submit"]).arg(&be).output());
    vgrid_testkit::wait_for("the count to reach 6", Duration::from_secs(300), || {
        ok(vgrid(ctl).args(["logs", &be]).output()).lines().count() >= 6
    })
    .unwrap_or_else(|e| panic!("{e}: {}", lab.host("n1").logs()));

    // A normal job needs n1: the best-effort one is checkpointed there and
    // waits; another host joins and it resumes there.
    let normal = ctl.put_file(
        "normal.toml",
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nclass = \"normal\"\ncommand = [\"/bin/sleep\", \"40\"]\n",
    );
    let normal = ok(vgrid(ctl).args(["submit"]).arg(&normal).output());
    wait_state(&lab, &be, "preempted", Duration::from_secs(120));
    let _n2 = join_with(&lab, "n2", &url, 1);
    let _n3 = join_with(&lab, "n3", &url, 1);
    let done = wait_state(&lab, &be, "done", Duration::from_secs(600));
    assert_eq!(
        ok(vgrid(ctl).args(["logs", &be]).output()) + "\n",
        counted(steps),
        "{done:#}"
    );
    let history = reasons(&done);
    let moved_to = done["job"]["node"].as_str().expect("a node").to_string();
    assert_ne!(moved_to, "n1", "{history:?}");
    let resumed = history
        .iter()
        .any(|(n, r)| n == &moved_to && r.starts_with("resuming from checkpoint"));
    let fetched = history
        .iter()
        .any(|(n, r)| n == &moved_to && r.starts_with("fetching checkpoint"));
    assert!(resumed && fetched, "{history:?}");
    // The checkpoint is in the controller's store, and the node it moved
    // to holds only its own copy (its data directory is its own).
    let ckpt = &done["checkpoints"][0];
    assert!(ckpt["manifest"].is_string(), "{done:#}");
    assert_eq!(ckpt["node"], "n1");
    let _ = vgrid(ctl).args(["cancel", &normal]).output();
}

#[test]
fn a_host_lost_without_notice_costs_only_the_work_since_the_last_checkpoint() {
    let Some((lab, _serve, url, _n1)) = controller_and_n1(&["ctl", "n1", "n2", "n3"]) else {
        return;
    };
    let ctl = lab.host("ctl");
    let steps = 40;
    let interval_s = 5;
    let job = ctl.put_file(
        "job.toml",
        counting_job(
            "normal",
            steps,
            &format!("checkpoint_interval_s = {interval_s}\n"),
        ),
    );
    let id = ok(vgrid(ctl).args(["submit"]).arg(&job).output());
    // Two periodic checkpoints, then a bit more work.
    vgrid_testkit::wait_for("two periodic checkpoints", Duration::from_secs(300), || {
        show(ctl, &id)["checkpoints"]
            .as_array()
            .is_some_and(|c| c.len() >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", lab.host("n1").logs()));
    let _n2 = join_with(&lab, "n2", &url, 1);
    let _n3 = join_with(&lab, "n3", &url, 1);
    wait_registered(ctl, &["n1", "n2", "n3"]);
    // n1 goes away at once: its processes (agent, QEMU) killed, its link
    // cut. Nothing tells the controller.
    lab.host("n1").lose();
    // All the output the controller got from n1 (the job resumes from a
    // checkpoint only seconds later, when n1 counts as lost).
    let seen_lines = ok(vgrid(ctl).args(["logs", &id]).output()).lines().count();
    let done = wait_state(&lab, &id, "done", Duration::from_secs(600));
    assert_eq!(
        ok(vgrid(ctl).args(["logs", &id]).output()) + "\n",
        counted(steps),
        "{done:#}"
    );
    let history = reasons(&done);
    assert_ne!(done["job"]["node"], "n1", "{history:?}");
    // It resumed from the last checkpoint n1 took...
    let last = done["checkpoints"]
        .as_array()
        .and_then(|c| c.iter().rfind(|c| c["node"] == "n1"))
        .expect("a checkpoint on n1")
        .clone();
    let seq = last["seq"].as_u64().expect("seq");
    assert!(
        history.iter().any(
            |(_, r)| r.contains(&format!("resumes from checkpoint {seq}"))
                || r.starts_with(&format!("resuming from checkpoint {seq} "))
        ),
        "{history:?}"
    );
    // ...so what was lost is the work since: the lines printed after it,
    // no more than an interval's worth (and the pause of a checkpoint).
    let offset = last["log_offset"].as_u64().expect("log_offset") as usize;
    let saved_lines = counted(steps)[..offset].lines().count();
    let lost = seen_lines.saturating_sub(saved_lines);
    assert!(
        lost <= interval_s + 3,
        "{lost} lines of work lost, more than a {interval_s} s interval: {history:?}"
    );
}

/// A node joins with room for `cpus` one-CPU jobs.
fn join_with(lab: &Topology, name: &str, url: &str, cpus: u32) -> HostProcess {
    let join =
        std::fs::read_to_string(lab.host("ctl").dir().join("join-token")).expect("join token");
    let node = lab.host(name);
    let token_file = node.put_file("join-token", join);
    vgrid(node)
        .args(["agent", "--controller", url, "--name", name])
        .args(["--cpus", &cpus.to_string(), "--memory-mb", "1024"])
        .arg("--join-token-file")
        .arg(&token_file)
        .spawn("agent")
}

#[test]
fn a_checkpoint_that_cannot_be_restored_is_given_up_and_the_job_still_finishes() {
    let Some((lab, _serve, url, _n1)) = controller_and_n1(&["ctl", "n1", "n2"]) else {
        return;
    };
    let ctl = lab.host("ctl");
    let steps = 25;
    let job = ctl.put_file("job.toml", counting_job("best-effort", steps, ""));
    let id = ok(vgrid(ctl).args(["submit"]).arg(&job).output());
    vgrid_testkit::wait_for("the count to reach 4", Duration::from_secs(300), || {
        ok(vgrid(ctl).args(["logs", &id]).output()).lines().count() >= 4
    })
    .unwrap_or_else(|e| panic!("{e}: {}", lab.host("n1").logs()));
    ok(vgrid(ctl).args(["checkpoint", &id]).output());
    let mut shown = serde_json::Value::Null;
    vgrid_testkit::wait_for(
        "the checkpoint in the store",
        Duration::from_secs(120),
        || {
            shown = show(ctl, &id);
            shown["checkpoints"][0]["manifest"].is_string()
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {shown:#}"));
    // One chunk of its memory is damaged in the controller's store.
    let manifest = shown["checkpoints"][0]["manifest"].as_str().expect("id");
    let store = ctl.dir().join("store");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store
                .join("manifests")
                .join(&manifest[..2])
                .join(&manifest[2..]),
        )
        .expect("the manifest"),
    )
    .expect("json");
    let pack = m["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("v0/memory.pack"))
        })
        .expect("the memory pack");
    let chunk = pack["chunks"][0][0].as_str().expect("a chunk");
    let object = store.join("objects").join(&chunk[..2]).join(&chunk[2..]);
    std::fs::write(&object, b"\x01not the chunk it was").expect("damage it");

    // Its host goes; the other cannot restore the checkpoint, tries again,
    // gives it up and runs the job from the beginning: late, not lost.
    let _n2 = join_with(&lab, "n2", &url, 1);
    wait_registered(ctl, &["n2"]);
    lab.host("n1").lose();
    let done = wait_state(&lab, &id, "done", Duration::from_secs(600));
    assert_eq!(
        ok(vgrid(ctl).args(["logs", &id]).output()) + "\n",
        counted(steps),
        "{done:#}"
    );
    let history = reasons(&done);
    let failed = history
        .iter()
        .filter(|(_, r)| r.starts_with("restoring checkpoint 1 on n2 failed"))
        .count();
    assert_eq!(
        failed, 1,
        "tried again after the first failure: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|(_, r)| r.contains("failed to restore 2 times")
                && r.contains("starts again from the beginning")),
        "{history:?}"
    );
    assert_eq!(done["checkpoints"][0]["restorable"], false, "{done:#}");
}

/// `vgrid` on the client host, as the user logged in there.
fn as_user(client: &Host) -> HostCommand<'_> {
    vgrid(client).env("XDG_CONFIG_HOME", client.dir().join("config"))
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
    let Some(lab) = Topology::new(&["ctl", "n1", "n2", "client"]) else {
        return;
    };
    // The image is built only on the controller's host.
    let ctl = lab.host("ctl");
    let (serve, url) = controller_with_image(&lab);
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
