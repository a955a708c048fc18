//! `vgrid sim --plots`, through the binary: charts a person can read
//! (issue 11). Titles name what was run, time series are smoothed, the
//! baseline is dashed in its own colour, and no system font is needed.

use std::path::Path;
use std::process::{Command, Output};

fn vgrid(args: &[&str], font: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgrid"));
    cmd.args(args).env_remove("VGRID_PLOT_FONT");
    if let Some(f) = font {
        cmd.env("VGRID_PLOT_FONT", f);
    }
    cmd.output().expect("run vgrid")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The point lists of the SVG polylines drawn in `stroke`.
fn polylines(svg: &str, stroke: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| p.contains(&format!("stroke=\"{stroke}\"")))
        .filter_map(|p| {
            let pts = p.split("points=\"").nth(1)?.split('"').next()?;
            Some(pts.split_whitespace().count())
        })
        .collect()
}

/// A small trace written by the simulator itself, so that the test needs
/// no file from elsewhere; its name is what the charts must show.
fn tiny_trace(dir: &Path) -> String {
    let trace = dir.join("tiny-trace.swf");
    let t = trace.to_str().expect("utf-8 path").to_string();
    ok(&vgrid(
        &[
            "sim",
            "--synthetic",
            "3000",
            "--procs",
            "64",
            "--seed",
            "3",
            "--synthetic-out",
            &t,
        ],
        None,
    ));
    t
}

#[test]
fn charts_name_the_run_smooth_the_series_and_dash_the_baseline_without_a_system_font() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = tiny_trace(dir.path());
    let plots = dir.path().join("plots");
    let p = plots.to_str().expect("utf-8 path");
    let out = vgrid(
        &[
            "sim",
            "--trace",
            &trace,
            "--best-effort",
            "0.25",
            "--compare-kill",
            "--sample-interval-h",
            "0.5",
            "--plots",
            p,
        ],
        None,
    );
    ok(&out);
    for chart in ["demand", "utilization", "completion"] {
        let png = std::fs::read(plots.join(format!("{chart}.png"))).expect("png");
        assert!(png.starts_with(b"\x89PNG"), "{chart}.png is not a PNG");
        let svg = std::fs::read_to_string(plots.join(format!("{chart}.svg"))).expect("svg");
        assert!(
            svg.contains(
                "tiny-trace.swf on 64 processors · EASY · 25% best-effort (seed 1), preemption by checkpoint"
            ),
            "{chart}: the subtitle does not name the run"
        );
        // The baseline (kill) is dashed: many short pieces in its colour.
        let baseline = polylines(&svg, "#404040");
        assert!(
            baseline.len() > 10,
            "{chart}: baseline not dashed: {baseline:?}"
        );
    }
    let svg = std::fs::read_to_string(plots.join("utilization.svg")).expect("svg");
    assert!(
        svg.contains("(mean per "),
        "the title does not give the window"
    );
    // Samples every half hour over days of trace are thousands of points;
    // the smoothed line has about 150.
    let run = polylines(&svg, "#1F77B4");
    let longest = run.iter().copied().max().unwrap_or(0);
    assert!(
        (50..=200).contains(&longest),
        "run line of {longest} points"
    );
}

#[test]
fn a_font_that_cannot_be_read_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plots = dir.path().join("plots");
    let out = vgrid(
        &[
            "sim",
            "--synthetic",
            "200",
            "--procs",
            "16",
            "--plots",
            plots.to_str().expect("utf-8 path"),
        ],
        Some("/nonexistent/font.ttf"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/font.ttf"), "{stderr}");
    assert!(stderr.contains("unset it"), "{stderr}");
}
