//! Separate hosts on one machine, for tests of a cluster: a [`Topology`]
//! of hosts that share no network and no files but the ones a test gives
//! them.
//!
//! ```text
//!   switch netns  vgt-TAG           br0 (a Linux bridge, no address)
//!                                 /   |   \
//!                           v-ctl   v-n1   v-n2      (veth, switch side)
//!                             |       |      |
//!   host netns vgt-TAG-HOST  eth0    eth0   eth0     10.X.Y.1, .2, .3 /24
//!                            + lo    + lo   + lo     (no default route)
//! ```
//!
//! - Every host is a network namespace with a veth pair to a bridge in a
//!   switch namespace of its own, an address in a /24 of 10.0.0.0/8 that
//!   no route of the machine covers, loopback up, no default route and no
//!   IPv6 addresses on the link: traffic stays on the bridge (a connection
//!   to any other address fails at once with "network unreachable").
//! - Every host has a data directory on the real file system,
//!   `<workspace>/target/vgrid-test/net/TAG/HOST`. A process runs "on" a
//!   host ([`Host::command`]) inside the host's network namespace and in a
//!   mount namespace of its own in which all of `target/vgrid-test` (every
//!   topology's hosts, the shared stock image, other tests' temporary
//!   directories) is an empty read-only tmpfs, with only the host's own
//!   directory bound back at its usual path. Nothing can work by reading
//!   another host's files, and the paths are the same inside and outside.
//!   Programs (the `vgrid` binary under `target/debug`) stay reachable. A
//!   host sees the stock image only once a test puts it into its directory
//!   ([`Host::install_stock_image`]).
//! - Processes are started from argument vectors; their output goes to a
//!   log file per process ([`HostProcess::log`], [`Host::logs`]).
//! - A host's link can be cut and restored ([`Host::cut_link`]: the switch
//!   side goes down, as when a cable is pulled) and shaped ([`Host::shape`]:
//!   `tc` on both ends). [`Host::kill_all`] SIGKILLs every process in the
//!   host's network namespace at once, whatever session or group it is in
//!   (QEMU and passt included); [`Host::lose`] also cuts its link.
//! - Dropping the topology (also while a test panics) kills every process
//!   of its hosts, deletes its namespaces (the veth pairs and the bridge go
//!   with them) and removes its directory. The mount namespaces have no
//!   name: they end with their last process. A panicking test prints the
//!   hosts' logs and keeps the directory for a look.
//! - Names carry the owner's pid and start time (`vgt-<pid>.<start>-<n>`):
//!   tests in parallel never collide, and a new topology first sweeps the
//!   namespaces and directories of owners that have ended (a test binary
//!   killed before it could drop its topology).
//!
//! It needs root, `ip` and `tc` (iproute2) and a kernel with network
//! namespaces, veth and bridges: without them a test skips, saying why, or
//! fails under `CI=true`.

mod sys;

use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::StockImage;

/// The first characters of every network namespace a topology creates.
pub const FAMILY: &str = "vgt-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The bridge in the switch namespace.
const BRIDGE: &str = "br0";
/// The host side of each host's veth pair, in the host's namespace.
pub const HOST_IF: &str = "eth0";
/// Host names: a letter, then letters and digits, so that `v-NAME` fits an
/// interface name (15 characters).
const MAX_NAME: usize = 12;

/// `ip netns add` and `delete` share /run/netns; one at a time per process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The programs a topology runs.
#[derive(Debug)]
struct Tools {
    ip: PathBuf,
    tc: PathBuf,
}

impl Tools {
    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(&self.ip, args)
    }

    fn tc(&self, args: &[&str]) -> Result<String, String> {
        run(&self.tc, args)
    }
}

/// Runs a program with an argument vector; its stdout, or why it failed.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{} {}` failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Skips (`None`, printing why) or, under CI, panics.
fn skip_or_panic<T>(reason: &str) -> Option<T> {
    if crate::in_ci() {
        panic!(
            "CI=true and {reason}: multi-host tests must run in CI (run them as root, after scripts/install-deps.sh)"
        );
    }
    eprintln!(
        "SKIPPED: {reason} (multi-host tests need root, and iproute2 from scripts/install-deps.sh; under CI=true this fails)"
    );
    None
}

/// What a topology needs of the machine, or why it cannot be built.
fn requirements() -> Result<Tools, String> {
    if !sys::is_root() {
        return Err("not running as root (network and mount namespaces need it)".into());
    }
    for ns in ["net", "mnt"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            return Err(format!("the kernel has no {ns} namespaces"));
        }
    }
    let find = |tool: &str| {
        crate::find_in_path(tool)
            .ok_or_else(|| format!("`{tool}` (Debian package iproute2) is not installed"))
    };
    Ok(Tools {
        ip: find("ip")?,
        tc: find("tc")?,
    })
}

/// This process as an owner of namespaces: `<pid>.<start time>`, in hex.
fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        let start = sys::start_time(pid).expect("this process has a start time");
        format!("{pid:x}.{start:x}")
    })
}

/// Whether `name` (a tag, `<owner>-<n>...`) belongs to an owner that has
/// ended. Names that are not ours are never stale.
fn owner_has_ended(name: &str) -> bool {
    let Some(owner) = name.split('-').next() else {
        return false;
    };
    let Some((pid, start)) = owner.split_once('.') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (u32::from_str_radix(pid, 16), u64::from_str_radix(start, 16))
    else {
        return false;
    };
    sys::start_time(pid) != Some(start)
}

/// `<workspace>/target/vgrid-test/net`: every topology's directory.
fn net_root() -> PathBuf {
    crate::test_root().join("net")
}

/// SIGKILLs every process in the network namespace `ns` until none is
/// left (a process may fork while it is being killed); how many it killed.
fn kill_all_in(ns: (u64, u64)) -> usize {
    let mut killed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = sys::pids_in_netns(ns);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("vgrid-testkit: processes {pids:?} survive SIGKILL");
            }
            return killed.len();
        }
        for pid in pids {
            sys::kill(pid);
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Kills what runs in the named namespace and deletes it. Quiet when it is
/// already gone (another process swept it first).
fn delete_netns(tools: &Tools, name: &str) -> Result<(), String> {
    let path = netns_path(name);
    if let Some(id) = sys::ns_identity(&path) {
        kill_all_in(id);
    }
    let _guard = lock(&NETNS_LOCK);
    if !path.exists() {
        return Ok(());
    }
    tools.ip(&["netns", "delete", name]).map(drop)
}

/// Removes the namespaces and directories that topologies of ended
/// processes left behind.
fn sweep(tools: &Tools) {
    if let Ok(entries) = fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(tag) = name.strip_prefix(FAMILY)
                && owner_has_ended(tag)
            {
                match delete_netns(tools, &name) {
                    Ok(()) => {
                        eprintln!("vgrid-testkit: removed the stale network namespace {name}")
                    }
                    Err(e) => eprintln!("vgrid-testkit: cannot remove the stale {name}: {e}"),
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(net_root()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_has_ended(&name) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The IPv4 routes of the machine (destination, mask), from
/// /proc/net/route (the main table), default routes left out.
fn machine_routes() -> Vec<(u32, u32)> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    // Addresses are printed as the raw 32-bit word of network-order bytes.
    let word = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|w| u32::from(Ipv4Addr::from(w.to_ne_bytes())))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((word(fields.get(1)?)?, word(fields.get(7)?)?))
        })
        .filter(|&(_, mask)| mask != 0)
        .collect()
}

/// A 10.X.Y.0/24 that no route of the machine covers or falls in: the
/// hosts' addresses never look like a real one. `seed` spreads parallel
/// topologies over different subnets (their namespaces are apart anyway).
fn pick_subnet(seed: u64) -> Ipv4Addr {
    let routes = machine_routes();
    const MASK: u32 = 0xffff_ff00;
    for i in 0..(191 * 256) {
        let v = seed.wrapping_add(i);
        let x = 64 + (v % 191) as u8;
        let y = ((v / 191) % 256) as u8;
        let net = Ipv4Addr::new(10, x, y, 0);
        let n = u32::from(net);
        if routes.iter().all(|&(dest, mask)| {
            let m = MASK & mask;
            n & m != dest & m
        }) {
            return net;
        }
    }
    panic!("every 10.64-254.x.0/24 is routed on this machine: no subnet left for test hosts");
}

/// How to shape a host's link (both directions): a rate (`tbf`), a delay
/// (`netem`, which some kernels lack), or both (`netem` alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Bits per second, e.g. `1_000_000_000` for 1 Gbit/s.
    pub rate_bits_per_s: Option<u64>,
    /// Added one-way delay.
    pub delay: Option<Duration>,
}

/// Hosts on separate network and mount namespaces, joined by a bridge.
/// See the [module documentation](self).
pub struct Topology {
    tools: Arc<Tools>,
    tag: String,
    dir: PathBuf,
    switch: String,
    subnet: Ipv4Addr,
    hosts: Vec<Host>,
}

impl Topology {
    /// Builds a topology with one host per name (a letter, then letters and
    /// digits, at most 12 characters), with the addresses .1, .2, ... of
    /// its subnet in that order. `None` (the test skips, printing why)
    /// when the machine cannot host it; under `CI=true` that panics
    /// instead. Any other failure panics.
    pub fn new(names: &[&str]) -> Option<Topology> {
        check_names(names);
        let tools = match requirements() {
            Ok(t) => Arc::new(t),
            Err(reason) => return skip_or_panic(&reason),
        };
        sweep(&tools);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", owner());
        let dir = net_root().join(&tag);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("_logs"))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let seed = u64::from(std::process::id()) * 7919 + u64::from(n) * 104_729;
        let mut topology = Topology {
            tools,
            switch: format!("{FAMILY}{tag}"),
            tag,
            dir,
            subnet: pick_subnet(seed),
            hosts: Vec::new(),
        };
        // The first namespace and bridge tell whether the machine can do
        // it at all (a container without the capability, a kernel without
        // bridges): skip then, as for a missing tool.
        if let Err(e) = topology.make_switch() {
            drop(topology);
            return skip_or_panic(&format!(
                "cannot build a bridge in a network namespace: {e}"
            ));
        }
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = topology.add_host(name, i) {
                panic!("cannot build host {name}: {e}");
            }
        }
        Some(topology)
    }

    fn make_switch(&self) -> Result<(), String> {
        let sw = self.switch.as_str();
        {
            let _guard = lock(&NETNS_LOCK);
            self.tools.ip(&["netns", "add", sw])?;
        }
        let ip = |args: &[&str]| {
            let mut v = vec!["-n", sw];
            v.extend_from_slice(args);
            self.tools.ip(&v).map(drop)
        };
        ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ip(&["link", "set", BRIDGE, "addrgenmode", "none"])?;
        ip(&["link", "set", BRIDGE, "up"])
    }

    fn add_host(&mut self, name: &str, index: usize) -> Result<(), String> {
        let netns = format!("{FAMILY}{}-{name}", self.tag);
        let octets = self.subnet.octets();
        let last = u8::try_from(index + 1)
            .ok()
            .filter(|&l| l < 255)
            .ok_or("at most 254 hosts")?;
        let address = Ipv4Addr::new(octets[0], octets[1], octets[2], last);
        let dir = self.dir.join(name);
        let logs = self.dir.join("_logs").join(name);
        for d in [&dir, &logs] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        {
            let _guard = lock(&NETNS_LOCK);
            self.tools.ip(&["netns", "add", &netns])?;
        }
        let host = Host {
            name: name.to_string(),
            netns,
            address,
            port: format!("v-{name}"),
            switch: self.switch.clone(),
            dir,
            logs,
            tools: self.tools.clone(),
            procs: Mutex::new(Vec::new()),
            seq: AtomicU32::new(0),
        };
        // Pushed first: whatever is built from here on, Drop removes.
        self.hosts.push(host);
        let host = self.hosts.last().expect("just pushed");
        let cidr = format!("{address}/24");
        let (sw, h, port) = (
            self.switch.as_str(),
            host.netns.as_str(),
            host.port.as_str(),
        );
        for args in [
            // The peer is created straight into the host's namespace: no
            // interface of ours ever appears in the machine's namespace.
            &[
                "-n", sw, "link", "add", port, "type", "veth", "peer", "name", HOST_IF, "netns", h,
            ][..],
            &["-n", sw, "link", "set", port, "addrgenmode", "none"],
            &["-n", sw, "link", "set", port, "master", BRIDGE],
            &["-n", sw, "link", "set", port, "up"],
            &["-n", h, "link", "set", "lo", "up"],
            // No IPv6 link-local address: nothing is sent but what a test
            // sends.
            &["-n", h, "link", "set", HOST_IF, "addrgenmode", "none"],
            &["-n", h, "addr", "add", &cidr, "dev", HOST_IF],
            &["-n", h, "link", "set", HOST_IF, "up"],
        ] {
            self.tools.ip(args)?;
        }
        Ok(())
    }

    /// The host named `name`; panics when there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this topology"))
    }

    /// Every host, in the order they were named.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The unique part of every name of this topology (`<pid>.<start>-<n>`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The switch's network namespace (it holds the bridge).
    pub fn switch_netns(&self) -> &str {
        &self.switch
    }

    /// The hosts' subnet: its network address (a /24).
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }

    /// The topology's directory: one directory per host, and `_logs`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every network namespace of the topology: the switch's, then the
    /// hosts'.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.switch.clone())
            .chain(self.hosts.iter().map(|h| h.netns.clone()))
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for host in &self.hosts {
            host.kill_all();
        }
        if panicking {
            for host in &self.hosts {
                eprintln!(
                    "vgrid-testkit: host {} ({}), its processes' logs:\n{}",
                    host.name,
                    host.address,
                    tail(&host.logs(), 8000)
                );
            }
        }
        for name in self.hosts.iter().map(|h| &h.netns).chain([&self.switch]) {
            if let Err(e) = delete_netns(&self.tools, name) {
                eprintln!("vgrid-testkit: cannot delete the network namespace {name}: {e}");
            }
        }
        if panicking {
            eprintln!("vgrid-testkit: kept {} for a look", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("vgrid-testkit: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn check_names(names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let ok = name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        assert!(
            ok,
            "host name `{name}`: a lower-case letter, then letters and digits, at most {MAX_NAME}"
        );
        assert!(!names[..i].contains(name), "host name `{name}` given twice");
    }
}

/// One host of a [`Topology`].
pub struct Host {
    name: String,
    netns: String,
    address: Ipv4Addr,
    /// The switch side of its veth pair.
    port: String,
    switch: String,
    dir: PathBuf,
    logs: PathBuf,
    tools: Arc<Tools>,
    procs: Mutex<Vec<HostProcess>>,
    seq: AtomicU32,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.address
    }

    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.address, port))
    }

    /// Its data directory: the only directory of `target/vgrid-test` its
    /// processes see. Commands start in it, with `VGRID_DATA_DIR` set to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its network namespace (`ip -n NAME ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its interface on the switch (`ip -n SWITCH link show NAME`).
    pub fn switch_port(&self) -> &str {
        &self.port
    }

    /// A command that runs `program` on this host (see [`HostCommand`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> HostCommand<'_> {
        let mut cmd = Command::new(program);
        cmd.env("VGRID_DATA_DIR", &self.dir)
            .env_remove("VGRID_URL")
            .env_remove("VGRID_TOKEN");
        HostCommand {
            host: self,
            cmd,
            cwd: self.dir.clone(),
        }
    }

    /// Writes a file into the host's directory from outside (a token, a
    /// job file): mode 0600, replacing one of the same name. `rel` is a
    /// relative path of plain components; its parent must exist.
    pub fn put_file(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let rel = rel.as_ref();
        assert!(
            rel.components().all(|c| matches!(c, Component::Normal(_))),
            "{}: not a plain relative path",
            rel.display()
        );
        let path = self.dir.join(rel);
        let _ = fs::remove_file(&path);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        std::io::Write::write_all(&mut file, contents.as_ref())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Puts the shared stock image into this host's directory as
    /// `images/tiny`, so that this host, and only this one, has it.
    pub fn install_stock_image(&self, stock: &StockImage) {
        self.install_image(crate::STOCK_IMAGE, &stock.image.dir);
    }

    /// Puts the image directory `from` into this host's directory as
    /// `images/NAME`: hard links to its files (an image is read-only; a
    /// copy where links are impossible), directories 0700.
    pub fn install_image(&self, name: &str, from: &Path) {
        let to = self.dir.join("images").join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&to)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
        let entries =
            fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("read an image directory");
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let dest = to.join(entry.file_name());
            if fs::hard_link(entry.path(), &dest).is_err() {
                fs::copy(entry.path(), &dest)
                    .unwrap_or_else(|e| panic!("cannot copy {}: {e}", entry.path().display()));
            }
        }
    }

    /// Cuts the host's link at the switch, as when its cable is pulled:
    /// nothing goes in or out until [`Host::restore_link`]. The host's own
    /// interface stays configured (it only loses its carrier).
    pub fn cut_link(&self) {
        self.set_port("down");
    }

    /// Plugs the host's link back in.
    pub fn restore_link(&self) {
        self.set_port("up");
    }

    fn set_port(&self, state: &str) {
        self.tools
            .ip(&["-n", &self.switch, "link", "set", &self.port, state])
            .unwrap_or_else(|e| panic!("host {}: {e}", self.name));
    }

    /// Shapes the host's link in both directions (the host's interface and
    /// its switch port), replacing any earlier shape. A delay needs
    /// `netem`: an error says so where the kernel lacks it.
    pub fn shape(&self, shape: &Shape) -> Result<(), String> {
        let mut qdisc: Vec<String> = Vec::new();
        match (shape.rate_bits_per_s, shape.delay) {
            (None, None) => {
                self.clear_shape();
                return Ok(());
            }
            (Some(rate), None) => {
                // A burst of 10 ms at the rate (at least 16 KiB), a queue
                // of 100 ms: TCP reaches the rate without long stalls.
                let burst = (rate / 8 / 100).max(16 * 1024);
                qdisc.extend(
                    [
                        "tbf",
                        "rate",
                        &format!("{rate}bit"),
                        "burst",
                        &burst.to_string(),
                    ]
                    .map(String::from),
                );
                qdisc.extend(["latency", "100ms"].map(String::from));
            }
            (rate, Some(delay)) => {
                qdisc.extend([
                    "netem".to_string(),
                    "delay".to_string(),
                    format!("{}us", delay.as_micros()),
                    "limit".to_string(),
                    "100000".to_string(),
                ]);
                if let Some(rate) = rate {
                    qdisc.extend(["rate".to_string(), format!("{rate}bit")]);
                }
            }
        }
        for (ns, dev) in [(&self.netns, HOST_IF), (&self.switch, self.port.as_str())] {
            let mut args = vec!["-n", ns.as_str(), "qdisc", "replace", "dev", dev, "root"];
            args.extend(qdisc.iter().map(String::as_str));
            self.tools.tc(&args).map_err(|e| {
                if qdisc[0] == "netem" {
                    format!("{e} (a delay needs the kernel's netem qdisc, sch_netem)")
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Removes any shape from the host's link.
    pub fn clear_shape(&self) {
        for (ns, dev) in [(&self.netns, HOST_IF), (&self.switch, self.port.as_str())] {
            // Deleting the default qdisc fails: nothing to remove then.
            let _ = self
                .tools
                .tc(&["-n", ns, "qdisc", "del", "dev", dev, "root"]);
        }
    }

    /// What `tc qdisc show` says of the host's interface (for checks).
    pub fn qdisc(&self) -> String {
        self.tools
            .tc(&["-n", &self.netns, "qdisc", "show", "dev", HOST_IF])
            .unwrap_or_else(|e| panic!("host {}: {e}", self.name))
    }

    /// The pids of every process running on the host (in its network
    /// namespace), whoever started them.
    pub fn pids(&self) -> Vec<u32> {
        match sys::ns_identity(&netns_path(&self.netns)) {
            Some(id) => sys::pids_in_netns(id),
            None => Vec::new(),
        }
    }

    /// SIGKILLs every process on the host at once, as if it lost power:
    /// everything in its network namespace, whatever session or process
    /// group it is in (QEMU and passt in their own sessions included).
    /// Returns how many processes it killed. The processes this host
    /// started are reaped: their [`HostProcess::try_wait`] has the status.
    pub fn kill_all(&self) -> usize {
        let killed = match sys::ns_identity(&netns_path(&self.netns)) {
            Some(id) => kill_all_in(id),
            None => 0,
        };
        for p in lock(&self.procs).iter() {
            // Already dead, unless the namespace was deleted behind our
            // back: then their groups are all that can be found of them.
            let _ = p.kill_and_reap();
        }
        killed
    }

    /// A host lost without notice: its link is cut and everything on it
    /// killed. [`Host::restore_link`] brings the (empty) host back.
    pub fn lose(&self) -> usize {
        self.cut_link();
        self.kill_all()
    }

    /// Every process started on the host with its log, in start order.
    pub fn processes(&self) -> Vec<HostProcess> {
        lock(&self.procs).clone()
    }

    /// The logs of every process started on this host, each under a header.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in lock(&self.procs).iter() {
            out.push_str(&format!("== {} (pid {}) ==\n", p.inner.label, p.inner.pid));
            out.push_str(&p.log());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// A command to run on a [`Host`]: an argument vector (no shell), run in
/// the host's network namespace and a mount namespace of its own (see the
/// [module documentation](self)), starting in the host's directory with
/// `VGRID_DATA_DIR` set to it and `VGRID_URL` and `VGRID_TOKEN` removed.
pub struct HostCommand<'h> {
    host: &'h Host,
    cmd: Command,
    cwd: PathBuf,
}

impl HostCommand<'_> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// The directory to start in, as the host sees it (its own directory
    /// by default).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    fn entry(&mut self) -> sys::Entry {
        let host = self.host;
        let entry = sys::Entry::new(
            &netns_path(&host.netns),
            &crate::test_root(),
            &host.dir,
            &self.cwd,
        )
        .unwrap_or_else(|e| panic!("cannot prepare to enter host {}: {e}", host.name));
        entry.install(&mut self.cmd);
        entry
    }

    /// Starts the program in the background, its stdout and stderr going to
    /// a log file named after `label`. It runs in a process group of its
    /// own, and is killed when the topology is dropped.
    pub fn spawn(mut self, label: &str) -> HostProcess {
        let host = self.host;
        let seq = host.seq.fetch_add(1, Ordering::Relaxed);
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let log = host.logs.join(format!("{seq:02}-{clean}.log"));
        let file = fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = file.try_clone().expect("duplicate a log descriptor");
        self.cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        let entry = self.entry();
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} on host {}: {e}", host.name));
        drop(entry);
        let process = HostProcess {
            inner: Arc::new(ProcInner {
                label: label.to_string(),
                host: host.name.clone(),
                pid: child.id(),
                log,
                child: Mutex::new(child),
            }),
        };
        lock(&host.procs).push(process.clone());
        process
    }

    /// Runs the program to its end and returns its status and output (stdin
    /// is empty).
    pub fn output(mut self) -> Output {
        let host = self.host;
        self.cmd.stdin(Stdio::null()).process_group(0);
        let entry = self.entry();
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run a program on host {}: {e}", host.name));
        drop(entry);
        out
    }
}

/// A process started with [`HostCommand::spawn`]. Clones share it.
#[derive(Clone)]
pub struct HostProcess {
    inner: Arc<ProcInner>,
}

struct ProcInner {
    label: String,
    host: String,
    pid: u32,
    log: PathBuf,
    child: Mutex<Child>,
}

impl HostProcess {
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The host it runs on.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Its log file (stdout and stderr), outside every host's view.
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.inner.log).unwrap_or_default()).into_owned()
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        lock(&self.inner.child).try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to end.
    pub fn wait_timeout(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs it and its process group (what it started, unless that
    /// left the group), and reaps it.
    pub fn kill(&self) -> ExitStatus {
        self.kill_and_reap().expect("wait for a killed process")
    }

    fn kill_and_reap(&self) -> std::io::Result<ExitStatus> {
        let mut child = lock(&self.inner.child);
        if child.try_wait().ok().flatten().is_none() {
            // Its pid is its group's id, and cannot be reused before the
            // wait below.
            sys::kill_group(self.inner.pid);
        }
        child.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_that_ended_are_told_apart_from_live_ones() {
        assert!(!owner_has_ended(owner()));
        assert!(!owner_has_ended(&format!("{}-3-ctl", owner())));
        // Same pid, another start time: the pid was reused.
        let pid = std::process::id();
        assert!(owner_has_ended(&format!("{pid:x}.1-0")));
        // Not one of ours: never touched.
        assert!(!owner_has_ended("something-else"));
        assert!(!owner_has_ended("zz.1-0"));
    }

    #[test]
    fn subnets_avoid_the_machine_routes() {
        let net = pick_subnet(12345);
        let o = net.octets();
        assert_eq!((o[0], o[3]), (10, 0));
        assert!(o[1] >= 64);
        let n = u32::from(net);
        for (dest, mask) in machine_routes() {
            let m = mask & 0xffff_ff00;
            assert_ne!(n & m, dest & m, "{net} overlaps a route");
        }
    }

    #[test]
    fn names_must_fit_interface_names() {
        check_names(&["ctl", "n1", "abcdefghijkl"]);
        for bad in ["", "1a", "a-b", "Ab", "abcdefghijklm", "a b"] {
            let r = std::panic::catch_unwind(|| check_names(&[bad]));
            assert!(r.is_err(), "`{bad}` accepted");
        }
        assert!(std::panic::catch_unwind(|| check_names(&["a", "a"])).is_err());
    }

    #[test]
    fn tails_cut_at_characters() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
    }
}
