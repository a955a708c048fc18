//! Reporting to the host: frames on the `org.vgrid.out` port, and a copy of
//! every agent line on the console (the serial log).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vgrid_guest_proto::GuestMessage;

/// Where messages go. Shared by every thread of the agent.
pub struct Reporter {
    port: Mutex<Option<File>>,
}

impl Reporter {
    /// A reporter that only writes to the console until a port is attached.
    pub fn console_only() -> Self {
        Reporter {
            port: Mutex::new(None),
        }
    }

    /// Attaches the out port.
    pub fn attach(&self, port: File) {
        if let Ok(mut guard) = self.port.lock() {
            *guard = Some(port);
        }
    }

    /// Sends one message to the host. Errors are printed on the console:
    /// there is nowhere else to send them.
    pub fn send(&self, msg: &GuestMessage) {
        let bytes = msg.encode();
        let Ok(mut guard) = self.port.lock() else {
            return;
        };
        if let Some(port) = guard.as_mut()
            && let Err(e) = port.write_all(&bytes)
        {
            console(&format!(
                "cannot write to the {} port: {e}",
                vgrid_guest_proto::OUT_PORT
            ));
        }
    }

    /// A progress line: console and host.
    pub fn log(&self, message: &str) {
        console(message);
        self.send(&GuestMessage::Log {
            message: message.to_string(),
        });
    }

    /// An error: console and host.
    pub fn error(&self, message: &str) {
        console(&format!("error: {message}"));
        self.send(&GuestMessage::AgentError {
            message: message.to_string(),
        });
    }
}

/// Prints an agent line on the console (the agent's stdout as PID 1).
pub fn console(message: &str) {
    let uptime = crate::sys::uptime().unwrap_or(0.0);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{uptime:8.3}] vgrid-agent: {message}");
    let _ = out.flush();
}

/// Finds the character device of the virtio-serial port called `name`
/// (`/sys/class/virtio-ports/vportNpM/name`), waiting up to `timeout` for
/// the driver to create it.
pub fn find_port(name: &str, timeout: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(dev) = scan_ports(Path::new("/sys/class/virtio-ports"), name) {
            let path = Path::new("/dev").join(dev);
            if path.exists() {
                return Some(path);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scan_ports(class_dir: &Path, name: &str) -> Option<String> {
    let entries = std::fs::read_dir(class_dir).ok()?;
    for entry in entries.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim_end() == name {
            return entry.file_name().into_string().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_found_by_name() {
        let dir = std::env::temp_dir().join(format!("vgrid-agent-ports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (dev, name) in [
            ("vport1p1", "org.vgrid.ctl\n"),
            ("vport1p2", "org.vgrid.out\n"),
        ] {
            std::fs::create_dir_all(dir.join(dev)).unwrap();
            std::fs::write(dir.join(dev).join("name"), name).unwrap();
        }
        assert_eq!(
            scan_ports(&dir, "org.vgrid.out").as_deref(),
            Some("vport1p2")
        );
        assert_eq!(scan_ports(&dir, "org.other"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
