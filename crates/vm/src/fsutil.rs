//! Small file-system helpers: atomic writes, directory fsync, copies that
//! hard-link when they can, the "stays inside its root" check, and access
//! to directories a guest can write that never follows a link.
//!
//! # Directories a guest can write
//!
//! A VM's staging share (`stage/`) and its writable data repositories are
//! written by the guest, so by an attacker (see the threat model): any
//! name in them may be a symbolic link to a host file, a FIFO, or a
//! directory where a file was expected, and it may change between two
//! system calls. The host reads there only through
//! [`open_beneath_nofollow`] (every component opened with `O_NOFOLLOW`,
//! regular files only, read from the open descriptor), writes there only
//! through [`create_new_in`] (`O_CREAT|O_EXCL|O_NOFOLLOW`) after
//! [`remove_entry_nofollow`], and reads and writes host paths inside the
//! allowed roots through [`open_file_inside`] and [`open_dir_inside`],
//! which resolve once and then walk the resolved path without following
//! anything, so a link swapped in after the check is refused.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{Escape, FileError, FsError};

/// Writes `bytes` to `path` atomically and durably: a temporary file
/// beside it (created with `mode`, which is set again in case a stale
/// one existed), fsync, rename, fsync of the directory. A crash leaves the
/// old file or the new one, never a mix. Every file vgrid replaces by a
/// rename is written here.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two threads may replace one file.
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| FileError::new("create", &tmp, e))?;
    let written = f
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| FileError::new("write", &tmp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        FileError::new("rename into", path, e)
    })?;
    fsync_dir(dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new("fsync directory", dir, e))
}

/// Creates `dir` and any missing parent with mode 0700, leaving the modes
/// of directories that exist alone (they may be the user's): vgrid's
/// state is private to it.
pub fn create_private_dir_all(dir: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FileError::new("create directory", dir, e))
}

/// Creates `dir` (and parents) and sets its mode.
pub fn create_dir_mode(dir: &Path, mode: u32) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(|e| FileError::new("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| FileError::new("set permissions of", dir, e))
}

/// Copies `src` to `dst` (which must not exist, and is created 0600) and
/// fsyncs it. Returns the number of bytes and the BLAKE3 hash of the
/// content, computed while copying so the data is read once.
pub fn copy_hashed(src: &Path, dst: &Path) -> Result<(u64, String), FileError> {
    let mut input = File::open(src).map_err(|e| FileError::new("open", src, e))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| FileError::new("create", dst, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::new("read", src, e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| FileError::new("write", dst, e))?;
        total += n as u64;
    }
    out.sync_all()
        .map_err(|e| FileError::new("fsync", dst, e))?;
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// The BLAKE3 hash and size of a file.
pub fn hash_file(path: &Path) -> Result<(u64, String), FileError> {
    let mut f = File::open(path).map_err(|e| FileError::new("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::new("read", path, e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// Resolves `path` (absolute, or relative to `roots[0]`) and checks that
/// the result, with every symlink followed, lies inside one of `roots`.
/// `..` components are refused outright, before any resolution, so a path
/// never even names something outside.
pub fn resolve_inside(field: &str, path: &Path, roots: &[PathBuf]) -> Result<PathBuf, FsError> {
    let escape = |why: Escape| FsError::Escape {
        field: field.to_string(),
        path: path.to_path_buf(),
        why,
    };
    if path.as_os_str().is_empty() {
        return Err(escape(Escape::Empty));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(escape(Escape::ParentDir));
    }
    let Some(first_root) = roots.first() else {
        return Err(escape(Escape::NoRoots));
    };
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        first_root.join(path)
    };
    let real = fs::canonicalize(&joined).map_err(|e| escape(Escape::Unresolvable(e)))?;
    for root in roots {
        if let Ok(root_real) = fs::canonicalize(root)
            && real.starts_with(&root_real)
        {
            return Ok(real);
        }
    }
    let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(escape(Escape::Outside {
        real,
        roots: names.join(", "),
    }))
}

/// The components of `rel`, a relative path below some directory: plain
/// names only (`.` is dropped; `..`, a root or a prefix are refused).
fn plain_components(rel: &Path) -> std::result::Result<Vec<&OsStr>, String> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` is not allowed".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path is not allowed here".into());
            }
        }
    }
    Ok(out)
}

/// Opens `base` as a directory. `base` is the host's own path (a VM's
/// `stage/`, a resolved root): it is trusted and followed as given.
fn open_base_dir(base: &Path) -> Result<OwnedFd, FileError> {
    rustix::fs::open(
        base,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FileError::new("open directory", base, e.into()))
}

/// Why opening the entry `name` of `dir` (at `path`) without following
/// links failed with `errno`: what the entry is, in words, or the error.
fn refusal(
    dir: &OwnedFd,
    name: &OsStr,
    errno: rustix::io::Errno,
    want_dir: bool,
    path: PathBuf,
) -> FsError {
    let kind = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode));
    let reason = match kind {
        Ok(FileType::Symlink) => {
            "is a symbolic link; the host never follows links in a directory a guest can write"
                .to_string()
        }
        Ok(FileType::Directory) if !want_dir => "is a directory, not a regular file".into(),
        Ok(k) if want_dir && k != FileType::Directory => {
            format!("is {}, not a directory", file_kind(k))
        }
        _ => {
            let op = if want_dir { "open directory" } else { "open" };
            return FileError::new(op, path, errno.into()).into();
        }
    };
    FsError::Unsafe { path, reason }
}

fn file_kind(k: FileType) -> &'static str {
    match k {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown kind",
    }
}

/// Opens the directory `rel` below `base` (`base` itself when `rel` is
/// empty), refusing a symbolic link at any component of `rel`.
pub fn open_dir_beneath_nofollow(base: &Path, rel: &Path) -> Result<OwnedFd, FsError> {
    let unsafe_path = |reason: String| FsError::Unsafe {
        path: base.join(rel),
        reason,
    };
    let comps = plain_components(rel).map_err(unsafe_path)?;
    let mut dir = open_base_dir(base)?;
    let mut walked = base.to_path_buf();
    for name in comps {
        walked.push(name);
        dir = match rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT => {
                return Err(FileError::new("open directory", walked, e.into()).into());
            }
            Err(e) => return Err(refusal(&dir, name, e, true, walked)),
        };
    }
    Ok(dir)
}

/// Opens the regular file `rel` below the directory `base` for reading
/// without following a symbolic link at any component: every directory
/// on the way is opened with `O_DIRECTORY|O_NOFOLLOW` from the one before,
/// the file with `O_NOFOLLOW|O_NONBLOCK` (a FIFO does not block the open),
/// and what was opened must be a regular file (FIFOs, devices, sockets and
/// directories are refused). Read from the returned file, never from the
/// path again: the name may point elsewhere a moment later.
pub fn open_beneath_nofollow(base: &Path, rel: &Path) -> Result<File, FsError> {
    let path = base.join(rel);
    let mut comps = plain_components(rel).map_err(|reason| FsError::Unsafe {
        path: path.clone(),
        reason,
    })?;
    let Some(name) = comps.pop() else {
        return Err(FsError::Unsafe {
            path,
            reason: "names no file".into(),
        });
    };
    let parent: PathBuf = comps.iter().collect();
    let dir = open_dir_beneath_nofollow(base, &parent)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => FileError::new("open", &path, e.into()).into(),
        _ => refusal(&dir, name, e, false, path.clone()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::new("stat", &path, e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(FsError::Unsafe {
            path,
            reason: format!("is {}; only regular files are copied", file_kind(kind)),
        });
    }
    Ok(File::from(fd))
}

/// Creates the file `name` in the directory `dir` (whose path is
/// `dir_path`, for messages) with `O_CREAT|O_EXCL|O_NOFOLLOW`: whatever
/// stands under that name (a link a guest planted, above all) makes it
/// fail instead of being opened. Remove the old entry first with
/// [`remove_entry_nofollow`].
pub fn create_new_in(
    dir: &impl AsFd,
    dir_path: &Path,
    name: &OsStr,
    mode: u32,
) -> Result<File, FsError> {
    let path = dir_path.join(name);
    if plain_components(Path::new(name)).map_or(true, |c| c.len() != 1) {
        return Err(FsError::Unsafe {
            path,
            reason: "is not a plain file name".into(),
        });
    }
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map(File::from)
    .map_err(|e| FileError::new("create", path, e.into()).into())
}

/// Removes the entry `name` of the directory `dir` without following a
/// link: a file, link, FIFO or socket is unlinked; a directory is removed
/// with everything below it. Gone already is fine.
pub fn remove_entry_nofollow(dir: &Path, name: &OsStr) -> Result<(), FsError> {
    let path = dir.join(name);
    let fd = open_base_dir(dir)?;
    match rustix::fs::unlinkat(&fd, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        // A directory (EISDIR on Linux, EPERM elsewhere): the standard
        // library's `remove_dir_all` opens every directory it descends into
        // with O_NOFOLLOW relative to its parent and unlinks links as
        // entries (race-free since Rust 1.58.1), so it never leaves `path`.
        Err(rustix::io::Errno::ISDIR | rustix::io::Errno::PERM) => {
            match fs::remove_dir_all(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(FileError::new("remove", &path, e).into()),
            }
        }
        Err(e) => Err(FileError::new("remove", &path, e.into()).into()),
    }
}

/// Copies `src` to `dst` (open files), returning the bytes copied and
/// their BLAKE3 hash. At most the bytes `src` held when the copy began are
/// copied: a file that a guest keeps growing cannot make it endless.
pub fn copy_open_hashed(
    src: &mut File,
    src_path: &Path,
    dst: &mut File,
    dst_path: &Path,
) -> Result<(u64, String), FileError> {
    let limit = src
        .metadata()
        .map_err(|e| FileError::new("stat", src_path, e))?
        .len();
    let mut src = Read::take(&mut *src, limit);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::new("read", src_path, e)),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| FileError::new("write", dst_path, e))?;
        total += n as u64;
    }
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// Replaces the file `name` in the directory `dir` (opened by the caller;
/// `dir_path` for messages) with the content of `src`, with permissions
/// `mode`: written to a temporary file created exclusively in `dir`
/// (`O_EXCL|O_NOFOLLOW`), fsynced, and renamed over `name`. A rename
/// replaces a link instead of writing through it, and the temporary name
/// cannot be redirected; a `name` that is a symbolic link or a directory
/// now is refused outright. Returns the bytes written.
pub fn replace_file_in(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &OsStr,
    src: &mut File,
    src_path: &Path,
    mode: u32,
) -> Result<u64, FsError> {
    let dest = dir_path.join(name);
    if plain_components(Path::new(name)).map_or(true, |c| c.len() != 1) {
        return Err(FsError::Unsafe {
            path: dest,
            reason: "is not a plain file name".into(),
        });
    }
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind != FileType::RegularFile {
                return Err(FsError::Unsafe {
                    path: dest,
                    reason: format!("is {}; refusing to replace it", file_kind(kind)),
                });
            }
        }
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(FileError::new("stat", &dest, e.into()).into()),
    }
    let mut tmp_name = None;
    let mut out = None;
    for attempt in 0..16u32 {
        let candidate = format!(
            ".{}.vgrid-{}-{}-{attempt}",
            name.to_string_lossy(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        match rustix::fs::openat(
            dir,
            candidate.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                tmp_name = Some(candidate);
                out = Some(File::from(fd));
                break;
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => {
                return Err(
                    FileError::new("create a temporary file in", dir_path, e.into()).into(),
                );
            }
        }
    }
    let (Some(tmp_name), Some(mut out)) = (tmp_name, out) else {
        return Err(FileError::new(
            "create a temporary file in",
            dir_path,
            io::Error::from(io::ErrorKind::AlreadyExists),
        )
        .into());
    };
    let tmp_path = dir_path.join(&tmp_name);
    let written = copy_open_hashed(src, src_path, &mut out, &tmp_path)
        .and_then(|(n, _)| {
            out.set_permissions(fs::Permissions::from_mode(mode))
                .and_then(|()| out.sync_all())
                .map_err(|e| FileError::new("write", &tmp_path, e))?;
            Ok(n)
        })
        .and_then(|n| {
            rustix::fs::renameat(dir, tmp_name.as_str(), dir, name)
                .map_err(|e| FileError::new("rename into", &dest, e.into()))?;
            Ok(n)
        });
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp_name.as_str(), AtFlags::empty());
    }
    let n = written?;
    let _ = rustix::fs::fsync(dir);
    Ok(n)
}

/// The resolved root of `roots` that `real` (a resolved path) lies in,
/// and the rest of `real` below it.
fn split_at_root(real: &Path, roots: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    roots.iter().find_map(|root| {
        let root_real = fs::canonicalize(root).ok()?;
        let rest = real.strip_prefix(&root_real).ok()?.to_path_buf();
        Some((root_real, rest))
    })
}

/// Resolves `path` inside `roots` like [`resolve_inside`], then opens the
/// resolved file without following anything below its root: a link
/// swapped into the path after the check (by a guest with a writable
/// mount there, say) is refused. Regular files only. Returns the file and
/// its resolved path.
pub fn open_file_inside(
    field: &str,
    path: &Path,
    roots: &[PathBuf],
) -> Result<(File, PathBuf), FsError> {
    open_inside(field, path, roots, open_beneath_nofollow)
}

/// Resolves the directory `path` inside `roots` like [`resolve_inside`],
/// then opens it without following anything below its root. Returns the
/// directory and its resolved path.
pub fn open_dir_inside(
    field: &str,
    path: &Path,
    roots: &[PathBuf],
) -> Result<(OwnedFd, PathBuf), FsError> {
    open_inside(field, path, roots, open_dir_beneath_nofollow)
}

/// Resolves `path` inside `roots`, then opens it with `open(root, rest)`
/// from the root it lies in.
fn open_inside<T>(
    field: &str,
    path: &Path,
    roots: &[PathBuf],
    open: fn(&Path, &Path) -> Result<T, FsError>,
) -> Result<(T, PathBuf), FsError> {
    let real = resolve_inside(field, path, roots)?;
    let escape = |why: Escape| FsError::Escape {
        field: field.to_string(),
        path: path.to_path_buf(),
        why,
    };
    let (root, rest) = split_at_root(&real, roots).ok_or_else(|| escape(Escape::Changed))?;
    let opened = open(&root, &rest).map_err(|e| escape(Escape::Unsafe(Box::new(e))))?;
    Ok((opened, real))
}

/// The last `n` lines of a text file (lossy UTF-8); empty when unreadable.
pub fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Enough for n console lines without reading a huge log.
    let window = (n as u64 * 256).max(4096);
    let start = len.saturating_sub(window);
    use std::io::Seek;
    if f.seek(io::SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn paths_stay_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repos");
        fs::create_dir_all(root.join("genome/v1")).unwrap();
        fs::create_dir_all(dir.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("sneaky")).unwrap();
        std::os::unix::fs::symlink(root.join("genome"), root.join("alias")).unwrap();
        let roots = vec![root.clone()];

        let ok = resolve_inside("mounts[0].host", Path::new("genome/v1"), &roots).unwrap();
        assert!(ok.ends_with("genome/v1"));
        // A symlink that stays inside is fine.
        resolve_inside("mounts[0].host", Path::new("alias"), &roots).unwrap();
        let abs = root.join("genome");
        resolve_inside("mounts[0].host", &abs, &roots).unwrap();

        for bad in ["../secret", "genome/../../secret", "sneaky"] {
            let err = resolve_inside("mounts[0].host", Path::new(bad), &roots).unwrap_err();
            assert!(matches!(err, FsError::Escape { .. }), "{bad}: {err:?}");
        }
        let outside =
            resolve_inside("mounts[0].host", &dir.path().join("secret"), &roots).unwrap_err();
        assert!(
            report(&outside).contains("outside the allowed"),
            "{outside}"
        );
        let missing = resolve_inside("mounts[0].host", Path::new("nope"), &roots).unwrap_err();
        assert!(report(&missing).contains("cannot resolve"), "{missing}");
    }

    #[test]
    fn copy_hashed_matches_hash_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, vec![5u8; 3_000_000]).unwrap();
        let b = dir.path().join("b");
        let (n, h) = copy_hashed(&a, &b).unwrap();
        assert_eq!(n, 3_000_000);
        assert_eq!(hash_file(&b).unwrap(), (n, h.clone()));
        assert_eq!(h, blake3::hash(&vec![5u8; 3_000_000]).to_hex().to_string());
        // The destination must not exist.
        assert!(copy_hashed(&a, &b).is_err());
    }

    fn read_all(mut f: File) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    fn refused(r: Result<File, FsError>) -> String {
        match r {
            Ok(_) => panic!("opened"),
            Err(e @ FsError::Unsafe { .. }) => e.to_string(),
            Err(e) => panic!("wrong error: {e:?}"),
        }
    }

    #[test]
    fn reads_below_a_guest_directory_follow_no_link() {
        use std::os::unix::fs::symlink;
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("secret");
        fs::create_dir(&secret).unwrap();
        fs::write(secret.join("shadow"), "root-only").unwrap();
        let stage = host.path().join("stage");
        fs::create_dir_all(stage.join("out/deep")).unwrap();
        fs::write(stage.join("out/deep/real.txt"), "guest data").unwrap();

        // A regular file through plain directories is read.
        let f = open_beneath_nofollow(&stage, Path::new("out/deep/real.txt")).unwrap();
        assert_eq!(read_all(f), "guest data");
        let f = open_beneath_nofollow(&stage, Path::new("./out/deep/real.txt")).unwrap();
        assert_eq!(read_all(f), "guest data");

        // A link at the last component.
        symlink(secret.join("shadow"), stage.join("out/last.txt")).unwrap();
        let why = refused(open_beneath_nofollow(&stage, Path::new("out/last.txt")));
        assert!(why.contains("symbolic link"), "{why}");
        // A link at a middle component (to a directory holding the file).
        symlink(&secret, stage.join("mid")).unwrap();
        let why = refused(open_beneath_nofollow(&stage, Path::new("mid/shadow")));
        assert!(
            why.contains("symbolic link") && why.contains("mid"),
            "{why}"
        );
        // A relative link that stays inside is refused all the same.
        symlink("deep", stage.join("out/alias")).unwrap();
        refused(open_beneath_nofollow(
            &stage,
            Path::new("out/alias/real.txt"),
        ));

        // A FIFO: refused without blocking on the open.
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            stage.join("fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let why = refused(open_beneath_nofollow(&stage, Path::new("fifo")));
        assert!(why.contains("FIFO"), "{why}");
        // A directory where a file was expected.
        let why = refused(open_beneath_nofollow(&stage, Path::new("out/deep")));
        assert!(why.contains("directory"), "{why}");
        // A file where a directory was expected.
        let err = open_beneath_nofollow(&stage, Path::new("out/deep/real.txt/x")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        // Paths that leave the directory by name.
        for bad in [
            "../secret/shadow",
            "/etc/passwd",
            "out/../../secret/shadow",
            "",
        ] {
            refused(open_beneath_nofollow(&stage, Path::new(bad)));
        }
        // Missing is an ordinary error, not a refusal.
        let missing = open_beneath_nofollow(&stage, Path::new("out/none")).unwrap_err();
        assert!(matches!(missing, FsError::File(_)), "{missing:?}");
    }

    #[test]
    fn files_created_in_a_guest_directory_never_reuse_a_planted_name() {
        use std::os::unix::fs::symlink;
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let stage = host.path().join("stage");
        fs::create_dir_all(stage.join("tree/sub")).unwrap();
        fs::write(stage.join("tree/sub/f"), "x").unwrap();
        symlink(&victim, stage.join("in.txt")).unwrap();
        // A link to a directory outside, inside a tree to remove.
        let outside = host.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        symlink(&outside, stage.join("tree/link")).unwrap();

        let dir = open_dir_beneath_nofollow(&stage, Path::new("")).unwrap();
        // The planted link makes the exclusive create fail...
        assert!(create_new_in(&dir, &stage, OsStr::new("in.txt"), 0o644).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        // ...and removing it removes the link, not its target.
        remove_entry_nofollow(&stage, OsStr::new("in.txt")).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        let mut f = create_new_in(&dir, &stage, OsStr::new("in.txt"), 0o644).unwrap();
        f.write_all(b"input").unwrap();
        assert_eq!(fs::read_to_string(stage.join("in.txt")).unwrap(), "input");
        // A whole tree goes, the directory its link points at stays.
        remove_entry_nofollow(&stage, OsStr::new("tree")).unwrap();
        assert!(!stage.join("tree").exists());
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
        remove_entry_nofollow(&stage, OsStr::new("gone")).unwrap();
        for bad in ["a/b", "..", ""] {
            assert!(create_new_in(&dir, &stage, OsStr::new(bad), 0o644).is_err());
        }
    }

    #[test]
    fn a_destination_is_replaced_by_rename_never_written_through() {
        use std::os::unix::fs::symlink;
        let host = tempfile::tempdir().unwrap();
        let src_path = host.path().join("src");
        fs::write(&src_path, "new content").unwrap();
        fs::set_permissions(&src_path, fs::Permissions::from_mode(0o4755)).unwrap();
        let out = host.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old.txt"), "old").unwrap();
        let victim = host.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        symlink(&victim, out.join("link.txt")).unwrap();
        fs::create_dir(out.join("adir")).unwrap();
        let dir = open_dir_beneath_nofollow(&out, Path::new("")).unwrap();
        let copy = |name: &str| {
            let mut src = File::open(&src_path).unwrap();
            replace_file_in(&dir, &out, OsStr::new(name), &mut src, &src_path, 0o644)
        };

        assert_eq!(copy("new.txt").unwrap(), 11);
        assert_eq!(copy("old.txt").unwrap(), 11);
        assert_eq!(
            fs::read_to_string(out.join("old.txt")).unwrap(),
            "new content"
        );
        // The guest's mode bits (set-uid here) are not carried over.
        let mode = fs::metadata(out.join("new.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
        let why = copy("link.txt").unwrap_err().to_string();
        assert!(why.contains("symbolic link"), "{why}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(copy("adir").is_err());
        // No temporary file is left behind.
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["adir", "link.txt", "new.txt", "old.txt"]);
    }

    #[test]
    fn host_paths_are_opened_inside_their_root_without_a_late_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repos/alice");
        fs::create_dir_all(root.join("data/v1")).unwrap();
        fs::write(root.join("data/v1/in.txt"), "mine").unwrap();
        fs::create_dir_all(dir.path().join("repos/bob")).unwrap();
        fs::write(dir.path().join("repos/bob/theirs.txt"), "bob's").unwrap();
        symlink(root.join("data"), root.join("alias")).unwrap();
        symlink(dir.path().join("repos/bob"), root.join("to-bob")).unwrap();
        let roots = vec![root.clone()];

        let (f, real) =
            open_file_inside("inputs[0].from", &root.join("alias/v1/in.txt"), &roots).unwrap();
        assert_eq!(read_all(f), "mine");
        assert!(real.ends_with("data/v1/in.txt"));
        let err = open_file_inside("inputs[0].from", &root.join("to-bob/theirs.txt"), &roots)
            .unwrap_err();
        assert!(err.to_string().starts_with("inputs[0].from"), "{err}");
        assert!(report(&err).contains("outside"), "{err}");
        let (_, real) = open_dir_inside("outputs[0].to", &root.join("alias/v1"), &roots).unwrap();
        assert!(real.ends_with("data/v1"));
        assert!(open_dir_inside("outputs[0].to", &root.join("data/v1/in.txt"), &roots).is_err());
        assert!(open_file_inside("inputs[0].from", &root.join("data"), &roots).is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, text).unwrap();
        assert_eq!(tail_lines(&p, 2), "line 98\nline 99");
        assert_eq!(tail_lines(&dir.path().join("none"), 2), "");
    }
}
