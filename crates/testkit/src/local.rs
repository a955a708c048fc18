//! `vgrid serve` and `vgrid agent` on this machine, for tests of one host:
//! started with a clean environment and a log file in their data
//! directory, and stopped with every VM they started when dropped, so that
//! a failed test leaves no QEMU behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `vgrid serve` or `vgrid agent` process. Dropping it SIGKILLs it and
/// the VMs under its data directory; [`Local::crash`] kills only the
/// process, as a crash would.
pub struct Local {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    keep_vms: bool,
}

impl Local {
    /// `vgrid serve` on a free loopback port with `extra` arguments (its
    /// log appended to `serve.log` in `data`); waits until it listens.
    pub fn serve(vgrid: &Path, data: &Path, extra: &[&str]) -> Local {
        Local::serve_logging_to(vgrid, data, extra, &data.join("serve.log"))
    }

    /// [`Local::serve`] with its log in another file (a test that checks
    /// the data directory's files keeps it out of there).
    pub fn serve_logging_to(vgrid: &Path, data: &Path, extra: &[&str], log: &Path) -> Local {
        let _ = std::fs::remove_file(data.join("url"));
        let log = log.to_path_buf();
        let local = Local::spawn(
            Command::new(vgrid)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(extra),
            data,
            log,
        );
        crate::wait_for("vgrid serve to listen", Duration::from_secs(60), || {
            std::fs::read_to_string(data.join("url")).is_ok_and(|u| u.starts_with("https://"))
        })
        .unwrap_or_else(|e| panic!("{e}: {}", local.log()));
        local
    }

    /// A `vgrid agent` named `name` (2 CPUs, 2 GiB) that joins the
    /// controller whose data directory is `controller` (log: `agent.log`).
    pub fn agent(vgrid: &Path, controller: &Path, data: &Path, name: &str) -> Local {
        let url = std::fs::read_to_string(controller.join("url")).expect("the controller's url");
        Local::spawn(
            Command::new(vgrid)
                .args(["agent", "--name", name])
                .args(["--cpus", "2", "--memory-mb", "2048"])
                .args(["--controller", url.trim()])
                .arg("--join-token-file")
                .arg(controller.join("join-token")),
            data,
            data.join("agent.log"),
        )
    }

    fn spawn(cmd: &mut Command, data: &Path, log: PathBuf) -> Local {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = cmd
            .env("VGRID_DATA_DIR", data)
            .env("VGRID_LOG", "info")
            .env_remove("VGRID_URL")
            .env_remove("VGRID_TOKEN")
            .env_remove("VGRID_KEEP_IDLE_S")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("vgrid starts");
        Local {
            child,
            data: data.to_path_buf(),
            log,
            keep_vms: false,
        }
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process but leaves its VMs running, as a crash would.
    pub fn crash(mut self) {
        self.keep_vms = true;
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_vms {
            kill_vms(&self.data);
        }
    }
}

/// SIGKILLs every QEMU and passt under a data directory (as when the
/// machine dies).
pub fn kill_vms(data: &Path) {
    let Ok(vms) = std::fs::read_dir(data.join("vms")) else {
        return;
    };
    for vm in vms.flatten() {
        for file in ["qemu.pid", "passt.pid"] {
            if let Ok(pid) = std::fs::read_to_string(vm.path().join(file))
                && let Ok(pid) = pid.trim().parse::<i32>()
                && pid > 0
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
