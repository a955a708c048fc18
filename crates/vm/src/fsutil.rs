//! Small file-system helpers: atomic writes, directory fsync, copies that
//! hard-link when they can, and the "stays inside its root" check.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, VmError};

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory. A crash leaves the old file or the new
/// one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| VmError::io("create", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| VmError::io("write", &tmp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        VmError::io("rename into", path, e)
    })?;
    fsync_dir(dir)
}

/// Replaces `path` with `bytes` through a temporary file and a rename, so
/// readers never see a partial file, without fsync: for files that matter
/// only while their processes live (pid files) or are rebuilt from the
/// record (the job context).
pub fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| VmError::io("write", &tmp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        VmError::io("rename into", path, e)
    })
}

/// Makes a directory's entries (creations, renames) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VmError::io("fsync directory", dir, e))
}

/// Creates `dir` and any missing parent with mode 0700, leaving the modes
/// of directories that exist alone (they may be the user's): vgrid's
/// state is private to it.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| VmError::io("create directory", dir, e))
}

/// Creates `dir` (and parents) and sets its mode.
pub fn create_dir_mode(dir: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| VmError::io("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| VmError::io("set permissions of", dir, e))
}

/// Copies `src` to `dst` (which must not exist, and is created 0600) and
/// fsyncs it. Returns the number of bytes and the BLAKE3 hash of the
/// content, computed while copying so the data is read once.
pub fn copy_hashed(src: &Path, dst: &Path) -> Result<(u64, String)> {
    let mut input = File::open(src).map_err(|e| VmError::io("open", src, e))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| VmError::io("create", dst, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(VmError::io("read", src, e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| VmError::io("write", dst, e))?;
        total += n as u64;
    }
    out.sync_all().map_err(|e| VmError::io("fsync", dst, e))?;
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// The BLAKE3 hash and size of a file.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| VmError::io("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(VmError::io("read", path, e)),
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
pub fn resolve_inside(field: &str, path: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let escape = |reason: String| VmError::PathEscape {
        field: field.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(escape("the path is empty".into()));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(escape("`..` is not allowed".into()));
    }
    let Some(first_root) = roots.first() else {
        return Err(escape("no directory is allowed for host paths".into()));
    };
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        first_root.join(path)
    };
    let real = fs::canonicalize(&joined).map_err(|e| escape(format!("cannot resolve it: {e}")))?;
    for root in roots {
        if let Ok(root_real) = fs::canonicalize(root)
            && real.starts_with(&root_real)
        {
            return Ok(real);
        }
    }
    let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(escape(format!(
        "it resolves to {}, outside the allowed directories ({})",
        real.display(),
        names.join(", ")
    )))
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

        let ok = resolve_inside("--mount", Path::new("genome/v1"), &roots).unwrap();
        assert!(ok.ends_with("genome/v1"));
        // A symlink that stays inside is fine.
        resolve_inside("--mount", Path::new("alias"), &roots).unwrap();
        let abs = root.join("genome");
        resolve_inside("--mount", &abs, &roots).unwrap();

        for bad in ["../secret", "genome/../../secret", "sneaky"] {
            let err = resolve_inside("--mount", Path::new(bad), &roots).unwrap_err();
            assert!(matches!(err, VmError::PathEscape { .. }), "{bad}: {err:?}");
        }
        let outside = resolve_inside("--mount", &dir.path().join("secret"), &roots).unwrap_err();
        assert!(
            outside.to_string().contains("outside the allowed"),
            "{outside}"
        );
        let missing = resolve_inside("--mount", Path::new("nope"), &roots).unwrap_err();
        assert!(missing.to_string().contains("cannot resolve"), "{missing}");
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
