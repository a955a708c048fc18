//! Why a job waits, as `ps` and `show` print it.

use std::io::Write;

use vgrid_api::types::JobView;

use crate::connect::format_time;

/// `ps`'s START cell: the expected start of a waiting job with a
/// reservation, its short reason without one, `-` for other jobs.
pub fn start_cell(j: &JobView) -> String {
    match &j.wait {
        Some(w) => match w.expected_start_unix_ms {
            // `2026-12-06 19:10:00Z` -> `12-06 19:10Z`.
            Some(t) => {
                let full = format_time(t);
                format!("{}Z", full.get(5..16).unwrap_or(&full))
            }
            None => vgrid_model::names::display_safe(&w.reason).into_owned(),
        },
        None => "-".into(),
    }
}

/// `show`'s "why it waits" block (nothing for a job that does not wait).
pub fn write_why(out: &mut impl Write, j: &JobView) -> std::io::Result<()> {
    let Some(w) = &j.wait else {
        return Ok(());
    };
    let safe = |s: &str| vgrid_model::names::display_safe(s).into_owned();
    writeln!(out, "  why it waits: {}", safe(&w.reason))?;
    match w.expected_start_unix_ms {
        Some(t) => writeln!(
            out,
            "    expected start: {} (the backfilling reservation; holds if walltimes hold)",
            format_time(t)
        )?,
        None => writeln!(out, "    expected start: unknown (it holds no reservation)")?,
    }
    let Some(a) = &w.analysis else {
        return Ok(());
    };
    writeln!(
        out,
        "    nodes: {} taking work, {} drained",
        a.nodes, a.drained
    )?;
    for c in &a.clauses {
        writeln!(
            out,
            "    requirement `{}`: {} of {} nodes fail it",
            safe(&c.clause),
            c.failing,
            a.nodes
        )?;
    }
    if !a.clauses.is_empty() {
        writeln!(
            out,
            "    all requirements: {} of {} nodes meet them",
            a.matching, a.nodes
        )?;
    }
    writeln!(
        out,
        "    cores ({} per VM): {} nodes have fewer in all, {} fewer free now",
        j.cpus, a.too_few_cores, a.busy_cores
    )?;
    writeln!(
        out,
        "    memory ({} MiB per VM): {} nodes have less in all, {} less free now",
        j.memory_mb, a.too_little_memory, a.busy_memory
    )?;
    writeln!(
        out,
        "    VMs: needs {}; the matching nodes hold {} now, {} when empty",
        a.vms, a.vms_free_now, a.vms_when_empty
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgrid_api::types::{ClauseCount, WaitAnalysis, WaitInfo};
    use vgrid_model::JobState;

    fn waiting(wait: Option<WaitInfo>) -> JobView {
        JobView {
            id: 1,
            name: "j".into(),
            owner: "alice".into(),
            state: JobState::Pending,
            reason: "r".into(),
            node: None,
            class: "normal".into(),
            image: "tiny".into(),
            cpus: 2,
            memory_mb: 512,
            vms: 1,
            exit_code: None,
            submitted_unix_ms: 0,
            updated_unix_ms: 0,
            wait,
        }
    }

    #[test]
    fn the_start_column_gives_the_reservation_or_the_reason() {
        let mut w = WaitInfo {
            reason: "priority".into(),
            expected_start_unix_ms: Some(90_000_000),
            analysis: None,
        };
        assert_eq!(start_cell(&waiting(Some(w.clone()))), "01-02 01:00Z");
        w.expected_start_unix_ms = None;
        assert_eq!(start_cell(&waiting(Some(w))), "priority");
        assert_eq!(start_cell(&waiting(None)), "-");
    }

    #[test]
    fn the_block_names_each_clause_and_escapes_it() {
        let j = waiting(Some(WaitInfo {
            reason: "requirements".into(),
            expected_start_unix_ms: None,
            analysis: Some(WaitAnalysis {
                nodes: 3,
                drained: 1,
                clauses: vec![ClauseCount {
                    clause: "name == \"x\u{1b}[2J\"".into(),
                    failing: 3,
                }],
                matching: 0,
                too_few_cores: 1,
                too_little_memory: 0,
                busy_cores: 2,
                busy_memory: 0,
                vms: 1,
                vms_free_now: 0,
                vms_when_empty: 0,
            }),
        }));
        let mut out = Vec::new();
        write_why(&mut out, &j).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("why it waits: requirements"), "{text}");
        assert!(text.contains("expected start: unknown"), "{text}");
        assert!(text.contains("3 of 3 nodes fail it"), "{text}");
        assert!(text.contains("nodes: 3 taking work, 1 drained"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
