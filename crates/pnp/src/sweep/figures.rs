//! The figures of a merged sweep, as PNG (plotters, bitmap backend):
//! - `u-curve.png`: mean PSNR against `σ_den/ν`, one line per noise level `ν` (and per any
//!   other parameter that varies), PSNR averaged over kernels — the papers' U-shaped curve;
//! - `tau0.png`: mean PSNR against `log₁₀ τ₀` (GS-PnP collapses when `τ₀` is too large);
//! - `convergence.png`: objective and PSNR against the iteration for chosen points.
//!
//! Diverged points have no PSNR: they are not part of any line; a black cross along the top
//! edge marks the `x` of each, and the title and `figures.md` say how many there are.
//!
//! Drawn by [`crate::plot`] (embedded font: titles, ticks and legends everywhere). Legends
//! name lines by the parameters that vary (`ν=7.65 λ=0.1`), never by point ids.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gradstep_data::reduce::mean;

use crate::plot::{describe, Chart, Series};
use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::grid::Point;
use crate::sweep::store::{Outcome, Record};

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
            diverged,
            ..Chart::new(&title, x_label, "mean PSNR (dB)", series)
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
                .map(|(x, ys)| (f64::from_bits(x), mean(ys).unwrap_or(f64::NAN)))
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
    // Legends name the parameters that differ between the chosen points (and the image).
    let describe_point = |r: &Record| -> Vec<(&'static str, String)> {
        let mut c = components(&r.params, Axis::SigmaRatio);
        c.push((
            "σ_den/ν",
            r.params
                .sigma_ratio()
                .map_or("default".to_string(), |v| format!("{v}")),
        ));
        c.push((
            "kernel",
            r.params
                .kernel
                .as_ref()
                .map_or("-".to_string(), |k| k.0.to_string()),
        ));
        c
    };
    let chosen: Vec<&Record> = picks.iter().map(|&i| with_curve[i].0).collect();
    let comps: Vec<Vec<(&str, String)>> = chosen.iter().map(|r| describe_point(r)).collect();
    let varying: Vec<usize> = (0..comps.first().map_or(0, Vec::len))
        .filter(|&i| comps.iter().any(|c| c[i].1 != comps[0][i].1))
        .collect();
    let (mut objective, mut psnr) = (Vec::new(), Vec::new());
    for (r, comp) in chosen.iter().zip(&comps) {
        let Outcome::Done { curve: Some(c), .. } = &r.outcome else {
            continue;
        };
        let mut parts: Vec<String> = varying
            .iter()
            .map(|&i| format!("{}={}", comp[i].0, comp[i].1))
            .collect();
        parts.push(c.image.clone());
        let label = parts.join(" ");
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
            integer_x: true,
            ..Chart::new("objective", "iteration", "F / Lyapunov", objective)
        },
        Chart {
            integer_x: true,
            ..Chart::new("PSNR", "iteration", "PSNR (dB)", psnr)
        },
    ]
}

/// Draws `charts` into `path` (the crate's one plotting path).
fn draw(path: &Path, charts: &[Chart]) -> SweepResult<()> {
    crate::plot::draw(path, charts).map_err(|e| SweepError::plot(path, e))
}
