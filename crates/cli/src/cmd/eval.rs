//! `gradstep eval`: the papers' tables — PSNR and SSIM per kernel and noise level over a
//! folder of images, with iterations and seconds per image — as Markdown on stdout, and
//! `results.csv`, `results.json` and `report.html` (tables and thumbnails) under `runs/`.
//! Problems of equal size are restored in batches (`restore_all_with_progress`; a progress
//! bar with ETA on stderr). A restoration's seconds are its share of its batch's time.
//!
//! Two sources of observations: synthesised here from `--images` (clean images, every kernel,
//! scale and noise level of the flags), or given (`--observed-dir`, degraded elsewhere, e.g.
//! the official GS-PnP observations) and paired with `--clean-dir` by file stem, with one
//! kernel, scale and noise level as they were made.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_data::noise::{add_noise, seeded};
use gradstep_data::reduce::mean;
use gradstep_data::{load_image, metrics};
use gradstep_model::{Graph, Sigma};
use gradstep_pnp::report::{ImageRow, Picture, Report, Table, REPORT_FILE};
use gradstep_pnp::{
    restore_all_with_progress, DegradationSpec, KernelSpec, Observed, RestorationProblem,
    StopReason, Task,
};
use serde::Serialize;
use tch::Tensor;

use super::restore::{algorithm_config, task_for, Common};
use crate::progress::Progress;
use crate::{checks, common};

/// Arguments of `gradstep eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// SYNTHETIC MODE: folder of clean images (PNG, JPEG, BMP, TIFF), in name order, degraded
    /// here.
    #[arg(
        long,
        required_unless_present = "observed_dir",
        conflicts_with = "observed_dir"
    )]
    images: Option<PathBuf>,
    /// GIVEN OBSERVATIONS: folder of observations (images or float .npy [H, W(, C)] as
    /// `restore --clean` writes observed.npy), each scored against the file of the same stem
    /// in --clean-dir. Needs one --noise level (and for deblur / sr one kernel in --kernels,
    /// for sr one scale in --scales), the one the observations were made with.
    #[arg(long, requires = "clean_dir")]
    observed_dir: Option<PathBuf>,
    /// With --observed-dir: the clean references, paired by file stem.
    #[arg(long, requires = "observed_dir")]
    clean_dir: Option<PathBuf>,
    /// With --observed-dir and --task inpaint: masks paired by file stem (non-zero = known).
    #[arg(long, requires = "observed_dir", conflicts_with = "mask")]
    mask_dir: Option<PathBuf>,
    /// With --observed-dir and --task inpaint: one mask for every observation.
    #[arg(long, requires = "observed_dir")]
    mask: Option<PathBuf>,
    /// Noise levels ν (0–255), comma-separated (default 2.55,7.65,12.75; denoise:
    /// 5,15,25,50).
    #[arg(long, value_delimiter = ',')]
    noise: Option<Vec<f64>>,
    /// Kernels, e.g. levin:0-7,uniform,gaussian (deblur default) or k12:0-7 (sr default).
    #[arg(long)]
    kernels: Option<String>,
    /// Super-resolution factors, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [2, 3])]
    scales: Vec<i64>,
    /// Use at most this many images.
    #[arg(long)]
    max_images: Option<usize>,
    /// Problems restored together (default 8 on a GPU, 2 on the CPU).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Output folder (default runs/pnp-eval-<task>-<algorithm>).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    image: String,
    kernel: String,
    scale: i64,
    noise: f64,
    /// The variable the PSNR / SSIM are of (GS-PnP: `z` as the official code, or `x`).
    returned: &'static str,
    /// `None` (JSON `null`, an empty CSV cell) for a diverged restoration.
    psnr: Option<f64>,
    /// `None` for a diverged restoration, and (`n/a` in the CSV) for images under SSIM's window.
    ssim: Option<f64>,
    /// PSNR / SSIM of the last iterate `x_K` (`None` when diverged).
    psnr_last_iterate: Option<f64>,
    ssim_last_iterate: Option<f64>,
    iterations: usize,
    /// This restoration's share of its batch's wall time (the batch's time over its size).
    seconds: f64,
    stop: StopReason,
}

impl Row {
    /// Diverged restorations are shown as such and left out of the means.
    fn diverged(&self) -> bool {
        // SSIM alone may be undefined (images under its window): that is not divergence.
        self.stop == StopReason::Diverged || self.psnr.is_none()
    }
}

/// The files of `dir` by stem; two files of one stem (`a.png`, `a.npy`) are refused.
fn by_stem(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in gradstep_data::dataset::list_files(dir, extensions)? {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((_, first)) = out.iter().find(|(s, _)| *s == stem) {
            bail!(
                "{}: two files of stem `{stem}` ({} and {}); which one is meant?",
                dir.display(),
                first.display(),
                p.display()
            );
        }
        out.push((stem, p));
    }
    Ok(out)
}

/// One given observation with its clean reference and (inpainting) its mask.
struct Pair {
    stem: String,
    observed: PathBuf,
    clean: PathBuf,
    mask: Option<PathBuf>,
}

/// `--observed-dir` paired with `--clean-dir` (and `--mask-dir`) by file stem: every
/// observation needs a reference (and a mask), and every reference an observation; each
/// missing partner is named.
fn pairs(a: &Args, observed_dir: &Path) -> anyhow::Result<Vec<Pair>> {
    let clean_dir = a
        .clean_dir
        .as_deref()
        .context("--observed-dir needs --clean-dir")?;
    let mut with_npy = gradstep_data::dataset::IMAGE_EXTENSIONS.to_vec();
    with_npy.push("npy");
    let mut observed = by_stem(observed_dir, &with_npy)?;
    observed.truncate(a.max_images.unwrap_or(usize::MAX));
    if observed.is_empty() {
        bail!(
            "{}: no observations (images or .npy)",
            observed_dir.display()
        );
    }
    let clean = by_stem(clean_dir, &gradstep_data::dataset::IMAGE_EXTENSIONS)?;
    let masks = match &a.mask_dir {
        Some(d) => Some(by_stem(d, &gradstep_data::dataset::IMAGE_EXTENSIONS)?),
        None => None,
    };
    let partner = |list: &[(String, PathBuf)], stem: &str| {
        list.iter().find(|(s, _)| s == stem).map(|(_, p)| p.clone())
    };
    let mut out = Vec::new();
    for (stem, path) in &observed {
        let clean = partner(&clean, stem).with_context(|| {
            format!(
                "{}: no clean partner `{stem}.*` in {}",
                path.display(),
                clean_dir.display()
            )
        })?;
        let mask = match (&masks, &a.mask) {
            (Some(m), _) => Some(partner(m, stem).with_context(|| {
                format!(
                    "{}: no mask `{stem}.*` in {}",
                    path.display(),
                    a.mask_dir.as_deref().unwrap_or(Path::new("")).display()
                )
            })?),
            (None, m) => m.clone(),
        };
        out.push(Pair {
            stem: stem.clone(),
            observed: path.clone(),
            clean,
            mask,
        });
    }
    if a.max_images.is_none() {
        if let Some((stem, path)) = clean.iter().find(|(s, _)| partner(&observed, s).is_none()) {
            bail!(
                "{}: no observation `{stem}.*` in {}",
                path.display(),
                observed_dir.display()
            );
        }
    }
    Ok(out)
}

/// Checks the flags of `--observed-dir`: one noise level, one kernel and one scale, as the
/// observations were made; a mask for inpainting.
fn check_observed_flags(a: &Args, noises: &[f64], kernels: usize) -> anyhow::Result<()> {
    let task = a.common.task;
    if noises.len() != 1 || a.noise.is_none() {
        bail!(
            "--observed-dir needs one --noise ν, the level the observations were made with (0–255)"
        );
    }
    if task.blurs() && (kernels != 1 || a.kernels.is_none()) {
        bail!("--observed-dir with --task {task} needs one kernel in --kernels, the observations'");
    }
    if task == Task::Sr && a.scales.len() != 1 {
        bail!("--observed-dir with --task sr needs one --scales value, the observations'");
    }
    match (task, a.mask.is_some() || a.mask_dir.is_some()) {
        (Task::Inpaint, false) => {
            bail!("--observed-dir with --task inpaint needs --mask-dir (paired by stem) or --mask")
        }
        (Task::Inpaint, true) | (_, false) => Ok(()),
        (_, true) => bail!("--mask and --mask-dir apply to --task inpaint only"),
    }
}

/// Runs the command.
///
/// Everything the arguments can get wrong (noise levels, kernels, scales, algorithm
/// settings) is checked before the denoiser and the images are loaded and before the output
/// folder exists. The tables are rewritten after each noise level, so an interrupted or
/// failed evaluation keeps the levels it finished.
pub fn run(a: Args) -> anyhow::Result<()> {
    let c = &a.common;
    let noises = match &a.noise {
        Some(n) => n.clone(),
        None if c.task == Task::Denoise => vec![5.0, 15.0, 25.0, 50.0],
        None => vec![2.55, 7.65, 12.75],
    };
    for &n in &noises {
        checks::level_255("--noise", n, true)?;
    }
    checks::common_levels(c)?;
    let kernels: Vec<Option<KernelSpec>> = match c.task {
        Task::Deblur => {
            KernelSpec::parse_list(a.kernels.as_deref().unwrap_or("levin:0-7,uniform,gaussian"))?
                .into_iter()
                .map(Some)
                .collect()
        }
        Task::Sr => KernelSpec::parse_list(a.kernels.as_deref().unwrap_or("k12:0-7"))?
            .into_iter()
            .map(Some)
            .collect(),
        _ => vec![None],
    };
    let scales = if c.task == Task::Sr {
        a.scales.clone()
    } else {
        vec![1]
    };
    let pairs = match &a.observed_dir {
        Some(dir) => {
            check_observed_flags(&a, &noises, kernels.len())?;
            Some(pairs(&a, dir)?)
        }
        None => None,
    };
    // Each (kernel, scale) task with its algorithm config per noise level.
    let mut tasks = Vec::new();
    for k in &kernels {
        for &s in &scales {
            let task = task_for(c.task, k.as_ref(), s, c)?;
            let label = k
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_else(|| "mask".into());
            let configs = noises
                .iter()
                .map(|&n| algorithm_config(c, c.task, k.as_ref(), n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            tasks.push((label, s, task, configs));
        }
    }

    let device = common::parse_device(c.device.as_deref())?;
    common::autotune_convolutions(device);
    let (ckpt, den) = common::load_denoiser(&c.checkpoint, device)?;
    let warnings = match tasks.first() {
        Some((_, _, _, configs)) if c.task != Task::Denoise => configs
            .first()
            .map(|cfg| super::restore::denoiser_warnings(cfg, &ckpt, &c.checkpoint))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let den = den.with_options(&c.run.inference(device))?;
    let channels = ckpt.model.architecture.channels;
    // The clean images (synthetic mode) or references (given observations), by stem, and
    // the given observations with their masks.
    let (images, observations) = match (&pairs, &a.images) {
        (Some(pairs), _) => {
            let mut images = Vec::with_capacity(pairs.len());
            let mut observations = Vec::with_capacity(pairs.len());
            for p in pairs {
                let y = gradstep_pnp::load_observation(&p.observed, channels, device)?;
                let mask = match &p.mask {
                    Some(m) => Some(gradstep_pnp::load_mask(
                        m,
                        y.size()[2],
                        y.size()[3],
                        device,
                    )?),
                    None => None,
                };
                images.push((p.stem.clone(), load_image(&p.clean, channels, device)?));
                observations.push((y, mask));
            }
            (images, Some(observations))
        }
        (None, Some(dir)) => {
            let mut files = gradstep_data::dataset::list_images(dir)?;
            files.truncate(a.max_images.unwrap_or(usize::MAX));
            let images: Vec<(String, Tensor)> = files
                .iter()
                .map(|p| {
                    let name = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Ok((name, load_image(p, channels, device)?))
                })
                .collect::<anyhow::Result<_>>()?;
            (images, None)
        }
        (None, None) => bail!("give --images DIR or --observed-dir D --clean-dir C"),
    };
    let algo = if c.task == Task::Denoise {
        "denoiser"
    } else {
        c.algorithm.name()
    };
    let task_name = c.task.name();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/pnp-eval-{task_name}-{algo}")));
    common::create_dir(&out)?;
    if !warnings.is_empty() {
        let path = out.join("warnings.txt");
        gradstep_model::write_atomic(&path, (warnings.join("\n") + "\n").as_bytes())?;
    }
    if c.task == Task::Denoise {
        let given: Option<Vec<Tensor>> = observations
            .as_ref()
            .map(|o| o.iter().map(|(y, _)| y.shallow_clone()).collect());
        let report = EvalReport::new(&format!("eval: denoise with {algo}"), &a, &warnings, 1);
        return denoise_table(
            &den,
            &images,
            given.as_deref(),
            &noises,
            c.seed,
            &out,
            report.report,
        );
    }
    let max_batch = a.max_batch.unwrap_or(if device.is_cuda() { 8 } else { 2 });
    let title = format!("eval: {task_name} with {algo}");
    let mut report = EvalReport::new(&title, &a, &warnings, tasks.len() * noises.len());
    let total = noises.len() * tasks.len() * images.len();
    let mut progress = Progress::new(total as u64, "restorations");
    let mut rows = Vec::new();
    for (level, &noise) in noises.iter().enumerate() {
        let mut problems = Vec::new();
        let mut configs = Vec::new();
        let mut labels = Vec::new();
        for (kernel, scale, task, level_configs) in &tasks {
            for (index, (name, img)) in images.iter().enumerate() {
                let size = img.size();
                let problem = match &observations {
                    Some(given) => given_problem(&given[index], img, task, noise),
                    None => {
                        if level == 0 {
                            if let Some(note) = gradstep_pnp::sr_crop_note(task, size[2], size[3]) {
                                progress.println(&format!("note: {name}: {note}"));
                            }
                        }
                        RestorationProblem::synthesize(img, task, noise, c.seed)
                    }
                };
                problems.push(problem.with_context(|| name.clone())?);
                configs.push(&level_configs[level]);
                labels.push((name.clone(), kernel.clone(), *scale, index));
            }
        }
        let configs_used = configs.clone();
        let items: Vec<_> = problems.iter().zip(configs).collect();
        let results =
            restore_all_with_progress(&den, &items, max_batch, &mut |n| progress.advance(n))?;
        for (((p, r), (image, kernel, scale, index)), cfg) in
            problems.iter().zip(&results).zip(labels).zip(&configs_used)
        {
            let truth = p.ground_truth.as_ref().context("no ground truth")?;
            // A diverged restoration is not scored (its image is the last finite iterate).
            let score = |image: &Tensor| -> anyhow::Result<(Option<f64>, Option<f64>)> {
                if r.stop == StopReason::Diverged {
                    return Ok((None, None));
                }
                let x = image.f_clamp(0.0, 1.0)?;
                let finite = |v: f64| v.is_finite().then_some(v);
                Ok((
                    finite(metrics::psnr(&x, truth)?[0]),
                    common::ssim_if_defined(&x, truth)?.and_then(finite),
                ))
            };
            let (psnr, ssim) = score(&r.image)?;
            let (psnr_last_iterate, ssim_last_iterate) = score(&r.last_iterate)?;
            let row = Row {
                image,
                kernel,
                scale,
                noise,
                returned: cfg.returned_variable(),
                psnr,
                ssim,
                psnr_last_iterate,
                ssim_last_iterate,
                iterations: r.iterations,
                seconds: r.seconds,
                stop: r.stop,
            };
            report.add_restoration(index, &row, [&p.observation, &r.image, truth])?;
            rows.push(row);
        }
        progress.println(&format!("ν = {noise}: {} restorations done", results.len()));
        write_outputs(&out, &rows)?;
        report.write(&out, &rows, &noises)?;
        progress.println(&format!(
            "wrote {}/results.csv, results.json and {REPORT_FILE}",
            out.display()
        ));
    }
    progress.finish();
    print_table(&rows, &noises);
    Ok(())
}

/// The problem of a given observation `(y, mask)` scored against `clean`, with the operator of
/// `task` (its kernel and scale).
fn given_problem(
    (y, mask): &(Tensor, Option<Tensor>),
    clean: &Tensor,
    task: &DegradationSpec,
    noise: f64,
) -> gradstep_pnp::Result<RestorationProblem> {
    let (kernel, scale) = match task {
        DegradationSpec::Deblur(k) => (Some(k), 1),
        DegradationSpec::SuperResolution { kernel, scale } => (Some(kernel), *scale),
        _ => (None, 1),
    };
    let stated = Observed {
        task: task.task(),
        kernel,
        scale,
        mask: mask.as_ref(),
    };
    RestorationProblem::from_observation(
        y.shallow_clone(),
        &stated,
        Some(clean.shallow_clone()),
        noise,
    )
}

/// Restorations shown as thumbnails in `report.html`, at most (spread over the kernel,
/// scale and noise combinations: the first images of each). About 0.3 MB of page per row
/// (three 192-pixel PNGs in base64).
const REPORT_ROWS: usize = 24;

/// Longer side of the thumbnails in `report.html`, in pixels.
const THUMBNAIL_SIDE: u32 = 192;

/// `report.html` of an evaluation, rewritten after each noise level with the tables.
struct EvalReport {
    report: Report,
    /// Images shown per (kernel, scale, ν): `REPORT_ROWS` shared by the combinations.
    images_per_group: usize,
}

impl EvalReport {
    fn new(title: &str, a: &Args, warnings: &[String], groups: usize) -> Self {
        let mut report = Report::new(title);
        report.notes.push(format!(
            "checkpoint {}, images {}, algorithm {}, seed {}",
            a.common.checkpoint.display(),
            match (&a.images, &a.observed_dir, &a.clean_dir) {
                (Some(dir), ..) => dir.display().to_string(),
                (None, Some(obs), Some(clean)) =>
                    format!("{} (observed) / {} (clean)", obs.display(), clean.display()),
                _ => String::new(),
            },
            a.common.algorithm,
            a.common.seed
        ));
        report
            .notes
            .extend(warnings.iter().map(|w| format!("warning: {w}")));
        EvalReport {
            report,
            images_per_group: (REPORT_ROWS / groups.max(1)).max(1),
        }
    }

    /// Adds the observed | restored | reference thumbnails of the `index`-th image of its
    /// group when it is among the first shown.
    fn add_restoration(
        &mut self,
        index: usize,
        row: &Row,
        [observed, restored, reference]: [&Tensor; 3],
    ) -> anyhow::Result<()> {
        if index >= self.images_per_group {
            return Ok(());
        }
        let scores = if row.diverged() {
            "diverged (not scored)".to_string()
        } else {
            format!(
                "PSNR {:.2} dB, SSIM {}, {} iterations",
                row.psnr.unwrap_or(f64::NAN),
                common::ssim_text(row.ssim),
                row.iterations
            )
        };
        self.report.images.push(ImageRow {
            title: format!(
                "{} ({}, ×{}, ν={})",
                row.image, row.kernel, row.scale, row.noise
            ),
            scores,
            pictures: vec![
                Picture::thumbnail("observed", observed, THUMBNAIL_SIDE)?,
                Picture::thumbnail(
                    &format!("restored ({})", row.returned),
                    restored,
                    THUMBNAIL_SIDE,
                )?,
                Picture::thumbnail("reference", reference, THUMBNAIL_SIDE)?,
            ],
        });
        Ok(())
    }

    /// Writes `report.html` with the tables of `rows`.
    fn write(&mut self, out: &Path, rows: &[Row], noises: &[f64]) -> anyhow::Result<()> {
        let (constants, means) = means_table(rows, noises);
        let mut report = self.report.clone();
        report.notes.extend(constants);
        report.notes.extend(diverged_line(rows));
        report.tables.push(Table {
            caption: "Means".into(),
            ..means
        });
        report.tables.push(Table {
            caption: format!("All {} restorations", rows.len()),
            header: CSV_HEADER.iter().map(|h| h.to_string()).collect(),
            rows: rows.iter().map(csv_cells).collect(),
        });
        report.write(&out.join(REPORT_FILE))?;
        Ok(())
    }
}

/// The mean of `v`, NaN when empty (a table cell).
fn mean_or_nan(v: impl Iterator<Item = f64>) -> f64 {
    mean(v).unwrap_or(f64::NAN)
}

/// The table of means: one row per (kernel, scale) and a last row `mean`, with
/// `PSNR | SSIM | it | s/image` per noise level. Kernel and scale columns that are the same in
/// every row (scale for deblurring, kernel for one kernel) are left out and returned as lines
/// (`kernel: uniform`) to print above the table.
fn means_table(rows: &[Row], noises: &[f64]) -> (Vec<String>, Table) {
    let mut keys: Vec<(String, i64)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.kernel.clone(), r.scale)) {
            keys.push((r.kernel.clone(), r.scale));
        }
    }
    let distinct = |f: &dyn Fn(&(String, i64)) -> String| {
        let mut v: Vec<String> = keys.iter().map(f).collect();
        v.dedup();
        v
    };
    let kernels = distinct(&|k| k.0.clone());
    let scales = distinct(&|k| k.1.to_string());
    let (show_kernel, show_scale) = (kernels.len() > 1, scales.len() > 1);
    let mut constants = Vec::new();
    // No kernel ("mask": inpainting, denoising) and ×1 (no super-resolution) are not parameters.
    if !show_kernel && kernels.first().is_some_and(|k| k != "mask") {
        constants.push(format!("kernel: {}", kernels[0]));
    }
    if !show_scale && scales.first().is_some_and(|s| s != "1") {
        constants.push(format!("scale: ×{}", scales[0]));
    }
    let mut header: Vec<String> = Vec::new();
    if show_kernel {
        header.push("kernel".into());
    }
    if show_scale {
        header.push("scale".into());
    }
    if header.is_empty() {
        header.push(String::new());
    }
    for n in noises {
        header.extend([
            format!("ν={n} PSNR"),
            "SSIM".into(),
            "it".into(),
            "s/image".into(),
        ]);
    }
    let cells = |sel: &dyn Fn(&Row) -> bool| -> Vec<String> {
        noises
            .iter()
            .flat_map(|&n| {
                let rs: Vec<&Row> = rows.iter().filter(|r| sel(r) && r.noise == n).collect();
                mean_columns(&rs)
            })
            .collect()
    };
    let mut table_rows = Vec::new();
    if show_kernel || show_scale {
        for (k, s) in &keys {
            let mut row = Vec::new();
            if show_kernel {
                row.push(k.clone());
            }
            if show_scale {
                row.push(s.to_string());
            }
            row.extend(cells(&|r: &Row| &r.kernel == k && r.scale == *s));
            table_rows.push(row);
        }
    }
    let mut mean_row = vec!["mean".to_string()];
    mean_row.resize(header.len() - 4 * noises.len(), String::new());
    mean_row.extend(cells(&|_: &Row| true));
    table_rows.push(mean_row);
    (
        constants,
        Table {
            caption: String::new(),
            header,
            rows: table_rows,
        },
    )
}

/// `2 of 8 restorations diverged and are left out of the means: …`, when some did.
fn diverged_line(rows: &[Row]) -> Option<String> {
    let diverged: Vec<&Row> = rows.iter().filter(|r| r.diverged()).collect();
    if diverged.is_empty() {
        return None;
    }
    let which: Vec<String> = diverged
        .iter()
        .map(|r| format!("{} ({}, ×{}, ν={})", r.image, r.kernel, r.scale, r.noise))
        .collect();
    Some(format!(
        "{} of {} restorations diverged and are left out of the means: {}",
        diverged.len(),
        rows.len(),
        which.join(", ")
    ))
}

fn print_table(rows: &[Row], noises: &[f64]) {
    let (constants, table) = means_table(rows, noises);
    for line in constants {
        println!("{line}");
    }
    println!("| {} |", table.header.join(" | "));
    println!("|{}", "---|".repeat(table.header.len()));
    for (i, row) in table.rows.iter().enumerate() {
        let mut row = row.clone();
        // The last row holds the means over every kernel and scale.
        if i + 1 == table.rows.len() {
            row[0] = format!("**{}**", row[0]);
        }
        println!("| {} |", row.join(" | "));
    }
    if let Some(line) = diverged_line(rows) {
        println!("{line}");
    }
}

/// `PSNR`, `SSIM`, iterations and seconds per image of `rows`: means over the restorations
/// that did not diverge, the others counted next to the PSNR; SSIM `n/a` when no image was
/// large enough for its window.
fn mean_columns(rows: &[&Row]) -> [String; 4] {
    let scored: Vec<&Row> = rows.iter().copied().filter(|r| !r.diverged()).collect();
    let psnr = mean_or_nan(scored.iter().filter_map(|r| r.psnr));
    let none = || "–".to_string();
    let psnr = match (scored.len(), rows.len() - scored.len()) {
        (0, 0) => return [none(), none(), none(), none()],
        (0, d) => return [format!("diverged ({d})"), none(), none(), none()],
        (_, 0) => format!("{psnr:.2}"),
        (_, d) => format!("{psnr:.2} ({d} diverged)"),
    };
    let ssims: Vec<f64> = scored.iter().filter_map(|r| r.ssim).collect();
    [
        psnr,
        common::ssim_text(mean(ssims)),
        format!(
            "{:.0}",
            mean_or_nan(scored.iter().map(|r| r.iterations as f64))
        ),
        format!("{:.2}", mean_or_nan(scored.iter().map(|r| r.seconds))),
    ]
}

/// The columns of `results.csv` (and of the report's table of all restorations).
const CSV_HEADER: [&str; 12] = [
    "image",
    "kernel",
    "scale",
    "noise",
    "returned",
    "psnr",
    "ssim",
    "psnr_last_iterate",
    "ssim_last_iterate",
    "iterations",
    "seconds",
    "stop",
];

/// The cells of one row of `results.csv`: metrics empty when diverged, SSIM `n/a` when the
/// image is under SSIM's window.
fn csv_cells(r: &Row) -> Vec<String> {
    let cell = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    let ssim_cell = |v: Option<f64>| {
        if r.diverged() {
            String::new()
        } else {
            v.map_or_else(|| "n/a".into(), |v| format!("{v:.5}"))
        }
    };
    vec![
        r.image.clone(),
        r.kernel.clone(),
        r.scale.to_string(),
        r.noise.to_string(),
        r.returned.to_string(),
        cell(r.psnr, 4),
        ssim_cell(r.ssim),
        cell(r.psnr_last_iterate, 4),
        ssim_cell(r.ssim_last_iterate),
        r.iterations.to_string(),
        format!("{:.4}", r.seconds),
        r.stop.name().to_string(),
    ]
}

/// CSV text through the `csv` crate (its quoting and escaping), the first column (image
/// names) always quoted: names such as `0001` are strings, and spreadsheets or pandas would
/// read them as numbers otherwise. The `csv` writer has one quoting rule per writer, so the
/// name goes through an always-quoting writer and the other cells through a minimal one.
fn csv_with_quoted_names(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(header)?;
    let mut out = out.into_inner().map_err(|e| e.into_error())?;
    for cells in rows {
        let (name, rest) = cells.split_first().context("a CSV row without cells")?;
        // A one-field record ended by the separator: `"0001",`.
        let mut quoted = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .terminator(csv::Terminator::Any(b','))
            .from_writer(Vec::new());
        quoted.write_record([name])?;
        out.extend(quoted.into_inner().map_err(|e| e.into_error())?);
        let mut plain = csv::Writer::from_writer(Vec::new());
        plain.write_record(rest)?;
        out.extend(plain.into_inner().map_err(|e| e.into_error())?);
    }
    Ok(out)
}

fn write_outputs(out: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let cells: Vec<Vec<String>> = rows.iter().map(csv_cells).collect();
    let csv = csv_with_quoted_names(&CSV_HEADER, &cells)?;
    gradstep_model::write_atomic(&out.join("results.csv"), &csv)?;
    gradstep_model::write_atomic(&out.join("results.json"), &serde_json::to_vec_pretty(rows)?)?;
    Ok(())
}

/// CBSD68-style denoising table: `D_σ` (the GS denoiser) against `N_σ` (its network), on
/// noise drawn here or on the `given` noisy observations (one per image, of level `noises[0]`).
fn denoise_table(
    den: &gradstep_model::GradientStepDenoiser,
    images: &[(String, Tensor)],
    given: Option<&[Tensor]>,
    noises: &[f64],
    seed: i64,
    out: &Path,
    report: Report,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct DenoiseRow<'a> {
        image: &'a str,
        sigma: f64,
        psnr_d: f64,
        psnr_n: f64,
    }
    let mut rows = Vec::new();
    let mut report = report;
    let per_level = (REPORT_ROWS / noises.len().max(1)).max(1);
    let mut progress = Progress::new((noises.len() * images.len()) as u64, "images");
    for &s in noises {
        for (index, (name, img)) in images.iter().enumerate() {
            let y = match given {
                Some(given) => {
                    if given[index].size() != img.size() {
                        bail!(
                            "{name}: the observation is {:?}, its clean partner {:?}",
                            given[index].size(),
                            img.size()
                        );
                    }
                    given[index].shallow_clone()
                }
                None => add_noise(img, &[s / 255.0], &mut seeded(seed as u64, 0))?,
            };
            let sigma = Sigma::Scalar(s / 255.0);
            let d = den
                .denoise(&y, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            let n = den
                .network_output(&y, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            let row = DenoiseRow {
                image: name,
                sigma: s,
                psnr_d: metrics::psnr(&d, img)?[0],
                psnr_n: metrics::psnr(&n, img)?[0],
            };
            if index < per_level {
                report.images.push(ImageRow {
                    title: format!("{name} (σ={s})"),
                    scores: format!(
                        "D_σ PSNR {:.2} dB, N_σ PSNR {:.2} dB",
                        row.psnr_d, row.psnr_n
                    ),
                    pictures: vec![
                        Picture::thumbnail("noisy", &y, THUMBNAIL_SIDE)?,
                        Picture::thumbnail("D_σ", &d, THUMBNAIL_SIDE)?,
                        Picture::thumbnail("reference", img, THUMBNAIL_SIDE)?,
                    ],
                });
            }
            rows.push(row);
            progress.advance(1);
        }
    }
    progress.finish();
    let mut means = Table {
        caption: "Means".into(),
        header: ["σ", "D_σ PSNR", "N_σ PSNR"].map(String::from).to_vec(),
        rows: Vec::new(),
    };
    for &s in noises {
        let rs: Vec<&DenoiseRow> = rows.iter().filter(|r| r.sigma == s).collect();
        means.rows.push(vec![
            s.to_string(),
            format!("{:.2}", mean_or_nan(rs.iter().map(|r| r.psnr_d))),
            format!("{:.2}", mean_or_nan(rs.iter().map(|r| r.psnr_n))),
        ]);
    }
    println!("| {} |\n|---|---|---|", means.header.join(" | "));
    for row in &means.rows {
        println!("| {} |", row.join(" | "));
    }
    let header = ["image", "sigma", "psnr_d", "psnr_n"];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.image.to_string(),
                r.sigma.to_string(),
                format!("{:.4}", r.psnr_d),
                format!("{:.4}", r.psnr_n),
            ]
        })
        .collect();
    gradstep_model::write_atomic(
        &out.join("results.csv"),
        &csv_with_quoted_names(&header, &cells)?,
    )?;
    gradstep_model::write_atomic(
        &out.join("results.json"),
        &serde_json::to_vec_pretty(&rows)?,
    )?;
    report.tables.push(means);
    report.tables.push(Table {
        caption: format!("All {} images", rows.len()),
        header: header.map(String::from).to_vec(),
        rows: cells,
    });
    report.write(&out.join(REPORT_FILE))?;
    eprintln!(
        "wrote {}/results.csv, results.json and {REPORT_FILE}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(psnr: Option<f64>, stop: StopReason) -> Row {
        Row {
            image: "a".into(),
            kernel: "uniform".into(),
            scale: 1,
            noise: 7.65,
            returned: "z",
            psnr,
            ssim: psnr.map(|_| 0.9),
            psnr_last_iterate: psnr,
            ssim_last_iterate: psnr.map(|_| 0.9),
            iterations: 10,
            seconds: 1.0,
            stop,
        }
    }

    #[test]
    fn diverged_restorations_are_left_out_of_the_means_and_counted() {
        let ok = [
            row(Some(30.0), StopReason::Converged),
            row(Some(20.0), StopReason::MaxIterations),
        ];
        let diverged = row(None, StopReason::Diverged);
        // An image under SSIM's window has a PSNR but no SSIM: scored, not diverged.
        let mut small = row(Some(25.0), StopReason::MaxIterations);
        small.ssim = None;
        let rows = [&ok[0], &ok[1], &diverged, &small];
        // PSNR | SSIM | it | s/image (SSIM beside PSNR since issue 15).
        let mean_cells = |rows: &[&Row]| mean_columns(rows).join(" | ");
        assert_eq!(mean_cells(&rows), "25.00 (1 diverged) | 0.9000 | 10 | 1.00");
        assert_eq!(mean_cells(&[&ok[0]]), "30.00 | 0.9000 | 10 | 1.00");
        assert_eq!(mean_cells(&[&diverged]), "diverged (1) | – | – | –");
        assert_eq!(mean_cells(&[]), "– | – | – | –");
        assert_eq!(mean_cells(&[&small]), "25.00 | n/a | 10 | 1.00");
    }

    #[test]
    fn the_means_table_drops_kernel_and_scale_columns_that_never_change() {
        let mut a = row(Some(30.0), StopReason::Converged);
        let mut b = row(Some(20.0), StopReason::Converged);
        b.image = "b".into();
        // Deblurring with one kernel: neither column; the kernel is named above the table.
        let (constants, t) = means_table(&[a.clone(), b.clone()], &[7.65]);
        assert_eq!(constants, ["kernel: uniform"]);
        assert_eq!(t.header, ["", "ν=7.65 PSNR", "SSIM", "it", "s/image"]);
        assert_eq!(t.rows, [["mean", "25.00", "0.9000", "10", "1.00"]]);
        // Two kernels: a kernel column, still no scale (deblurring is ×1).
        b.kernel = "gaussian".into();
        let (constants, t) = means_table(&[a.clone(), b.clone()], &[7.65]);
        assert!(constants.is_empty());
        assert_eq!(t.header[0], "kernel");
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[2][..2], ["mean", "25.00"]);
        // Super-resolution at two scales with one kernel: a scale column only.
        b.kernel = a.kernel.clone();
        (a.scale, b.scale) = (2, 3);
        let (constants, t) = means_table(&[a, b], &[7.65]);
        assert_eq!(constants, ["kernel: uniform"]);
        assert_eq!(t.header[0], "scale");
        assert_eq!(t.rows[0][0], "2");
    }

    #[test]
    fn csv_quotes_every_image_name_and_escapes_through_the_csv_crate() {
        let rows = vec![
            vec!["0001".to_string(), "7.65".into(), "a,b".into()],
            vec!["say \"hi\"".to_string(), String::new(), "x".into()],
        ];
        let csv = csv_with_quoted_names(&["image", "noise", "kernel"], &rows).unwrap();
        let text = String::from_utf8(csv.clone()).unwrap();
        assert_eq!(
            text,
            "image,noise,kernel\n\"0001\",7.65,\"a,b\"\n\"say \"\"hi\"\"\",,x\n"
        );
        // Read back by the csv crate: the same cells.
        let mut reader = csv::Reader::from_reader(csv.as_slice());
        let back: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        assert_eq!(back, rows);
    }
}
