//! `gradstep eval`: the papers' tables — PSNR per kernel and noise level over a folder of
//! images, with iterations and seconds — as Markdown on stdout and CSV / JSON under `runs/`.
//! Problems of equal size are restored in batches (`restore_all`).
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
use gradstep_pnp::{
    restore_all, DegradationSpec, KernelSpec, Observed, RestorationProblem, StopReason, Task,
};
use serde::Serialize;
use tch::Tensor;

use super::restore::{algorithm_config, task_for, Common};
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

#[derive(Debug, Serialize)]
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

/// The files of `dir` with one of `extensions` (any case), sorted: the observations may be
/// `.npy` as well as images, so this is not [`gradstep_data::dataset::list_images`].
fn listed(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The files of `dir` by stem; two files of one stem (`a.png`, `a.npy`) are refused.
fn by_stem(dir: &Path, extensions: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in listed(dir, extensions)? {
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
        return denoise_table(&den, &images, given.as_deref(), &noises, c.seed, &out);
    }
    let max_batch = a.max_batch.unwrap_or(if device.is_cuda() { 8 } else { 2 });
    let mut rows = Vec::new();
    for (level, &noise) in noises.iter().enumerate() {
        let mut problems = Vec::new();
        let mut configs = Vec::new();
        let mut labels = Vec::new();
        for (kernel, scale, task, level_configs) in &tasks {
            for (i, (name, img)) in images.iter().enumerate() {
                let size = img.size();
                let problem = match &observations {
                    Some(given) => given_problem(&given[i], img, task, noise),
                    None => {
                        if level == 0 {
                            if let Some(note) = gradstep_pnp::sr_crop_note(task, size[2], size[3]) {
                                eprintln!("note: {name}: {note}");
                            }
                        }
                        RestorationProblem::synthesize(img, task, noise, c.seed)
                    }
                };
                problems.push(problem.with_context(|| name.clone())?);
                configs.push(&level_configs[level]);
                labels.push((name.clone(), kernel.clone(), *scale));
            }
        }
        let configs_used = configs.clone();
        let items: Vec<_> = problems.iter().zip(configs).collect();
        let results = restore_all(&den, &items, max_batch)?;
        for (((p, r), (image, kernel, scale)), cfg) in
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
            rows.push(Row {
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
            });
        }
        eprintln!("ν = {noise}: {} restorations done", results.len());
        write_outputs(&out, &rows)?;
    }
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

fn print_table(rows: &[Row], noises: &[f64]) {
    let mut keys: Vec<(String, i64)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.kernel.clone(), r.scale)) {
            keys.push((r.kernel.clone(), r.scale));
        }
    }
    let head: Vec<String> = noises
        .iter()
        .map(|n| format!("ν={n} PSNR | it | s"))
        .collect();
    println!("| kernel | scale | {} |", head.join(" | "));
    println!("|---|---|{}", "---|---|---|".repeat(noises.len()));
    let cell = |sel: &dyn Fn(&Row) -> bool, n: f64| {
        let rs: Vec<&Row> = rows.iter().filter(|r| sel(r) && r.noise == n).collect();
        mean_cells(&rs)
    };
    for (k, s) in &keys {
        let cells: Vec<String> = noises
            .iter()
            .map(|&n| cell(&|r: &Row| &r.kernel == k && r.scale == *s, n))
            .collect();
        println!("| {k} | {s} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = noises.iter().map(|&n| cell(&|_: &Row| true, n)).collect();
    println!("| **mean** | | {} |", cells.join(" | "));
    let diverged: Vec<&Row> = rows.iter().filter(|r| r.diverged()).collect();
    if !diverged.is_empty() {
        let which: Vec<String> = diverged
            .iter()
            .map(|r| format!("{} ({}, ×{}, ν={})", r.image, r.kernel, r.scale, r.noise))
            .collect();
        println!(
            "{} of {} restorations diverged and are left out of the means: {}",
            diverged.len(),
            rows.len(),
            which.join(", ")
        );
    }
}

/// `PSNR | it | s` of `rows`: means over the restorations that did not diverge, the others
/// counted next to the PSNR.
fn mean_cells(rows: &[&Row]) -> String {
    let scored: Vec<&Row> = rows.iter().copied().filter(|r| !r.diverged()).collect();
    let psnr = mean(scored.iter().filter_map(|r| r.psnr)).unwrap_or(f64::NAN);
    let psnr = match (scored.len(), rows.len() - scored.len()) {
        (0, 0) => return "– | – | –".to_string(),
        (0, d) => return format!("diverged ({d}) | – | –"),
        (_, 0) => format!("{psnr:.2}"),
        (_, d) => format!("{psnr:.2} ({d} diverged)"),
    };
    format!(
        "{psnr} | {:.0} | {:.2}",
        mean(scored.iter().map(|r| r.iterations as f64)).unwrap_or(f64::NAN),
        mean(scored.iter().map(|r| r.seconds)).unwrap_or(f64::NAN)
    )
}

fn write_outputs(out: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "image,kernel,scale,noise,returned,psnr,ssim,psnr_last_iterate,ssim_last_iterate,iterations,seconds,stop\n",
    );
    let cell = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    // Empty when diverged, `n/a` when the image is under SSIM's window.
    let ssim_cell = |r: &Row, v: Option<f64>| {
        if r.diverged() {
            String::new()
        } else {
            v.map_or_else(|| "n/a".into(), |v| format!("{v:.5}"))
        }
    };
    for r in rows {
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{:.4},{}\n",
            r.image,
            r.kernel,
            r.scale,
            r.noise,
            r.returned,
            cell(r.psnr, 4),
            ssim_cell(r, r.ssim),
            cell(r.psnr_last_iterate, 4),
            ssim_cell(r, r.ssim_last_iterate),
            r.iterations,
            r.seconds,
            r.stop.name()
        );
    }
    gradstep_model::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    gradstep_model::write_atomic(&out.join("results.json"), &serde_json::to_vec_pretty(rows)?)?;
    eprintln!("wrote {}/results.csv and results.json", out.display());
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
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct DenoiseRow<'a> {
        image: &'a str,
        sigma: f64,
        psnr_d: f64,
        psnr_n: f64,
    }
    let mut rows = Vec::new();
    for &s in noises {
        for (i, (name, img)) in images.iter().enumerate() {
            let y = match given {
                Some(given) => {
                    if given[i].size() != img.size() {
                        bail!(
                            "{name}: the observation is {:?}, its clean partner {:?}",
                            given[i].size(),
                            img.size()
                        );
                    }
                    given[i].shallow_clone()
                }
                None => {
                    add_noise(img, &[s / 255.0], &mut seeded(seed as u64, 0))?
                }
            };
            let sigma = Sigma::Scalar(s / 255.0);
            let d = den
                .denoise(&y, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            let n = den
                .network_output(&y, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            rows.push(DenoiseRow {
                image: name,
                sigma: s,
                psnr_d: metrics::psnr(&d, img)?[0],
                psnr_n: metrics::psnr(&n, img)?[0],
            });
        }
    }
    println!("| σ | D_σ PSNR | N_σ PSNR |\n|---|---|---|");
    for &s in noises {
        let rs: Vec<&DenoiseRow> = rows.iter().filter(|r| r.sigma == s).collect();
        println!(
            "| {s} | {:.2} | {:.2} |",
            mean(rs.iter().map(|r| r.psnr_d)).unwrap_or(f64::NAN),
            mean(rs.iter().map(|r| r.psnr_n)).unwrap_or(f64::NAN)
        );
    }
    let mut csv = String::from("image,sigma,psnr_d,psnr_n\n");
    for r in &rows {
        csv += &format!("{},{},{:.4},{:.4}\n", r.image, r.sigma, r.psnr_d, r.psnr_n);
    }
    gradstep_model::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    gradstep_model::write_atomic(
        &out.join("results.json"),
        &serde_json::to_vec_pretty(&rows)?,
    )?;
    eprintln!("wrote {}/results.csv and results.json", out.display());
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
        assert_eq!(mean_cells(&rows), "25.00 (1 diverged) | 10 | 1.00");
        assert_eq!(mean_cells(&[&ok[0]]), "30.00 | 10 | 1.00");
        assert_eq!(mean_cells(&[&diverged]), "diverged (1) | – | –");
        assert_eq!(mean_cells(&[]), "– | – | –");
    }
}
