//! Job output files: what agents send of a job's stdout and stderr.
//!
//! One file per job under `output/` in the data directory. Agents write at
//! an offset and everything after it is cut off: a job resumed from a
//! checkpoint rewinds its output to the length it had at the checkpoint, so
//! the file ends up as an uninterrupted run's output.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parent 0700: vgrid's state is private.
/// Directories that exist keep their modes (the data directory may be the
/// user's).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub(crate) struct OutputFiles {
    dir: PathBuf,
}

impl OutputFiles {
    pub(crate) fn new(dir: PathBuf) -> std::io::Result<OutputFiles> {
        // Jobs' output is their owners' only; `output/` is vgrid's own, so
        // one made 0755 by an older vgrid is closed too.
        create_private_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(OutputFiles { dir })
    }

    fn path(&self, job: u64) -> PathBuf {
        self.dir.join(format!("{job}.log"))
    }

    /// Writes `data` at `offset` and cuts the file there.
    pub(crate) fn write_at(&self, job: u64, offset: u64, data: &[u8]) -> std::io::Result<u64> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path(job))?;
        let end = offset + data.len() as u64;
        f.set_len(offset)?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)?;
        f.set_len(end)?;
        Ok(end)
    }

    /// The length of a job's output (0 before its first byte).
    pub(crate) fn len(&self, job: u64) -> std::io::Result<u64> {
        match std::fs::metadata(self.path(job)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Up to `max` bytes from `offset`, and the file's length.
    pub(crate) fn read_at(
        &self,
        job: u64,
        offset: u64,
        max: u64,
    ) -> std::io::Result<(Vec<u8>, u64)> {
        let path = self.path(job);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if offset >= len {
            return Ok((Vec::new(), len));
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max).read_to_end(&mut buf)?;
        Ok((buf, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_at_an_offset_cuts_what_followed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let files = OutputFiles::new(dir.path().join("output"))?;
        assert_eq!(files.read_at(1, 0, 100)?, (Vec::new(), 0));
        assert_eq!(files.write_at(1, 0, b"1\n2\n")?, 4);
        assert_eq!(files.write_at(1, 4, b"3\n4\n")?, 8);
        // Resumed from a checkpoint taken after "1\n2\n": rewind and go on.
        assert_eq!(files.write_at(1, 4, b"3\n")?, 6);
        assert_eq!(files.read_at(1, 0, 100)?, (b"1\n2\n3\n".to_vec(), 6));
        assert_eq!(files.read_at(1, 2, 2)?, (b"2\n".to_vec(), 6));
        assert_eq!(files.read_at(1, 9, 2)?, (Vec::new(), 6));
        // A job's output is vgrid's alone.
        let mode = |p: PathBuf| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(dir.path().join("output"))?, 0o700);
        assert_eq!(mode(dir.path().join("output/1.log"))?, 0o600);
        Ok(())
    }
}
