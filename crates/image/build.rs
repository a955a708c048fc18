//! Builds the static guest agent so that `vgrid-image` can embed it.
//!
//! The agent must be a static binary (it runs as PID 1 in an initramfs with
//! no C library). Cargo cannot give one workspace member different
//! RUSTFLAGS, so this script runs a second `cargo build` of
//! `vgrid-guest-agent` with `--target x86_64-unknown-linux-gnu` and
//! `-C target-feature=+crt-static`, in a target directory of its own under
//! `OUT_DIR` (so it never waits on the outer build's lock). The outer
//! build's jobserver is inherited, so the nested build shares its job slots.
//!
//! A failure does not fail the workspace build: the error text is embedded
//! instead and `vgrid image build` reports it. `VGRID_GUEST_AGENT` at run
//! time overrides the embedded binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.clone());
    for watched in ["crates/guest-agent", "crates/guest-proto", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");

    let agent_out = out_dir.join("vgrid-guest-agent");
    let error_out = out_dir.join("guest-agent-build-error.txt");
    let _ = std::fs::remove_file(&agent_out);
    match build_agent(&workspace, &out_dir.join("agent-target")) {
        Ok(binary) => {
            if let Err(e) = std::fs::copy(&binary, &agent_out) {
                fail(
                    &agent_out,
                    &error_out,
                    &format!("copying {}: {e}", binary.display()),
                );
            } else {
                write(&error_out, b"");
            }
        }
        Err(msg) => fail(&agent_out, &error_out, &msg),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        println!("cargo:warning=cannot write {}: {e}", path.display());
    }
}

fn fail(agent_out: &Path, error_out: &Path, msg: &str) {
    println!("cargo:warning=the static guest agent was not built: {msg}");
    // The failure may come from elsewhere in the workspace (a half-written
    // manifest): try again whenever anything in it changes.
    if let Some(workspace) = Path::new(&env("CARGO_MANIFEST_DIR")).ancestors().nth(2) {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("crates").display()
        );
    }
    write(agent_out, b"");
    write(error_out, msg.as_bytes());
}

fn build_agent(workspace: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let triple = "x86_64-unknown-linux-gnu";
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--release")
        .arg("--package")
        .arg("vgrid-guest-agent")
        .arg("--target")
        .arg(triple)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        // A small binary: no debug info, symbols stripped.
        .arg("--config")
        .arg("profile.release.debug=0")
        .arg("--config")
        .arg("profile.release.strip=true");
    // Drop what the outer cargo set for its own compilation (clippy's
    // wrapper, its flags and target dir) so the nested build is a plain one.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "RUSTC",
        "__CARGO_FIX_PLZ",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "cargo build of vgrid-guest-agent failed ({}):\n{}",
            output.status,
            tail.join("\n")
        ));
    }
    let binary = target_dir
        .join(triple)
        .join("release")
        .join("vgrid-guest-agent");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("{} is missing after the build", binary.display()))
    }
}
