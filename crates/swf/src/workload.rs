//! The simulation conventions: from SWF records to the jobs a simulator
//! replays, and the machine they run on.

use std::path::Path;

use crate::{
    Header, MAX_MACHINE_PROCS, Mode, Parsed, Record, RecordSink, Skipped, SwfError, Trace,
};

/// One job as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// SWF job number (field 1). Not necessarily unique in a trace.
    pub id: i64,
    /// Submit time, seconds (field 2, >= 0).
    pub submit_s: i64,
    /// Real run time, seconds (field 4, >= 0). The scheduler never sees it.
    pub run_s: i64,
    /// Processors: field 8 if > 0, else field 5 (1..=machine size).
    pub procs: u32,
    /// The user's estimate: field 9 if > 0, else the run time.
    pub estimate_s: i64,
    /// Memory per processor in KB: field 7 (used) if > 0, else field 10
    /// (requested) if > 0, else unknown.
    pub mem_kb_per_proc: Option<u64>,
    /// User id (field 12).
    pub user: i64,
    /// The line of the trace the job came from.
    pub line: u64,
}

/// How many jobs each rule dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Run time < 0 (unknown or invalid).
    pub run_negative: u64,
    /// Submit time < 0 (unknown or invalid).
    pub submit_negative: u64,
    /// Processors < 1 (both field 8 and field 5 unknown or zero).
    pub procs_below_one: u64,
    /// More processors than the machine has.
    pub procs_above_machine: u64,
}

impl Dropped {
    /// All dropped jobs.
    pub fn total(&self) -> u64 {
        self.run_negative + self.submit_negative + self.procs_below_one + self.procs_above_machine
    }
}

/// Where the machine size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineSource {
    /// The caller gave it (`--procs`).
    Given,
    /// The header's `MaxProcs`.
    HeaderMaxProcs,
    /// The header's `MaxNodes` (no usable `MaxProcs`).
    HeaderMaxNodes,
    /// The largest job (the trace says nothing): worth a warning.
    LargestJob,
}

/// The jobs of a trace in arrival order, and the machine they run on.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Jobs ordered by submit time, then job number, then line.
    pub jobs: Vec<Job>,
    /// Processors of the machine.
    pub machine_procs: u32,
    /// Where `machine_procs` came from.
    pub machine_source: MachineSource,
    /// Jobs dropped by the conventions.
    pub dropped: Dropped,
}

/// Why a workload cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// No machine size from the caller or the header, and no job to take it
    /// from.
    #[error(
        "{file}: cannot tell the machine size: no --procs, no MaxProcs/MaxNodes header and no job with a usable processor count"
    )]
    NoMachineSize {
        /// The trace.
        file: String,
    },
    /// The caller's machine size is 0 or more than a simulation can hold.
    #[error(
        "{file}: a machine of {procs} processors cannot be simulated (it must have between 1 and {max})",
        max = MAX_MACHINE_PROCS
    )]
    BadMachineSize {
        /// The trace.
        file: String,
        /// The size given.
        procs: u64,
    },
    /// The header's machine size is more than a simulation can hold.
    #[error(
        "{file}:{line}: header {key}: {procs} processors is more than a simulation can hold (at most {max} one-core nodes); give a smaller machine size",
        max = MAX_MACHINE_PROCS
    )]
    MachineTooLarge {
        /// The trace.
        file: String,
        /// The 1-based line of the header comment.
        line: u64,
        /// `MaxProcs` or `MaxNodes`.
        key: &'static str,
        /// The size the header gives.
        procs: u64,
    },
}

/// Processors of a record: field 8 if > 0, else field 5.
fn record_procs(r: &Record) -> i64 {
    if r.req_procs > 0 {
        r.req_procs
    } else {
        r.alloc_procs
    }
}

/// What the first pass keeps of each record: the job, or why it is
/// dropped before the machine size is known.
pub(crate) enum Kept {
    Job(Job),
    RunNegative,
    SubmitNegative,
    ProcsBelowOne,
    /// More processors than any machine a simulation can hold
    /// ([`MAX_MACHINE_PROCS`]): larger than the machine, whatever it is.
    Huge,
}

/// The conventions that do not depend on the machine size.
pub(crate) fn keep(r: &Record) -> Kept {
    if r.run_s < 0 {
        return Kept::RunNegative;
    }
    if r.submit_s < 0 {
        return Kept::SubmitNegative;
    }
    let procs = record_procs(r);
    if procs < 1 {
        return Kept::ProcsBelowOne;
    }
    let Some(procs) = u32::try_from(procs)
        .ok()
        .filter(|&p| p <= MAX_MACHINE_PROCS)
    else {
        return Kept::Huge;
    };
    let mem = [r.used_mem_kb, r.req_mem_kb]
        .into_iter()
        .find(|&m| m > 0)
        .map(i64::unsigned_abs);
    Kept::Job(Job {
        id: r.job_id,
        submit_s: r.submit_s,
        run_s: r.run_s,
        procs,
        estimate_s: if r.req_time_s > 0 {
            r.req_time_s
        } else {
            r.run_s
        },
        mem_kb_per_proc: mem,
        user: r.user,
        line: r.line,
    })
}

/// A record sink that keeps only the simulator's compact jobs.
#[derive(Debug, Default)]
pub struct JobSink {
    jobs: Vec<Job>,
    dropped: Dropped,
}

impl JobSink {
    /// A sink expecting about `capacity` jobs.
    pub fn with_capacity(capacity: usize) -> JobSink {
        JobSink {
            jobs: Vec::with_capacity(capacity),
            dropped: Dropped::default(),
        }
    }

    fn take(&mut self, kept: Kept) {
        match kept {
            Kept::Job(j) => self.jobs.push(j),
            Kept::RunNegative => self.dropped.run_negative += 1,
            Kept::SubmitNegative => self.dropped.submit_negative += 1,
            Kept::ProcsBelowOne => self.dropped.procs_below_one += 1,
            Kept::Huge => self.dropped.procs_above_machine += 1,
        }
    }
}

impl RecordSink for JobSink {
    fn record(&mut self, r: Record) {
        self.take(keep(&r));
    }
}

/// A workload read from a file, with what the reader found besides jobs.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The jobs and the machine.
    pub workload: Workload,
    /// The header comments.
    pub header: Header,
    /// Malformed lines skipped (lenient mode).
    pub skipped: Skipped,
    /// Lines in the file.
    pub lines: u64,
}

/// Why a workload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading or parsing the trace failed.
    #[error(transparent)]
    Swf(#[from] SwfError),
    /// The conventions could not be applied.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
}

/// The machine size by the conventions: the caller's, else the header's
/// `MaxProcs`, else `MaxNodes`, else `largest` (the largest job's
/// processors; `None` when it is not known).
pub(crate) fn machine_size(
    header: &Header,
    file: &str,
    procs: Option<u32>,
    largest: Option<u64>,
) -> Result<(u32, MachineSource), WorkloadError> {
    let too_large =
        |key: &'static str, line: Option<u64>, procs: u64| WorkloadError::MachineTooLarge {
            file: file.to_string(),
            line: line.unwrap_or(0),
            key,
            procs,
        };
    let (machine, source) = match procs {
        Some(p) => (u64::from(p), MachineSource::Given),
        None => match (header.max_procs, header.max_nodes) {
            (Some(p), _) if p > 0 => {
                if p > u64::from(MAX_MACHINE_PROCS) {
                    return Err(too_large("MaxProcs", header.max_procs_line, p));
                }
                (p, MachineSource::HeaderMaxProcs)
            }
            (_, Some(n)) if n > 0 => {
                if n > u64::from(MAX_MACHINE_PROCS) {
                    return Err(too_large("MaxNodes", header.max_nodes_line, n));
                }
                (n, MachineSource::HeaderMaxNodes)
            }
            // Jobs above MAX_MACHINE_PROCS were dropped already.
            _ => (
                largest.ok_or_else(|| WorkloadError::NoMachineSize {
                    file: file.to_string(),
                })?,
                MachineSource::LargestJob,
            ),
        },
    };
    let machine_procs = u32::try_from(machine)
        .ok()
        .filter(|&p| p > 0 && p <= MAX_MACHINE_PROCS)
        .ok_or_else(|| WorkloadError::BadMachineSize {
            file: file.to_string(),
            procs: machine,
        })?;
    Ok((machine_procs, source))
}

impl Workload {
    /// Applies the conventions to a trace. `procs` is the caller's machine
    /// size (`--procs`), which wins over the header.
    pub fn from_trace(trace: &Trace, procs: Option<u32>) -> Result<Workload, WorkloadError> {
        let mut sink = JobSink::with_capacity(trace.records.len());
        for r in &trace.records {
            sink.take(keep(r));
        }
        Workload::finish(sink, &trace.header, &trace.file, procs)
    }

    /// Reads a trace file (plain or gzipped) straight into jobs, without
    /// keeping every record: the fast path of `vgrid sim`. Same result as
    /// [`crate::read_path`] then [`Workload::from_trace`].
    pub fn read(path: &Path, procs: Option<u32>, mode: Mode) -> Result<Loaded, LoadError> {
        let data = crate::read_file(path)?;
        Workload::parse(&data, &path.display().to_string(), procs, mode)
    }

    /// Like [`Workload::read`], for a trace held in memory.
    pub fn parse(
        data: &[u8],
        file: &str,
        procs: Option<u32>,
        mode: Mode,
    ) -> Result<Loaded, LoadError> {
        let expected = if crate::is_gzip(data) {
            crate::size_hint(data)
        } else {
            data.len()
        };
        let sink = JobSink::with_capacity(expected / 80 + 1);
        let Parsed {
            header,
            skipped,
            lines,
            sink,
        } = crate::parse_into(data, file, mode, sink)?;
        let workload = Workload::finish(sink, &header, file, procs)?;
        Ok(Loaded {
            workload,
            header,
            skipped,
            lines,
        })
    }

    /// The conventions that need the machine size, and the arrival order.
    fn finish(
        sink: JobSink,
        header: &Header,
        file: &str,
        procs: Option<u32>,
    ) -> Result<Workload, WorkloadError> {
        let JobSink {
            mut jobs,
            mut dropped,
        } = sink;
        let largest = jobs.iter().map(|j| u64::from(j.procs)).max();
        let (machine_procs, source) = machine_size(header, file, procs, largest)?;
        let before = jobs.len();
        jobs.retain(|j| j.procs <= machine_procs);
        dropped.procs_above_machine += (before - jobs.len()) as u64;
        // Traces are almost always in order already; check before sorting.
        let key = |j: &Job| (j.submit_s, j.id, j.line);
        if !jobs.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
            jobs.sort_unstable_by_key(key);
        }
        Ok(Workload {
            jobs,
            machine_procs,
            machine_source: source,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, parse};

    fn workload(text: &str, procs: Option<u32>) -> Result<Workload, WorkloadError> {
        let trace = parse(text.as_bytes(), "w.swf", Mode::Strict);
        let trace = trace.map_err(|e| WorkloadError::NoMachineSize {
            file: e.to_string(),
        })?;
        Workload::from_trace(&trace, procs)
    }

    #[test]
    fn processors_and_estimate_conventions() {
        let w = workload(
            "; MaxProcs: 16\n\
             1 0 0 100 4 -1 -1 8 300 -1 1 1 1 1 1 1 -1 -1\n\
             2 0 0 100 4 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             3 0 0 100 4 -1 -1 0 0 -1 1 1 1 1 1 1 -1 -1\n",
            None,
        )
        .ok();
        let jobs: Vec<(u32, i64)> = w
            .map(|w| w.jobs.iter().map(|j| (j.procs, j.estimate_s)).collect())
            .unwrap_or_default();
        assert_eq!(jobs, vec![(8, 300), (4, 100), (4, 100)]);
    }

    #[test]
    fn minus_one_everywhere_is_dropped_not_an_error() {
        let w = workload(
            "; MaxProcs: 16\n\
             -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n\
             5 -1 -1 10 1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n\
             6 3 -1 10 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n\
             7 3 -1 10 1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n\
             8 3 -1 10 17 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n",
            None,
        )
        .ok();
        let d = w.as_ref().map(|w| w.dropped);
        assert_eq!(
            d,
            Some(Dropped {
                run_negative: 1,
                submit_negative: 1,
                procs_below_one: 1,
                procs_above_machine: 1,
            })
        );
        assert_eq!(d.map(|d| d.total()), Some(4));
        let ids: Vec<i64> = w
            .map(|w| w.jobs.iter().map(|j| j.id).collect())
            .unwrap_or_default();
        assert_eq!(ids, vec![7]);
    }

    #[test]
    fn out_of_order_lines_are_sorted_by_submit_then_id_then_line() {
        let w = workload(
            "; MaxProcs: 4\n\
             3 50 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             9 10 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             4 10 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             4 10 0 2 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             1 20 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n",
            None,
        )
        .ok();
        let order: Vec<(i64, i64, u64)> = w
            .map(|w| w.jobs.iter().map(|j| (j.submit_s, j.id, j.line)).collect())
            .unwrap_or_default();
        assert_eq!(
            order,
            vec![(10, 4, 4), (10, 4, 5), (10, 9, 3), (20, 1, 6), (50, 3, 2)]
        );
    }

    #[test]
    fn machine_size_sources() {
        let body = "1 0 0 10 6 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
                    2 0 0 10 3 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n";
        let w = workload(body, None).ok();
        assert_eq!(
            w.map(|w| (w.machine_procs, w.machine_source)),
            Some((6, MachineSource::LargestJob))
        );
        let w = workload(body, Some(4)).ok();
        assert_eq!(
            w.map(|w| (
                w.machine_procs,
                w.machine_source,
                w.dropped.procs_above_machine
            )),
            Some((4, MachineSource::Given, 1))
        );
        let w = workload(&format!("; MaxNodes: 10\n{body}"), None).ok();
        assert_eq!(
            w.map(|w| (w.machine_procs, w.machine_source)),
            Some((10, MachineSource::HeaderMaxNodes))
        );
        let w = workload(&format!("; MaxNodes: 10\n; MaxProcs: 20\n{body}"), None).ok();
        assert_eq!(
            w.map(|w| (w.machine_procs, w.machine_source)),
            Some((20, MachineSource::HeaderMaxProcs))
        );
    }

    #[test]
    fn no_size_at_all_is_an_error() {
        let err = workload("; nothing\n", None).err();
        assert!(matches!(err, Some(WorkloadError::NoMachineSize { .. })));
        let err = workload("; MaxProcs: 5000000000\n", None).err();
        assert!(matches!(
            err,
            Some(WorkloadError::MachineTooLarge {
                procs: 5_000_000_000,
                line: 1,
                key: "MaxProcs",
                ..
            })
        ));
        let err = workload("1 0 0 10 6 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n", Some(0)).err();
        assert!(matches!(
            err,
            Some(WorkloadError::BadMachineSize { procs: 0, .. })
        ));
    }

    #[test]
    fn reading_straight_into_jobs_equals_reading_records_first() {
        let texts = [
            "; MaxProcs: 4\n\
             3 50 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             9 10 0 1 9 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             4 10 -1 -1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             4 -3 0 2 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n\
             1 20 0 1 0 -1 2048 -1 60 -1 1 1 1 1 1 1 -1 -1\n\
             2 20 0 1 99999999999 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n",
            "1 0 0 10 6 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n2 0 0 10 3 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1",
            "; nothing\n",
        ];
        for text in texts {
            for procs in [None, Some(2), Some(8)] {
                let a = parse(text.as_bytes(), "w.swf", Mode::Strict)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Workload::from_trace(&t, procs).map_err(|e| e.to_string()));
                let b = Workload::parse(text.as_bytes(), "w.swf", procs, Mode::Strict)
                    .map(|l| l.workload)
                    .map_err(|e| e.to_string());
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.jobs, b.jobs);
                        assert_eq!(a.dropped, b.dropped);
                        assert_eq!(
                            (a.machine_procs, a.machine_source),
                            (b.machine_procs, b.machine_source)
                        );
                    }
                    (a, b) => assert_eq!(a.err(), b.err()),
                }
            }
        }
    }

    #[test]
    fn memory_prefers_used_then_requested() {
        let w = workload(
            "; MaxProcs: 4\n\
             1 0 0 1 1 -1 2048 -1 -1 4096 1 1 1 1 1 1 -1 -1\n\
             2 0 0 1 1 -1 -1 -1 -1 4096 1 1 1 1 1 1 -1 -1\n\
             3 0 0 1 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n",
            None,
        )
        .ok();
        let mem: Vec<Option<u64>> = w
            .map(|w| w.jobs.iter().map(|j| j.mem_kb_per_proc).collect())
            .unwrap_or_default();
        assert_eq!(mem, vec![Some(2048), Some(4096), None]);
    }
}
