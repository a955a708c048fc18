//! The multi-host test topology itself (`vgrid_testkit::cluster`): hosts
//! reach each other over the bridge and nothing else, see only their own
//! directory, lose traffic while their link is cut, are shaped, killed at
//! once, and leave nothing behind. Needs root and iproute2: skipped, saying
//! why, without them; under `CI=true` that fails instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use vgrid_testkit::cluster::{HOST_IF, Host, HostCommand, HostProcess, Shape, Topology};

const NETCHECK: &str = env!("CARGO_BIN_EXE_netcheck");
const PORT: u16 = 7000;

fn netcheck(host: &Host) -> HostCommand<'_> {
    host.command(NETCHECK)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs netcheck on `host`; its stdout, or a panic with its stderr.
fn ok(host: &Host, args: &[&str]) -> String {
    let out = netcheck(host).args(args).output();
    assert!(
        out.status.success(),
        "netcheck {args:?} on {} failed: {}",
        host.name(),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs netcheck on `host`, which must fail; its stderr.
fn fails(host: &Host, args: &[&str]) -> String {
    let out = netcheck(host).args(args).output();
    assert!(
        !out.status.success(),
        "netcheck {args:?} on {} should have failed, printed {:?}",
        host.name(),
        stdout(&out)
    );
    stderr(&out)
}

/// An echo server on `host`, once it listens.
fn echo_server(host: &Host) -> HostProcess {
    let addr = host.addr(PORT).to_string();
    let p = netcheck(host).args(["serve", &addr]).spawn("echo-server");
    vgrid_testkit::wait_for("the echo server to listen", Duration::from_secs(30), || {
        p.log().contains("listening")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", p.log()));
    p
}

fn echo(from: &Host, to: &Host, text: &str, timeout_ms: u32) -> Output {
    netcheck(from)
        .args([
            "echo",
            &to.addr(PORT).to_string(),
            text,
            &timeout_ms.to_string(),
        ])
        .output()
}

fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn hosts_reach_each_other_over_the_bridge_and_nothing_else() {
    let Some(lab) = Topology::new(&["a", "b", "c"]) else {
        return;
    };
    let (a, b, c) = (lab.host("a"), lab.host("b"), lab.host("c"));
    let subnet = lab.subnet().octets();
    assert_eq!(a.ip().octets()[..3], subnet[..3]);
    assert_eq!([a.ip(), b.ip(), c.ip()].map(|ip| ip.octets()[3]), [1, 2, 3]);

    let _server = echo_server(b);
    for from in [a, c] {
        let text = format!("hello from {}", from.name());
        let out = echo(from, b, &text, 5000);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), text);
    }
    // Only the bridge's subnet is routed: no default route, no IPv6 but
    // loopback's.
    for host in [a, b, c] {
        let v4 = ip(&["-n", host.netns(), "-4", "route", "show"]);
        let lines: Vec<&str> = v4.lines().collect();
        assert_eq!(lines.len(), 1, "{v4}");
        assert!(
            lines[0].starts_with(&format!("{}/24 dev {HOST_IF} ", lab.subnet())),
            "{v4}"
        );
        let v6 = ip(&["-n", host.netns(), "-6", "route", "show"]);
        assert!(!v6.contains("default") && !v6.contains(HOST_IF), "{v6}");
        let addrs = ip(&["-n", host.netns(), "-6", "addr", "show", "dev", HOST_IF]);
        assert!(!addrs.contains("inet6"), "{addrs}");
        let lo = ip(&["-n", host.netns(), "link", "show", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
    }
    // Anything else is unreachable at once: nothing leaves the namespaces.
    // (Loopback is up: a closed port there refuses instead.)
    for target in ["192.0.2.1:9", "10.0.0.1:9", "127.0.0.1:1"] {
        let err = fails(a, &["echo", target, "x", "3000"]);
        let expected = if target.starts_with("127.") {
            "ECONNREFUSED"
        } else {
            "ENETUNREACH"
        };
        assert!(err.contains(expected), "{target}: {err}");
    }
    // The switch has no address: it only bridges.
    let sw = ip(&["-n", lab.switch_netns(), "-4", "addr", "show"]);
    assert!(!sw.contains("inet "), "{sw}");
}

#[test]
fn a_host_sees_only_its_own_directory() {
    let Some(lab) = Topology::new(&["a", "b"]) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    let test_root = vgrid_testkit::test_root();
    let a_file = a.dir().join("from-a");
    let a_file = a_file.to_str().expect("utf-8");

    ok(a, &["write", a_file, "written on a"]);
    // The file is on the real file system, where the test sees it...
    assert_eq!(
        std::fs::read_to_string(a_file).expect("read from outside"),
        "written on a"
    );
    // ...and on a, by the same path...
    assert_eq!(ok(a, &["read", a_file]), "written on a");
    // ...but not on b, by path, nor by listing the directories above.
    assert!(fails(b, &["read", a_file]).contains("ENOENT"));
    assert!(fails(b, &["ls", a.dir().to_str().expect("utf-8")]).contains("ENOENT"));
    assert_eq!(
        ok(b, &["ls", lab.dir().to_str().expect("utf-8")]),
        "b\n",
        "b sees only its own directory among the topology's"
    );
    // Nothing else of target/vgrid-test either: no other topology, no
    // shared stock image, no other test's temporary directory.
    assert_eq!(ok(b, &["ls", test_root.to_str().expect("utf-8")]), "net\n");
    let net = test_root.join("net");
    assert_eq!(
        ok(b, &["ls", net.to_str().expect("utf-8")]),
        format!("{}\n", lab.tag())
    );
    // And nothing can be written beside its own directory.
    let stray = test_root.join("stray");
    assert!(fails(b, &["write", stray.to_str().expect("utf-8"), "x"]).contains("EROFS"));
    assert!(!stray.exists());

    // A file put in from outside, and an image installed, are seen by
    // that host only.
    b.put_file("token", "secret\n");
    assert_eq!(
        ok(b, &["read", b.dir().join("token").to_str().expect("utf-8")]),
        "secret\n"
    );
    let image = vgrid_testkit::temp_dir();
    std::fs::write(image.path().join("disk.qcow2"), "not really a disk").expect("write");
    a.install_image("tiny", image.path());
    let disk = a.dir().join("images/tiny/disk.qcow2");
    assert_eq!(
        ok(a, &["read", disk.to_str().expect("utf-8")]),
        "not really a disk"
    );
    assert!(fails(b, &["read", disk.to_str().expect("utf-8")]).contains("ENOENT"));
    // The source of the image is under target/vgrid-test/tmp: hidden.
    let source = image.path().join("disk.qcow2");
    assert!(fails(a, &["read", source.to_str().expect("utf-8")]).contains("ENOENT"));

    // Programs start in their host's directory, with VGRID_DATA_DIR set.
    assert_eq!(ok(b, &["ls", "."]), "token\n");
    let out = b.command("printenv").arg("VGRID_DATA_DIR").output();
    assert_eq!(stdout(&out).trim(), b.dir().to_str().expect("utf-8"));
}

#[test]
fn a_cut_link_stops_traffic_until_it_is_restored() {
    let Some(lab) = Topology::new(&["a", "b"]) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    let _server = echo_server(b);
    let _back = echo_server(a);
    assert!(echo(a, b, "before", 5000).status.success());

    b.cut_link();
    let port = ip(&["-n", lab.switch_netns(), "link", "show", b.switch_port()]);
    assert!(port.contains("state DOWN"), "{port}");
    for (from, to) in [(a, b), (b, a)] {
        let out = echo(from, to, "during", 1000);
        assert!(
            !out.status.success(),
            "{} reached {} over a cut link",
            from.name(),
            to.name()
        );
    }

    b.restore_link();
    vgrid_testkit::wait_for(
        "traffic over the restored link",
        Duration::from_secs(30),
        || echo(a, b, "after", 1000).status.success() && echo(b, a, "after", 1000).status.success(),
    )
    .unwrap();
    assert_eq!(stdout(&echo(a, b, "after", 5000)), "after");
}

#[test]
fn a_shaped_link_carries_no_more_than_its_rate() {
    let Some(lab) = Topology::new(&["a", "b"]) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    let _server = echo_server(b);
    // 8 Mbit/s: a megabyte each way cannot take less than about a second
    // (a lower bound, never a performance target).
    a.shape(&Shape {
        rate_bits_per_s: Some(8_000_000),
        delay: None,
    })
    .expect("tbf");
    assert!(a.qdisc().contains("tbf"), "{}", a.qdisc());
    let out = ok(a, &["bulk", &b.addr(PORT).to_string(), "1000000", "60000"]);
    let ms: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("bulk printed {out:?}"));
    assert!(ms >= 900, "1 MB at 8 Mbit/s took only {ms} ms");
    a.clear_shape();
    assert!(!a.qdisc().contains("tbf"), "{}", a.qdisc());

    // A delay needs netem, which not every kernel has: then a clear error.
    match a.shape(&Shape {
        rate_bits_per_s: None,
        delay: Some(Duration::from_millis(5)),
    }) {
        Ok(()) => assert!(a.qdisc().contains("netem"), "{}", a.qdisc()),
        Err(e) => assert!(e.contains("netem"), "{e}"),
    }
    a.clear_shape();
}

#[test]
fn killing_a_host_ends_everything_on_it_and_nothing_else() {
    let Some(lab) = Topology::new(&["a", "b"]) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    let on_a = netcheck(a).arg("sleep").spawn("sleeper");
    let server = echo_server(b);
    // A daemon in a process group of its own, which no group kill reaches.
    let daemon: u32 = ok(b, &["detach"]).trim().parse().expect("a pid");
    let before = b.pids();
    assert!(
        before.contains(&server.pid()) && before.contains(&daemon),
        "{before:?}"
    );

    assert!(b.kill_all() >= 2);
    assert_eq!(b.pids(), Vec::<u32>::new());
    assert!(server.try_wait().is_some(), "the server was reaped");
    assert!(has_ended(daemon), "the daemon survived");
    assert!(on_a.try_wait().is_none(), "a process on another host died");
    assert_eq!(a.pids(), vec![on_a.pid()]);

    // A lost host: cut off and emptied at once.
    let _server = echo_server(b);
    assert_eq!(a.lose(), 1);
    assert!(on_a.try_wait().is_some());
    assert!(!echo(b, a, "anyone?", 1000).status.success());
}

/// Whether a process is gone (or a zombie of a parent that has not reaped
/// it yet).
fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// What a topology had, to check that none of it outlives the topology.
struct Snapshot {
    tag: String,
    netns: Vec<String>,
    pids: Vec<u32>,
    dir: PathBuf,
    machine_links: BTreeSet<String>,
}

fn machine_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("list /sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Builds a topology with processes on every host, daemons included.
fn busy_topology() -> Option<(Topology, Snapshot)> {
    let machine_links = machine_links();
    let lab = Topology::new(&["a", "b", "c"])?;
    let mut pids = Vec::new();
    for host in lab.hosts() {
        pids.push(echo_server(host).pid());
        pids.push(ok(host, &["detach"]).trim().parse().expect("a pid"));
    }
    let snapshot = Snapshot {
        tag: lab.tag().to_string(),
        netns: lab.netns_names(),
        pids,
        dir: lab.dir().to_path_buf(),
        machine_links,
    };
    Some((lab, snapshot))
}

fn assert_nothing_left(s: &Snapshot, dir_kept: bool) {
    let listed = ip(&["netns", "list"]);
    assert!(!listed.contains(&s.tag), "{listed}");
    for name in &s.netns {
        assert!(!Path::new("/run/netns").join(name).exists(), "{name}");
    }
    for &pid in &s.pids {
        assert!(has_ended(pid), "process {pid} outlived its topology");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&s.tag), "{mounts}");
    // Nothing of ours was ever in the machine's namespace; nothing is now.
    let links = machine_links();
    assert!(
        links.is_subset(&s.machine_links),
        "new links: {:?}",
        links.difference(&s.machine_links).collect::<Vec<_>>()
    );
    assert_eq!(s.dir.exists(), dir_kept, "{}", s.dir.display());
}

#[test]
fn teardown_leaves_nothing() {
    let started = Instant::now();
    let Some((lab, snapshot)) = busy_topology() else {
        return;
    };
    let built = started.elapsed();
    drop(lab);
    eprintln!(
        "3 hosts built in {} ms, torn down in {} ms",
        built.as_millis(),
        (started.elapsed() - built).as_millis()
    );
    assert_nothing_left(&snapshot, false);
}

#[test]
fn teardown_leaves_nothing_when_the_test_panics() {
    let Some((lab, snapshot)) = busy_topology() else {
        return;
    };
    let dir = snapshot.dir.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        panic!("a failing test");
    }));
    assert!(result.is_err());
    // The directory stays for a look (the hosts' logs are printed too);
    // the next topology's sweep removes it once this process has ended.
    assert_nothing_left(&snapshot, true);
    std::fs::remove_dir_all(dir).expect("remove the kept directory");
}

#[test]
fn leftovers_of_an_ended_run_are_swept() {
    // A run that died: its owner is this pid with another start time, as
    // when the pid has been reused since.
    let stale_tag = format!("{:x}.1-0", std::process::id());
    let stale_ns = format!("vgt-{stale_tag}-a");
    if Topology::new(&[]).is_none() {
        return;
    }
    ip(&["netns", "add", &stale_ns]);
    let mut orphan = std::process::Command::new("ip")
        .args(["netns", "exec", &stale_ns, NETCHECK, "sleep"])
        .spawn()
        .expect("start a process in the stale namespace");
    let stale_dir = vgrid_testkit::test_root().join("net").join(&stale_tag);
    std::fs::create_dir_all(stale_dir.join("a")).expect("a stale directory");
    // Wait until the orphan has entered the namespace, or has already
    // been swept by a topology another test built meanwhile (tests run in
    // parallel, and every new topology sweeps ended runs).
    let ns_file = Path::new("/run/netns").join(&stale_ns);
    let pid = orphan.id();
    let mut ended = None;
    vgrid_testkit::wait_for("the orphan to start", Duration::from_secs(30), || {
        ended = ended.or_else(|| orphan.try_wait().ok().flatten());
        ended.is_some()
            || std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with("netcheck"))
    })
    .unwrap();

    let lab = Topology::new(&["a"]);
    assert!(lab.is_some(), "a topology was built a moment ago");
    assert!(!ns_file.exists(), "the stale namespace is still there");
    assert!(!stale_dir.exists(), "the stale directory is still there");
    let status = match ended {
        Some(s) => s,
        None => orphan.wait().expect("wait"),
    };
    assert!(!status.success(), "the orphan was killed: {status:?}");
}
