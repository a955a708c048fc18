//! Simulating while the trace is read (`run_streamed`) gives exactly what
//! reading it whole then simulating gives: every job record, the samples,
//! the accounting, the dropped jobs and skipped lines, and the same error
//! for a malformed trace. Traces it cannot stream exactly (jobs out of
//! order, a machine size below the jobs, none at all) are read whole.

use std::path::{Path, PathBuf};

use vgrid_core::{Policy, PreemptionMode};
use vgrid_sim::config::{DomainInput, SimConfig};
use vgrid_sim::driver::{SimResult, StreamRunError, StreamedRun, run, run_streamed};
use vgrid_swf::{JobStream, Mode, Opened, Workload};

/// What a run produced, without its wall time.
fn essence(r: &SimResult) -> impl PartialEq + std::fmt::Debug {
    (
        r.domains.clone(),
        r.procs.clone(),
        r.dropped.clone(),
        r.jobs.clone(),
        r.accounting.clone(),
        r.samples.clone(),
        r.sample_interval,
        r.start,
        r.rejected,
    )
}

/// Both paths on one file: `Ok(Some(..))` the same result both ways,
/// `Ok(None)` the trace was read whole, `Err` the same message both ways.
fn both(path: &Path, procs: Option<u32>, mode: Mode, cfg: &SimConfig) -> Result<bool, String> {
    let whole = Workload::read(path, procs, mode).map_err(|e| e.to_string());
    let opened = JobStream::open(path, procs, mode).map_err(|e| e.to_string());
    let stream = match (opened, &whole) {
        (Err(a), Err(b)) => {
            assert_eq!(&a, b, "{}", path.display());
            return Err(a);
        }
        (Ok(Opened::Stream(s)), _) => s,
        (Ok(Opened::Whole(l)), Ok(w)) => {
            assert_eq!(l.workload.jobs, w.workload.jobs);
            return Ok(false);
        }
        (a, b) => panic!("{}: stream {a:?}, whole {b:?}", path.display()),
    };
    let streamed = run_streamed("t", stream, cfg, &mut |_| {});
    let loaded = match (whole, streamed) {
        (Err(a), Err(StreamRunError::Read(b))) => {
            assert_eq!(a, b.to_string(), "{}", path.display());
            return Err(a);
        }
        (Ok(l), Ok(StreamedRun::ReadWhole)) => {
            let _ = l;
            return Ok(false);
        }
        (Ok(l), Ok(StreamedRun::Done { result, read })) => {
            assert_eq!(read.skipped, l.skipped, "{}", path.display());
            assert_eq!(read.header, l.header);
            assert_eq!(read.lines, l.lines);
            assert_eq!(read.dropped, l.workload.dropped);
            (l, result)
        }
        (a, b) => panic!("{}: whole {a:?}, streamed {b:?}", path.display()),
    };
    let (l, streamed) = loaded;
    let domains = [DomainInput {
        name: "t".into(),
        workload: l.workload,
    }];
    let whole = run(&domains, cfg).map_err(|e| e.to_string())?;
    assert_eq!(
        essence(&whole),
        essence(&streamed),
        "{}: streamed run differs",
        path.display()
    );
    Ok(true)
}

fn shared_trace(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traces")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{} not found beside the checkout", path.display());
    eprintln!("skipped: {} not found beside the checkout", path.display());
    None
}

#[test]
fn real_traces_streamed_equal_whole() {
    // CTC-SP2 is large enough that inflating runs on a thread of its own
    // too; KTH-SP2 with best-effort jobs runs on one-core nodes.
    let cases = [
        ("CTC-SP2-1996-3.1-cln.swf.gz", Some(512), Policy::Fcfs, 0.0),
        ("CTC-SP2-1996-3.1-cln.swf.gz", None, Policy::Easy, 0.0),
        ("KTH-SP2-1996-2.1-cln.swf.gz", None, Policy::Easy, 0.3),
    ];
    for (name, procs, policy, best_effort_share) in cases {
        let Some(path) = shared_trace(name) else {
            continue;
        };
        let cfg = SimConfig {
            policy,
            best_effort_share,
            preemption: PreemptionMode::Checkpoint,
            checkpoint_interval_ms: Some(3_600_000),
            ..SimConfig::default()
        };
        assert_eq!(both(&path, procs, Mode::Strict, &cfg), Ok(true), "{name}");
    }
}

const HEAD: &str = "; Version: 2.2\n; MaxProcs: 8\n";
const JOBS: [&str; 6] = [
    "1 0 -1 100 2 -1 1024 2 200 2048 1 1 1 1 1 1 -1 -1",
    "2 10 -1 50 8 -1 -1 8 100 -1 1 2 1 1 1 1 -1 -1",
    "3 20 -1 30 2 -1 -1 -1 60 -1 1 3 1 1 1 1 -1 -1",
    "4 30 -1 -1 1 -1 -1 1 -1 -1 1 1 1 1 1 1 -1 -1",
    "5 30 -1 500 16 -1 4096 16 600 -1 1 2 1 1 1 1 -1 -1",
    "6 45 -1 7200 3 -1 -1 3 7300 -1 1 3 1 1 1 1 -1 -1",
];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write trace");
    path
}

#[test]
fn small_traces_streamed_equal_whole_or_read_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let jobs = JOBS.join("\n") + "\n";
    let cfg = SimConfig::default();
    // In order, with jobs dropped (no run time; larger than the machine).
    let p = write(dir, "ok.swf", &format!("{HEAD}{jobs}"));
    assert_eq!(both(&p, None, Mode::Strict, &cfg), Ok(true));
    assert_eq!(both(&p, Some(4), Mode::Strict, &cfg), Ok(true));
    // A malformed line: the same error, strict; skipped alike, lenient.
    let bad = format!("{HEAD}{}\n1 2 3\n{}\n", JOBS[0], JOBS[1..].join("\n"));
    let p = write(dir, "bad.swf", &bad);
    let err = both(&p, None, Mode::Strict, &cfg).expect_err("strict refuses");
    assert!(err.contains("bad.swf:4"), "{err}");
    assert_eq!(both(&p, None, Mode::Lenient, &cfg), Ok(true));
    // Jobs out of order: a whole read sorts them.
    let mut shuffled = JOBS.to_vec();
    shuffled.swap(1, 4);
    let p = write(
        dir,
        "unordered.swf",
        &format!("{HEAD}{}\n", shuffled.join("\n")),
    );
    assert_eq!(both(&p, None, Mode::Strict, &cfg), Ok(false));
    // A machine size below the jobs (the last one counts): the stream
    // notices at its end when the comment is beyond the part read ahead
    // for the header (64 KiB), and the trace is read whole; within it,
    // the stream has the right size from the start.
    let many: String = (0..2000)
        .map(|i| format!("{i} {i} -1 10 2 -1 -1 2 20 -1 1 1 1 1 1 1 -1 -1\n"))
        .collect();
    let late = format!("{HEAD}{many}; MaxProcs: 16\n");
    let p = write(dir, "late.swf", &late);
    assert!(late.len() > 64 * 1024);
    assert_eq!(both(&p, None, Mode::Strict, &cfg), Ok(false));
    let p = write(
        dir,
        "late-small.swf",
        &format!("; Version: 2.2\n{jobs}; MaxProcs: 16\n"),
    );
    assert_eq!(both(&p, None, Mode::Strict, &cfg), Ok(true));
    let p = write(dir, "nosize.swf", &format!("; Version: 2.2\n{jobs}"));
    assert_eq!(both(&p, None, Mode::Strict, &cfg), Ok(false));
    assert_eq!(both(&p, Some(8), Mode::Strict, &cfg), Ok(true));
    // A machine too large for a simulation: the same error.
    let p = write(dir, "huge.swf", &format!("; MaxProcs: 99999999\n{jobs}"));
    let err = both(&p, None, Mode::Strict, &cfg).expect_err("too large");
    assert!(err.contains("MaxProcs"), "{err}");
    // Gzipped, and a file that is not there.
    let gz = dir.join("ok.swf.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut enc, format!("{HEAD}{jobs}").as_bytes()).expect("gzip");
    enc.finish().expect("gzip");
    assert_eq!(both(&gz, None, Mode::Strict, &cfg), Ok(true));
    let err = both(&dir.join("missing.swf"), None, Mode::Strict, &cfg).expect_err("missing");
    assert!(err.contains("missing.swf"), "{err}");
}
