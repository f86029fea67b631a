//! The figures of a merged sweep, as PNG (plotters, bitmap backend):
//! - `u-curve.png`: mean PSNR against `σ_den/ν`, one line per noise level `ν` (and per any
//!   other parameter that varies), PSNR averaged over kernels — the papers' U-shaped curve;
//! - `tau0.png`: mean PSNR against `log₁₀ τ₀` (GS-PnP collapses when `τ₀` is too large);
//! - `convergence.png`: objective and PSNR against the iteration for chosen points.
//!
//! Diverged points have no PSNR: they are not part of any line; a black cross along the top
//! edge marks the `x` of each, and the title and `figures.md` say how many there are.
//!
//! Text (titles, ticks, legend) needs a TrueType font: plotters' `ab_glyph` backend is given
//! `$GRADSTEP_FONT` or a common system font (DejaVu / Liberation Sans); `GRADSTEP_FONT=none`
//! turns text off. Without a font the
//! figures are drawn without text, and `figures.md` (always written) carries the titles, axis
//! ranges and the colour of each line.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::grid::Point;
use crate::sweep::store::{Outcome, Record};

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, sorted by `x`.
    pub points: Vec<(f64, f64)>,
}

/// One panel.
#[derive(Debug, Clone, PartialEq)]
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
}

/// Which parameter a figure puts on its horizontal axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    SigmaRatio,
    Log10Tau0,
}

/// Draws every figure the records allow; returns the files written.
pub fn draw_all(dir: &Path, done: &[&Record]) -> SweepResult<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut notes = String::from("# Figures\n\n");
    let figures = [
        (
            "u-curve.png",
            Axis::SigmaRatio,
            "PSNR vs σ_den/ν",
            "σ_den/ν",
        ),
        ("tau0.png", Axis::Log10Tau0, "PSNR vs τ₀", "log10 τ₀"),
    ];
    for (file, axis, title, x_label) in figures {
        let (series, diverged) = sweep_series(done, axis);
        // Worth a figure: a line, or diverged points where the parameter varies.
        let xs: BTreeSet<u64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(diverged.iter().copied())
            .map(f64::to_bits)
            .collect();
        if series.iter().all(|s| s.points.len() < 2) && (diverged.is_empty() || xs.len() < 2) {
            continue;
        }
        let title = match diverged.len() {
            0 => title.to_string(),
            n => format!("{title} ({n} diverged: ×)"),
        };
        let chart = Chart {
            title,
            x_label: x_label.into(),
            y_label: "mean PSNR (dB)".into(),
            series,
            diverged,
        };
        let path = dir.join(file);
        let charts = [chart];
        draw(&path, &charts)?;
        notes.push_str(&describe(file, &charts));
        written.push(path);
    }
    let curves = convergence_charts(done);
    if !curves.is_empty() {
        let path = dir.join("convergence.png");
        draw(&path, &curves)?;
        notes.push_str(&describe("convergence.png", &curves));
        written.push(path);
    }
    let path = dir.join("figures.md");
    gradstep_model::write_atomic(&path, notes.as_bytes())
        .map_err(|e| SweepError::Invalid(e.to_string()))?;
    written.push(path);
    Ok(written)
}

/// The parameters of a point other than `axis` and the kernel, as `(name, value)`.
fn components(p: &Point, axis: Axis) -> Vec<(&'static str, String)> {
    let o = |v: Option<f64>| v.map_or("default".to_string(), |v| format!("{v}"));
    let mut c = vec![
        ("ν", format!("{}", p.noise)),
        ("alg", p.algorithm.name().to_string()),
        ("set", p.image_set.name.clone()),
        ("ckpt", p.checkpoint.display().to_string()),
        ("s", p.scale.map_or("-".into(), |s| s.to_string())),
        ("λ", o(p.lambda)),
        ("α", o(p.alpha)),
    ];
    match axis {
        Axis::SigmaRatio => c.push(("τ₀", o(p.tau0))),
        Axis::Log10Tau0 => c.push(("σ_den", o(p.sigma_den_255()))),
    }
    c
}

/// One series per combination of the other parameters, `y` averaged over kernels, and the
/// `x` of the diverged points (left out of the series).
fn sweep_series(done: &[&Record], axis: Axis) -> (Vec<Series>, Vec<f64>) {
    let x_of = |p: &Point| match axis {
        Axis::SigmaRatio => p.sigma_ratio(),
        Axis::Log10Tau0 => p.tau0.map(f64::log10),
    };
    let mut diverged: Vec<f64> = done
        .iter()
        .filter(|r| r.diverged_images() > 0)
        .filter_map(|r| x_of(&r.params))
        .collect();
    diverged.sort_by(f64::total_cmp);
    let usable: Vec<(&Record, f64, f64)> = done
        .iter()
        .filter_map(|r| Some((*r, x_of(&r.params)?, r.mean_psnr()?)))
        .collect();
    let all: Vec<Vec<(&str, String)>> = usable
        .iter()
        .map(|(r, ..)| components(&r.params, axis))
        .collect();
    let varying: BTreeSet<usize> = (0..all.first().map_or(0, Vec::len))
        .filter(|&i| i == 0 || all.iter().any(|c| c[i].1 != all[0][i].1))
        .collect();
    // label → x (as bits, exact) → PSNRs over kernels
    let mut groups: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for ((_, x, psnr), comps) in usable.iter().zip(&all) {
        let label = varying
            .iter()
            .map(|&i| format!("{}={}", comps[i].0, comps[i].1))
            .collect::<Vec<_>>()
            .join(" ");
        groups
            .entry(label)
            .or_default()
            .entry(x.to_bits())
            .or_default()
            .push(*psnr);
    }
    let series = groups
        .into_iter()
        .map(|(label, by_x)| {
            let mut points: Vec<(f64, f64)> = by_x
                .into_iter()
                .map(|(x, ys)| (f64::from_bits(x), ys.iter().sum::<f64>() / ys.len() as f64))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points }
        })
        .collect();
    (series, diverged)
}

/// Objective and PSNR per iteration of up to 6 points spread over the PSNR range.
fn convergence_charts(done: &[&Record]) -> Vec<Chart> {
    let mut with_curve: Vec<(&Record, f64)> = done
        .iter()
        .filter(
            |r| matches!(&r.outcome, Outcome::Done { curve: Some(c), .. } if !c.psnr.is_empty()),
        )
        .filter_map(|r| Some((*r, r.mean_psnr()?)))
        .collect();
    if with_curve.is_empty() {
        return Vec::new();
    }
    with_curve.sort_by(|a, b| a.1.total_cmp(&b.1));
    let n = with_curve.len();
    let picks: BTreeSet<usize> = (0..n.min(6))
        .map(|k| k * (n - 1) / (n.min(6) - 1).max(1))
        .collect();
    let (mut objective, mut psnr) = (Vec::new(), Vec::new());
    for i in picks {
        let r = with_curve[i].0;
        let Outcome::Done { curve: Some(c), .. } = &r.outcome else {
            continue;
        };
        let label = format!("{} {} {}", r.id, r.params.algorithm.name(), c.image);
        let pts = |v: &[f64]| {
            v.iter()
                .enumerate()
                .map(|(k, &y)| (k as f64, y))
                .filter(|p| p.1.is_finite())
                .collect()
        };
        objective.push(Series {
            label: label.clone(),
            points: pts(&c.objective),
        });
        psnr.push(Series {
            label,
            points: pts(&c.psnr),
        });
    }
    vec![
        Chart {
            title: "objective".into(),
            x_label: "iteration".into(),
            y_label: "F / Lyapunov".into(),
            series: objective,
            diverged: Vec::new(),
        },
        Chart {
            title: "PSNR".into(),
            x_label: "iteration".into(),
            y_label: "PSNR (dB)".into(),
            series: psnr,
            diverged: Vec::new(),
        },
    ]
}

/// Registers a TrueType font with plotters once; `false` when none is found.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        if std::env::var_os("GRADSTEP_FONT").is_some_and(|v| v == "none") {
            return false;
        }
        let candidates = std::env::var_os("GRADSTEP_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                [
                    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/TTF/DejaVuSans.ttf",
                    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                ]
                .map(PathBuf::from),
            );
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws `charts` side by side into one PNG (rendered into a buffer, encoded with `image`
/// and written atomically, as the convergence monitor does).
pub fn draw(path: &Path, charts: &[Chart]) -> SweepResult<()> {
    let (w, h) = (720 * charts.len().max(1) as u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    render(path, &mut buf, (w, h), charts)?;
    crate::monitor::write_rgb_png(path, (w, h), buf).map_err(|e| SweepError::plot(path, e))
}

fn render(path: &Path, buf: &mut [u8], size: (u32, u32), charts: &[Chart]) -> SweepResult<()> {
    let text = font_available();
    let err = |e: &dyn std::fmt::Display| SweepError::plot(path, e);
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, charts.len().max(1)));
    for (chart, area) in charts.iter().zip(&panels) {
        let (x0, x1, y0, y1) = bounds(&chart.series, &chart.diverged);
        let mut builder = ChartBuilder::on(area);
        builder.margin(15);
        if text {
            builder
                .caption(&chart.title, ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(55);
        }
        let mut ctx = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let mut mesh = ctx.configure_mesh();
        if text {
            mesh.x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str());
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(&e))?;
        for (i, s) in chart.series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let drawn = ctx
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
            if text {
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            }
            if s.points.len() < 40 {
                ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        // Diverged points: a black cross on the top edge at their `x`.
        let top = y1 - 0.03 * (y1 - y0);
        ctx.draw_series(
            chart
                .diverged
                .iter()
                .map(|&x| Cross::new((x, top), 6, BLACK.stroke_width(2))),
        )
        .map_err(|e| err(&e))?;
        if text && !chart.series.is_empty() {
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}

/// The data range with a 5 % margin (a flat or single-point range gets a unit width); the
/// `x` of diverged points widen the horizontal range only.
fn bounds(series: &[Series], diverged: &[f64]) -> (f64, f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
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
fn describe(file: &str, charts: &[Chart]) -> String {
    let mut out = format!("## {file}\n\n");
    for c in charts {
        let (x0, x1, y0, y1) = bounds(&c.series, &c.diverged);
        out.push_str(&format!(
            "- panel **{}**: x = {} [{x0:.3}, {x1:.3}], y = {} [{y0:.3}, {y1:.3}]\n",
            c.title, c.x_label, c.y_label
        ));
        for (i, s) in c.series.iter().enumerate() {
            let (r, g, b) = Palette99::pick(i).rgb();
            out.push_str(&format!(
                "  - #{r:02x}{g:02x}{b:02x}: {} ({} points)\n",
                s.label,
                s.points.len()
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
        let s = |points: Vec<(f64, f64)>| {
            vec![Series {
                label: "a".into(),
                points,
            }]
        };
        let (x0, x1, y0, y1) = bounds(&s(vec![(1.0, 20.0), (3.0, 30.0)]), &[]);
        assert!((x0 - 0.9).abs() < 1e-12 && (x1 - 3.1).abs() < 1e-12);
        assert!((y0 - 19.5).abs() < 1e-12 && (y1 - 30.5).abs() < 1e-12);
        let (x0, x1, ..) = bounds(&s(vec![(2.0, 5.0)]), &[]);
        assert_eq!((x0, x1), (1.5, 2.5));
        // Diverged points widen the x range only.
        let (x0, x1, y0, y1) = bounds(&s(vec![(1.0, 20.0), (3.0, 30.0)]), &[5.0]);
        assert!((x0 - 0.8).abs() < 1e-12 && (x1 - 5.2).abs() < 1e-12);
        assert!((y0 - 19.5).abs() < 1e-12 && (y1 - 30.5).abs() < 1e-12);
    }
}
