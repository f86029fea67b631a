//! Line charts as PNG, the one plotting path of the crate: `restore`'s convergence plots and
//! the sweep figures (plotters' bitmap backend, encoded with `image`, written atomically).
//!
//! Text (title, axis names, tick values, legend) is drawn with DejaVu Sans embedded in the
//! binary (the `dejavu` crate; Bitstream Vera licence, free to embed), so it renders on a
//! machine without system fonts. The legend has a strip of its own under the plot, so it never
//! covers the data. A logarithmic vertical axis draws `log₁₀ y` with ticks labelled `1e-3`;
//! iteration axes get integer ticks only.
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{PnpError, Result};

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, sorted by `x`.
    pub points: Vec<(f64, f64)>,
}

/// Points marked on a chart (e.g. the iterations where backtracking shrank `τ`), with their
/// legend text.
#[derive(Debug, Clone, PartialEq)]
pub struct Marks {
    /// Legend text.
    pub label: String,
    /// `(x, y)` of each mark.
    pub points: Vec<(f64, f64)>,
}

/// One panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// Horizontal axis.
    pub x_label: String,
    /// Vertical axis.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// `x` of the points left out because they diverged (drawn as black crosses on the top
    /// edge; repeated `x` values appear once per point).
    pub diverged: Vec<f64>,
    /// Marked points (red triangles).
    pub marks: Option<Marks>,
    /// A logarithmic vertical axis (non-positive values are left out).
    pub log_y: bool,
    /// Integer ticks on the horizontal axis (iterations).
    pub integer_x: bool,
}

impl Chart {
    /// A chart of `series` with linear axes.
    pub fn new(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series,
            ..Default::default()
        }
    }

    /// The series as drawn: `log₁₀ y` on a logarithmic axis (non-positive `y` left out).
    fn drawn_series(&self) -> Vec<Series> {
        self.series
            .iter()
            .map(|s| Series {
                label: s.label.clone(),
                points: self.drawn_points(&s.points),
            })
            .collect()
    }

    fn drawn_points(&self, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_y || p.1 > 0.0))
            .map(|&(x, y)| (x, if self.log_y { y.log10() } else { y }))
            .collect()
    }
}

/// Registers the embedded font with plotters (once).
fn register_font() -> std::result::Result<(), String> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans font cannot be read".to_string())
    })
    .clone()
}

/// Draws `charts` side by side into one PNG at `path`.
pub fn draw(path: &Path, charts: &[Chart]) -> Result<()> {
    let (w, h) = (720 * charts.len().max(1) as u32, 540u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    render(&mut buf, (w, h), charts).map_err(|reason| PnpError::Plot {
        path: path.to_path_buf(),
        reason,
    })?;
    crate::monitor::write_rgb_png(path, (w, h), buf).map_err(|reason| PnpError::file(path, reason))
}

const LEGEND_ROW: i32 = 20;

fn render(buf: &mut [u8], size: (u32, u32), charts: &[Chart]) -> std::result::Result<(), String> {
    register_font()?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, charts.len().max(1)));
    for (chart, area) in charts.iter().zip(&panels) {
        let series = chart.drawn_series();
        let marks = chart.marks.as_ref().map(|m| Marks {
            label: m.label.clone(),
            points: chart.drawn_points(&m.points),
        });
        // Legend entries: the lines, the marks, the diverged crosses.
        let mut legend: Vec<(String, LegendGlyph)> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.label.clone(),
                    LegendGlyph::Line(Palette99::pick(i).to_rgba()),
                )
            })
            .collect();
        if let Some(m) = marks.as_ref().filter(|m| !m.points.is_empty()) {
            legend.push((m.label.clone(), LegendGlyph::Triangle));
        }
        if !chart.diverged.is_empty() {
            legend.push((
                format!("diverged ({}, no value)", chart.diverged.len()),
                LegendGlyph::Cross,
            ));
        }
        let (pw, ph) = area.dim_in_pixel();
        let per_row = if pw >= 700 { 3 } else { 2 };
        let rows = legend.len().div_ceil(per_row) as i32;
        let legend_h = if legend.len() > 1 || chart.marks.is_some() || !chart.diverged.is_empty() {
            rows * LEGEND_ROW + 10
        } else {
            0
        };
        let (plot_area, legend_area) = area.split_vertically(ph as i32 - legend_h);

        let mut all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.clone()).collect();
        if let Some(m) = &marks {
            all.extend(m.points.iter().copied());
        }
        let (x0, x1, y0, y1) = bounds(&all, &chart.diverged);
        let mut ctx = ChartBuilder::on(&plot_area)
            .margin(12)
            .caption(&chart.title, ("sans-serif", 20))
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let x_fmt = |x: &f64| {
            if chart.integer_x {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            } else {
                tick(*x)
            }
        };
        let y_fmt = |y: &f64| {
            if chart.log_y {
                // Powers of ten only: `1e-3`, not `1e-2.5`.
                if (y - y.round()).abs() < 1e-9 {
                    format!("1e{}", y.round() as i64)
                } else {
                    String::new()
                }
            } else {
                tick(*y)
            }
        };
        let y_desc = if chart.log_y {
            format!("{} (log scale)", chart.y_label)
        } else {
            chart.y_label.clone()
        };
        ctx.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(y_desc.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            ctx.draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
            if s.points.len() < 40 {
                ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        if let Some(m) = &marks {
            ctx.draw_series(
                m.points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 6, RED.filled())),
            )
            .map_err(|e| err(&e))?;
        }
        let top = y1 - 0.03 * (y1 - y0);
        ctx.draw_series(
            chart
                .diverged
                .iter()
                .map(|&x| Cross::new((x, top), 6, BLACK.stroke_width(2))),
        )
        .map_err(|e| err(&e))?;
        if legend_h > 0 {
            draw_legend(&legend_area, &legend, per_row).map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}

/// How a legend entry is drawn.
enum LegendGlyph {
    Line(RGBAColor),
    Triangle,
    Cross,
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, LegendGlyph)],
    per_row: usize,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, _) = area.dim_in_pixel();
    let col_w = (w as i32 - 20) / per_row as i32;
    let font = ("sans-serif", 13).into_font();
    for (i, (label, glyph)) in entries.iter().enumerate() {
        let x = 20 + (i % per_row) as i32 * col_w;
        let y = 4 + (i / per_row) as i32 * LEGEND_ROW;
        let mid = y + 8;
        match glyph {
            LegendGlyph::Line(c) => area.draw(&PathElement::new(
                vec![(x, mid), (x + 22, mid)],
                c.stroke_width(2),
            ))?,
            LegendGlyph::Triangle => {
                area.draw(&TriangleMarker::new((x + 11, mid), 6, RED.filled()))?
            }
            LegendGlyph::Cross => {
                area.draw(&Cross::new((x + 11, mid), 6, BLACK.stroke_width(2)))?
            }
        }
        // Long labels are cut to their column.
        let max_chars = ((col_w - 34) / 7).max(8) as usize;
        let text: String = if label.chars().count() > max_chars {
            label.chars().take(max_chars - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        area.draw(&Text::new(text, (x + 28, y), font.clone()))?;
    }
    Ok(())
}

/// A tick value with as few digits as it needs.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The data range with a 5 % margin (a flat or single-point range gets a unit width); the
/// `x` of diverged points widen the horizontal range only.
pub(crate) fn bounds(points: &[(f64, f64)], diverged: &[f64]) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for &x in diverged {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    let pad = |a: f64, b: f64| {
        if a > b {
            (0.0, 1.0)
        } else if b - a < 1e-12 {
            (a - 0.5, b + 0.5)
        } else {
            (a - 0.05 * (b - a), b + 0.05 * (b - a))
        }
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    (x0, x1, y0, y1)
}

/// The Markdown notes of a figure: titles, axis ranges and line colours.
pub fn describe(file: &str, charts: &[Chart]) -> String {
    let mut out = format!("## {file}\n\n");
    for c in charts {
        let all: Vec<(f64, f64)> = c.series.iter().flat_map(|s| s.points.clone()).collect();
        let (x0, x1, y0, y1) = bounds(&all, &c.diverged);
        out.push_str(&format!(
            "- panel **{}**: x = {} [{x0:.3}, {x1:.3}], y = {} [{y0:.3}, {y1:.3}]{}\n",
            c.title,
            c.x_label,
            c.y_label,
            if c.log_y { " (log scale)" } else { "" }
        ));
        for (i, s) in c.series.iter().enumerate() {
            let (r, g, b) = Palette99::pick(i).rgb();
            out.push_str(&format!(
                "  - #{r:02x}{g:02x}{b:02x}: {} ({} points)\n",
                s.label,
                s.points.len()
            ));
        }
        if let Some(m) = &c.marks {
            out.push_str(&format!(
                "  - red ▲: {} ({} points)\n",
                m.label,
                m.points.len()
            ));
        }
        if !c.diverged.is_empty() {
            let xs: Vec<String> = c.diverged.iter().map(|x| format!("{x:.3}")).collect();
            out.push_str(&format!(
                "  - black ×: {} diverged points, not drawn as lines (no PSNR), at x = {}\n",
                c.diverged.len(),
                xs.join(", ")
            ));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_pad_the_range_and_handle_flat_data() {
        let (x0, x1, y0, y1) = bounds(&[(0.0, 1.0), (10.0, 3.0)], &[]);
        assert!((x0 + 0.5).abs() < 1e-12 && (x1 - 10.5).abs() < 1e-12);
        assert!((y0 - 0.9).abs() < 1e-12 && (y1 - 3.1).abs() < 1e-12);
        let (_, _, y0, y1) = bounds(&[(0.0, 2.0), (1.0, 2.0)], &[]);
        assert_eq!((y0, y1), (1.5, 2.5));
        assert_eq!(bounds(&[], &[]), (0.0, 1.0, 0.0, 1.0));
        let (x0, x1, ..) = bounds(&[(1.0, 1.0), (2.0, 1.0)], &[5.0]);
        assert!(x0 < 1.0 && x1 > 5.0);
    }

    #[test]
    fn log_axes_leave_out_non_positive_values_and_ticks_are_short() {
        let c = Chart {
            log_y: true,
            ..Chart::new(
                "t",
                "x",
                "y",
                vec![Series {
                    label: "a".into(),
                    points: vec![(0.0, 1e-3), (1.0, 0.0), (2.0, f64::NAN), (3.0, 10.0)],
                }],
            )
        };
        assert_eq!(c.drawn_series()[0].points, vec![(0.0, -3.0), (3.0, 1.0)]);
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(30.0), "30");
        assert_eq!(tick(1.5e-5), "1.5e-5");
    }

    #[test]
    fn text_renders_with_the_embedded_font() {
        // A title drawn in black changes pixels above the plot; without a font it would not.
        let chart = Chart::new(
            "Objective F",
            "iteration",
            "F",
            vec![Series {
                label: "F".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5)],
            }],
        );
        let (w, h) = (720u32, 540u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        render(&mut buf, (w, h), &[chart]).unwrap();
        let title_band = &buf[(w * 3 * 12) as usize..(w * 3 * 30) as usize];
        let dark = title_band.iter().filter(|&&v| v < 100).count();
        assert!(dark > 50, "no title text drawn ({dark} dark bytes)");
    }
}
