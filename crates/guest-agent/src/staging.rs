//! Prolog and epilog file staging (GridWay's model): copy inputs from the
//! staging share into the working directory before the command, and outputs
//! back after it. The share is mounted only while copying, because QEMU
//! refuses to migrate (so to checkpoint) a VM with a 9p share mounted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use vgrid_guest_proto::{GuestMessage, Staging, StagingPhase};

use crate::report::Reporter;
use crate::{setup, sys};

/// Where the staging share is mounted while copying.
const STAGE_DIR: &str = "/run/vgrid/stage";

/// Who should own copied-in files.
#[derive(Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Copies the inputs in. Any failure is fatal for the job.
pub fn stage_in(
    staging: &Staging,
    workdir: &Path,
    owner: Option<Owner>,
    reporter: &Reporter,
) -> Result<(), String> {
    if staging.inputs.is_empty() {
        return Ok(());
    }
    let share = Path::new(STAGE_DIR);
    setup::mount_9p(&staging.tag, share, true, reporter)?;
    let result = (|| {
        for rel in &staging.inputs {
            let bytes = copy_tree(&share.join(rel), &workdir.join(rel), owner)
                .map_err(|e| format!("staging input `{rel}` in: {e}"))?;
            reporter.send(&GuestMessage::Staging {
                phase: StagingPhase::In,
                path: rel.clone(),
                bytes,
            });
        }
        Ok(())
    })();
    unmount(share, reporter);
    result
}

/// Copies the outputs out. Every output is tried; the failures are
/// returned together.
pub fn stage_out(staging: &Staging, workdir: &Path, reporter: &Reporter) -> Result<(), String> {
    if staging.outputs.is_empty() {
        return Ok(());
    }
    let share = Path::new(STAGE_DIR);
    setup::mount_9p(&staging.tag, share, false, reporter)?;
    let mut failures = Vec::new();
    for rel in &staging.outputs {
        match copy_tree(&workdir.join(rel), &share.join(rel), None) {
            Ok(bytes) => reporter.send(&GuestMessage::Staging {
                phase: StagingPhase::Out,
                path: rel.clone(),
                bytes,
            }),
            Err(e) => failures.push(format!("staging output `{rel}` out: {e}")),
        }
    }
    sys::sync();
    unmount(share, reporter);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn unmount(dir: &Path, reporter: &Reporter) {
    if let Err(e) = sys::umount(dir, 0) {
        reporter.log(&format!("unmount {}: {e}; detaching it", dir.display()));
        let _ = sys::umount(dir, libc::MNT_DETACH);
    }
}

/// Copies a file or a directory tree, returning the bytes copied. Symbolic
/// links are followed on the source side (they resolve inside the guest)
/// and never created on the destination side, so a staged output can never
/// be a link pointing somewhere on the host. Missing parent directories of
/// the destination are created.
pub fn copy_tree(src: &Path, dst: &Path, owner: Option<Owner>) -> io::Result<u64> {
    let meta = fs::metadata(src)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    if let Some(parent) = dst.parent() {
        create_dirs(parent, owner)?;
    }
    if meta.is_dir() {
        copy_dir(src, dst, owner, 0)
    } else if meta.is_file() {
        copy_file(src, dst, owner)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is neither a file nor a directory", src.display()),
        ))
    }
}

fn copy_file(src: &Path, dst: &Path, owner: Option<Owner>) -> io::Result<u64> {
    // Never write through an existing link at the destination.
    if fs::symlink_metadata(dst)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
    {
        fs::remove_file(dst)?;
    }
    let bytes = fs::copy(src, dst).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{} -> {}: {e}", src.display(), dst.display()),
        )
    })?;
    if let Some(o) = owner {
        sys::lchown(dst, o.uid, o.gid)?;
    }
    Ok(bytes)
}

/// Deep enough for any real tree; stops link loops.
const MAX_DEPTH: usize = 64;

fn copy_dir(src: &Path, dst: &Path, owner: Option<Owner>, depth: usize) -> io::Result<u64> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{}: more than {MAX_DEPTH} levels of directories (a link loop?)",
            src.display()
        )));
    }
    create_dirs(dst, owner)?;
    let mut total = 0;
    let mut entries: Vec<PathBuf> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    for entry in entries {
        let Some(name) = entry.file_name() else {
            continue;
        };
        let target = dst.join(name);
        let meta = fs::metadata(&entry)?;
        if meta.is_dir() {
            total += copy_dir(&entry, &target, owner, depth + 1)?;
        } else if meta.is_file() {
            total += copy_file(&entry, &target, owner)?;
        }
    }
    Ok(total)
}

fn create_dirs(dir: &Path, owner: Option<Owner>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, owner)?;
    }
    fs::create_dir(dir)?;
    if let Some(o) = owner {
        sys::lchown(dir, o.uid, o.gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vgrid-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn trees_are_copied_with_their_sizes() {
        let root = tmp("copy");
        let src = root.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), b"12345").unwrap();
        fs::write(src.join("sub/b.txt"), b"678").unwrap();
        let bytes = copy_tree(&src, &root.join("deep/dst"), None).unwrap();
        assert_eq!(bytes, 8);
        assert_eq!(fs::read(root.join("deep/dst/sub/b.txt")).unwrap(), b"678");
        let one = copy_tree(&src.join("a.txt"), &root.join("x/y/a.txt"), None).unwrap();
        assert_eq!(one, 5);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_are_followed_on_the_source_and_never_created() {
        let root = tmp("links");
        fs::write(root.join("real.txt"), b"data").unwrap();
        std::os::unix::fs::symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
        copy_tree(&root.join("link.txt"), &root.join("out/link.txt"), None).unwrap();
        let meta = fs::symlink_metadata(root.join("out/link.txt")).unwrap();
        assert!(meta.file_type().is_file());
        // A link already at the destination is replaced, not written through.
        fs::write(root.join("victim.txt"), b"keep").unwrap();
        std::os::unix::fs::symlink(root.join("victim.txt"), root.join("out/v.txt")).unwrap();
        copy_tree(&root.join("real.txt"), &root.join("out/v.txt"), None).unwrap();
        assert_eq!(fs::read(root.join("victim.txt")).unwrap(), b"keep");
        assert_eq!(fs::read(root.join("out/v.txt")).unwrap(), b"data");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_source_is_an_error_naming_it() {
        let root = tmp("missing");
        let err = copy_tree(&root.join("nope"), &root.join("dst"), None).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
