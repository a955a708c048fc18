//! The agent's state is private to vgrid: its directories are created
//! 0700 and its files 0600 (they name checkpoints and kept VMs; the
//! checkpoints themselves hold guests' memory and job environments).
//! Files replaced whole are written by [`crate::state::save`]
//! (`vgrid_vm::fsutil::write_atomic`, mode 0600).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` and any missing parent 0700; existing directories keep
/// their modes.
pub(crate) fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Opens `path` to append to it, created 0600 when missing.
pub(crate) fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_dir_all(&deep).unwrap();
        let file = deep.join("f");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        vgrid_vm::fsutil::write_atomic(&file, b"new", 0o600).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&file), 0o600);
        drop(append(&deep.join("g")).unwrap());
        assert_eq!(mode(&deep.join("g")), 0o600);
    }
}
