//! Line charts as PNG and SVG (plotters). The PNG text is drawn with DejaVu
//! Sans, embedded in the binary (the `dejavu` crate), so charts need no
//! system font; `VGRID_PLOT_FONT` names another TrueType file to use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The font named by `VGRID_PLOT_FONT` is missing or unusable.
    #[error(
        "cannot load the plot font {} (from VGRID_PLOT_FONT): {why}; unset it to use the embedded DejaVu Sans",
        path.display()
    )]
    Font {
        /// The font file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The output directory could not be created.
    #[error("cannot create the plot directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Drawing or writing the image failed.
    #[error("cannot draw {}: {why}", path.display())]
    Draw {
        /// The image file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// One named line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
    /// The baseline ("without") run of a comparison: dashed, in the
    /// baseline palette, drawn under the run's lines.
    pub dashed: bool,
    /// Colour index (lines of one domain share a colour).
    pub color: usize,
}

/// A chart: title, axis labels, lines.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot: what is shown.
    pub title: String,
    /// Second line of the title: what was run (trace, machine, options).
    pub subtitle: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub lines: Vec<Line>,
}

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the font once per process: the embedded DejaVu Sans, or the
/// file `VGRID_PLOT_FONT` names.
fn ensure_font() -> Result<(), PlotError> {
    let path = std::env::var_os("VGRID_PLOT_FONT")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let result = FONT.get_or_init(|| {
        let bytes: &'static [u8] = match &path {
            None => dejavu::sans::regular(),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                // plotters keeps fonts for the life of the process;
                // registering happens once, so leaking is what we want.
                Box::leak(bytes.into_boxed_slice())
            }
        };
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "not a usable TrueType font".to_string())
    });
    result.clone().map_err(|why| PlotError::Font {
        path: path.unwrap_or_default(),
        why,
    })
}

/// The subtitle's colour.
const GREY: RGBColor = RGBColor(80, 80, 80);

/// The run's lines: one hue per domain.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The baseline's lines: dark, desaturated hues that no run line uses, so
/// that the comparison reads even in greyscale (with the dash).
const BASELINE_COLORS: [RGBColor; 3] = [
    RGBColor(64, 64, 64),
    RGBColor(120, 60, 140),
    RGBColor(110, 110, 30),
];

/// Writes `dir/stem.png` and `dir/stem.svg`.
pub fn write_chart(chart: &Chart, dir: &Path, stem: &str) -> Result<(), PlotError> {
    ensure_font()?;
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let size = (1200, 600);
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        render(&root, chart).map_err(|why| PlotError::Draw {
            path: png.clone(),
            why,
        })?;
        root.present().map_err(|e| PlotError::Draw {
            path: png.clone(),
            why: e.to_string(),
        })?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        render(&root, chart).map_err(|why| PlotError::Draw {
            path: svg.clone(),
            why,
        })?;
        root.present().map_err(|e| PlotError::Draw {
            path: svg.clone(),
            why: e.to_string(),
        })?;
    }
    Ok(())
}

fn bounds(chart: &Chart) -> (f64, f64, f64, f64) {
    let pts = chart.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    let y0 = y0.min(0.0);
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    (x0, x1, y0, y1 + pad)
}

fn render<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (head, body) = root.split_vertically(if chart.subtitle.is_empty() { 45 } else { 72 });
    let centre = |y: i32| (head.dim_in_pixel().0 as i32 / 2, y);
    let style = |size: u32, color: &'static RGBColor| {
        TextStyle::from(("sans-serif", size).into_font())
            .color(color)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ))
    };
    head.draw_text(&chart.title, &style(24, &BLACK), centre(10))
        .map_err(|e| e.to_string())?;
    if !chart.subtitle.is_empty() {
        head.draw_text(&chart.subtitle, &style(16, &GREY), centre(42))
            .map_err(|e| e.to_string())?;
    }
    let (x0, x1, y0, y1) = bounds(chart);
    let mut ctx = ChartBuilder::on(&body)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    // Baselines first, so the run's lines are on top.
    let order = chart
        .lines
        .iter()
        .filter(|l| l.dashed)
        .chain(chart.lines.iter().filter(|l| !l.dashed));
    for line in order {
        let points = line.points.iter().copied();
        if line.dashed {
            let color = BASELINE_COLORS[line.color % BASELINE_COLORS.len()];
            let style = color.stroke_width(2);
            ctx.draw_series(DashedLineSeries::new(points, 8, 6, style))
                .map_err(|e| e.to_string())?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    let dash = |a: i32| PathElement::new(vec![(x + a, y), (x + a + 6, y)], style);
                    EmptyElement::at((0, 0)) + dash(0) + dash(12)
                });
        } else {
            let color = COLORS[line.color % COLORS.len()];
            let style = color.stroke_width(2);
            ctx.draw_series(LineSeries::new(points, style))
                .map_err(|e| e.to_string())?
                .label(line.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Means of `points` (in x order) over consecutive windows of `width` in
/// x, each at its window's middle: a trace's thousands of raw samples
/// become a line a reader can follow. Empty windows are skipped.
pub fn smooth(points: &[(f64, f64)], width: f64) -> Vec<(f64, f64)> {
    let Some(&(first, _)) = points.first() else {
        return Vec::new();
    };
    if width.is_nan() || width <= 0.0 {
        return points.to_vec();
    }
    let mut out = Vec::new();
    let (mut bin, mut sum, mut n) = (0u64, 0.0, 0u32);
    for &(x, y) in points {
        let b = ((x - first) / width).max(0.0) as u64;
        if b != bin && n > 0 {
            out.push((first + (bin as f64 + 0.5) * width, sum / f64::from(n)));
            (sum, n) = (0.0, 0);
        }
        bin = b;
        sum += y;
        n += 1;
    }
    if n > 0 {
        out.push((first + (bin as f64 + 0.5) * width, sum / f64::from(n)));
    }
    out
}

/// Tick labels without useless decimals: 100, 2.5, 0.25.
fn format_tick(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg_or_says_which_font_is_missing() {
        let dir = std::env::temp_dir().join(format!("vgrid-plot-test-{}", std::process::id()));
        let chart = Chart {
            title: "test".into(),
            subtitle: "trace T.swf, 4 processors".into(),
            x_label: "time (days)".into(),
            y_label: "nodes".into(),
            lines: vec![
                Line {
                    label: "a".into(),
                    points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
                    dashed: false,
                    color: 0,
                },
                Line {
                    label: "b".into(),
                    points: vec![(0.0, 0.0), (2.0, 1.0)],
                    dashed: true,
                    color: 1,
                },
            ],
        };
        let result = write_chart(&chart, &dir, "t");
        assert!(result.is_ok(), "{:?}", result.err());
        let png = std::fs::read(dir.join("t.png")).unwrap_or_default();
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap_or_default();
        std::fs::remove_dir_all(&dir).ok();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        assert!(svg.contains("<svg") && svg.contains("time (days)"));
        assert!(svg.contains("trace T.swf, 4 processors"), "no subtitle");
        // The baseline is dashed: its path is cut into many segments.
        assert!(svg.matches("<polyline").count() > 4, "{svg}");
    }

    #[test]
    fn smoothing_averages_each_window_at_its_middle() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), f64::from(i % 2) * 10.0))
            .collect();
        let s = smooth(&pts, 2.0);
        assert_eq!(s.len(), 5);
        for (k, &(x, y)) in s.iter().enumerate() {
            assert_eq!(x, 2.0 * k as f64 + 1.0);
            assert_eq!(y, 5.0);
        }
        assert!(smooth(&[], 1.0).is_empty());
        // A gap leaves no window behind.
        let s = smooth(&[(0.0, 1.0), (10.0, 3.0)], 1.0);
        assert_eq!(s, vec![(0.5, 1.0), (10.5, 3.0)]);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(100.0), "100");
        assert_eq!(format_tick(-20.0), "-20");
        assert_eq!(format_tick(2.5), "2.5");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(12.345), "12.3");
    }

    #[test]
    fn empty_chart_has_sane_bounds() {
        let chart = Chart {
            title: String::new(),
            subtitle: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            lines: vec![],
        };
        assert_eq!(bounds(&chart), (0.0, 1.0, 0.0, 1.0));
    }
}
