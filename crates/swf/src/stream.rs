//! Reading a trace while it is simulated: a thread parses the file and
//! hands the simulator its jobs in batches, so that reading costs no wall
//! time beyond the simulation's own.
//!
//! A stream gives exactly the jobs [`Workload::read`] gives, in the same
//! order, or says at its end that it could not ([`StreamEnd::exact`]): it
//! takes the machine size from the caller or from the header comments at
//! the top of the file, and trusts that the jobs come in arrival order
//! (every trace of the Parallel Workloads Archive does). A header comment
//! further down that changes the machine size, or a job out of order,
//! makes the stream stop and the caller read the trace whole instead.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use crate::workload::{Kept, keep, machine_size};
use crate::{
    Dropped, Header, Job, LoadError, Loaded, MachineSource, Mode, Parsed, Record, RecordSink,
    Skipped, Workload,
};

/// Jobs per batch handed to the simulator.
const BATCH: usize = 1024;

/// How much of the file is read ahead for its header comments.
const HEAD: u64 = 64 * 1024;

/// What [`JobStream::open`] found.
#[derive(Debug)]
pub enum Opened {
    /// The trace is being read on a thread; take its jobs from the stream.
    Stream(JobStream),
    /// The trace could not be streamed (no machine size before the jobs,
    /// say) and was read whole.
    Whole(Loaded),
}

enum Msg {
    Jobs(Vec<Job>),
    /// Every job was sent.
    Done,
    /// The jobs stopped being those a whole read gives (out of order).
    Diverged,
}

/// Jobs of a trace in arrival order, while a thread reads them.
#[derive(Debug)]
pub struct JobStream {
    /// Processors of the machine.
    pub machine_procs: u32,
    /// Where `machine_procs` came from (the caller or the header).
    pub machine_source: MachineSource,
    rx: mpsc::Receiver<Msg>,
    reader: std::thread::JoinHandle<Result<StreamEnd, LoadError>>,
    /// The stream ended without `Done`: reading failed or diverged.
    stopped: bool,
    ended: bool,
}

/// What the reading thread found besides the jobs.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// The header comments (all of them).
    pub header: Header,
    /// Malformed lines skipped (lenient mode).
    pub skipped: Skipped,
    /// Lines in the file.
    pub lines: u64,
    /// Jobs dropped by the conventions.
    pub dropped: Dropped,
    /// Whether the jobs sent are exactly [`Workload::read`]'s, in its
    /// order and on its machine; if not, read the trace whole.
    pub exact: bool,
    /// Wall time from opening the file to the end of the parse.
    pub read_wall_s: f64,
}

impl JobStream {
    /// Opens a trace (plain or gzipped) and starts reading its jobs on a
    /// thread. `procs` is the caller's machine size, which wins over the
    /// header. Errors of the file itself come at once; errors of its lines
    /// come from [`JobStream::finish`].
    pub fn open(path: &Path, procs: Option<u32>, mode: Mode) -> Result<Opened, LoadError> {
        let t0 = Instant::now();
        let data = crate::read_file(path)?;
        let file = path.display().to_string();
        let machine =
            head(&data, &file).and_then(|header| machine_size(&header, &file, procs, None).ok());
        let Some((machine_procs, machine_source)) = machine else {
            // The machine size needs every job, or the header is not
            // readable: the whole read says what the conventions say.
            return Workload::parse(&data, &file, procs, mode).map(Opened::Whole);
        };
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("swf-reader".into())
            .spawn(move || {
                let sink = StreamSink {
                    machine: machine_procs,
                    batch: Vec::with_capacity(BATCH),
                    tx,
                    dropped: Dropped::default(),
                    last: None,
                    exact: true,
                    largest: None,
                };
                let Parsed {
                    header,
                    skipped,
                    lines,
                    mut sink,
                } = crate::parse_into(&data, &file, mode, sink)?;
                sink.flush();
                let same_machine = machine_size(&header, &file, procs, sink.largest).ok()
                    == Some((machine_procs, machine_source));
                let exact = sink.exact && same_machine;
                let _ = sink.tx.send(if exact { Msg::Done } else { Msg::Diverged });
                Ok(StreamEnd {
                    header,
                    skipped,
                    lines,
                    dropped: sink.dropped,
                    exact,
                    read_wall_s: t0.elapsed().as_secs_f64(),
                })
            })
            .map_err(|source| crate::SwfError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Opened::Stream(JobStream {
            machine_procs,
            machine_source,
            rx,
            reader,
            stopped: false,
            ended: false,
        }))
    }

    /// The next jobs in arrival order (waiting for the reader if it is
    /// behind); `None` once the stream has ended. After `None`,
    /// [`JobStream::stopped`] tells whether it ended early.
    pub fn next_batch(&mut self) -> Option<Vec<Job>> {
        if self.ended {
            return None;
        }
        match self.rx.recv() {
            Ok(Msg::Jobs(jobs)) => Some(jobs),
            Ok(Msg::Done) => {
                self.ended = true;
                None
            }
            // Diverged, or the reader stopped at an error.
            Ok(Msg::Diverged) | Err(_) => {
                self.ended = true;
                self.stopped = true;
                None
            }
        }
    }

    /// Whether the stream ended before its last job: a malformed line, a
    /// read error, or jobs a whole read would give otherwise. The jobs
    /// taken so far must then be thrown away; [`JobStream::finish`] says
    /// why.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Waits for the reader and returns what it found, or the error that
    /// stopped it.
    pub fn finish(self) -> Result<StreamEnd, LoadError> {
        // Jobs not taken are dropped with the receiver.
        drop(self.rx);
        self.reader.join().unwrap_or_else(|_| {
            Err(crate::SwfError::Io {
                path: "swf-reader".into(),
                source: std::io::Error::other("the reading thread panicked"),
            }
            .into())
        })
    }
}

/// The header comments of the first [`HEAD`] bytes of a trace (inflated
/// if gzipped), or `None` if that part cannot be read.
fn head(data: &[u8], file: &str) -> Option<Header> {
    let mut prefix = Vec::new();
    if crate::is_gzip(data) {
        flate2::read::MultiGzDecoder::new(data)
            .take(HEAD)
            .read_to_end(&mut prefix)
            .ok()?;
    } else {
        prefix.extend_from_slice(&data[..data.len().min(HEAD as usize)]);
    }
    // Whole lines only (all of it if the file is that short).
    if prefix.len() as u64 == HEAD {
        let end = prefix.iter().rposition(|&b| b == b'\n')?;
        prefix.truncate(end + 1);
    }
    struct Ignore;
    impl RecordSink for Ignore {
        fn record(&mut self, _: Record) {}
    }
    // Lenient, so that a malformed job line near the top does not hide the
    // header; the whole parse reports it in the caller's mode.
    let mut p = crate::parse::Parser::new(file, Mode::Lenient, Ignore);
    p.feed(&prefix).ok()?;
    Some(p.finish().header)
}

/// Applies the conventions to each record and sends the jobs in batches.
struct StreamSink {
    machine: u32,
    batch: Vec<Job>,
    tx: mpsc::Sender<Msg>,
    dropped: Dropped,
    /// The arrival key of the last job sent.
    last: Option<(i64, i64, u64)>,
    exact: bool,
    /// The most processors a kept job asks for (for the machine size check).
    largest: Option<u64>,
}

impl StreamSink {
    fn flush(&mut self) {
        if self.exact && !self.batch.is_empty() {
            let jobs = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            // A receiver that is gone took all it wanted.
            let _ = self.tx.send(Msg::Jobs(jobs));
        }
    }
}

impl RecordSink for StreamSink {
    fn record(&mut self, r: Record) {
        let j = match keep(&r) {
            Kept::Job(j) => j,
            Kept::RunNegative => return self.dropped.run_negative += 1,
            Kept::SubmitNegative => return self.dropped.submit_negative += 1,
            Kept::ProcsBelowOne => return self.dropped.procs_below_one += 1,
            Kept::Huge => return self.dropped.procs_above_machine += 1,
        };
        self.largest = self.largest.max(Some(u64::from(j.procs)));
        if j.procs > self.machine {
            self.dropped.procs_above_machine += 1;
            return;
        }
        let key = (j.submit_s, j.id, j.line);
        if self.last.is_some_and(|last| last > key) && self.exact {
            // A whole read would sort: tell the simulator to stop now.
            self.exact = false;
            self.batch.clear();
            let _ = self.tx.send(Msg::Diverged);
        }
        if !self.exact {
            return;
        }
        self.last = Some(key);
        self.batch.push(j);
        if self.batch.len() == BATCH {
            self.flush();
        }
    }
}
