//! Tasks in a VM kept running (the `persistent` and `save-restore` VM
//! modes): such a VM boots with `keep` in its job context, so its guest
//! agent does not power off after the command but runs the `Run` requests
//! the host sends on the control port, one after the other.
//!
//! Every task is a *run* with an id the host picks. Its frames in
//! `agent.out` are `RunStarted { run }`, its output, then `RunExited { run }`
//! last; runs never overlap, so the output between the two belongs to the
//! run. A [`RunReader`] reads one run's output and end from a byte offset
//! of `agent.out` (where the run's frames begin), so that a VM's earlier
//! runs, or the output a restored checkpoint carries, are never read again.
//!
//! A kept VM is an ordinary VM for the rest of the runtime: it can be
//! paused, checkpointed (also with stop: the save of `save-restore`),
//! restored, stopped (the agent powers off on `Stop`) and killed. Its state
//! shows as `starting` in listings, because the agent reports runs, not the
//! one command of a fresh VM.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vgrid_guest_proto::{ExitStatus, FrameDecoder, GuestMessage, HostMessage};

use crate::error::{CommandError, ExecError, FileError, Result, SpecError, StartError, VmError};
use crate::fsutil;
use crate::layout::VmDir;
use crate::output::read_window;
use crate::record::VmRecord;
use crate::runtime::{Runtime, STAGE_TAG, Task, VmLock, VmSpec, guest_task, open_inputs};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub status: ExitStatus,
    /// What went wrong around the command (set-up, staging), if anything.
    pub error: Option<String>,
}

/// Reads one run's output and end from a kept VM's `agent.out`.
#[derive(Debug)]
pub struct RunReader {
    path: PathBuf,
    run: u64,
    start: u64,
    offset: u64,
    decoder: FrameDecoder,
    started: bool,
    end: Option<RunEnd>,
    /// Errors the agent reported while this run was being read (a failed
    /// set-up of a fresh kept VM comes as an error and a power-off).
    errors: Vec<String>,
}

impl RunReader {
    /// A reader of run `run` whose frames begin at byte `from` of `path`.
    pub fn new(path: impl Into<PathBuf>, run: u64, from: u64) -> RunReader {
        RunReader {
            path: path.into(),
            run,
            start: from,
            offset: from,
            decoder: FrameDecoder::new(),
            started: false,
            end: None,
            errors: Vec::new(),
        }
    }

    pub fn run(&self) -> u64 {
        self.run
    }

    /// The byte offset of `agent.out` where this run's frames begin.
    pub fn start_offset(&self) -> u64 {
        self.start
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's command started (or the run has ended).
    pub fn started(&self) -> bool {
        self.started || self.end.is_some()
    }

    pub fn end(&self) -> Option<&RunEnd> {
        self.end.as_ref()
    }

    /// Agent errors seen since the run's frames began.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The run's output (stdout and stderr, in arrival order) written since
    /// the last call. Call again until it returns nothing to read all.
    pub fn poll(&mut self) -> Result<Vec<u8>, FileError> {
        let buf = read_window(&self.path, self.offset)?;
        self.offset += buf.len() as u64;
        self.decoder.push(&buf);
        let mut out = Vec::new();
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // Garbage was skipped by the decoder; go on.
                Err(_) => continue,
            };
            let Ok(msg) = GuestMessage::from_frame(&frame) else {
                continue;
            };
            self.absorb(msg, &mut out);
        }
        Ok(out)
    }

    fn absorb(&mut self, msg: GuestMessage, out: &mut Vec<u8>) {
        let in_run = self.started && self.end.is_none();
        match msg {
            GuestMessage::RunStarted { run, .. } if run == self.run => self.started = true,
            GuestMessage::RunExited { run, status, error } if run == self.run => {
                self.end = Some(RunEnd { status, error });
            }
            GuestMessage::Stdout(bytes) | GuestMessage::Stderr(bytes) if in_run => {
                out.extend_from_slice(&bytes);
            }
            GuestMessage::AgentError { message } if self.end.is_none() => {
                self.errors.push(message);
            }
            _ => {}
        }
    }

    /// Reads everything written so far; returns the run's new output.
    pub fn drain(&mut self) -> Result<Vec<u8>, FileError> {
        let mut all = Vec::new();
        loop {
            let before = self.offset;
            all.extend(self.poll()?);
            if self.offset == before {
                return Ok(all);
            }
        }
    }
}

impl Runtime {
    /// Boots a VM that stays up after its command: the command runs as run
    /// `run`, and later runs come with [`Runtime::exec`]. Returns once the
    /// command has started (or already ended), with a reader of its run.
    ///
    /// The VM starts on the path of [`Runtime::start`]; its context says
    /// `keep` and `run`, and it always gets a staging share.
    pub async fn start_kept(&self, spec: VmSpec, run: u64) -> Result<RunReader, StartError> {
        let (dir, _) = self.create(&spec, Some(run)).await?;
        let reader = RunReader::new(dir.agent_out(), run, 0);
        self.wait_run_started(&dir, &spec.name, &reader).await?;
        Ok(reader)
    }

    /// Runs `task` as run `run` in the kept VM `name`. Its staged inputs
    /// are host files (inside the VM owner's directories, see
    /// [`Runtime::host_roots`], or inside the task's `input_dir`) copied
    /// into the VM's staging share under
    /// their file names, replacing whatever the previous runs left there.
    /// Returns once the command has started (or already ended), with a
    /// reader of the run.
    pub async fn exec(&self, name: &str, run: u64, task: &Task) -> Result<RunReader, ExecError> {
        let dir = self.existing(name)?;
        let offset = {
            let _lock = VmLock::acquire(&dir, name).await.map_err(VmError::from)?;
            let rec = VmRecord::load(&dir.record()).map_err(VmError::from)?;
            if !rec.context.as_ref().is_some_and(|c| c.keep) {
                return Err(VmError::WrongState {
                    name: name.to_string(),
                    state: "not kept running".into(),
                    action: "run a task in it (it was started for one command)".into(),
                }
                .into());
            }
            if self.qemu_pid(&dir).is_none() {
                return Err(VmError::WrongState {
                    name: name.to_string(),
                    state: "not running".into(),
                    action: "run a task in it".into(),
                }
                .into());
            }
            let inputs = task.staging.as_ref().map_or(&[][..], |s| &s.inputs[..]);
            let roots = match task.staging.as_ref().and_then(|s| s.input_dir.clone()) {
                Some(dir) => vec![dir],
                None => self.host_roots_if(rec.owner.as_deref(), !inputs.is_empty())?,
            };
            let staged = open_inputs::<ExecError>("staging.inputs", inputs, &roots)?;
            let tag = match (&task.staging, rec.staging_tag.as_deref()) {
                (Some(_), None) => {
                    return Err(SpecError::new(
                        "staging",
                        name,
                        "the VM was started without a staging share",
                    )
                    .into());
                }
                (_, tag) => tag.unwrap_or(STAGE_TAG),
            };
            let request = guest_task(task, tag, &staged).run(run);
            request
                .validate()
                .map_err(|source| ExecError::Task { run, source })?;
            self.fill_stage(&dir, staged)?;
            let offset = fs::metadata(dir.agent_out()).map(|m| m.len()).unwrap_or(0);
            self.send_control(&dir, &HostMessage::Run(request)).await?;
            offset
        };
        let reader = RunReader::new(dir.agent_out(), run, offset);
        self.wait_run_started(&dir, name, &reader).await?;
        Ok(reader)
    }

    /// Whether the VM's QEMU is alive: a cheap check that reads no output
    /// (unlike [`Runtime::inspect`]).
    pub fn qemu_alive(&self, name: &str) -> Result<bool> {
        let dir = self.existing(name)?;
        Ok(self.qemu_pid(&dir).is_some())
    }

    /// Sets the guest's wall clock to the host's (a restored VM's clock
    /// lags by the time it was saved).
    pub async fn set_guest_clock(&self, name: &str) -> Result<()> {
        let dir = self.existing(name)?;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(self
            .send_control(&dir, &HostMessage::SetClock { unix_ms })
            .await?)
    }

    /// Waits until the run's command started or the run ended; fails when
    /// QEMU dies or the agent reports that it cannot set the VM up.
    async fn wait_run_started(
        &self,
        dir: &VmDir,
        name: &str,
        reader: &RunReader,
    ) -> Result<(), CommandError> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        // The caller reads the output with its own reader; only the run's
        // start and end matter here.
        let mut probe = RunReader::new(reader.path.clone(), reader.run, reader.start);
        loop {
            probe.drain()?;
            if probe.started() {
                return Ok(());
            }
            let alive = self.qemu_pid(dir).is_some();
            if !alive {
                probe.drain()?;
                if probe.started() {
                    return Ok(());
                }
                self.kill_passt(dir);
                return Err(match probe.errors().first() {
                    Some(message) => CommandError::Agent {
                        name: name.to_string(),
                        message: message.clone(),
                    },
                    None => CommandError::Crashed {
                        name: name.to_string(),
                        console_tail: fsutil::tail_lines(&dir.console(), 20),
                    },
                });
            }
            if Instant::now() > deadline {
                return Err(CommandError::Timeout {
                    what: format!("run {} of VM `{name}` to start", reader.run),
                    after: self.cfg.start_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn exited(run: u64, code: i32) -> GuestMessage {
        GuestMessage::RunExited {
            run,
            status: ExitStatus {
                code: Some(code),
                signal: None,
            },
            error: None,
        }
    }

    #[test]
    fn a_reader_takes_only_its_runs_output_from_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.out");
        let mut bytes = Vec::new();
        for m in [
            GuestMessage::RunStarted { run: 1, pid: 10 },
            GuestMessage::Stdout(b"first\n".to_vec()),
            exited(1, 0),
        ] {
            m.encode_into(&mut bytes);
        }
        let second_starts = bytes.len() as u64;
        for m in [
            GuestMessage::Log {
                message: "noise".into(),
            },
            GuestMessage::RunStarted { run: 2, pid: 11 },
            GuestMessage::Stdout(b"sec".to_vec()),
            GuestMessage::Stderr(b"ond\n".to_vec()),
        ] {
            m.encode_into(&mut bytes);
        }
        let last = exited(2, 4).encode();
        bytes.extend_from_slice(&last[..3]);
        std::fs::write(&p, &bytes).unwrap();

        let mut r = RunReader::new(&p, 2, second_starts);
        assert_eq!(r.drain().unwrap(), b"second\n");
        assert!(r.started());
        assert_eq!(r.end(), None, "a cut frame is not written yet");

        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&last[3..]).unwrap();
        f.write_all(&GuestMessage::Stdout(b"after".to_vec()).encode())
            .unwrap();
        assert_eq!(r.drain().unwrap(), b"");
        assert_eq!(r.end().map(|e| e.status.shell_code()), Some(4));

        // Read from the start of the file, run 1 is found alone too.
        let mut first = RunReader::new(&p, 1, 0);
        assert_eq!(first.drain().unwrap(), b"first\n");
        assert_eq!(first.end().map(|e| e.status.code), Some(Some(0)));
    }

    #[test]
    fn a_run_that_never_started_ends_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.out");
        let mut bytes = b"\x00junk before".to_vec();
        GuestMessage::RunExited {
            run: 9,
            status: ExitStatus {
                code: None,
                signal: None,
            },
            error: Some("staging input `a` in: missing".into()),
        }
        .encode_into(&mut bytes);
        std::fs::write(&p, &bytes).unwrap();
        let mut r = RunReader::new(&p, 9, 0);
        assert!(r.drain().unwrap().is_empty());
        assert!(r.started(), "an ended run counts as started");
        let end = r.end().expect("ended");
        assert_eq!(end.error.as_deref(), Some("staging input `a` in: missing"));
    }

    #[test]
    fn a_missing_file_is_no_output_yet() {
        let mut r = RunReader::new("/nonexistent/agent.out", 1, 0);
        assert!(r.drain().unwrap().is_empty());
        assert!(!r.started());
    }
}
