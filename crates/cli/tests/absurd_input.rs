//! Items 7 and 8 of issue 8, through the `vgrid` binary: a job file whose
//! name would forge a `vgrid ps` row is refused before anything is sent,
//! and `vgrid sim` on an absurd machine size ends with a clear error
//! instead of aborting on a failed allocation.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

fn vgrid(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
        .args(args)
        .env("VGRID_DATA_DIR", dir)
        // No server: `submit` must refuse the file before it connects.
        .env("VGRID_URL", "http://127.0.0.1:9")
        .output()
        .expect("run vgrid")
}

#[test]
fn submit_refuses_a_job_name_taken_from_a_forged_file_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir
        .path()
        .join("x\n    42  payroll          root       running.toml");
    std::fs::write(&file, "image = \"tiny\"\ncommand = [\"/bin/true\"]\n").expect("job file");
    let out = vgrid(dir.path(), &["submit".as_ref(), file.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 65: invalid input (crates/cli/src/exit.rs).
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("field `name`"), "{stderr}");
    assert!(stderr.contains("control characters"), "{stderr}");
    // The error itself is printed on one line, the newline escaped.
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("x\\n    42"), "{stderr}");
}

#[test]
fn sim_on_an_absurd_machine_size_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job = "1 0 -1 10 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n";
    let header = dir.path().join("maxprocs.swf");
    std::fs::write(&header, format!("; MaxProcs: 4294967295\n{job}")).expect("trace");
    let run_time = dir.path().join("runtime.swf");
    std::fs::write(
        &run_time,
        format!(
            "; MaxProcs: 4\n{job}2 0 -1 9223372036854775807 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n"
        ),
    )
    .expect("trace");
    let cases: [(&[&std::ffi::OsStr], &str); 3] = [
        (
            &["sim".as_ref(), "--trace".as_ref(), header.as_os_str()],
            "maxprocs.swf:1: header MaxProcs: 4294967295 processors",
        ),
        (
            &[
                "sim".as_ref(),
                "--procs".as_ref(),
                "4294967295".as_ref(),
                "--trace".as_ref(),
                header.as_os_str(),
            ],
            "cannot be simulated",
        ),
        (
            &["sim".as_ref(), "--trace".as_ref(), run_time.as_os_str()],
            "runtime.swf:3: field 4 (run time): 9223372036854775807 s is more than a simulation can take",
        ),
    ];
    for (args, want) in cases {
        let out = vgrid(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), None, "{stderr}");
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(want), "{want}\n{stderr}");
    }
    // With a smaller machine given, the same trace simulates; with
    // --lenient the line with the absurd run time is skipped and counted.
    let out = vgrid(
        dir.path(),
        &[
            "sim".as_ref(),
            "--procs".as_ref(),
            "4".as_ref(),
            "--json".as_ref(),
            "--trace".as_ref(),
            header.as_os_str(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vgrid(
        dir.path(),
        &[
            "sim".as_ref(),
            "--lenient".as_ref(),
            "--json".as_ref(),
            "--trace".as_ref(),
            run_time.as_os_str(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped 1 malformed lines"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["jobs"], 1);
    let u = v["utilization"].as_f64().unwrap_or(f64::NAN);
    assert!((0.0..=1.0).contains(&u), "{u}");
}
