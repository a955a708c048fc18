//! Reading the guest agent's frames from `agent.out`, which QEMU appends
//! to. The file is read incrementally; a frame cut short at the end is
//! simply not written yet.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use vgrid_guest_proto::{ExitStatus, FrameDecoder, GuestMessage};

use crate::error::FileError;

/// What the agent has reported so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// The agent said hello (it booted and found its port).
    pub hello: bool,
    /// The command is running (or ran).
    pub started: bool,
    pub exit: Option<ExitStatus>,
    /// Errors the agent reported (setup failures, staging failures).
    pub errors: Vec<String>,
}

impl AgentReport {
    fn absorb(&mut self, msg: &GuestMessage) {
        match msg {
            GuestMessage::Hello { .. } => self.hello = true,
            GuestMessage::Started { .. } => self.started = true,
            GuestMessage::Exited(status) => self.exit = Some(*status),
            GuestMessage::AgentError { message } => self.errors.push(message.clone()),
            _ => {}
        }
    }
}

/// An incremental reader of `agent.out`.
#[derive(Debug)]
pub struct OutputReader {
    path: PathBuf,
    offset: u64,
    decoder: FrameDecoder,
    report: AgentReport,
    /// Frames that were not messages this vgrid knows (skipped).
    pub skipped: u64,
}

/// Bytes read per call, so a huge output never sits in memory at once.
const READ_WINDOW: u64 = 4 << 20;

/// At most [`READ_WINDOW`] bytes of `path` from byte `offset` on (none
/// when the file does not exist yet): the next piece of an `agent.out`.
pub(crate) fn read_window(path: &Path, offset: u64) -> Result<Vec<u8>, FileError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::new("open", path, e)),
    };
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| FileError::new("seek", path, e))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    f.take(READ_WINDOW)
        .read_to_end(&mut buf)
        .map_err(|e| FileError::new("read", path, e))?;
    Ok(buf)
}

impl OutputReader {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutputReader {
            path: path.into(),
            offset: 0,
            decoder: FrameDecoder::new(),
            report: AgentReport::default(),
            skipped: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn report(&self) -> &AgentReport {
        &self.report
    }

    /// Messages appended since the last call (at most a few MiB worth; call
    /// again until it returns nothing).
    pub fn poll(&mut self) -> Result<Vec<GuestMessage>, FileError> {
        let buf = read_window(&self.path, self.offset)?;
        self.offset += buf.len() as u64;
        self.decoder.push(&buf);
        let mut out = Vec::new();
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => match GuestMessage::from_frame(&frame) {
                    Ok(msg) => {
                        self.report.absorb(&msg);
                        out.push(msg);
                    }
                    Err(_) => self.skipped += 1,
                },
                Ok(None) => break,
                // Garbage was skipped by the decoder; keep going.
                Err(_) => self.skipped += 1,
            }
        }
        Ok(out)
    }

    /// Reads everything written so far.
    pub fn drain(&mut self) -> Result<Vec<GuestMessage>, FileError> {
        let mut all = Vec::new();
        loop {
            let before = self.offset;
            let mut msgs = self.poll()?;
            all.append(&mut msgs);
            if self.offset == before {
                return Ok(all);
            }
        }
    }
}

/// The agent's report from a whole `agent.out`.
pub fn read_report(path: &Path) -> Result<AgentReport, FileError> {
    let mut r = OutputReader::new(path);
    loop {
        let before = r.offset;
        r.poll()?;
        if r.offset == before {
            return Ok(r.report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn partial_frames_wait_and_garbage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.out");
        let mut bytes = Vec::new();
        GuestMessage::Started { pid: 7 }.encode_into(&mut bytes);
        GuestMessage::Stdout(b"hello\n".to_vec()).encode_into(&mut bytes);
        let exit = GuestMessage::Exited(ExitStatus {
            code: Some(3),
            signal: None,
        })
        .encode();
        let (first, second) = exit.split_at(5);
        bytes.extend_from_slice(first);
        std::fs::write(&p, &bytes).unwrap();

        let mut r = OutputReader::new(&p);
        let msgs = r.poll().unwrap();
        assert_eq!(msgs.len(), 2);
        assert!(r.report().started);
        assert_eq!(r.report().exit, None);

        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(second).unwrap();
        f.write_all(b"\x00garbage").unwrap();
        GuestMessage::AgentError {
            message: "stage-out failed".into(),
        }
        .encode_into(&mut Vec::new());
        f.write_all(
            &GuestMessage::AgentError {
                message: "stage-out failed".into(),
            }
            .encode(),
        )
        .unwrap();
        let msgs = r.poll().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(r.report().exit.unwrap().shell_code(), 3);
        assert_eq!(r.report().errors, vec!["stage-out failed".to_string()]);
        assert!(r.skipped >= 1);
        assert_eq!(read_report(&p).unwrap(), r.report().clone());
    }

    #[test]
    fn a_missing_file_reports_nothing() {
        let r = read_report(Path::new("/nonexistent/agent.out")).unwrap();
        assert_eq!(r, AgentReport::default());
    }
}
