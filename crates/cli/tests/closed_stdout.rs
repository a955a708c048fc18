//! A printing command whose reader has gone away (`vgrid show 1 | grep -m1
//! state`) ends quietly, as other Unix tools do, instead of panicking.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_command_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("two.swf");
    let mut f = std::fs::File::create(&trace).expect("trace file");
    writeln!(f, "1 0 0 10 1 -1 -1 1 10 -1 1 1 1 -1 1 -1 -1 -1").expect("write");
    writeln!(f, "2 5 0 20 2 -1 -1 2 20 -1 1 1 1 -1 1 -1 -1 -1").expect("write");
    drop(f);

    // The read end is closed before the command starts: its first write
    // to stdout meets a closed pipe.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_vgrid"))
        .args(["sim", "--procs", "4", "--json", "--trace"])
        .arg(&trace)
        .env("VGRID_DATA_DIR", dir.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run vgrid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}
