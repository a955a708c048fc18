//! Turning a run into output: the JSON object, the readable summary, the
//! per-job CSV and the plots.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::driver::SimResult;
use crate::metrics::{Accounting, JobRecord, Summary, ms_to_s, summarize};
use crate::plot::{Chart, Line, PlotError, smooth, write_chart};
use crate::series::completion_by_submit;

/// How a run and its baseline (the same workloads with one thing changed)
/// are named in the summary and the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// The run itself, e.g. "with trading".
    pub run: &'static str,
    /// The baseline, e.g. "without trading".
    pub baseline: &'static str,
}

/// Trading against no trading.
pub const TRADING: Labels = Labels {
    run: "with trading",
    baseline: "without trading",
};

/// Checkpoint against kill preemption.
pub const CHECKPOINT_VS_KILL: Labels = Labels {
    run: "checkpoint",
    baseline: "kill",
};

/// The summary of each domain, and of all domains together.
#[derive(Debug, Clone)]
pub struct Summaries {
    /// All jobs of all domains (processors: the sum of the machines).
    pub total: Summary,
    /// One per domain.
    pub domains: Vec<Summary>,
    /// Loans made (nodes lent) over all domains.
    pub loans: u64,
    /// Node failures injected.
    pub failures: u64,
}

/// Computes the summaries of a run.
pub fn summaries(r: &SimResult) -> Summaries {
    let mut domains = Vec::with_capacity(r.domains.len());
    for d in 0..r.domains.len() {
        let jobs: Vec<&JobRecord> = r
            .jobs
            .iter()
            .filter(|j| usize::from(j.domain) == d)
            .collect();
        domains.push(summarize(&jobs, r.dropped[d], r.procs[d], &r.accounting[d]));
    }
    let all: Vec<&JobRecord> = r.jobs.iter().collect();
    let acct = r
        .accounting
        .iter()
        .fold(Accounting::default(), |a, b| Accounting {
            wasted_core_ms: a.wasted_core_ms + b.wasted_core_ms,
            wasted_best_effort_core_ms: a.wasted_best_effort_core_ms + b.wasted_best_effort_core_ms,
            checkpoint_core_ms: a.checkpoint_core_ms + b.checkpoint_core_ms,
            boot_core_ms: a.boot_core_ms + b.boot_core_ms,
            failures: a.failures + b.failures,
            loans: a.loans + b.loans,
        });
    // One domain: the total is that domain (no need to summarise twice).
    let total = if domains.len() == 1 {
        domains[0].clone()
    } else {
        summarize(&all, r.dropped.iter().sum(), r.procs.iter().sum(), &acct)
    };
    Summaries {
        total,
        domains,
        loans: acct.loans,
        failures: acct.failures,
    }
}

fn summary_object(s: &Summary) -> Map<String, Value> {
    match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The `--json` object of a run: the totals at the top level, one object
/// per domain under `domains` (with its name and the loans it received),
/// and the `baseline` run (with its label) when there is one.
pub fn json(
    r: &SimResult,
    s: &Summaries,
    baseline: Option<(&SimResult, &Summaries, Labels)>,
) -> Value {
    let mut top = summary_object(&s.total);
    top.insert("loans".into(), json!(s.loans));
    top.insert("failures".into(), json!(s.failures));
    top.insert("sim_wall_s".into(), json!(r.sim_wall_s));
    top.insert("rejected_events".into(), json!(r.rejected));
    let domains: Vec<Value> = s
        .domains
        .iter()
        .enumerate()
        .map(|(d, ds)| {
            let mut m = summary_object(ds);
            m.insert("name".into(), json!(r.domains[d]));
            m.insert("loans_received".into(), json!(r.accounting[d].loans));
            m.insert(
                "boot_halt_core_s".into(),
                json!(r.accounting[d].boot_core_ms as f64 / 1000.0),
            );
            Value::Object(m)
        })
        .collect();
    top.insert("domains".into(), Value::Array(domains));
    if let Some((br, bs, labels)) = baseline {
        let mut b = json(br, bs, None);
        if let Some(obj) = b.as_object_mut() {
            obj.insert("label".into(), json!(labels.baseline));
        }
        top.insert("label".into(), json!(labels.run));
        top.insert("baseline".into(), b);
    }
    Value::Object(top)
}

/// A readable summary.
pub fn text(r: &SimResult, s: &Summaries, baseline: Option<(&Summaries, Labels)>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let base_label = baseline.map_or("", |(_, l)| l.baseline);
    if let Some((_, labels)) = baseline {
        let _ = writeln!(out, "{} (in brackets: {})", labels.run, labels.baseline);
    }
    let mut section = |name: &str, x: &Summary, base: Option<&Summary>| {
        let _ = writeln!(out, "{name}");
        let cmp = |now: f64, base: Option<f64>| match base {
            Some(b) => format!("{now:.1}  ({base_label}: {b:.1})"),
            None => format!("{now:.1}"),
        };
        let _ = writeln!(
            out,
            "  jobs {} (dropped {}, unfinished {}) on {} processors",
            x.jobs, x.dropped, x.unfinished, x.procs
        );
        let _ = writeln!(
            out,
            "  makespan {:.1} h, utilization {:.1}%",
            x.makespan_s / 3600.0,
            x.utilization * 100.0
        );
        let _ = writeln!(
            out,
            "  wait: mean {} s, p50 {:.1} s, p95 {:.1} s",
            cmp(x.mean_wait_s, base.map(|b| b.mean_wait_s)),
            x.p50_wait_s,
            x.p95_wait_s
        );
        let _ = writeln!(
            out,
            "  bounded slowdown: mean {}, p95 {:.2}",
            cmp(x.mean_bsld, base.map(|b| b.mean_bsld)),
            x.p95_bsld
        );
        let _ = writeln!(
            out,
            "  response: mean {} s",
            cmp(x.mean_response_s, base.map(|b| b.mean_response_s))
        );
        if x.preemptions > 0 || x.wasted_core_s > 0.0 || x.checkpoint_core_s > 0.0 {
            let _ = writeln!(
                out,
                "  preemptions {}, wasted {} core-h, checkpoint/restore {:.1} core-h",
                x.preemptions,
                cmp(
                    x.wasted_core_s / 3600.0,
                    base.map(|b| b.wasted_core_s / 3600.0)
                ),
                x.checkpoint_core_s / 3600.0
            );
        }
        if x.best_effort_jobs > 0 {
            let _ = writeln!(
                out,
                "  normal jobs: mean wait {} s, mean response {} s",
                cmp(x.normal_mean_wait_s, base.map(|b| b.normal_mean_wait_s)),
                cmp(
                    x.normal_mean_response_s,
                    base.map(|b| b.normal_mean_response_s)
                ),
            );
            let _ = writeln!(
                out,
                "  best-effort jobs {}: mean wait {} s, mean response {} s",
                x.best_effort_jobs,
                cmp(
                    x.best_effort_mean_wait_s,
                    base.map(|b| b.best_effort_mean_wait_s)
                ),
                cmp(
                    x.best_effort_mean_response_s,
                    base.map(|b| b.best_effort_mean_response_s)
                ),
            );
            let _ = writeln!(
                out,
                "  best-effort CPU time wasted: {} %",
                cmp(
                    x.best_effort_waste_share * 100.0,
                    base.map(|b| b.best_effort_waste_share * 100.0)
                ),
            );
        }
    };
    if r.domains.len() == 1 {
        let base = baseline.map(|(b, _)| &b.total);
        section(&format!("domain {}", r.domains[0]), &s.total, base);
    } else {
        for (d, ds) in s.domains.iter().enumerate() {
            let base = baseline.and_then(|(b, _)| b.domains.get(d));
            section(&format!("domain {}", r.domains[d]), ds, base);
        }
        section("all domains", &s.total, baseline.map(|(b, _)| &b.total));
        let _ = writeln!(out, "loans made {}", s.loans);
    }
    if s.failures > 0 {
        let _ = writeln!(out, "node failures {}", s.failures);
    }
    let _ = writeln!(out, "simulated in {:.3} s", r.sim_wall_s);
    out
}

/// Seconds with up to millisecond precision, without trailing zeros.
fn secs_text(ms: u64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms_to_s(ms))
            .trim_end_matches('0')
            .to_string()
    }
}

/// Writes `job_id,submit_s,start_s,end_s,procs,wait_s,preemptions,domain`,
/// one line per job in submission order. Unfinished jobs have empty
/// start/end/wait.
pub fn write_jobs_csv<W: Write>(mut out: W, r: &SimResult) -> io::Result<()> {
    writeln!(
        out,
        "job_id,submit_s,start_s,end_s,procs,wait_s,preemptions,domain"
    )?;
    for j in &r.jobs {
        let opt = |v: Option<u64>| v.map(secs_text).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            j.id,
            secs_text(j.submit),
            opt(j.first_start),
            opt(j.end),
            j.procs,
            opt(j.wait()),
            j.preemptions,
            r.domains[usize::from(j.domain)]
        )?;
    }
    out.flush()
}

const DAY_S: f64 = 86_400.0;

/// Writes the charts: `demand`, `utilization`, `completion`, and, when the
/// run has two domains, `borrowed`. With a baseline (the same workloads with
/// one thing changed) the charts show both, the baseline in a lighter shade.
pub fn write_plots(
    dir: &Path,
    r: &SimResult,
    baseline: Option<(&SimResult, Labels)>,
    about: &str,
) -> Result<Vec<String>, PlotError> {
    let labels = baseline.map(|(_, l)| l);
    let baseline = baseline.map(|(b, _)| b);
    let start = r.start;
    let day = |t: u64| ms_to_s(t.saturating_sub(start)) / DAY_S;
    let runs: Vec<(&SimResult, bool)> = std::iter::once((r, false))
        .chain(baseline.map(|b| (b, true)))
        .collect();
    let suffix = |dashed: bool| match labels {
        None => String::new(),
        Some(l) if dashed => format!(" {}", l.baseline),
        Some(l) => format!(" {}", l.run),
    };
    let mut written = Vec::new();

    // Time series are drawn as means over windows of about 1/150 of the
    // run: raw samples (about 2,000) make an unreadable band.
    let last = runs
        .iter()
        .filter_map(|(run, _)| run.samples.last().map(|s| day(s.t)))
        .fold(0.0, f64::max);
    let window = smooth_window(last);
    let mut demand = Vec::new();
    let mut util = Vec::new();
    for &(run, dashed) in &runs {
        for (d, name) in run.domains.iter().enumerate() {
            let procs = f64::from(run.procs[d].max(1));
            demand.push(Line {
                label: format!("{name}{}", suffix(dashed)),
                points: smooth(
                    &run.samples
                        .iter()
                        .map(|s| (day(s.t), s.domains[d].demand as f64))
                        .collect::<Vec<_>>(),
                    window,
                ),
                dashed,
                color: d,
            });
            util.push(Line {
                label: format!("{name}{}", suffix(dashed)),
                points: smooth(
                    &run.samples
                        .iter()
                        .map(|s| (day(s.t), 100.0 * s.domains[d].busy as f64 / procs))
                        .collect::<Vec<_>>(),
                    window,
                ),
                dashed,
                color: d,
            });
        }
    }
    write_chart(
        &Chart {
            title: format!(
                "Queue demand (processors requested by queued jobs, mean per {})",
                window_text(window)
            ),
            subtitle: about.to_string(),
            x_label: "time (days)".into(),
            y_label: "processors".into(),
            lines: demand,
        },
        dir,
        "demand",
    )?;
    written.push("demand".to_string());
    write_chart(
        &Chart {
            title: format!(
                "Busy processors as % of the domain's own machine (mean per {})",
                window_text(window)
            ),
            subtitle: about.to_string(),
            x_label: "time (days)".into(),
            y_label: "% busy".into(),
            lines: util,
        },
        dir,
        "utilization",
    )?;
    written.push("utilization".to_string());

    // Completion time by submit day: bins of one day, or wider for long
    // traces so that the chart stays readable.
    let span = r.jobs.iter().map(|j| j.submit).max().unwrap_or(start) - start;
    let bin = (span / 400).max(86_400_000).div_ceil(86_400_000) * 86_400_000;
    let mut completion = Vec::new();
    for &(run, dashed) in &runs {
        for (d, name) in run.domains.iter().enumerate() {
            let d8 = u8::try_from(d).unwrap_or(u8::MAX);
            completion.push(Line {
                label: format!("{name}{}", suffix(dashed)),
                points: completion_by_submit(&run.jobs, d8, start, bin)
                    .into_iter()
                    .map(|(t, v)| (t / DAY_S - ms_to_s(start) / DAY_S, v / 3600.0))
                    .collect(),
                dashed,
                color: d,
            });
        }
    }
    write_chart(
        &Chart {
            title: format!(
                "Average time from submission to completion (jobs submitted per {} day bin)",
                bin / 86_400_000
            ),
            subtitle: about.to_string(),
            x_label: "submit time (days)".into(),
            y_label: "hours".into(),
            lines: completion,
        },
        dir,
        "completion",
    )?;
    written.push("completion".to_string());

    if r.domains.len() > 1 {
        // As in VioCluster's figure 4: positive when the second domain
        // borrows from the first, negative the other way round.
        let points: Vec<(f64, f64)> = r
            .samples
            .iter()
            .map(|s| {
                let b1 = s.domains.get(1).map_or(0, |g| g.borrowed) as f64;
                let b0 = s.domains[0].borrowed as f64;
                (day(s.t), b1 - b0)
            })
            .collect();
        write_chart(
            &Chart {
                title: format!(
                    "Borrowed nodes (+: {} borrows from {}, -: the other way)",
                    r.domains.get(1).map_or("", String::as_str),
                    r.domains[0]
                ),
                subtitle: about.to_string(),
                x_label: "time (days)".into(),
                y_label: "nodes".into(),
                lines: vec![Line {
                    label: "borrowed nodes".into(),
                    points,
                    dashed: false,
                    color: 2,
                }],
            },
            dir,
            "borrowed",
        )?;
        written.push("borrowed".to_string());
    }
    Ok(written)
}

/// The smoothing window, in days, for a run of `days`: about 150 windows,
/// rounded to a whole number of hours (at least one).
fn smooth_window(days: f64) -> f64 {
    let hours = (days * 24.0 / 150.0).round().max(1.0);
    hours / 24.0
}

/// "6 h", "1 day", "2.5 days".
fn window_text(days: f64) -> String {
    let hours = (days * 24.0).round();
    if hours < 24.0 {
        format!("{hours:.0} h")
    } else if hours == 24.0 {
        "day".to_string()
    } else if hours % 24.0 == 0.0 {
        format!("{:.0} days", hours / 24.0)
    } else {
        format!("{hours:.0} h")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_windows_are_whole_hours_about_a_150th_of_the_run() {
        assert_eq!(smooth_window(0.5), 1.0 / 24.0);
        assert_eq!(smooth_window(335.0), 54.0 / 24.0);
        assert_eq!(window_text(smooth_window(335.0)), "54 h");
        assert_eq!(window_text(1.0), "day");
        assert_eq!(window_text(2.0), "2 days");
        assert_eq!(window_text(0.25), "6 h");
    }

    #[test]
    fn seconds_print_without_trailing_zeros() {
        assert_eq!(secs_text(12_000), "12");
        assert_eq!(secs_text(12_500), "12.5");
        assert_eq!(secs_text(12_345), "12.345");
        assert_eq!(secs_text(0), "0");
    }
}
