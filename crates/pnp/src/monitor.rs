//! The convergence monitor: per-iteration records, written as JSON and drawn as PNG plots
//! (through [`crate::plot`]: titles, axis labels, tick values and legends): the objective
//! `F` (and the DRS Lyapunov function `Ψ`), the PSNR, the residual
//! `‖x_{k+1} − x_k‖² / ‖x_0‖²` on a log scale, and `τ` with the backtracking steps marked, as
//! the papers show them.
use std::path::Path;

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
    /// The residual `‖x_{k+1} − x_k‖² / ‖x_0‖²` of the papers' convergence plots (NaN at the
    /// start).
    pub residual: f64,
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

/// The plots [`write_plots`] can write, by file name.
pub const PLOT_FILES: [&str; 4] = ["objective.png", "psnr.png", "residual.png", "tau.png"];

/// Draws the convergence plots of a run of `algorithm` into `dir` ([`PLOT_FILES`]: each when
/// it has at least two values) and returns the files written.
pub fn write_plots(
    records: &[IterationRecord],
    dir: &Path,
    algorithm: &str,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::plot::{draw, Chart, Marks, Series};
    let line = |label: &str, points: Vec<(f64, f64)>| Series {
        label: label.into(),
        points,
    };
    let iteration_chart = |title: String, y: &str, series: Vec<Series>| Chart {
        integer_x: true,
        ..Chart::new(&title, "iteration k", y, series)
    };
    let mut objective = vec![line("F(x_k)", series(records, |r| Some(r.objective)))];
    let lyapunov = series(records, |r| Some(r.lyapunov));
    if !lyapunov.is_empty() {
        objective.push(line("Ψ (DRS Lyapunov function)", lyapunov));
    }
    let tau = series(records, |r| Some(r.tau));
    let backtracks: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.backtracks > 0 && r.tau.is_finite())
        .map(|r| (r.iteration as f64, r.tau))
        .collect();
    let rejected: usize = records.iter().map(|r| r.backtracks).sum();
    let charts = [
        (
            "objective.png",
            iteration_chart(format!("{algorithm}: objective"), "F", objective),
        ),
        (
            "psnr.png",
            iteration_chart(
                format!("{algorithm}: PSNR of the returned image"),
                "PSNR (dB)",
                vec![line("PSNR", series(records, |r| r.psnr))],
            ),
        ),
        (
            "residual.png",
            Chart {
                log_y: true,
                ..iteration_chart(
                    format!("{algorithm}: residual"),
                    "‖x_k+1 − x_k‖² / ‖x_0‖²",
                    vec![line("residual", series(records, |r| Some(r.residual)))],
                )
            },
        ),
        (
            "tau.png",
            Chart {
                marks: Some(Marks {
                    label: format!("backtracking: τ reduced ({rejected} rejected trials)"),
                    points: backtracks,
                }),
                ..iteration_chart(
                    format!("{algorithm}: step size"),
                    "τ",
                    vec![line("τ of the accepted step", tau)],
                )
            },
        ),
    ];
    let mut written = Vec::new();
    for (file, chart) in charts {
        let usable = chart
            .series
            .iter()
            .map(|s| s.points.len())
            .max()
            .unwrap_or(0);
        if usable >= 2 {
            let path = dir.join(file);
            draw(&path, &[chart])?;
            written.push(path);
        }
    }
    Ok(written)
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
