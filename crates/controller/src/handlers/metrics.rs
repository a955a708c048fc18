//! `/metrics`: the controller's state in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;

use vgrid_api::types::{Principal, Role};
use vgrid_model::JobState;
use vgrid_server::{CommandError, Reply};

use super::Ctx;

pub(super) fn metrics(ctx: &Ctx, p: &Principal) -> Result<Reply, CommandError> {
    if p.role != Role::Admin {
        return Err(CommandError::Forbidden(
            "only an admin reads metrics".into(),
        ));
    }
    let mut by_state: BTreeMap<&str, u64> = JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for j in ctx.book.jobs() {
        *by_state.entry(j.rec.state.as_str()).or_default() += 1;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP vgrid_jobs Jobs by state.\n# TYPE vgrid_jobs gauge"
    );
    for (state, n) in &by_state {
        let _ = writeln!(out, "vgrid_jobs{{state=\"{state}\"}} {n}");
    }
    let nodes = ctx.book.node_views();
    let mut node_states: BTreeMap<&str, u64> = [("up", 0), ("lost", 0), ("drained", 0)]
        .into_iter()
        .collect();
    for n in &nodes {
        *node_states.entry(n.state.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP vgrid_nodes Nodes by state.\n# TYPE vgrid_nodes gauge"
    );
    for (state, n) in &node_states {
        let _ = writeln!(out, "vgrid_nodes{{state=\"{state}\"}} {n}");
    }
    let (cpus, free) = nodes
        .iter()
        .filter(|n| n.state == "up")
        .fold((0u64, 0u64), |(c, f), n| {
            (c + u64::from(n.cpus), f + u64::from(n.free_cpus))
        });
    let s = ctx.stats;
    for (name, help, kind, value) in [
        (
            "vgrid_cpus",
            "CPUs of the nodes that are up.",
            "gauge",
            cpus as f64,
        ),
        (
            "vgrid_free_cpus",
            "Free CPUs of the nodes that are up.",
            "gauge",
            free as f64,
        ),
        (
            "vgrid_commands_total",
            "Commands received.",
            "counter",
            s.commands as f64,
        ),
        (
            "vgrid_commits_total",
            "Database transactions (one per round).",
            "counter",
            s.commits as f64,
        ),
        (
            "vgrid_committed_changes_total",
            "Changes written, all transactions.",
            "counter",
            s.committed_changes as f64,
        ),
        (
            "vgrid_commit_seconds_total",
            "Time spent committing, fsync included.",
            "counter",
            s.commit_seconds,
        ),
        (
            "vgrid_scheduling_passes_total",
            "Scheduling passes.",
            "counter",
            s.passes as f64,
        ),
        (
            "vgrid_scheduling_seconds_total",
            "Time spent in scheduling passes.",
            "counter",
            s.pass_seconds,
        ),
        (
            "vgrid_illegal_transitions_total",
            "Job state changes the lifecycle refused (a bug when above 0).",
            "counter",
            ctx.book.illegal_transitions() as f64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    Ok(Reply::Metrics(out))
}
