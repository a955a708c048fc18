//! Line charts as PNG and SVG (plotters). PNG text needs a TrueType font:
//! DejaVu Sans from Debian's `fonts-dejavu-core`, or the file named by
//! `VGRID_PLOT_FONT`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Where the font is looked for when `VGRID_PLOT_FONT` is not set.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The font for the PNG text is missing or unreadable.
    #[error(
        "cannot load the plot font {}: {why} (install Debian's fonts-dejavu-core or set VGRID_PLOT_FONT)",
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
    /// Dashed lines mark the "without" run of a comparison.
    pub dashed: bool,
    /// Colour index (lines of one domain share a colour).
    pub color: usize,
}

/// A chart: title, axis labels, lines.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub lines: Vec<Line>,
}

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads and registers the font once per process.
fn ensure_font() -> Result<(), PlotError> {
    let path = std::env::var_os("VGRID_PLOT_FONT")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
    let result = FONT.get_or_init(|| {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        // plotters keeps fonts for the life of the process; registering
        // happens once, so leaking the bytes is what we want.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "not a usable TrueType font".to_string())
    });
    result.clone().map_err(|why| PlotError::Font { path, why })
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
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
    let (x0, x1, y0, y1) = bounds(chart);
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 26))
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
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .draw()
        .map_err(|e| e.to_string())?;
    for line in &chart.lines {
        let color = COLORS[line.color % COLORS.len()];
        // One-pixel lines: plotters' bitmap backend draws wider near-vertical
        // segments past their ends. The baseline run is a lighter shade.
        let style = if line.dashed {
            color.mix(0.45).stroke_width(1)
        } else {
            color.stroke_width(1)
        };
        let points = line.points.iter().copied();
        ctx.draw_series(LineSeries::new(points, style))
            .map_err(|e| e.to_string())?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(3))
            });
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
        if !Path::new(DEFAULT_FONT).exists() && std::env::var_os("VGRID_PLOT_FONT").is_none() {
            let msg = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("fonts-dejavu-core"), "{msg}");
            return;
        }
        assert!(result.is_ok(), "{:?}", result.err());
        let png = std::fs::read(dir.join("t.png")).unwrap_or_default();
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap_or_default();
        std::fs::remove_dir_all(&dir).ok();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        assert!(svg.contains("<svg") && svg.contains("time (days)"));
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
            x_label: String::new(),
            y_label: String::new(),
            lines: vec![],
        };
        assert_eq!(bounds(&chart), (0.0, 1.0, 0.0, 1.0));
    }
}
