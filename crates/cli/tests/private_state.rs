//! Other local users cannot read vgrid's state (issue 8, item 5), with real
//! processes: `vgrid serve` runs a job whose environment holds a secret (it
//! prints it, so the output log holds it too), the job is checkpointed, and
//! a save-restore job leaves a saved kept VM. Then every entry under the
//! data directory must be closed to group and others, except what
//! [`ALLOWED`] lists with its reason; and, as root, the user `nobody` can
//! enter no directory and read no file of it even when the data directory
//! itself is opened (as an administrator's `/var/lib/vgrid` may be).
//! Skipped, saying why, when QEMU or the stock image is missing; under
//! `CI=true` that fails instead.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A guard against hanging only (TCG boots take seconds).
const LIMIT: Duration = Duration::from_secs(600);

/// What the job's environment holds.
const SECRET: &str = "s3cret-5b1e0c7d-not-for-other-users";

/// Entries under the data directory that may be open to group or others,
/// each with why. Paths are relative to the data directory.
const ALLOWED: &[(&str, &str)] = &[
    // The test links the shared stock image; a link's own mode means
    // nothing (what it points to is checked where it lives).
    ("images/tiny", "a symbolic link made by the test"),
];

fn vgrid(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
        .args(args)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN")
        .output()
        .expect("vgrid runs")
}

fn ok(data: &Path, log: &Path, args: &[&str]) -> String {
    let out = vgrid(data, args);
    assert!(
        out.status.success(),
        "vgrid {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn submit(data: &Path, log: &Path, scratch: &Path, name: &str, text: &str) -> String {
    let file = scratch.join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("job file");
    ok(data, log, &["submit", file.to_str().expect("utf-8")])
        .trim()
        .to_string()
}

fn show(data: &Path, log: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok(data, log, &["show", id, "--json"])).expect("json")
}

/// Every entry under `dir` (links not followed), relative to `root`. An
/// entry that vanishes meanwhile (a temporary file renamed) is skipped.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(root).expect("inside").to_path_buf();
        let is_dir = meta.is_dir();
        out.push((rel, meta));
        if is_dir {
            walk(root, &path, out);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_other_user_can_read_the_state_of_a_job_with_a_secret() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    // The data directory does not exist yet: vgrid creates it. Its parent
    // is open so that `nobody` can try its luck below.
    let base = vgrid_testkit::temp_dir();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = base.path().join("data");
    let scratch = vgrid_testkit::temp_dir();
    let log = scratch.path().join("serve.log");
    let listed = vgrid(&data, &["image", "ls"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "vgrid creates the data directory 0700");
    assert_eq!(mode(&data.join("images")), 0o700);
    vgrid_testkit::link_stock_image(&image, &data);

    let server = vgrid_testkit::local::Local::serve_logging_to(
        Path::new(env!("CARGO_BIN_EXE_vgrid")),
        &data,
        &["--cpus", "2", "--memory-mb", "2048"],
        &log,
    );
    let log_text = || server.log();

    // A job with a secret in its environment, checkpointed while it runs.
    let count =
        "echo token=$TOKEN; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo $i; sleep 0.5; done";
    let id = submit(
        &data,
        &log,
        scratch.path(),
        "secret",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nenv = {{ TOKEN = \"{SECRET}\" }}\ncommand = [\"/bin/sh\", \"-c\", \"{count}\"]\n"
        ),
    );
    vgrid_testkit::wait_for("the job to count", LIMIT, || {
        ok(&data, &log, &["logs", &id]).lines().count() >= 3
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_text()));
    ok(&data, &log, &["checkpoint", &id]);
    vgrid_testkit::wait_for("the checkpoint", LIMIT, || {
        show(&data, &log, &id)["checkpoints"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_text()));
    // It keeps running (and its checkpoint is kept) while the data
    // directory is walked below.
    assert!(ok(&data, &log, &["logs", &id]).starts_with(&format!("token={SECRET}\n")));

    // A save-restore job leaves its VM saved in a kept chain.
    let kept = submit(
        &data,
        &log,
        scratch.path(),
        "kept",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nmode = \"save-restore\"\nenv = {{ TOKEN = \"{SECRET}\" }}\ncommand = [\"/bin/echo\", \"kept\"]\n"
        ),
    );
    let waited = vgrid(&data, &["wait", &kept]);
    assert!(waited.status.success(), "{:#}", show(&data, &log, &kept));
    vgrid_testkit::wait_for("the kept VM to be saved", LIMIT, || {
        let mut all = Vec::new();
        walk(&data, &data, &mut all);
        all.iter()
            .any(|(p, _)| p.starts_with("kept") && p.ends_with("manifest.json"))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_text()));

    // A running VM: its directory, sockets, disk and logs.
    let live = submit(
        &data,
        &log,
        scratch.path(),
        "live",
        &format!(
            "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\nenv = {{ TOKEN = \"{SECRET}\" }}\ncommand = [\"/bin/sh\", \"-c\", \"echo ready; sleep 600\"]\n"
        ),
    );
    vgrid_testkit::wait_for("the live job to run", LIMIT, || {
        ok(&data, &log, &["logs", &live]) == "ready\n"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_text()));

    // The server still runs: the database's -wal and -shm exist.
    let mut entries = Vec::new();
    walk(&data, &data, &mut entries);
    let mut open = Vec::new();
    let mut holding_secret = Vec::new();
    for (rel, meta) in &entries {
        let allowed = ALLOWED.iter().any(|(p, _)| Path::new(p) == rel);
        if meta.permissions().mode() & 0o077 != 0 && !allowed {
            open.push(format!(
                "{} {:o} uid {}",
                rel.display(),
                meta.permissions().mode() & 0o7777,
                meta.uid()
            ));
        }
        if meta.is_file()
            && meta.len() < 64 << 20
            && std::fs::read(data.join(rel)).is_ok_and(|b| contains(&b, SECRET.as_bytes()))
        {
            holding_secret.push(rel.clone());
        }
    }
    assert!(
        open.is_empty(),
        "open to group or others:\n{}",
        open.join("\n")
    );
    // The walk covered where the secret really is.
    for place in ["vgrid.db", "output", "agent/checkpoints", "kept", "vms"] {
        assert!(
            holding_secret
                .iter()
                .any(|p| p.to_string_lossy().starts_with(place)),
            "no file under {place} holds the secret: {holding_secret:?}"
        );
    }
    let vm_sockets = entries
        .iter()
        .filter(|(p, m)| {
            p.starts_with("vms") && std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())
        })
        .count();
    assert!(vm_sockets >= 2, "a running VM's QMP and control sockets");
    for must in [
        "vgrid.db-wal",
        "vgrid.db-shm",
        "admin.token",
        "url",
        "agent",
    ] {
        assert!(
            entries.iter().any(|(p, _)| p == Path::new(must)),
            "{must} missing"
        );
    }

    // As another user, with the data directory itself opened (an existing
    // directory vgrid was given keeps its mode): nothing to enter or read.
    if is_root() {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let as_nobody = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("find")
                .args(args)
                .uid(65534)
                .gid(65534)
                .stderr(Stdio::null())
                .output()
                .expect("find runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let seen = as_nobody(&[data.as_os_str(), "-mindepth".as_ref(), "2".as_ref()]);
        assert_eq!(seen, "", "nobody entered a directory");
        let readable = as_nobody(&[
            data.as_os_str(),
            "-type".as_ref(),
            "f".as_ref(),
            "-readable".as_ref(),
        ]);
        assert_eq!(readable, "", "nobody reads a file");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    // An ended job's checkpoints (its guest's memory and environment) are
    // deleted: nothing resumes from them.
    let ckpt = data.join("agent/checkpoints").join(&id);
    let named = data.join("store/refs/checkpoints").join(&id);
    assert!(ckpt.is_dir(), "the running job's checkpoints are kept");
    assert!(named.is_dir(), "and named in the controller's store");
    ok(&data, &log, &["cancel", &id]);
    vgrid_testkit::wait_for("the ended job's checkpoints to go", LIMIT, || {
        !ckpt.exists() && !named.exists()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", log_text()));
    drop(server);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
