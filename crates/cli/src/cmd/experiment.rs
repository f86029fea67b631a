//! `gradstep experiment lines | montage | runs`: the small tools of the paper-experiment
//! recipes (`scripts/experiments.sh`, `docs/experiments.md`) for what no other command writes:
//! a line figure over several of gradstep's own tables (drawn by the sweep figures' plotting,
//! [`gradstep_pnp::sweep::draw`]), images side by side, and one Markdown table of several
//! `restore` runs read from their `convergence.json`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_data::reduce::mean;
use gradstep_data::{load_image, save_image};
use gradstep_pnp::sweep::{draw, Chart, Series};
use plotters::style::{Color, Palette, Palette99};
use serde_json::Value;
use tch::{Device, Tensor};

/// The experiment tools.
#[derive(Debug, clap::Subcommand)]
pub enum Experiment {
    /// A line figure (PNG) from CSV tables (sweep `table.csv`, eval `results.csv`) or JSON
    /// outputs (`restore`'s `convergence.json`: its `records`; `lipschitz --out`: its
    /// `sigmas`); one panel per `--y`, one line per input (and per `--group` value), `y`
    /// averaged over rows with the same `x`. Prints the figure's description as Markdown.
    Lines(LinesArgs),
    /// Images of equal height side by side in one PNG, separated by white gaps.
    Montage(MontageArgs),
    /// A Markdown table of `restore` runs from their `convergence.json`: iterations, stop,
    /// increases of F / Ψ, backtracks, PSNR of the returned image and of `x_K`, warnings.
    Runs(RunsArgs),
}

/// Arguments of `gradstep experiment lines`.
#[derive(Debug, clap::Args)]
pub struct LinesArgs {
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Column (CSV) or field (JSON rows) on the horizontal axis.
    #[arg(long)]
    x: String,
    /// `log10 x` on the horizontal axis (rows with x ≤ 0 are left out).
    #[arg(long)]
    log_x: bool,
    /// One panel per value: `COLUMN`, `COLUMN:log` (log10 y) or `COLUMN:gap-log`
    /// (log10(y − min y) of each line, e.g. `objective:gap-log` for F(x_k) − min F, which is
    /// F(x_k) − F(x_K) when F does not increase; a rise shows as an uptick); rows where the
    /// value is missing or not finite, and the minimum itself under gap-log, are left out.
    #[arg(long = "y", required = true)]
    ys: Vec<String>,
    /// Panel titles, in the order of `--y` (default: the column names).
    #[arg(long = "title")]
    titles: Vec<String>,
    /// Keep rows whose COLUMN equals VALUE (numerically when both are numbers); repeatable.
    #[arg(long = "filter", value_name = "COLUMN=VALUE")]
    filters: Vec<String>,
    /// One line per value of this column within each input.
    #[arg(long)]
    group: Option<String>,
    /// For JSON inputs: the top-level array of row objects (default: the only one).
    #[arg(long)]
    rows: Option<String>,
    /// Also print the values drawn, as one Markdown table per panel (a row per x, a column
    /// per line).
    #[arg(long)]
    points: bool,
    /// Inputs as LABEL=PATH (CSV or JSON; split at the last `=`).
    #[arg(required = true, value_name = "LABEL=PATH")]
    inputs: Vec<String>,
}

/// Arguments of `gradstep experiment montage`.
#[derive(Debug, clap::Args)]
pub struct MontageArgs {
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Centre crop of this side of each image first (as `restore --crop`); 0: whole images.
    #[arg(long, default_value_t = 0)]
    crop: i64,
    /// Integer magnification (nearest neighbour), for small crops.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=16))]
    zoom: i64,
    /// Images (PNG, JPEG, BMP, TIFF) of equal height, left to right.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Arguments of `gradstep experiment runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Runs as LABEL=PATH (split at the last `=`): a `restore` output folder or its
    /// `convergence.json`.
    #[arg(required = true, value_name = "LABEL=PATH")]
    runs: Vec<String>,
}

/// Runs an experiment tool.
pub fn run(e: Experiment) -> anyhow::Result<()> {
    match e {
        Experiment::Lines(a) => lines(a),
        Experiment::Montage(a) => montage(a),
        Experiment::Runs(a) => runs(a),
    }
}

/// `LABEL=PATH` split at the last `=` (labels often hold one: `keep=0.5`; paths rarely do).
fn labelled(arg: &str) -> anyhow::Result<(String, PathBuf)> {
    match arg.rsplit_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => {
            Ok((label.to_string(), PathBuf::from(path)))
        }
        _ => bail!("`{arg}`: expected LABEL=PATH"),
    }
}

/// A table: one map from column to cell text per row.
type Rows = Vec<BTreeMap<String, String>>;

/// The rows of a CSV file (with a header) or of a JSON file's array of objects.
fn read_rows(path: &Path, rows_key: Option<&str>) -> anyhow::Result<Rows> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if !is_json {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader
            .headers()
            .with_context(|| format!("{}: not a CSV table", path.display()))?
            .clone();
        return reader
            .records()
            .map(|r| {
                let r = r.with_context(|| format!("{}: bad CSV row", path.display()))?;
                Ok(header
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect())
            })
            .collect();
    }
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Value::Object(top) = value else {
        bail!("{}: expected a JSON object", path.display());
    };
    let arrays: Vec<&String> = top
        .iter()
        .filter(|(_, v)| matches!(v, Value::Array(a) if a.first().is_some_and(Value::is_object)))
        .map(|(k, _)| k)
        .collect();
    let key = match (rows_key, arrays.as_slice()) {
        (Some(k), _) => k.to_string(),
        (None, [k]) => (*k).clone(),
        (None, []) => bail!("{}: no array of row objects", path.display()),
        (None, many) => bail!(
            "{}: several arrays of rows ({}): choose one with --rows",
            path.display(),
            many.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let Some(Value::Array(items)) = top.get(&key) else {
        bail!("{}: no array `{key}`", path.display());
    };
    Ok(items
        .iter()
        .filter_map(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let cell = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), cell)
                })
                .collect()
        })
        .collect())
}

/// How a panel's `y` is transformed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YTransform {
    None,
    Log10,
    /// `log10(y − min y)` over the line.
    GapToMinLog10,
}

fn y_spec(spec: &str) -> anyhow::Result<(&str, YTransform)> {
    Ok(match spec.split_once(':') {
        None => (spec, YTransform::None),
        Some((c, "log")) => (c, YTransform::Log10),
        Some((c, "gap-log")) => (c, YTransform::GapToMinLog10),
        Some((_, t)) => bail!("--y {spec}: unknown transform `{t}` (expected log or gap-log)"),
    })
}

fn number(cell: Option<&String>) -> Option<f64> {
    cell.and_then(|c| c.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Whether a cell equals a filter value (as numbers when both are, else as text).
fn cell_matches(cell: Option<&String>, want: &str) -> bool {
    match (number(cell), want.trim().parse::<f64>()) {
        (Some(a), Ok(b)) => a == b,
        _ => cell.is_some_and(|c| c == want),
    }
}

/// The points of one line: `y` averaged over rows with equal `x`, sorted by `x`, transformed;
/// returns the points and how many rows were left out.
fn line_points(
    rows: &[&BTreeMap<String, String>],
    x: &str,
    log_x: bool,
    y: &str,
    t: YTransform,
) -> (Vec<(f64, f64)>, usize) {
    let mut by_x: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    let mut left_out = 0;
    for r in rows {
        let xv = number(r.get(x)).filter(|v| !log_x || *v > 0.0);
        match (xv, number(r.get(y))) {
            (Some(xv), Some(yv)) => {
                let xv = if log_x { xv.log10() } else { xv };
                by_x.entry(xv.to_bits())
                    .or_insert((xv, Vec::new()))
                    .1
                    .push(yv);
            }
            _ => left_out += 1,
        }
    }
    let mut points: Vec<(f64, f64)> = by_x
        .into_values()
        .map(|(xv, ys)| (xv, mean(ys).unwrap_or(f64::NAN)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let before = points.len();
    let points: Vec<(f64, f64)> = points
        .into_iter()
        .filter_map(|(xv, yv)| {
            let yv = match t {
                YTransform::None => Some(yv),
                YTransform::Log10 => (yv > 0.0).then(|| yv.log10()),
                YTransform::GapToMinLog10 => {
                    let gap = yv - min;
                    (gap > 0.0).then(|| gap.log10())
                }
            };
            yv.map(|yv| (xv, yv))
        })
        .collect();
    let dropped = before - points.len();
    (points, left_out + dropped)
}

fn lines(a: LinesArgs) -> anyhow::Result<()> {
    if !a.titles.is_empty() && a.titles.len() != a.ys.len() {
        bail!(
            "{} --title for {} --y: give one title per panel or none",
            a.titles.len(),
            a.ys.len()
        );
    }
    let filters: Vec<(String, String)> = a
        .filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((c, v)) if !c.is_empty() => Ok((c.to_string(), v.to_string())),
            _ => bail!("--filter `{f}`: expected COLUMN=VALUE"),
        })
        .collect::<anyhow::Result<_>>()?;
    let specs: Vec<(&str, YTransform)> =
        a.ys.iter()
            .map(|s| y_spec(s))
            .collect::<anyhow::Result<_>>()?;
    // (label, rows) per line, inputs in order, groups in value order.
    let mut lines: Vec<(String, Rows)> = Vec::new();
    for input in &a.inputs {
        let (label, path) = labelled(input)?;
        let rows: Rows = read_rows(&path, a.rows.as_deref())?
            .into_iter()
            .filter(|r| filters.iter().all(|(c, v)| cell_matches(r.get(c), v)))
            .collect();
        if rows.is_empty() {
            bail!("{}: no rows (after the filters)", path.display());
        }
        for col in std::iter::once(a.x.as_str()).chain(specs.iter().map(|s| s.0)) {
            if !rows[0].contains_key(col) {
                let known: Vec<&str> = rows[0].keys().map(String::as_str).collect();
                bail!(
                    "{}: no column `{col}` (it has: {})",
                    path.display(),
                    known.join(", ")
                );
            }
        }
        match &a.group {
            None => lines.push((label, rows)),
            Some(g) => {
                let mut groups: BTreeMap<String, Rows> = BTreeMap::new();
                for r in rows {
                    let key = r.get(g).cloned().unwrap_or_default();
                    groups.entry(key).or_default().push(r);
                }
                for (value, rows) in groups {
                    lines.push((format!("{label} {g}={value}"), rows));
                }
            }
        }
    }
    let x_label = if a.log_x {
        format!("log10 {}", a.x)
    } else {
        a.x.clone()
    };
    let mut charts = Vec::new();
    let mut notes = Vec::new();
    for (i, (col, t)) in specs.iter().enumerate() {
        let y_label = match t {
            YTransform::None => col.to_string(),
            YTransform::Log10 => format!("log10 {col}"),
            YTransform::GapToMinLog10 => format!("log10({col} − min {col})"),
        };
        let title = a.titles.get(i).cloned().unwrap_or_else(|| y_label.clone());
        let mut series = Vec::new();
        for (label, rows) in &lines {
            let refs: Vec<&BTreeMap<String, String>> = rows.iter().collect();
            let (points, left_out) = line_points(&refs, &a.x, a.log_x, col, *t);
            notes.push(describe_line(
                &title,
                series.len(),
                label,
                &points,
                left_out,
            ));
            series.push(Series {
                label: label.clone(),
                points,
            });
        }
        charts.push(Chart::new(&title, &x_label, &y_label, series));
    }
    if charts
        .iter()
        .all(|c| c.series.iter().all(|s| s.points.is_empty()))
    {
        bail!(
            "nothing to draw: no row has both {} and {}",
            a.x,
            a.ys.join(" / ")
        );
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::common::create_dir(dir)?;
    }
    draw(&a.out, &charts)?;
    println!("`{}` (x: {x_label}):", a.out.display());
    for n in notes {
        println!("{n}");
    }
    if a.points {
        for c in &charts {
            println!("\n{}", points_table(c, &a.x, a.log_x));
        }
    }
    Ok(())
}

/// The values of a panel as Markdown: one row per `x` (shown unlogged), one column per line
/// (`–` where a line has no point at that `x`).
fn points_table(chart: &Chart, x_name: &str, log_x: bool) -> String {
    let mut xs: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let mut out = format!("**{}**\n\n| {x_name} |", chart.title);
    for s in &chart.series {
        out += &format!(" {} |", s.label);
    }
    out += &format!("\n|---|{}", "---|".repeat(chart.series.len()));
    for x in xs {
        let shown = if log_x { 10f64.powf(x) } else { x };
        out += &format!("\n| {shown:.4} |");
        for s in &chart.series {
            match s.points.iter().find(|p| p.0 == x) {
                Some(p) => out += &format!(" {:.4} |", p.1),
                None => out += " – |",
            }
        }
    }
    out
}

/// One Markdown line describing a drawn line: colour, label, points, first / last / extreme y.
fn describe_line(
    panel: &str,
    index: usize,
    label: &str,
    points: &[(f64, f64)],
    left_out: usize,
) -> String {
    let (r, g, b) = Palette99::pick(index).rgb();
    let colour = format!("#{r:02x}{g:02x}{b:02x}");
    let left = if left_out > 0 {
        format!(", {left_out} row(s) left out")
    } else {
        String::new()
    };
    match (points.first(), points.last()) {
        (Some(f), Some(l)) => {
            let lo = points
                .iter()
                .fold(*f, |m, p| if p.1 < m.1 { *p } else { m });
            let hi = points
                .iter()
                .fold(*f, |m, p| if p.1 > m.1 { *p } else { m });
            format!(
                "- {panel}, {colour} {label}: {} points, y {:.4} at x = {:.4} … {:.4} at x = {:.4} \
                 (min {:.4} at x = {:.4}, max {:.4} at x = {:.4}){left}",
                points.len(),
                f.1,
                f.0,
                l.1,
                l.0,
                lo.1,
                lo.0,
                hi.1,
                hi.0
            )
        }
        _ => format!("- {panel}, {colour} {label}: no points{left}"),
    }
}

fn montage(a: MontageArgs) -> anyhow::Result<()> {
    let mut tiles = Vec::new();
    let mut height = None;
    for p in &a.images {
        let img = crate::common::centre_crop(&load_image(p, 3, Device::Cpu)?, a.crop)?;
        let h = img.size()[2];
        match height {
            None => height = Some(h),
            Some(h0) if h0 != h => bail!(
                "{}: {h} pixels high, the first image is {h0}: montage needs equal heights",
                p.display()
            ),
            _ => {}
        }
        let img = if a.zoom > 1 {
            let s = img.size();
            img.f_upsample_nearest2d([s[2] * a.zoom, s[3] * a.zoom], None, None)?
        } else {
            img
        };
        if !tiles.is_empty() {
            let s = img.size();
            tiles.push(Tensor::f_ones(
                [1, 3, s[2], 4 * a.zoom],
                (img.kind(), Device::Cpu),
            )?);
        }
        tiles.push(img);
    }
    let row = Tensor::f_cat(&tiles, 3)?;
    save_image(&a.out, &row)?;
    let s = row.size();
    println!("wrote {} ({}×{})", a.out.display(), s[3], s[2]);
    Ok(())
}

fn runs(a: RunsArgs) -> anyhow::Result<()> {
    println!(
        "| run | algorithm | iterations | stop | increases of F / Ψ (tested) | max rel. increase | backtracks | PSNR returned | PSNR x_K | warnings |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for arg in &a.runs {
        let (label, path) = labelled(arg)?;
        let file = if path.is_dir() {
            path.join("convergence.json")
        } else {
            path
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", file.display()))?;
        let need = |p: &str| {
            v.pointer(p).with_context(|| {
                format!(
                    "{}: no `{p}` (not a restore convergence.json?)",
                    file.display()
                )
            })
        };
        let f = |p: &str| -> anyhow::Result<String> {
            Ok(match need(p)? {
                Value::Number(n) => n.as_f64().map_or(String::new(), |x| format!("{x:.2}")),
                Value::Null => "–".into(),
                other => other.to_string(),
            })
        };
        let text_of = |p: &str| -> anyhow::Result<String> {
            Ok(need(p)?.as_str().unwrap_or_default().to_string())
        };
        let backtracks: u64 = need("/records")?
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["backtracks"].as_u64()).sum())
            .unwrap_or(0);
        let quantity = text_of("/monotonicity/quantity")?;
        let increases = format!(
            "{} {} ({})",
            need("/monotonicity/increases")?,
            if quantity == "lyapunov" { "Ψ" } else { "F" },
            need("/monotonicity/tested")?
        );
        let max_rise = need("/monotonicity/max_relative_increase")?
            .as_f64()
            .map_or("–".into(), |x| format!("{x:.1e}"));
        let warnings = need("/warnings")?.as_array().map_or(0, Vec::len);
        println!(
            "| {label} | {} | {} | {} | {increases} | {max_rise} | {backtracks} | {} | {} | {warnings} |",
            text_of("/algorithm")?,
            need("/iterations")?,
            text_of("/stop_label")?,
            f("/psnr/returned")?,
            f("/psnr/last_iterate")?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[(&str, &str, &str)]) -> Rows {
        cells
            .iter()
            .map(|(x, y, k)| {
                [("x", x), ("y", y), ("k", k)]
                    .into_iter()
                    .map(|(c, v)| (c.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn lines_average_over_equal_x_and_leave_out_missing_values() {
        let r = rows(&[
            ("2", "10", "a"),
            ("1", "4", "a"),
            ("2", "20", "b"),
            ("3", "", "a"),
        ]);
        let refs: Vec<_> = r.iter().collect();
        let (p, left) = line_points(&refs, "x", false, "y", YTransform::None);
        assert_eq!(p, vec![(1.0, 4.0), (2.0, 15.0)]);
        assert_eq!(left, 1);
        let (p, _) = line_points(&refs, "x", true, "y", YTransform::Log10);
        assert!((p[1].0 - 2f64.log10()).abs() < 1e-12 && (p[1].1 - 15f64.log10()).abs() < 1e-12);
    }

    #[test]
    fn gap_to_min_is_the_decrease_still_to_come() {
        // F = 9, 5, 3, 3 at iterations 0..3: gaps 6, 2, 0, 0; the zeros are not drawn.
        let r = rows(&[
            ("0", "9", ""),
            ("1", "5", ""),
            ("2", "3", ""),
            ("3", "3", ""),
        ]);
        let refs: Vec<_> = r.iter().collect();
        let (p, left) = line_points(&refs, "x", false, "y", YTransform::GapToMinLog10);
        assert_eq!(p.len(), 2);
        assert!((p[0].1 - 6f64.log10()).abs() < 1e-12 && (p[1].1 - 2f64.log10()).abs() < 1e-12);
        assert_eq!(left, 2);
        // A rise after the minimum stays visible: 9, 3, 4 → 6, (0), 1.
        let r = rows(&[("0", "9", ""), ("1", "3", ""), ("2", "4", "")]);
        let refs: Vec<_> = r.iter().collect();
        let (p, _) = line_points(&refs, "x", false, "y", YTransform::GapToMinLog10);
        assert_eq!(p, vec![(0.0, 6f64.log10()), (2.0, 0.0)]);
    }

    #[test]
    fn filters_compare_numbers_as_numbers() {
        assert!(cell_matches(Some(&"7.650".to_string()), "7.65"));
        assert!(!cell_matches(Some(&"7.6".to_string()), "7.65"));
        assert!(cell_matches(Some(&"levin:0".to_string()), "levin:0"));
        assert!(!cell_matches(None, "x"));
        assert!(y_spec("psnr:log2").is_err());
        assert!(labelled("no-label").is_err() && labelled("=x").is_err());
        assert_eq!(
            labelled("p=0.5=r/c.json").unwrap(),
            ("p=0.5".into(), PathBuf::from("r/c.json"))
        );
    }
}
