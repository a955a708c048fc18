//! Item 8 of issue 8: traces with numbers no simulation can hold. Each trace
//! is a small file written by the test; each must give a clear error (file,
//! line, field or header key) or, for a job larger than any machine, be
//! dropped and counted, never an allocation of one node per processor or a
//! clock that overflows.

use std::path::PathBuf;

use vgrid_swf::{
    LineProblem, LoadError, MAX_MACHINE_PROCS, MAX_MEMORY_KB, MAX_TIME_S, MachineSource, Mode,
    SwfError, Workload, WorkloadError, read_path,
};

/// A directory of its own for this test process, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vgrid-swf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write trace");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "1 0 -1 10 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n";

fn load(path: &std::path::Path, procs: Option<u32>, mode: Mode) -> Result<Workload, String> {
    Workload::read(path, procs, mode)
        .map(|l| l.workload)
        .map_err(|e| e.to_string())
}

#[test]
fn a_machine_header_beyond_the_bound_is_an_error_naming_its_line() {
    let dir = Dir::new("maxprocs");
    for (key, value) in [("MaxProcs", "4294967295"), ("MaxNodes", "1048577")] {
        let path = dir.write(
            "huge.swf",
            &format!("; Version: 2.2\n; {key}: {value}\n{GOOD}"),
        );
        for mode in [Mode::Strict, Mode::Lenient] {
            let err = Workload::read(&path, None, mode).err();
            match &err {
                Some(LoadError::Workload(WorkloadError::MachineTooLarge {
                    line: 2,
                    key: k,
                    ..
                })) if *k == key => {}
                other => panic!("{key} {mode:?}: {other:?}"),
            }
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                msg.starts_with(&format!(
                    "{}:2: header {key}: {value} processors",
                    path.display()
                )),
                "{msg}"
            );
            assert!(msg.contains(&MAX_MACHINE_PROCS.to_string()), "{msg}");
        }
        // A machine size from the caller wins over the header.
        let w = load(&path, Some(4), Mode::Strict);
        assert_eq!(w.map(|w| w.machine_procs), Ok(4));
    }
    // The bound itself is accepted.
    let path = dir.write(
        "edge.swf",
        &format!("; MaxProcs: {MAX_MACHINE_PROCS}\n{GOOD}"),
    );
    let w = load(&path, None, Mode::Strict);
    assert_eq!(w.map(|w| w.machine_procs), Ok(MAX_MACHINE_PROCS));
    // A caller's size beyond the bound is refused too.
    let err = load(&path, Some(MAX_MACHINE_PROCS + 1), Mode::Strict).err();
    assert!(err.is_some_and(|e| e.contains("cannot be simulated")));
}

#[test]
fn a_job_larger_than_any_machine_is_dropped_not_a_machine_size() {
    let dir = Dir::new("hugejob");
    // No header: the largest job used to set the machine size, 4e9 nodes.
    let text = format!("{GOOD}2 5 -1 10 4000000000 -1 -1 4000000000 -1 -1 1 1 1 1 1 1 -1 -1\n");
    let path = dir.write("job.swf", &text);
    for mode in [Mode::Strict, Mode::Lenient] {
        let w = load(&path, None, mode).expect("loads");
        assert_eq!(
            (w.machine_procs, w.machine_source),
            (1, MachineSource::LargestJob)
        );
        assert_eq!(w.dropped.procs_above_machine, 1);
        assert_eq!(w.jobs.len(), 1);
    }
    // Alone, it leaves no machine size at all: a clear error.
    let path = dir.write(
        "alone.swf",
        "2 5 -1 10 4000000000 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n",
    );
    let err = load(&path, None, Mode::Strict).err();
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("cannot tell the machine size")),
        "{err:?}"
    );
}

#[test]
fn times_and_memory_beyond_the_bounds_name_file_line_and_field() {
    let dir = Dir::new("fields");
    let max = i64::MAX;
    // (field number, the line with that field set to i64::MAX)
    let cases = [
        (
            2,
            format!("3 {max} -1 10 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1"),
        ),
        (
            4,
            format!("3 0 -1 {max} 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1"),
        ),
        (
            7,
            format!("3 0 -1 10 1 -1 {max} -1 -1 -1 1 1 1 1 1 1 -1 -1"),
        ),
        (
            9,
            format!("3 0 -1 10 1 -1 -1 -1 {max} -1 1 1 1 1 1 1 -1 -1"),
        ),
        (
            10,
            format!("3 0 -1 10 1 -1 -1 -1 -1 {max} 1 1 1 1 1 1 -1 -1"),
        ),
        (
            4,
            format!(
                "3 0 -1 {} 1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1",
                MAX_TIME_S + 1
            ),
        ),
        (
            10,
            format!(
                "3 0 -1 10 1 -1 -1 -1 -1 {} 1 1 1 1 1 1 -1 -1",
                MAX_MEMORY_KB + 1
            ),
        ),
    ];
    for (field, line) in cases {
        let path = dir.write("bad.swf", &format!("; MaxProcs: 4\n{GOOD}{line}\n{GOOD}"));
        let err = read_path(&path, Mode::Strict).err();
        match &err {
            Some(SwfError::Line(e)) => {
                assert_eq!((e.location.line, e.location.field), (3, Some(field)), "{e}");
                assert!(matches!(e.problem, LineProblem::TooLarge { .. }), "{e}");
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("{}:3: field {field} (", path.display())),
                    "{msg}"
                );
                assert!(msg.contains("more than a simulation can take"), "{msg}");
            }
            other => panic!("field {field}: {other:?}"),
        }
        // Lenient skips that line, and only that one, with the same error.
        let lenient = Workload::read(&path, None, Mode::Lenient).expect("lenient loads");
        assert_eq!(lenient.skipped.count, 1);
        assert_eq!(
            lenient.skipped.examples.first().map(|e| e.to_string()),
            err.map(|e| e.to_string())
        );
        assert_eq!(lenient.workload.jobs.len(), 2);
    }
    // The bounds themselves are accepted.
    let line = format!(
        "3 {MAX_TIME_S} -1 {MAX_TIME_S} 1 -1 {MAX_MEMORY_KB} -1 {MAX_TIME_S} {MAX_MEMORY_KB} 1 1 1 1 1 1 -1 -1"
    );
    let path = dir.write("edge.swf", &format!("; MaxProcs: 4\n{line}\n"));
    assert!(read_path(&path, Mode::Strict).is_ok());
}
