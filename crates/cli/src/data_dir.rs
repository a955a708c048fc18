//! Where vgrid keeps its state: `$VGRID_DATA_DIR`, or a default.

use std::path::PathBuf;

/// The state directory: `$VGRID_DATA_DIR` when set, else the
/// `StateDirectory=` systemd made for the service (the packaged units),
/// else `/var/lib/vgrid` for root and `$XDG_DATA_HOME/vgrid` (or `~/.local/share/vgrid`) otherwise.
/// It is created on first use, mode 0700 (with any missing parent): it holds
/// the database, checkpoints, outputs and tokens. A directory that exists
/// keeps its mode: it may be the user's.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    data_dir_or(None)
}

/// [`data_dir`], with `configured` (the configuration file's `data_dir`)
/// between `$VGRID_DATA_DIR` and the defaults.
pub fn data_dir_or(configured: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os("VGRID_DATA_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(dir) = configured {
        dir.to_path_buf()
    } else if let Some(dir) = systemd_state_directory() {
        dir
    } else if unsafe_free_is_root() {
        PathBuf::from("/var/lib/vgrid")
    } else if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(xdg).join("vgrid")
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".local/share/vgrid")
    } else {
        anyhow::bail!("cannot choose a data directory: set VGRID_DATA_DIR");
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Whether we run as root, read from `/proc/self/status` so that no unsafe
/// code is needed here.
fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The directory systemd made for a unit with `StateDirectory=`
/// (`$STATE_DIRECTORY`, its first entry when it names several).
fn systemd_state_directory() -> Option<PathBuf> {
    let dirs = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty())?;
    std::env::split_paths(&dirs).next()
}
