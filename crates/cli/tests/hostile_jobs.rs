//! Jobs that attack the host through what it shares with them, in real
//! QEMU VMs through `vgrid serve`: a guest that plants symbolic links in
//! its staging share, and a user who names another user's files. Skipped,
//! saying why, when QEMU or the stock image is missing; under `CI=true`
//! that fails instead.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
}

use vgrid_testkit::local::Local as Server;

fn serve(data: &Path) -> Server {
    Server::serve(
        Path::new(env!("CARGO_BIN_EXE_vgrid")),
        data,
        &["--cpus", "2", "--memory-mb", "2048"],
    )
}

fn server_log(data: &Path) -> String {
    std::fs::read_to_string(data.join("serve.log")).unwrap_or_default()
}

/// Runs `vgrid` as the admin, or as the user whose token is given.
fn run_as(data: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = vgrid();
    cmd.args(args)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN");
    if let Some(t) = token {
        cmd.env("VGRID_TOKEN", t);
    }
    cmd.output().expect("vgrid runs")
}

fn ok_as(data: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = run_as(data, token, args);
    assert!(
        out.status.success(),
        "vgrid {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log(data)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn submit_as(data: &Path, token: Option<&str>, name: &str, text: &str) -> String {
    let file = data.join(name);
    std::fs::write(&file, text).expect("job file");
    ok_as(data, token, &["submit", file.to_str().expect("utf-8")])
        .trim()
        .to_string()
}

fn show(data: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok_as(data, None, &["show", id, "--json"])).expect("json")
}

/// Waits for the job's end; returns its state and reason.
fn finished(data: &Path, id: &str) -> (String, String) {
    let _ = run_as(data, None, &["wait", id]);
    let job = show(data, id);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (text(&job["job"]["state"]), text(&job["job"]["reason"]))
}

fn history_states(data: &Path, id: &str) -> Vec<String> {
    show(data, id)["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["state"].as_str().map(str::to_string))
        .collect()
}

/// A secret only root may read, with random content, in its own 0700
/// directory: what a job must never get.
fn root_only_secret(dir: &Path) -> (PathBuf, String) {
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .expect("random bytes");
    let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let secret_dir = dir.join("secret");
    std::fs::create_dir(&secret_dir).expect("secret dir");
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let file = secret_dir.join("secret.txt");
    std::fs::write(&file, format!("{secret}\n")).expect("secret");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (file, secret)
}

/// Every file below `dir`, read whole.
fn contents_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(contents_below(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

fn assert_never_delivered(dir: &Path, secret: &str, data: &Path) {
    for (path, bytes) in contents_below(dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the host's secret\n{}",
            path.display(),
            server_log(data)
        );
    }
}

/// The attack of issue 8, item 1: a process the command leaves behind
/// waits until the guest agent has staged the first (small) output into
/// the share, then swaps it for a symbolic link to a root-only host file
/// while the large one is still being copied; a second job plants a
/// directory link in the share itself, so that the host's path to its
/// output runs through it. Before the fix, the host copied the secret as
/// both jobs' outputs. Now the guest agent ends every process before it
/// stages outputs out, and the host opens staged files without following
/// any link (the second job, which needs no leftover process, fails).
/// Outputs go to the controller's store and come back with `vgrid
/// output`: the secret is in neither.
#[test]
fn a_job_cannot_read_a_host_file_through_links_in_its_staging_share() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let outside = vgrid_testkit::temp_dir();
    let (secret_file, secret) = root_only_secret(outside.path());
    let secret_dir = secret_file.parent().expect("parent");
    // The submitter's directory (job files, inputs, fetched outputs).
    let home = vgrid_testkit::temp_dir();
    let home = home.path();
    std::fs::write(home.join("seed.txt"), "seed\n").expect("input");
    let _server = serve(data);

    // The race: swap the first output while the second is staged out.
    let swapper = format!(
        "S=/run/vgrid/stage; while [ ! -s $S/small.txt ]; do sleep 0.05 || :; done; \
         ln -s {secret} $S/.swap && mv -f $S/.swap $S/small.txt",
        secret = secret_file.display()
    );
    let racing = format!(
        r#"image = "tiny"
memory_mb = 256
command = ["/bin/sh", "-c", '''
echo guest-small > /work/small.txt
dd if=/dev/zero of=/work/large.bin bs=1048576 count=40 2>/dev/null
setsid sh -c '{swapper}' </dev/null >/dev/null 2>&1 &
exit 0
''']
[[inputs]]
from = "seed.txt"
to = "/work/seed.txt"
[[outputs]]
from = "/work/small.txt"
[[outputs]]
from = "/work/large.bin"
"#
    );
    // No race needed: the command mounts the share (as a hostile root in
    // the guest can) and makes `sub` a link to the secret's directory.
    let planted = format!(
        r#"image = "tiny"
memory_mb = 256
command = ["/bin/sh", "-c", '''
mkdir -p /work/sub {secret_dir} /mnt/st
echo guest-sub > /work/sub/secret.txt
mount -t 9p -o trans=virtio,version=9p2000.L stage /mnt/st
ln -s {secret_dir} /mnt/st/sub
umount /mnt/st
exit 0
''']
[[inputs]]
from = "seed.txt"
to = "/work/seed.txt"
[[outputs]]
from = "/work/sub/secret.txt"
"#,
        secret_dir = secret_dir.display(),
    );
    let submit_here = |name: &str, text: &str| {
        let file = home.join(name);
        std::fs::write(&file, text).expect("job file");
        ok_as(data, None, &["submit", file.to_str().expect("utf-8")])
            .trim()
            .to_string()
    };
    let racing = submit_here("racing.toml", &racing);
    let planted = submit_here("planted.toml", &planted);

    let (state, reason) = finished(data, &racing);
    // The guest agent ended the leftover process before staging out, so
    // the job delivers what its command wrote. (Were it alive, it would
    // swap the link in, and the host would refuse the output: "staged
    // output `small.txt`: ... is a symbolic link".)
    assert_eq!(state, "done", "{reason}\n{}", server_log(data));
    let out1 = home.join("out1");
    ok_as(
        data,
        None,
        &["output", &racing, "--to", out1.to_str().expect("utf-8")],
    );
    assert_never_delivered(&out1, &secret, data);
    let small = std::fs::read_to_string(out1.join("small.txt")).expect("small");
    assert_eq!(small, "guest-small\n");
    let large = std::fs::metadata(out1.join("large.bin")).expect("large");
    assert_eq!(large.len(), 40 << 20);

    let (state, reason) = finished(data, &planted);
    assert_eq!(state, "failed", "{reason}\n{}", server_log(data));
    assert!(
        reason.contains("symbolic link") && reason.contains("sub"),
        "{reason}"
    );
    let out2 = home.join("out2");
    let fetched = run_as(
        data,
        None,
        &["output", &planted, "--to", out2.to_str().expect("utf-8")],
    );
    assert!(!fetched.status.success());
    let err = String::from_utf8_lossy(&fetched.stderr);
    assert!(err.contains("ended without outputs"), "{err}");
    assert_never_delivered(&out2, &secret, data);
    assert!(!out2.join("secret.txt").exists());
}

/// Issue 8, item 6: a user's job reaches only `<root>/<user>/`: another
/// user's data repository is refused before a VM boots, also through a
/// link inside the user's own directory. (Inputs and outputs are no host
/// paths: they travel through the controller, see `job_data.rs`.)
#[test]
fn a_users_job_cannot_read_or_overwrite_another_users_files() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let repos = data.join("repos");
    for d in ["admin/private", "bob/in"] {
        std::fs::create_dir_all(repos.join(d)).expect("dirs");
    }
    std::fs::write(repos.join("admin/private/notes.txt"), "admin's notes\n").expect("notes");
    std::fs::write(repos.join("bob/in/numbers.txt"), "1\n2\n").expect("bob's input");
    std::os::unix::fs::symlink(repos.join("admin/private"), repos.join("bob/alias")).expect("link");
    let _server = serve(data);
    let bob = ok_as(data, None, &["users", "add", "bob"]);
    let bob = Some(bob.trim());

    let job = |host: &Path, readonly: bool| {
        format!(
            "image = \"tiny\"\nmemory_mb = 256\ncommand = [\"/bin/sh\", \"-c\", \"cat /data/*.txt; echo x > /data/planted.txt || :\"]\n[[mounts]]\nhost = \"{}\"\nguest = \"/data\"\nreadonly = {readonly}\n",
            host.display()
        )
    };
    let attempts = [
        job(&repos.join("admin/private"), true),
        job(&repos.join("admin/private"), false),
        job(&repos.join("bob/alias"), false),
    ];
    for (i, text) in attempts.iter().enumerate() {
        // Refused at submit (a controller that checks) or at start.
        let file = data.join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("job file");
        let out = run_as(data, bob, &["submit", file.to_str().expect("utf-8")]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("outside"), "attempt {i}: {err}");
            continue;
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (state, reason) = finished(data, &id);
        assert_eq!(state, "failed", "attempt {i}: {reason}");
        assert!(
            reason.contains("outside") && reason.contains("mounts[0].host"),
            "attempt {i}: {reason}"
        );
        let states = history_states(data, &id);
        assert!(
            !states.iter().any(|s| s == "running"),
            "attempt {i} ran: {states:?}"
        );
    }
    assert!(!repos.join("admin/private/planted.txt").exists());

    // Bob's own directory works.
    let good = submit_as(data, bob, "good.toml", &job(&repos.join("bob/in"), true));
    let (state, reason) = finished(data, &good);
    assert_eq!(state, "done", "{reason}\n{}", server_log(data));
    let logs = ok_as(data, bob, &["logs", &good]);
    assert!(logs.starts_with("1\n2\n"), "{logs}");
}
