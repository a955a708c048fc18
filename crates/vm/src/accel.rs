//! KVM or TCG: a `/dev/kvm` that exists is not enough (on some hosts, e.g.
//! inside another VM without nested virtualisation, KVM runs a few
//! real-mode instructions but never boots Linux). The probe boots a real
//! guest kernel under KVM and looks for its first console line; the answer
//! is cached per host boot and QEMU version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::host::HostTools;

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The CPU model: the host's under KVM, the emulator's richest
    /// otherwise. Recorded with the VM so restores use the same one.
    pub fn default_cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

/// The outcome of the probe, with the reason shown to administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    boot_id: String,
    qemu: String,
    probed_with_kernel: bool,
    choice: AccelChoice,
}

/// How long a KVM guest may take to print its first console line.
const PROBE_WINDOW: Duration = Duration::from_secs(15);

/// Where host facts (the probe result, QEMU's version) are cached:
/// root-only `/run/vgrid` for root (it lives as long as the host boot),
/// else beside the data.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/vgrid")
    } else {
        data_dir.join("host")
    }
}

/// Chooses the accelerator, probing KVM with `kernel` when the cache has no
/// answer for this boot and QEMU (`qemu` is its version line).
pub fn choose(tools: &HostTools, qemu: &str, cache: &Path, kernel: Option<&Path>) -> AccelChoice {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm cannot be opened ({e})"),
        };
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let qemu = qemu.to_string();
    if let Ok(bytes) = std::fs::read(cache)
        && let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes)
        && entry.boot_id == boot_id
        && entry.qemu == qemu
        && (entry.probed_with_kernel || kernel.is_none())
    {
        return entry.choice;
    }
    let choice = match kernel {
        Some(k) => probe_kvm(tools, k),
        None => AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm exists but no guest kernel is available to check that it boots Linux"
                .into(),
        },
    };
    if let Some(dir) = cache.parent() {
        let _ = fsutil::create_dir_mode(dir, 0o700);
    }
    let entry = CacheEntry {
        boot_id,
        qemu,
        probed_with_kernel: kernel.is_some(),
        choice: choice.clone(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&entry) {
        let _ = fsutil::write_atomic(cache, &bytes, 0o600);
    }
    choice
}

/// Boots `kernel` under KVM with no root file system: a working KVM prints
/// "Linux version" on the serial console within moments.
pub fn probe_kvm(tools: &HostTools, kernel: &Path) -> AccelChoice {
    match boots_linux(tools, kernel, Accel::Kvm, PROBE_WINDOW) {
        Ok(()) => AccelChoice {
            accel: Accel::Kvm,
            reason: "KVM booted a Linux kernel".into(),
        },
        Err(why) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm exists but cannot run a standard guest: {why}"),
        },
    }
}

/// Whether `kernel` prints its first console line (`Linux version`) under
/// `accel` within `window`; otherwise why not.
pub fn boots_linux(
    tools: &HostTools,
    kernel: &Path,
    accel: Accel,
    window: Duration,
) -> Result<(), String> {
    let dir = tempdir().map_err(|e| format!("cannot create a directory for the probe: {e}"))?;
    let console = dir.join("console.log");
    let mut serial = std::ffi::OsString::from("file:");
    serial.push(&console);
    let child = Command::new(&tools.qemu)
        .args(["-accel", accel.name(), "-machine", "q35", "-cpu"])
        .arg(accel.default_cpu_model())
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "256",
            "-no-reboot",
            "-append",
            "console=ttyS0 panic=-1",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-serial")
        .arg(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("cannot run QEMU: {e}"));
        }
    };
    let started = Instant::now();
    let outcome = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("Linux version") {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            break Err(format!(
                "QEMU exited ({status}) before the guest printed anything: {}",
                err.trim()
            ));
        }
        if started.elapsed() > window {
            break Err(format!(
                "the guest kernel printed nothing within {} s",
                window.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "vgrid-kvm-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(Accel::parse(a.name()), Some(a));
        }
        assert_eq!(Accel::parse("hvf"), None);
        assert_eq!(Accel::Tcg.default_cpu_model(), "max");
    }
}
