//! What the CLI tests against one `vgrid serve` share: start it without
//! an agent, run client commands as a token's holder, check the outcome.
#![allow(dead_code)] // each test file uses part of it

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn vgrid() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgrid"))
}

/// A `vgrid serve` process, SIGKILLed and reaped when dropped.
pub struct Server(pub Child);

impl Server {
    pub fn kill(&mut self) {
        // `Child::kill` sends SIGKILL: the server gets no chance to clean up.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `vgrid serve` on a free port, without a local agent.
pub fn serve(data: &Path) -> Server {
    let _ = std::fs::remove_file(data.join("url"));
    let server = Server(
        vgrid()
            .args(["serve", "--listen", "127.0.0.1:0", "--no-agent"])
            .env("VGRID_DATA_DIR", data)
            .env_remove("VGRID_URL")
            .env_remove("VGRID_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vgrid serve starts"),
    );
    // Wait for the URL file: that is when the server listens.
    for _ in 0..600 {
        if std::fs::read_to_string(data.join("url")).is_ok_and(|u| u.starts_with("https://")) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vgrid serve did not write its URL");
}

/// Runs a client command as the holder of `token` (the admin's when None).
pub fn run(data: &Path, token: Option<&str>, args: &[&str]) -> Output {
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

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn failed(out: Output) -> String {
    assert!(!out.status.success(), "should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}
