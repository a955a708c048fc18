//! Writes jobs back out as SWF (for synthetic workloads that other tools,
//! such as AccaSim, should replay too).

use std::io::{self, Write};

use crate::Job;

/// Writes a `; MaxProcs:` header and one 18-field line per job. Fields the
/// [`Job`] does not carry are written as -1 (status as 1, completed).
pub fn write_swf<W: Write>(mut out: W, jobs: &[Job], machine_procs: u32) -> io::Result<()> {
    writeln!(out, "; Version: 2.2")?;
    writeln!(out, "; Computer: vgrid synthetic workload")?;
    writeln!(out, "; MaxNodes: {machine_procs}")?;
    writeln!(out, "; MaxProcs: {machine_procs}")?;
    for j in jobs {
        let mem = j
            .mem_kb_per_proc
            .and_then(|m| i64::try_from(m).ok())
            .unwrap_or(-1);
        writeln!(
            out,
            "{} {} -1 {} {} -1 {mem} {} {} -1 1 {} -1 -1 -1 -1 -1 -1",
            j.id, j.submit_s, j.run_s, j.procs, j.procs, j.estimate_s, j.user
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, Workload, parse};

    #[test]
    fn written_jobs_read_back_the_same() {
        let jobs = vec![
            Job {
                id: 1,
                submit_s: 0,
                run_s: 100,
                procs: 4,
                estimate_s: 300,
                mem_kb_per_proc: Some(2048),
                user: 3,
                line: 5,
            },
            Job {
                id: 2,
                submit_s: 7,
                run_s: 0,
                procs: 1,
                estimate_s: 60,
                mem_kb_per_proc: None,
                user: 4,
                line: 6,
            },
        ];
        let mut buf = Vec::new();
        assert!(write_swf(&mut buf, &jobs, 8).is_ok());
        let trace = parse(&buf, "w.swf", Mode::Strict);
        let w = trace.ok().and_then(|t| Workload::from_trace(&t, None).ok());
        assert_eq!(w.as_ref().map(|w| w.machine_procs), Some(8));
        assert_eq!(w.map(|w| w.jobs), Some(jobs));
    }
}
