//! `gradstep sweep merge`: all records of a sweep as one CSV, one Markdown table, figures and
//! `report.html` (the table and the figures in one page, [`crate::report`]).
//!
//! Rows are sorted by the grid's parameters ([`grid_order`]): named values (algorithm,
//! checkpoint, image set, kernel) in the order the config lists them, numbers ascending, the
//! reference default (no value) first. The Markdown table is written by hand (a header, a
//! separator and one row per point: no crate needed); the CSV goes through the `csv` crate for
//! its quoting rules.
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{Picture, Report, Table, REPORT_FILE};
use crate::sweep::config::Axes;
use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::figures;
use crate::sweep::grid::Point;
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

/// Merges the records of `dir`: `table.csv`, `table.md`, the figures (`u-curve.png`,
/// `tau0.png`, `convergence.png` when the records allow them) and `report.html`; the rows in
/// [`grid_order`].
pub fn merge(dir: &SweepDir) -> SweepResult<MergeReport> {
    let grid = dir.read_grid()?;
    let (records, skipped) = dir.read_all()?;
    let mut done_count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_done()) {
        *done_count.entry(r.id.as_str()).or_default() += 1;
    }
    let latest = latest_of(records.iter().cloned());
    let in_grid: std::collections::BTreeSet<&str> = grid.ids.iter().map(String::as_str).collect();
    let mut rows: Vec<(Row, &Record)> = grid
        .ids
        .iter()
        .filter_map(|id| latest.get(id))
        .map(|r| (Row::of(r), r))
        .collect();
    rows.sort_by(|a, b| grid_order(&grid.config.axes, &a.1.params, &b.1.params));
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
    let figures = figures::draw_all(dir.path(), &done)?;
    let report_path = dir.path().join(REPORT_FILE);
    sweep_report(&grid.config.description, &rows_only, &figures)?
        .write(&report_path)
        .map_err(|e| SweepError::Invalid(e.to_string()))?;
    files.extend(figures);
    files.push(report_path);
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

/// The order of rows in the merged tables: by algorithm, checkpoint, image set, `ν`, kernel,
/// `s`, `σ_den`, `λ`, `τ₀`, `α`, in this priority. Named values compare by their position in
/// the config's axis (so `levin:2` comes before `levin:10`), numbers ascending; `None` (the
/// reference default) first.
pub fn grid_order(axes: &Axes, a: &Point, b: &Point) -> Ordering {
    fn position<T: PartialEq>(axis: Option<&[T]>, v: &T) -> usize {
        axis.and_then(|axis| axis.iter().position(|x| x == v))
            .unwrap_or(usize::MAX)
    }
    fn number(a: Option<f64>, b: Option<f64>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
    let kernel = |p: &Point| {
        p.kernel
            .as_ref()
            .map_or(0, |k| 1 + position(axes.kernel.as_deref(), k))
    };
    position(Some(&axes.algorithm), &a.algorithm)
        .cmp(&position(Some(&axes.algorithm), &b.algorithm))
        .then_with(|| {
            position(Some(&axes.checkpoint), &a.checkpoint)
                .cmp(&position(Some(&axes.checkpoint), &b.checkpoint))
        })
        .then_with(|| {
            position(Some(&axes.image_set), &a.image_set)
                .cmp(&position(Some(&axes.image_set), &b.image_set))
        })
        .then_with(|| a.noise.total_cmp(&b.noise))
        .then_with(|| kernel(a).cmp(&kernel(b)))
        .then_with(|| a.scale.cmp(&b.scale))
        .then_with(|| number(a.sigma_den_255(), b.sigma_den_255()))
        .then_with(|| number(a.lambda, b.lambda))
        .then_with(|| number(a.tau0, b.tau0))
        .then_with(|| number(a.alpha, b.alpha))
}

/// The cells of the merged table of `rows`: the parameter columns that have a value in some
/// row, then PSNR, SSIM, iterations, seconds and status. Plain text (Markdown and HTML escape
/// it their own way).
fn table(rows: &[Row]) -> Table {
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
    let mut header: Vec<String> = used.iter().map(|(h, _)| h.to_string()).collect();
    header.extend(["PSNR", "SSIM", "iterations", "seconds", "status"].map(String::from));
    let rows = rows
        .iter()
        .map(|r| {
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
                "failed" => format!("failed: {}", r.error),
                "diverged" => format!("diverged ({} of {} images)", r.diverged, r.images),
                status => status.to_string(),
            });
            cells
        })
        .collect();
    Table {
        caption: String::new(),
        header,
        rows,
    }
}

/// The Markdown table of `rows` (columns without any value are left out; `|` in a cell is
/// escaped).
pub fn markdown(description: &str, rows: &[Row]) -> String {
    let t = table(rows);
    let mut out = String::new();
    if !description.is_empty() {
        out.push_str(&format!("{description}\n\n"));
    }
    out.push_str(&format!("| {} |\n", t.header.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(t.header.len())));
    for cells in &t.rows {
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// `report.html` of a merged sweep: the description, the table and the figures (PNG files
/// among `figures`). Sweeps keep no images, so the page has no thumbnails.
fn sweep_report(description: &str, rows: &[Row], figures: &[PathBuf]) -> SweepResult<Report> {
    let mut report = Report::new("sweep");
    if !description.is_empty() {
        report.notes.push(description.to_string());
    }
    report.tables.push(Table {
        caption: format!("{} points", rows.len()),
        ..table(rows)
    });
    for f in figures
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
    {
        report
            .plots
            .push(Picture::from_png_file(f).map_err(|e| SweepError::Invalid(e.to_string()))?);
    }
    Ok(report)
}
