//! Running the host tools the image store uses (apt-get, apt-cache,
//! dpkg-deb, qemu-img, mkfs.ext4), always with argument vectors, never
//! through a shell.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::ImageError;

/// A host tool, the Debian package that provides it, and why we need it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
    pub purpose: &'static str,
}

pub const APT_GET: Tool = Tool {
    name: "apt-get",
    package: "apt",
    purpose: "download the stock guest's Debian packages",
};
pub const APT_CACHE: Tool = Tool {
    name: "apt-cache",
    package: "apt",
    purpose: "look up the stock guest's Debian packages",
};
pub const DPKG_DEB: Tool = Tool {
    name: "dpkg-deb",
    package: "dpkg",
    purpose: "unpack Debian packages",
};
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
    purpose: "create and inspect qcow2 disks",
};
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
    purpose: "create the stock guest's scratch file system",
};

/// Finds `tool` in PATH (and the sbin directories, which a non-root PATH
/// may lack).
pub fn find(tool: Tool) -> Result<std::path::PathBuf, ImageError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    for extra in ["/usr/sbin", "/sbin"] {
        dirs.push(extra.into());
    }
    dirs.into_iter()
        .map(|d| d.join(tool.name))
        .find(|p| p.is_file())
        .ok_or(ImageError::ToolMissing {
            tool: tool.name,
            package: tool.package,
            purpose: tool.purpose,
        })
}

/// A command for `tool`, or the error saying how to install it.
pub fn command(tool: Tool) -> Result<Command, ImageError> {
    let mut cmd = Command::new(find(tool)?);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// Runs a command to completion; a non-zero exit is an error carrying its
/// standard error.
pub fn run(mut cmd: Command, cwd: Option<&Path>) -> Result<Output, ImageError> {
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let shown = describe(&cmd);
    let out = cmd.output().map_err(|e| ImageError::ToolFailed {
        command: shown.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        return Err(ImageError::ToolFailed {
            command: shown,
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(out)
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let ghost = Tool {
            name: "vgrid-no-such-tool",
            package: "vgrid-ghost",
            purpose: "test",
        };
        let err = find(ghost).unwrap_err().to_string();
        assert!(err.contains("apt-get install vgrid-ghost"), "{err}");
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let mut cmd = Command::new("ls");
        cmd.arg("/vgrid/does/not/exist");
        let err = run(cmd, None).unwrap_err().to_string();
        assert!(err.contains("/vgrid/does/not/exist"), "{err}");
    }
}
