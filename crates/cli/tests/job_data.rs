//! A job's data through the controller, in real QEMU VMs through `vgrid
//! serve`: `vgrid submit` uploads inputs from the submitter's directory,
//! the guest command transforms them, `vgrid output` brings the outputs
//! back; another user can neither fetch them nor name the owner's input
//! data. Skipped, saying why, when QEMU or the stock image is missing;
//! under `CI=true` that fails instead.

use std::path::Path;
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

/// Runs `vgrid` in `cwd` as the admin, or as the user whose token is given.
fn run_as(data: &Path, cwd: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = vgrid();
    cmd.args(args)
        .current_dir(cwd)
        .env("VGRID_DATA_DIR", data)
        .env_remove("VGRID_URL")
        .env_remove("VGRID_TOKEN");
    if let Some(t) = token {
        cmd.env("VGRID_TOKEN", t);
    }
    cmd.output().expect("vgrid runs")
}

fn ok_as(data: &Path, cwd: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = run_as(data, cwd, token, args);
    assert!(
        out.status.success(),
        "vgrid {args:?} failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log(data)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn err_as(data: &Path, cwd: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = run_as(data, cwd, token, args);
    assert!(
        !out.status.success(),
        "vgrid {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn show(data: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&ok_as(data, data, None, &["show", id, "--json"])).expect("json")
}

/// Some megabytes that do not compress, and whose chunks all differ.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A client of the controller as `token`, for what `vgrid` never sends.
fn client_as(data: &Path, token: &str) -> vgrid_client::Client {
    let url = std::fs::read_to_string(data.join("url")).expect("url");
    let ca = vgrid_pki::read_ca(&data.join("tls/ca.pem")).expect("the CA");
    let tls = vgrid_pki::client_config(ca).expect("TLS");
    vgrid_client::Client::with_tls(url.trim(), token, tls).expect("client")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn inputs_go_up_from_the_submitter_and_outputs_come_back_to_their_owner_only() {
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let _server = serve(data);
    let alice = ok_as(data, data, None, &["users", "add", "alice"]);
    let alice = Some(alice.trim());
    let bob_token = ok_as(data, data, None, &["users", "add", "bob"]);
    let bob_token = bob_token.trim();
    let bob = Some(bob_token);

    // Alice's files on "her machine": a directory the node never sees.
    let home = vgrid_testkit::temp_dir();
    let home = home.path();
    std::fs::create_dir_all(home.join("jobs/in")).expect("dirs");
    std::fs::write(home.join("jobs/words.txt"), "pear\napple\nfig\n").expect("words");
    let blob = noise(3 << 20, 7);
    std::fs::write(home.join("jobs/in/blob.bin"), &blob).expect("blob");
    let job = r#"image = "tiny"
memory_mb = 256
command = ["/bin/sh", "-c", '''
set -e
mkdir -p out
sort words.txt > out/sorted.txt
tr a-z A-Z < words.txt > upper.txt
cat blob.bin blob.bin > out/twice.bin
''']
[[inputs]]
from = "words.txt"
to = "/work/words.txt"
[[inputs]]
from = "in/blob.bin"
to = "/work/blob.bin"
[[outputs]]
from = "/work/out/sorted.txt"
[[outputs]]
from = "/work/upper.txt"
to = "text/upper.txt"
[[outputs]]
from = "/work/out/twice.bin"
"#;
    std::fs::write(home.join("jobs/data.toml"), job).expect("job file");

    // Submitted from elsewhere: inputs are read beside the job file.
    let id = ok_as(data, home, alice, &["submit", "jobs/data.toml"])
        .trim()
        .to_string();
    // Right away the job has not ended: said so.
    let early = run_as(data, home, alice, &["output", &id]);
    if !early.status.success() {
        let err = String::from_utf8_lossy(&early.stderr);
        assert!(err.contains("has not ended yet"), "{err}");
    }
    let waited = run_as(data, home, alice, &["wait", &id]);
    let shown = show(data, &id);
    assert!(waited.status.success(), "{shown:#}\n{}", server_log(data));
    let reasons: Vec<&str> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("input data fetched: 2 file(s)")),
        "{reasons:?}"
    );
    let manifest = shown["outputs"]
        .as_str()
        .expect("outputs manifest")
        .to_string();

    let back = home.join("back");
    let listed: serde_json::Value = serde_json::from_str(&ok_as(
        data,
        home,
        alice,
        &[
            "output",
            &id,
            "--to",
            back.to_str().expect("utf-8"),
            "--json",
        ],
    ))
    .expect("json");
    assert_eq!(listed["manifest"], manifest.as_str());
    assert_eq!(
        listed["files"].as_array().map(Vec::len),
        Some(3),
        "{listed:#}"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("sorted.txt")).expect("sorted"),
        "apple\nfig\npear\n"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("text/upper.txt")).expect("upper"),
        "PEAR\nAPPLE\nFIG\n"
    );
    let twice = std::fs::read(back.join("twice.bin")).expect("twice");
    assert_eq!(twice.len(), 2 * blob.len());
    assert!(twice[..blob.len()] == blob[..] && twice[blob.len()..] == blob[..]);
    // Into the current directory by default, again (replacing the files).
    ok_as(data, &back, alice, &["output", &id]);
    assert_eq!(std::fs::read(back.join("twice.bin")).expect("again"), twice);
    // Nothing of the job's data is left on the node outside its store.
    let leftovers: Vec<_> = std::fs::read_dir(data.join("agent/inputs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Bob gets what a missing job gets.
    let err = err_as(data, home, bob, &["output", &id, "--to", "bobs"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!home.join("bobs").join("sorted.txt").exists());
    // Bob cannot run a job on Alice's input data, even knowing its id.
    let input_data = shown["spec"]["input_data"].as_str().expect("input data");
    let bobs = client_as(data, bob_token);
    let steal = vgrid_api::types::SubmitRequest {
        file_name: "steal.toml".into(),
        source: job.into(),
        hold: false,
        input_data: Some(input_data.into()),
    };
    let err = block_on(bobs.submit_request(&steal, None)).expect_err("not bob's data");
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(err.to_string().contains("not uploaded by bob"), "{err}");
    // Nor read her outputs' manifest or chunks by id.
    let id_of = vgrid_cas::ManifestId::parse(&manifest).expect("id");
    let err = block_on(bobs.get_manifest(&id_of)).expect_err("not for users");
    assert_eq!(err.status(), Some(403), "{err}");

    // Output names may not climb out of the directory they go to; a
    // missing input is named.
    let bad = job.replace("to = \"text/upper.txt\"", "to = \"../upper.txt\"");
    std::fs::write(home.join("jobs/bad.toml"), bad).expect("bad");
    let err = err_as(data, home, alice, &["submit", "jobs/bad.toml"]);
    assert!(
        err.contains("outputs[1].to") && err.contains("`..`"),
        "{err}"
    );
    // The example job file with data works as its comment says.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let words = ok_as(data, &examples, alice, &["submit", "words.toml"])
        .trim()
        .to_string();
    let _ = run_as(data, home, alice, &["wait", &words]);
    let shown_words = show(data, &words);
    let state = shown_words["job"]["state"].as_str().unwrap_or_default();
    let reason = shown_words["job"]["reason"].as_str().unwrap_or_default();
    assert_eq!(state, "done", "{reason}\n{}", server_log(data));
    let out = home.join("words");
    ok_as(
        data,
        home,
        alice,
        &["output", &words, "--to", out.to_str().expect("utf-8")],
    );
    let total = std::fs::read_to_string(out.join("summary/total.txt")).expect("total");
    assert_eq!(total.trim(), "11");
    let counts = std::fs::read_to_string(out.join("counts.txt")).expect("counts");
    let first: Vec<&str> = counts
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(first, ["3", "the"], "{counts}");

    let missing = job.replace("from = \"words.txt\"", "from = \"nowhere.txt\"");
    std::fs::write(home.join("jobs/missing.toml"), missing).expect("missing");
    let err = err_as(data, home, alice, &["submit", "jobs/missing.toml"]);
    assert!(
        err.contains("inputs[0].from") && err.contains("nowhere.txt"),
        "{err}"
    );
}
