//! The convergence monitor: per-iteration records, written as JSON and drawn as PNG plots.
//!
//! Plots are drawn with `plotters`' bitmap backend and encoded with `image`. They carry no
//! text: plotters 0.3.7 renders text only through system fonts (`ttf`/`font-kit`), which this
//! project does not require; the axis ranges go into the JSON next to the plots
//! (`plot_ranges`), and each PNG draws one curve (blue) over a light grid of 10×10 cells.
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::{PnpError, Result};

/// What the monitor records at one accepted iteration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationRecord {
    /// `k` (0 is the starting point).
    pub iteration: usize,
    /// The objective `F = f + λg` (GS-PnP) or `f + φ/λ` (Prox-PnP); NaN when undefined.
    pub objective: f64,
    /// The data term `f = ½‖Ax − y‖²`.
    pub data: f64,
    /// The regulariser `g_σ` (GS-PnP) or `φ_σ` (Prox-PnP); NaN when undefined.
    pub regulariser: f64,
    /// The DRS Lyapunov function `Ψ` (Prox-PnP DRS / DRSdiff); NaN for the other algorithms.
    pub lyapunov: f64,
    /// The relative step `‖x_{k+1} − x_k‖ / ‖x_k‖` of the iterate (NaN at the start).
    pub relative_step: f64,
    /// The stopping rule's quantity: the relative change `|V_k − V_{k+1}| / |V_{k+1}|` of the
    /// tested value `V` (`F`, or `Ψ` for DRS; NaN at the start and where `V` is unknown).
    pub relative_value_change: f64,
    /// The step `τ` used.
    pub tau: f64,
    /// PSNR (dB) of the current output when the ground truth is known.
    pub psnr: Option<f64>,
    /// Backtracking rejections before this iteration was accepted.
    pub backtracks: usize,
}

/// A run's records with a few facts, as written to JSON.
#[derive(Debug, Serialize)]
pub struct ConvergenceLog<'a> {
    /// Algorithm name.
    pub algorithm: &'a str,
    /// The variable returned as the restored image (`z`, `x` or `y`, as the official code).
    pub returned: &'a str,
    /// Accepted iterations.
    pub iterations: usize,
    /// Why it stopped.
    pub stop: crate::StopReason,
    /// The stop in words, with the monotonicity of the tested value when it failed.
    pub stop_label: String,
    /// Increases of the tested value (`F` or `Ψ`) where the theory says it decreases.
    pub monotonicity: crate::Monotonicity,
    /// PSNR (dB) of the returned image and of the last iterate `x_K` (clipped), when the
    /// ground truth is known.
    pub psnr: FinalPsnr,
    /// Warnings about the run (e.g. a Prox-PnP algorithm with a denoiser not shown to be
    /// proximal).
    pub warnings: &'a [String],
    /// `[min, max]` of the objective and PSNR axes of the plots (finite values only).
    pub plot_ranges: PlotRanges,
    /// The records.
    pub records: &'a [IterationRecord],
}

/// The final PSNRs of a run.
#[derive(Debug, Serialize)]
pub struct FinalPsnr {
    /// Of the returned image.
    pub returned: Option<f64>,
    /// Of the last iterate `x_K`.
    pub last_iterate: Option<f64>,
}

/// The stop in words: `converged`, `max-iterations`, … followed, when the tested value
/// increased, by e.g. `objective not monotone (224 increases in 254 iterations, max 1.0e-5 rel.)`.
pub fn stop_label(stop: crate::StopReason, m: &crate::Monotonicity) -> String {
    let reason = match stop {
        crate::StopReason::Converged => "converged".to_string(),
        crate::StopReason::ToleranceNotMonotone => "stopped: tolerance".to_string(),
        other => format!("stopped: {}", other.name()),
    };
    if m.is_monotone() {
        reason
    } else {
        format!(
            "{reason}, {} not monotone ({} increases in {} iterations, max {:.1e} rel.)",
            m.quantity, m.increases, m.tested, m.max_relative_increase
        )
    }
}

/// Axis ranges of the PNG plots.
#[derive(Debug, Serialize)]
pub struct PlotRanges {
    /// `[min, max]` of `F`.
    pub objective: Option<[f64; 2]>,
    /// `[min, max]` of PSNR.
    pub psnr: Option<[f64; 2]>,
}

fn range(v: &[(f64, f64)]) -> Option<[f64; 2]> {
    let ys = v.iter().map(|p| p.1).filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| {
        (l.min(y), h.max(y))
    });
    (lo <= hi).then_some([lo, hi])
}

fn series(
    records: &[IterationRecord],
    f: impl Fn(&IterationRecord) -> Option<f64>,
) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| {
            f(r).filter(|v| v.is_finite())
                .map(|v| (r.iteration as f64, v))
        })
        .collect()
}

/// Writes the records of a run to `path` as JSON (atomically).
pub fn write_json(
    path: &Path,
    restoration: &crate::Restoration,
    config: &crate::AlgorithmConfig,
    warnings: &[String],
) -> Result<()> {
    let obj = series(&restoration.records, |r| Some(r.objective));
    let psnr = series(&restoration.records, |r| r.psnr);
    let log = ConvergenceLog {
        algorithm: config.name(),
        returned: config.returned_variable(),
        iterations: restoration.iterations,
        stop: restoration.stop,
        stop_label: stop_label(restoration.stop, &restoration.monotonicity),
        monotonicity: restoration.monotonicity,
        psnr: FinalPsnr {
            returned: restoration.psnr,
            last_iterate: restoration.last_iterate_psnr,
        },
        warnings,
        plot_ranges: PlotRanges {
            objective: range(&obj),
            psnr: range(&psnr),
        },
        records: &restoration.records,
    };
    let text = serde_json::to_vec_pretty(&log).map_err(|e| PnpError::file(path, e))?;
    gradstep_model::write_atomic(path, &text)?;
    Ok(())
}

/// Draws `F` against the iteration into `objective_png` and PSNR (when known) into `psnr_png`.
/// Returns how many plots were written.
pub fn write_plots(
    records: &[IterationRecord],
    objective_png: &Path,
    psnr_png: &Path,
) -> Result<usize> {
    let mut written = 0;
    for (path, points) in [
        (objective_png, series(records, |r| Some(r.objective))),
        (psnr_png, series(records, |r| r.psnr)),
    ] {
        if points.len() >= 2 {
            plot(path, &points)?;
            written += 1;
        }
    }
    Ok(written)
}

fn plot(path: &Path, points: &[(f64, f64)]) -> Result<()> {
    let (w, h) = (640u32, 400u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let [lo, hi] = range(points).unwrap_or([0.0, 1.0]);
    let pad = ((hi - lo) * 0.05).max(1e-12);
    let x_max = points.last().map(|p| p.0).unwrap_or(1.0).max(1.0);
    let draw_err = |e: &dyn std::fmt::Display| PnpError::file(path, format!("cannot draw: {e}"));
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let area = root.margin(20, 20, 20, 20);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))
            .map_err(|e| draw_err(&e))?;
        let grid = RGBColor(225, 225, 225);
        for i in 0..=10 {
            let t = i as f64 / 10.0;
            let x = t * x_max;
            let y = lo - pad + t * (hi - lo + 2.0 * pad);
            chart
                .draw_series(LineSeries::new([(x, lo - pad), (x, hi + pad)], grid))
                .map_err(|e| draw_err(&e))?;
            chart
                .draw_series(LineSeries::new([(0.0, y), (x_max, y)], grid))
                .map_err(|e| draw_err(&e))?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    write_rgb_png(path, (w, h), buf).map_err(|reason| PnpError::file(path, reason))
}

/// Writes a drawn `w × h` RGB buffer as a PNG, atomically (the convergence plots here and
/// the sweep's figures, which each wrap the reason in their own error naming `path`).
pub(crate) fn write_rgb_png(
    path: &Path,
    (w, h): (u32, u32),
    buf: Vec<u8>,
) -> std::result::Result<(), String> {
    let img = image::RgbImage::from_raw(w, h, buf).ok_or("plot buffer has the wrong size")?;
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| e.to_string())?;
    gradstep_model::write_atomic(path, &bytes).map_err(|e| e.to_string())
}
