//! What moves between hosts, measured on separate namespace hosts
//! (docs/benchmarks.md, "Nodes that share nothing"):
//!
//! 1. a job's start on a node without its image (it fetches it) against
//!    one on a node that holds it;
//! 2. a checkpoint of a guest whose memory is full of random data, uploaded
//!    from its node to the controller through a link shaped by `tc` (tbf),
//!    against bytes / rate and against what plain TCP (`iperf3`, when
//!    installed) gets through the same link in the same run;
//! 3. the growth of the controller's store over successive checkpoints of
//!    the same (then idle) guest.
//!
//! ```sh
//! cargo build --release -p vgrid --example store_bench
//! cargo build --release -p vgrid
//! target/release/examples/store_bench --vgrid target/release/vgrid
//! ```
//!
//! Needs root (namespaces), QEMU, passt and the stock image (built on the
//! first run, as the tests do).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vgrid_testkit::cluster::{Host, HostCommand, HostProcess, Shape, Topology};

struct Args {
    vgrid: PathBuf,
    memory_mb: u32,
    rate_mbit: u64,
    checkpoints: usize,
}

fn args() -> Args {
    let mut a = Args {
        vgrid: PathBuf::from("target/release/vgrid"),
        memory_mb: 1024,
        rate_mbit: 1000,
        checkpoints: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--vgrid" => a.vgrid = PathBuf::from(value),
            "--memory-mb" => a.memory_mb = value.parse().expect("--memory-mb N"),
            "--rate-mbit" => a.rate_mbit = value.parse().expect("--rate-mbit N"),
            "--checkpoints" => a.checkpoints = value.parse().expect("--checkpoints N"),
            other => panic!(
                "unknown argument {other}; use --vgrid PATH --memory-mb N --rate-mbit N --checkpoints N"
            ),
        }
    }
    a.vgrid = a.vgrid.canonicalize().expect("the vgrid binary (--vgrid)");
    a
}

fn vgrid<'a>(a: &Args, host: &'a Host) -> HostCommand<'a> {
    host.command(&a.vgrid).env("VGRID_LOG", "info")
}

fn ok(cmd: HostCommand<'_>) -> String {
    let out = cmd.output();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn show(a: &Args, ctl: &Host, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(vgrid(a, ctl).args(["show", id, "--json"]))).expect("json")
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    vgrid_testkit::wait_for(what, limit, &mut f).unwrap_or_else(|e| panic!("{e}"));
}

fn join(a: &Args, lab: &Topology, name: &str, url: &str) -> HostProcess {
    let token = std::fs::read_to_string(lab.host("ctl").dir().join("join-token")).expect("token");
    let node = lab.host(name);
    let file = node.put_file("join-token", token);
    vgrid(a, node)
        .args(["agent", "--controller", url, "--name", name])
        .args(["--cpus", "2", "--memory-mb", "4096"])
        .arg("--join-token-file")
        .arg(&file)
        .spawn("agent")
}

/// Milliseconds from the job's placement to its command running, and the
/// staging details on the way.
fn start_ms(shown: &serde_json::Value) -> (i64, Vec<String>) {
    let history = shown["history"].as_array().expect("history");
    let at = |state: &str| {
        history
            .iter()
            .find(|h| h["state"] == state)
            .and_then(|h| h["unix_ms"].as_i64())
            .expect("a state")
    };
    let details = history
        .iter()
        .filter(|h| h["state"] == "staging")
        .filter_map(|h| h["reason"].as_str().map(str::to_string))
        .collect();
    (at("running") - at("staging"), details)
}

/// The fields of the agent's last log line that contains `marker`.
fn log_fields(log: &str, marker: &str, nth: usize) -> Option<Vec<(String, String)>> {
    let line = log.lines().filter(|l| l.contains(marker)).nth(nth)?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn field(fields: &[(String, String)], key: &str) -> f64 {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Plain TCP through the same link: `iperf3` for 5 s, in Mbit/s.
fn iperf(lab: &Topology, from: &str) -> Option<f64> {
    let ctl = lab.host("ctl");
    let server = ctl
        .command("iperf3")
        .args(["-s", "-1", "-B"])
        .arg(ctl.ip().to_string())
        .spawn("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let out = lab
        .host(from)
        .command("iperf3")
        .args(["-c", &ctl.ip().to_string(), "-t", "5", "-J"])
        .output();
    let _ = server.wait_timeout(Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
}

fn main() {
    let a = args();
    let _qemu = vgrid_testkit::require_qemu().expect("QEMU and passt");
    let stock = vgrid_testkit::stock_image().expect("the stock image");
    let lab = Topology::new(&["ctl", "n1"]).expect("root, iproute2: namespaces");
    let ctl = lab.host("ctl");
    ctl.install_stock_image(&stock);
    let listen = format!("{}:0", ctl.ip());
    let serve = vgrid(&a, ctl)
        .args(["serve", "--no-agent", "--listen", &listen])
        .spawn("serve");
    wait(
        "the image to be published",
        Duration::from_secs(300),
        || serve.log().contains("published image(s) tiny"),
    );
    let url = std::fs::read_to_string(ctl.dir().join("url"))
        .expect("url")
        .trim()
        .to_string();
    let n1 = lab.host("n1");
    let agent = join(&a, &lab, "n1", &url);
    wait("n1 to register", Duration::from_secs(60), || {
        ok(vgrid(&a, ctl).args(["nodes"])).contains("n1")
    });
    eprintln!(
        "== host: {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Starting without the image, then with it (three runs).
    let quick = ctl.put_file(
        "quick.toml",
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/true\"]\n",
    );
    println!("## Start on a node without the image, then with it\n");
    println!("| run | node holds the image | placed → running | staging |");
    println!("|---|---|---:|---|");
    for run in 1..=3 {
        let id = ok(vgrid(&a, ctl).args(["submit"]).arg(&quick));
        ok(vgrid(&a, ctl).args(["wait", &id]));
        let (ms, details) = start_ms(&show(&a, ctl, &id));
        let fetched = details.iter().find(|d| d.starts_with("image tiny fetched"));
        println!(
            "| {run} | {} | {:.2} s | {} |",
            if run == 1 { "no" } else { "yes" },
            ms as f64 / 1000.0,
            fetched.map_or("-", |s| s.as_str())
        );
    }

    // 2. A checkpoint through a shaped link.
    let rate = a.rate_mbit * 1_000_000;
    n1.shape(&Shape {
        rate_bits_per_s: Some(rate),
        delay: None,
    })
    .expect("shape the link");
    let tcp = iperf(&lab, "n1");
    let fill = "total=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo); fill=$((total - 160)); \
                mkdir -p /mnt/fill && mount -t tmpfs -o size=100% tmpfs /mnt/fill; \
                dd if=/dev/urandom of=/mnt/fill/a bs=1048576 count=$fill 2>/dev/null; \
                echo filled $fill; sleep 100000";
    let big = ctl.put_file(
        "big.toml",
        format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = {}\nclass = \"normal\"\ncommand = [\"/bin/sh\", \"-c\", \"{fill}\"]\n",
            a.memory_mb
        ),
    );
    let id = ok(vgrid(&a, ctl).args(["submit"]).arg(&big));
    wait(
        "the guest to fill its memory",
        Duration::from_secs(900),
        || {
            std::thread::sleep(Duration::from_secs(1));
            ok(vgrid(&a, ctl).args(["logs", &id])).contains("filled")
        },
    );
    let objects = ctl.dir().join("store/objects");
    let mut rows = Vec::new();
    let mut last_size = du(&objects);
    for k in 0..a.checkpoints {
        let asked = Instant::now();
        ok(vgrid(&a, ctl).args(["checkpoint", &id]));
        // The agent's log line first (reading a file costs nothing; a
        // `vgrid show` in a tight loop would take CPU from the upload).
        wait("the upload", Duration::from_secs(900), || {
            log_fields(&agent.log(), "checkpoint in the controller's store", k).is_some()
        });
        wait("the checkpoint", Duration::from_secs(900), || {
            show(&a, ctl, &id)["checkpoints"]
                .as_array()
                .is_some_and(|c| c.len() > k)
        });
        let total = asked.elapsed().as_secs_f64();
        let f = log_fields(&agent.log(), "checkpoint in the controller's store", k)
            .expect("the agent's upload line");
        let size = du(&objects);
        rows.push((
            k + 1,
            total,
            field(&f, "seconds"),
            field(&f, "kib") * 1024.0,
            field(&f, "sent"),
            field(&f, "chunks"),
            size - last_size,
        ));
        last_size = size;
        // An idle guest between checkpoints.
        std::thread::sleep(Duration::from_secs(5));
    }
    println!(
        "\n## Checkpoints of a {} MiB guest through a {} Mbit/s link\n",
        a.memory_mb, a.rate_mbit
    );
    match tcp {
        Some(m) => println!("Plain TCP through the same link (iperf3, 5 s): {m:.0} Mbit/s.\n"),
        None => println!("(iperf3 not installed: no plain-TCP figure.)\n"),
    }
    println!(
        "| checkpoint | asked → listed | upload | sent | chunks sent / listed | bytes / rate | upload / (bytes / rate) | store growth | growth / first |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let first_growth = rows.first().map_or(1, |r| r.6.max(1));
    for (k, total, upload, bytes, sent, chunks, growth) in &rows {
        let ideal = bytes * 8.0 / rate as f64;
        println!(
            "| {k} | {total:.1} s | {upload:.1} s | {:.1} MiB | {sent} / {chunks} | {ideal:.1} s | {} | {:.1} MiB | {:.1}% |",
            bytes / 1048576.0,
            if ideal > 0.05 {
                format!("{:.2}", upload / ideal)
            } else {
                "-".into()
            },
            *growth as f64 / 1048576.0,
            *growth as f64 * 100.0 / first_growth as f64
        );
    }
    let _ = vgrid(&a, ctl).args(["cancel", &id]).output();
}
