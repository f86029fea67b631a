//! `gradstep sweep merge`: all records of a sweep as one CSV, one Markdown table, and figures.
//!
//! The Markdown table is written by hand (a header, a separator and one row per point: no
//! crate needed); the CSV goes through the `csv` crate for its quoting rules.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::figures;
use crate::sweep::store::{latest_of, BadLine, Outcome, Record, SweepDir};

/// One row of the merged table: the parameters and the mean scores of one point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Point id.
    pub id: String,
    /// `done`, `diverged` (done, with at least one diverged image) or `failed`.
    pub status: &'static str,
    /// Algorithm name.
    pub algorithm: &'static str,
    /// Checkpoint file name.
    pub checkpoint: String,
    /// Image set name.
    pub image_set: String,
    /// Kernel (empty when not applicable).
    pub kernel: String,
    /// `ν` (0–255).
    pub noise: f64,
    /// SR factor.
    pub scale: Option<u32>,
    /// `σ_den` (0–255), empty for the default.
    pub sigma_den: Option<f64>,
    /// `σ_den / ν`.
    pub sigma_ratio: Option<f64>,
    /// `λ`.
    pub lambda: Option<f64>,
    /// `τ₀`.
    pub tau0: Option<f64>,
    /// `α`.
    pub alpha: Option<f64>,
    /// Number of images.
    pub images: usize,
    /// Images whose restoration diverged (no PSNR/SSIM).
    pub diverged: usize,
    /// Mean PSNR (dB); empty for failed and diverged points.
    pub psnr: Option<f64>,
    /// Mean SSIM; empty for failed and diverged points.
    pub ssim: Option<f64>,
    /// Mean iterations.
    pub iterations: Option<f64>,
    /// Seconds of the point.
    pub seconds: f64,
    /// The error of a failed point.
    pub error: String,
}

impl Row {
    /// The row of a record.
    pub fn of(r: &Record) -> Row {
        let p = &r.params;
        let diverged = r.diverged_images();
        let (status, images, error) = match &r.outcome {
            Outcome::Done { images, .. } if diverged > 0 => {
                ("diverged", images.len(), String::new())
            }
            Outcome::Done { images, .. } => ("done", images.len(), String::new()),
            Outcome::Failed { error } => ("failed", 0, error.clone()),
        };
        Row {
            id: r.id.clone(),
            status,
            algorithm: p.algorithm.name(),
            checkpoint: p.checkpoint.file_name().map_or_else(
                || p.checkpoint.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            image_set: p.image_set.name.clone(),
            kernel: p.kernel.as_ref().map_or(String::new(), |k| k.0.to_string()),
            noise: p.noise,
            scale: p.scale,
            sigma_den: p.sigma_den_255(),
            sigma_ratio: p.sigma_ratio(),
            lambda: p.lambda,
            tau0: p.tau0,
            alpha: p.alpha,
            images,
            diverged,
            psnr: r.mean_psnr(),
            ssim: r.mean_ssim(),
            iterations: r.mean_iterations(),
            seconds: r.seconds,
            error,
        }
    }
}

/// What [`merge`] found and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// Points in `grid.json`.
    pub grid: usize,
    /// Points with a `done` record (diverged ones included).
    pub done: usize,
    /// Points done with at least one diverged image (shown as diverged, left out of figures).
    pub diverged: usize,
    /// Points whose latest record is `failed`.
    pub failed: usize,
    /// Points of the grid without any record.
    pub missing: Vec<String>,
    /// Points with more than one `done` record (run twice).
    pub duplicated: Vec<String>,
    /// Records whose id is not in the grid.
    pub foreign: usize,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Lines of the records files that are not records, skipped (with
    /// [`SweepDir::skip_bad_lines`]; without it they stop the merge).
    pub skipped: Vec<BadLine>,
}

/// Merges the records of `dir`: `table.csv`, `table.md` and the figures (`u-curve.png`,
/// `tau0.png`, `convergence.png` when the records allow them).
pub fn merge(dir: &SweepDir) -> SweepResult<MergeReport> {
    let grid = dir.read_grid()?;
    let (records, skipped) = dir.read_all()?;
    let mut done_count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_done()) {
        *done_count.entry(r.id.as_str()).or_default() += 1;
    }
    let latest = latest_of(records.iter().cloned());
    let in_grid: std::collections::BTreeSet<&str> = grid.ids.iter().map(String::as_str).collect();
    let rows: Vec<(Row, &Record)> = grid
        .ids
        .iter()
        .filter_map(|id| latest.get(id))
        .map(|r| (Row::of(r), r))
        .collect();
    let mut files = Vec::new();
    let csv_path = dir.path().join("table.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    for (row, _) in &rows {
        w.serialize(row)
            .map_err(|e| SweepError::Invalid(format!("{}: {e}", csv_path.display())))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| SweepError::Invalid(format!("{}: {e}", csv_path.display())))?;
    write(&csv_path, &bytes)?;
    files.push(csv_path);
    let md_path = dir.path().join("table.md");
    let rows_only: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    write(
        &md_path,
        markdown(&grid.config.description, &rows_only).as_bytes(),
    )?;
    files.push(md_path);
    let done: Vec<&Record> = rows
        .iter()
        .map(|(_, r)| *r)
        .filter(|r| r.is_done())
        .collect();
    files.extend(figures::draw_all(dir.path(), &done)?);
    Ok(MergeReport {
        grid: grid.ids.len(),
        done: rows.iter().filter(|(_, r)| r.is_done()).count(),
        diverged: rows.iter().filter(|(r, _)| r.status == "diverged").count(),
        failed: rows.iter().filter(|(r, _)| r.status == "failed").count(),
        missing: grid
            .ids
            .iter()
            .filter(|id| !latest.contains_key(*id))
            .cloned()
            .collect(),
        duplicated: done_count
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(id, _)| id.to_string())
            .collect(),
        foreign: latest
            .keys()
            .filter(|id| !in_grid.contains(id.as_str()))
            .count(),
        files,
        skipped,
    })
}

fn write(path: &std::path::Path, bytes: &[u8]) -> SweepResult<()> {
    gradstep_model::write_atomic(path, bytes).map_err(|e| SweepError::Invalid(e.to_string()))
}

/// The Markdown table of `rows` (columns without any value are left out).
pub fn markdown(description: &str, rows: &[Row]) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    type Column = (&'static str, fn(&Row) -> String);
    let columns: Vec<Column> = vec![
        ("id", |r| r.id.clone()),
        ("algorithm", |r| r.algorithm.to_string()),
        ("checkpoint", |r| r.checkpoint.clone()),
        ("images", |r| r.image_set.clone()),
        ("kernel", |r| r.kernel.clone()),
        ("ν", |r| format!("{}", r.noise)),
        ("s", |r| r.scale.map_or(String::new(), |s| s.to_string())),
        ("σ_den", |r| {
            r.sigma_den.map_or(String::new(), |v| format!("{v:.3}"))
        }),
        ("σ_den/ν", |r| {
            r.sigma_ratio.map_or(String::new(), |v| format!("{v:.3}"))
        }),
        ("λ", |r| r.lambda.map_or(String::new(), |v| format!("{v}"))),
        ("τ₀", |r| {
            r.tau0.map_or(String::new(), |v| format!("{v}"))
        }),
        ("α", |r| r.alpha.map_or(String::new(), |v| format!("{v}"))),
    ];
    let used: Vec<&Column> = columns
        .iter()
        .filter(|(_, f)| rows.iter().any(|r| !f(r).is_empty()))
        .collect();
    let mut out = String::new();
    if !description.is_empty() {
        out.push_str(&format!("{description}\n\n"));
    }
    let mut header: Vec<&str> = used.iter().map(|(h, _)| *h).collect();
    header.extend(["PSNR", "SSIM", "iterations", "seconds", "status"]);
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        let mut cells: Vec<String> = used.iter().map(|(_, f)| f(r)).collect();
        let diverged = r.status == "diverged";
        let metric = |v: Option<f64>, digits: usize| {
            if diverged {
                "diverged".to_string()
            } else {
                opt(v, digits)
            }
        };
        cells.push(metric(r.psnr, 2));
        cells.push(metric(r.ssim, 4));
        cells.push(opt(r.iterations, 1));
        cells.push(format!("{:.1}", r.seconds));
        cells.push(match r.status {
            "failed" => format!("failed: {}", r.error.replace('|', "\\|")),
            "diverged" => format!("diverged ({} of {} images)", r.diverged, r.images),
            status => status.to_string(),
        });
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
