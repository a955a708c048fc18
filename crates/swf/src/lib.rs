//! Reader for the Standard Workload Format (SWF) of the Parallel Workloads
//! Archive, plain or gzipped.
//!
//! # Layout
//! - [`read_path`] / [`parse`]: bytes (gzip detected by its magic bytes, not
//!   by the file name) to a [`Trace`]: the header ([`Header`]) and one
//!   [`Record`] per job line with all 18 fields, in file order.
//! - [`Workload::from_trace`]: the simulation conventions (which field gives
//!   the processors, the estimate, which jobs are dropped, arrival order).
//! - [`JobStream`]: the same jobs, handed over in batches by a thread while
//!   the file is still being read (`vgrid sim` simulates as it reads).
//!
//! A malformed line is an error naming the file, the line, the field and why
//! ([`LineError`]); in [`Mode::Lenient`] it is skipped and counted instead.
//! No input makes the reader panic (a fuzz target checks this).
//!
//! # Conventions (see also `docs/sim.md`)
//! - processors = field 8 (requested) if > 0, else field 5 (allocated);
//! - estimate = field 9 (requested time) if > 0, else the run time;
//! - jobs with run time < 0, submit time < 0, processors < 1 or processors
//!   greater than the machine are dropped and counted;
//! - arrivals are ordered by submit time, then job number, then line;
//! - fractional values are truncated toward zero (only field 6, average CPU
//!   time, keeps its fraction);
//! - the machine size is the caller's, else the header's `MaxProcs`, else
//!   `MaxNodes`, else the largest job's processors (with a warning).
//!
//! # Limits
//! What a simulation can hold is bounded, so that no trace can make it
//! allocate without end or overflow its clock:
//! - a submit, run or requested time (fields 2, 4, 9) above
//!   [`MAX_TIME_S`] and a memory size (fields 7, 10) above
//!   [`MAX_MEMORY_KB`] make the line malformed;
//! - a machine has at most [`MAX_MACHINE_PROCS`] processors: a larger
//!   `MaxProcs`/`MaxNodes` header is an error naming its line (the caller
//!   can give a smaller size), and a job asking for more is dropped as
//!   larger than the machine.

mod error;
mod fast;
mod header;
mod parse;
mod stream;
mod workload;
mod write;

use std::path::Path;

pub use error::{FIELD_NAMES, LineError, LineProblem, Location, SwfError};
pub use header::Header;
pub use parse::{Mode, Parsed, RecordSink, SKIPPED_EXAMPLES};
pub use stream::{JobStream, Opened, StreamEnd};
pub use workload::{
    Dropped, Job, JobSink, LoadError, Loaded, MachineSource, Workload, WorkloadError,
};
pub use write::write_swf;

/// The largest submit, run or requested time (fields 2, 4 and 9) a trace may
/// hold: 10^12 s, about 31,700 years. Real traces span a few years; in
/// milliseconds this leaves the simulator's clock room for millions of such
/// values end to end.
pub const MAX_TIME_S: i64 = 1_000_000_000_000;

/// The largest memory per processor (fields 7 and 10) a trace may hold:
/// 2^40 KB (1 PiB).
pub const MAX_MEMORY_KB: i64 = 1 << 40;

/// The most processors a simulated machine may have, all domains of a run
/// together: 2^20 (1,048,576). The simulator holds one node per processor,
/// about 330 bytes each (350 MB at this bound), and allocates them all
/// before the first event.
pub const MAX_MACHINE_PROCS: u32 = 1 << 20;

/// One job line with all 18 SWF fields. `-1` means "unknown", as in the
/// format. Times are in seconds, memory in kilobytes per processor.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Field 1: job number.
    pub job_id: i64,
    /// Field 2: submit time, seconds from the start of the log.
    pub submit_s: i64,
    /// Field 3: wait time in the original system.
    pub wait_s: i64,
    /// Field 4: run time.
    pub run_s: i64,
    /// Field 5: allocated processors.
    pub alloc_procs: i64,
    /// Field 6: average CPU time used per processor (may be fractional).
    pub avg_cpu_s: f64,
    /// Field 7: used memory, kilobytes per processor.
    pub used_mem_kb: i64,
    /// Field 8: requested processors.
    pub req_procs: i64,
    /// Field 9: requested time (the user's estimate).
    pub req_time_s: i64,
    /// Field 10: requested memory, kilobytes per processor.
    pub req_mem_kb: i64,
    /// Field 11: status (1 completed, 0 failed, 5 cancelled, ...).
    pub status: i64,
    /// Field 12: user id.
    pub user: i64,
    /// Field 13: group id.
    pub group: i64,
    /// Field 14: executable (application) number.
    pub executable: i64,
    /// Field 15: queue number.
    pub queue: i64,
    /// Field 16: partition number.
    pub partition: i64,
    /// Field 17: preceding job number.
    pub preceding_job: i64,
    /// Field 18: think time from the preceding job.
    pub think_time_s: i64,
    /// The 1-based line of the file this record came from.
    pub line: u64,
}

/// Lines skipped in lenient mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// How many lines were skipped.
    pub count: u64,
    /// The errors of the first [`SKIPPED_EXAMPLES`] skipped lines.
    pub examples: Vec<LineError>,
}

/// A parsed trace: header, job records in file order, skipped lines.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The file name used in messages.
    pub file: String,
    /// What the header comments say.
    pub header: Header,
    /// The job lines, in file order.
    pub records: Vec<Record>,
    /// Lines skipped (lenient mode only; always empty in strict mode).
    pub skipped: Skipped,
    /// How many lines the file has.
    pub lines: u64,
}

/// Whether the bytes start with the gzip magic number.
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// Parses a trace held in memory, plain or gzipped (detected by the magic
/// bytes). `file` names the source in error messages.
pub fn parse(data: &[u8], file: &str, mode: Mode) -> Result<Trace, SwfError> {
    // Real traces average 80-95 bytes per job line (uncompressed).
    let expected = if is_gzip(data) {
        size_hint(data)
    } else {
        data.len()
    };
    let records = Vec::with_capacity(expected / 80 + 1);
    Ok(parse_into(data, file, mode, records)?.into_trace(file))
}

/// Like [`parse`], but hands every job line to `sink` instead of keeping
/// all records.
pub fn parse_into<S: RecordSink>(
    data: &[u8],
    file: &str,
    mode: Mode,
    sink: S,
) -> Result<Parsed<S>, SwfError> {
    if !is_gzip(data) {
        let mut p = parse::Parser::new(file, mode, sink);
        p.feed(data)?;
        return Ok(p.finish());
    }
    if data.len() < PIPELINE_MIN {
        let plain = gunzip(data, file)?;
        let mut p = parse::Parser::new(file, mode, sink);
        p.feed(&plain)?;
        return Ok(p.finish());
    }
    parse_gzip_pipelined(data, file, mode, sink)
}

/// Reads and parses a trace file, plain or gzipped.
pub fn read_path(path: &Path, mode: Mode) -> Result<Trace, SwfError> {
    let data = read_file(path)?;
    parse(&data, &path.display().to_string(), mode)
}

/// The bytes of a file, with an error naming it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, SwfError> {
    std::fs::read(path).map_err(|source| SwfError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Compressed inputs from this size on are inflated on a second thread
/// while the first parses (below it, a thread costs more than it saves).
const PIPELINE_MIN: usize = 256 * 1024;

/// Size of the pieces handed from the inflating thread to the parser.
const CHUNK: usize = 1 << 20;

/// The uncompressed size the gzip trailer announces (modulo 2^32), bounded
/// so that a lying trailer cannot make us reserve much more than deflate
/// can expand to (about 1032:1).
pub(crate) fn size_hint(data: &[u8]) -> usize {
    let announced = data
        .len()
        .checked_sub(4)
        .and_then(|at| data.get(at..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    announced
        .min(data.len().saturating_mul(1032))
        .min(u32::MAX as usize)
}

/// Decompresses gzip data (all members, as `zcat` does).
fn gunzip(data: &[u8], file: &str) -> Result<Vec<u8>, SwfError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(size_hint(data));
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|source| SwfError::Gzip {
            file: file.to_string(),
            source,
        })?;
    Ok(out)
}

/// Fills `buf` from `r` as far as possible; returns the bytes read (fewer
/// than `buf.len()` only at the end of the data).
fn fill(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Inflates on a second thread and parses whole lines on this one. Gives
/// the same result as inflating everything first: a corrupt gzip stream is
/// reported as such even when a malformed line comes before the
/// corruption.
fn parse_gzip_pipelined<S: RecordSink>(
    data: &[u8],
    file: &str,
    mode: Mode,
    sink: S,
) -> Result<Parsed<S>, SwfError> {
    use std::sync::mpsc;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(4);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let inflater = scope.spawn(move || -> std::io::Result<()> {
            let mut dec = flate2::read::MultiGzDecoder::new(data);
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                let n = fill(&mut dec, &mut buf)?;
                let eof = n < buf.len();
                if n > 0 && full_tx.send((buf, n)).is_err() {
                    return Ok(());
                }
                if eof {
                    return Ok(());
                }
            }
        });
        let mut parser = parse::Parser::new(file, mode, sink);
        let mut carry: Vec<u8> = Vec::new();
        let mut line_error = None;
        while let Ok((buf, n)) = full_rx.recv() {
            let chunk = &buf[..n];
            if line_error.is_none() {
                let res = match chunk.iter().rposition(|&b| b == b'\n') {
                    None => {
                        carry.extend_from_slice(chunk);
                        Ok(())
                    }
                    Some(last) => {
                        let res = if carry.is_empty() {
                            parser.feed(&chunk[..=last])
                        } else {
                            // Finish the line cut at the end of the last piece.
                            let first = chunk.iter().position(|&b| b == b'\n').unwrap_or(last);
                            carry.extend_from_slice(&chunk[..=first]);
                            let r = parser.feed(&carry);
                            carry.clear();
                            r.and_then(|()| parser.feed(&chunk[first + 1..=last]))
                        };
                        carry.extend_from_slice(&chunk[last + 1..]);
                        res
                    }
                };
                // After a line error, keep draining: a corrupt stream
                // further on is reported in preference, as when inflating
                // first.
                if let Err(e) = res {
                    line_error = Some(e);
                }
            }
            // The inflater may have finished already; then the buffer is
            // simply dropped.
            let _ = empty_tx.send(buf);
        }
        let inflated = inflater
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the inflating thread panicked")));
        if let Err(source) = inflated {
            return Err(SwfError::Gzip {
                file: file.to_string(),
                source,
            });
        }
        if let Some(e) = line_error {
            return Err(e.into());
        }
        parser.feed(&carry)?;
        Ok(parser.finish())
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const SMALL: &str = "; MaxProcs: 8\n\
        1 0 0 10 2 -1 -1 2 20 -1 1 1 1 1 1 1 -1 -1\n\
        2 5 0 10 4 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n";

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).ok();
        e.finish().unwrap_or_default()
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes_not_name() {
        let plain = parse(SMALL.as_bytes(), "a.swf.gz", Mode::Strict).ok();
        let zipped = parse(&gz(SMALL.as_bytes()), "a.swf", Mode::Strict).ok();
        assert_eq!(plain.as_ref().map(|t| t.records.len()), Some(2));
        assert_eq!(
            plain.map(|t| t.records),
            zipped.as_ref().map(|t| t.records.clone())
        );
        assert_eq!(zipped.and_then(|t| t.header.max_procs), Some(8));
    }

    /// A trace big enough for the pipelined path, with lines cut across
    /// pieces, comments, CRLF and a last line without newline.
    fn big_trace(lines: usize) -> String {
        let mut text = String::from("; MaxProcs: 64\r\n");
        for i in 0..lines {
            text.push_str(&format!(
                "{i:>8} {:>9} -1 {:>7} {:>4} {}.25 -1 -1 {:>7} -1 1 {} -1 -1 -1 -1 -1 -1\r\n",
                i * 7,
                i % 5000,
                1 + i % 64,
                i % 99,
                i % 9000 + 1,
                i % 17
            ));
            if i % 1000 == 0 {
                text.push_str(";  a comment\n\n");
            }
        }
        text.push_str("999999 1 -1 1 1 -1 -1 -1 -1 -1 1 1 -1 -1 -1 -1 -1 -1");
        text
    }

    #[test]
    fn pipelined_gzip_gives_the_same_trace() {
        let text = big_trace(60_000);
        let zipped = gz(text.as_bytes());
        assert!(zipped.len() >= PIPELINE_MIN, "test input too small");
        assert!(text.len() > 3 * CHUNK, "test input too small");
        let plain = parse(text.as_bytes(), "b.swf", Mode::Strict);
        let piped = parse(&zipped, "b.swf", Mode::Strict);
        assert!(plain.is_ok() && piped.is_ok());
        let (Ok(plain), Ok(piped)) = (plain, piped) else {
            return;
        };
        assert_eq!(plain.records.len(), 60_001);
        assert_eq!(plain.records, piped.records);
        assert_eq!(plain.lines, piped.lines);
        assert_eq!(plain.header, piped.header);
    }

    #[test]
    fn pipelined_errors_match_the_plain_path() {
        let mut text = big_trace(60_000);
        // A malformed line far into the file (after several pieces).
        let at = text.len() * 3 / 4;
        let nl = at + text[at..].find('\n').unwrap_or(0);
        text.insert_str(nl + 1, "1 2 3 oops\n");
        let zipped = gz(text.as_bytes());
        let plain = parse(text.as_bytes(), "e.swf", Mode::Strict)
            .err()
            .map(|e| e.to_string());
        let piped = parse(&zipped, "e.swf", Mode::Strict)
            .err()
            .map(|e| e.to_string());
        assert!(
            plain
                .as_deref()
                .is_some_and(|e| e.contains("field 4 (run time)")),
            "{plain:?}"
        );
        assert_eq!(plain, piped);
        // Lenient: the same single skipped line.
        let plain = parse(text.as_bytes(), "e.swf", Mode::Lenient).ok();
        let piped = parse(&zipped, "e.swf", Mode::Lenient).ok();
        assert_eq!(plain.as_ref().map(|t| t.skipped.count), Some(1));
        assert_eq!(plain.map(|t| t.skipped), piped.map(|t| t.skipped));
        // A corrupt stream after the malformed line is reported as corrupt.
        let mut broken = zipped.clone();
        let len = broken.len();
        broken.truncate(len - 2000);
        let err = parse(&broken, "e.swf", Mode::Strict)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("e.swf: gzip data is corrupt or truncated")
        );
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let mut data = gz(b"; MaxProcs: 8\n1 0 0 10 2 -1 -1 2 20 -1 1 1 1 1 1 1 -1 -1\n");
        data.extend(gz(b"2 5 0 10 4 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n"));
        let t = parse(&data, "m.swf.gz", Mode::Strict).ok();
        assert_eq!(t.map(|t| t.records.len()), Some(2));
    }

    #[test]
    fn truncated_gzip_is_a_clear_error() {
        let data = gz(SMALL.as_bytes());
        let cut = &data[..data.len() / 2];
        let err = parse(cut, "cut.swf.gz", Mode::Lenient).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("cut.swf.gz: gzip data is corrupt or truncated".to_string())
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_path(Path::new("/nonexistent/x.swf"), Mode::Strict).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("cannot read /nonexistent/x.swf".to_string())
        );
    }

    #[test]
    fn reads_a_file_from_disk() {
        let dir = std::env::temp_dir().join(format!("vgrid-swf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("t.swf.gz");
        std::fs::write(&path, gz(SMALL.as_bytes())).ok();
        let t = read_path(&path, Mode::Strict).ok();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(t.as_ref().map(|t| t.records.len()), Some(2));
        assert_eq!(t.map(|t| t.lines), Some(3));
    }

    /// The project's `shared/traces` folder, beside the checkout.
    fn shared_traces() -> Option<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
        dir.is_dir().then_some(dir)
    }

    #[test]
    fn real_traces_have_the_job_counts_of_their_sources() {
        let Some(dir) = shared_traces() else {
            eprintln!("skipped: shared/traces not found beside the checkout");
            return;
        };
        // Job line counts and header sizes as listed in shared/traces/SOURCES.md.
        let expected: [(&str, usize, Option<u64>); 9] = [
            ("CTC-SP2-1996-3.1-cln.swf.gz", 77222, Some(338)),
            ("OSC-Clust-2000-3.1-cln.swf.gz", 36097, Some(178)),
            ("SDSC-SP2-1998-4.2-cln.swf.gz", 59715, Some(128)),
            ("KTH-SP2-1996-2.1-cln.swf.gz", 28476, Some(100)),
            ("NASA-iPSC-1993-3.1-cln.swf.gz", 18239, Some(128)),
            ("LANL-CM5-1994-4.1-cln.swf.gz", 122060, Some(1024)),
            ("HPC2N-2002-2.2-cln.swf.gz", 202871, Some(240)),
            ("LPC-EGEE-2004-1.2-cln.swf.gz", 234889, Some(140)),
            ("lublin_256.swf.gz", 10000, Some(256)),
        ];
        for (name, jobs, procs) in expected {
            let path = dir.join(name);
            let trace = read_path(&path, Mode::Strict);
            assert!(trace.is_ok(), "{name}: {:?}", trace.err());
            let Ok(trace) = trace else { return };
            assert_eq!(trace.records.len(), jobs, "{name}");
            assert_eq!(trace.header.machine_procs(), procs, "{name}");
            assert_eq!(trace.skipped.count, 0, "{name}");
        }
    }

    #[test]
    fn all_18_fields_are_kept() {
        let t = parse(
            b"11 22 33 44 55 66.5 77 88 99 1010 1 12 13 14 15 16 17 18\n",
            "f.swf",
            Mode::Strict,
        );
        let r = t.ok().and_then(|t| t.records.into_iter().next());
        let r = r.as_ref();
        let got = r.map(|r| {
            [
                r.job_id,
                r.submit_s,
                r.wait_s,
                r.run_s,
                r.alloc_procs,
                r.used_mem_kb,
                r.req_procs,
                r.req_time_s,
                r.req_mem_kb,
                r.status,
                r.user,
                r.group,
                r.executable,
                r.queue,
                r.partition,
                r.preceding_job,
                r.think_time_s,
            ]
        });
        assert_eq!(
            got,
            Some([
                11, 22, 33, 44, 55, 77, 88, 99, 1010, 1, 12, 13, 14, 15, 16, 17, 18
            ])
        );
        assert_eq!(r.map(|r| r.avg_cpu_s), Some(66.5));
    }
}
