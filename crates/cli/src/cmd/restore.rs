//! `gradstep restore`: one PnP restoration, in one of two modes that the command line keeps
//! apart (exactly one of them is required):
//! - `--observed Y` restores what the user observed, degraded elsewhere, with the operator
//!   they state (`--kernel`, `--scale`, `--mask`) and its noise level `--noise ν`;
//!   `--reference X` optionally scores it;
//! - `--clean X` synthesises the observation from a clean image (the benchmark mode), writes it
//!   (`observed.png`, losslessly `observed.npy`, `mask.png` for inpainting: `--observed`
//!   reads them back), restores it and scores it against `X`.
//!
//! Both write the restored image, the convergence JSON and plots, the algorithm config and
//! `run.json` (everything the run was given). User kernels that do not sum to 1 are
//! normalised with a warning.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_data::{load_image, metrics, save_image};
use gradstep_model::{Checkpoint, DenoiserKind};
use gradstep_pnp::{
    monitor, restore, Algorithm, AlgorithmConfig, DegradationSpec, GsOutput, Hole, Kernel,
    KernelSpec, Observed, Overrides, RestorationProblem, Task,
};
use serde::Serialize;

use gradstep_pnp::report::{ImageRow, Picture, Report, Table, REPORT_FILE};

use crate::{checks, common};

/// Options shared by `restore` and `eval`.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// gradstep checkpoint (`gradstep import` converts PyTorch ones).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The degradation: deblur (circular blur by --kernel), sr (blur then decimation by
    /// --scale), inpaint (a mask of known pixels), denoise (additive Gaussian noise only).
    #[arg(long, value_enum)]
    pub task: Task,
    /// The PnP algorithm.
    #[arg(long, value_enum, default_value_t = Algorithm::GsPgd)]
    pub algorithm: Algorithm,
    /// Regularisation weight λ (GS-PnP) / data step λ (Prox-PnP); default: the paper's.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Denoiser level σ on the 0–255 scale; default: the paper's rule for the noise level.
    #[arg(long)]
    pub sigma_denoiser: Option<f64>,
    /// A JSON algorithm config (configs/pnp/*.json) replacing the reference defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Maximum number of iterations (overrides the config).
    #[arg(long)]
    pub max_iter: Option<usize>,
    /// GS-PnP's returned image: z = x_K − τλ∇g_σ(x_K) (the official code's output, on which
    /// the papers' tables are computed) or x_K, the last data-prox output. Both PSNRs are
    /// recorded either way.
    #[arg(long, value_parser = gs_output)]
    pub output: Option<GsOutput>,
    /// Synthetic inpainting: keep probability of the random mask (0 to 1).
    #[arg(long, default_value_t = 0.5, value_parser = probability)]
    pub keep: f64,
    /// Synthetic mode: seed of the noise (and of the inpainting mask).
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Folder with levin09.json and kernels12.json (default: $GRADSTEP_SHARED/data/kernels,
    /// else ../shared/data/kernels).
    #[arg(long)]
    pub kernel_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    pub device: Option<String>,
    #[command(flatten)]
    pub run: common::RunOptions,
}

impl Common {
    /// The changes the flags make to the algorithm config.
    fn overrides(&self) -> Overrides {
        Overrides {
            lambda: self.lambda,
            sigma: self.sigma_denoiser,
            max_iter: self.max_iter,
            output: self.output,
            ..Overrides::default()
        }
    }
}

/// Arguments of `gradstep restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// SYNTHETIC MODE: a clean image, degraded here (kernel, --noise, --seed, --keep) and then
    /// restored and scored against itself. Writes the observation as observed.png, losslessly
    /// as observed.npy (float32 [H, W, C]) and, for inpainting, the mask as mask.png, which
    /// --observed reads back.
    #[arg(
        long,
        value_name = "X.png",
        required_unless_present = "observed",
        conflicts_with = "observed"
    )]
    clean: Option<PathBuf>,
    /// REAL-DATA MODE: the observation to restore (an image file, or a float .npy [H, W] or
    /// [H, W, C] on the 0–1 scale). State its degradation: deblur needs --kernel and --noise;
    /// sr the low-resolution image, --scale, --kernel and --noise (the output is --scale
    /// times larger); inpaint --mask; denoise --noise.
    #[arg(long, value_name = "Y.png|Y.npy")]
    observed: Option<PathBuf>,
    /// levin:I, uniform, gaussian, k12:I or file:PATH (.json, .npy, gray .png). A file kernel
    /// that does not sum to 1 is normalised to sum 1, with a warning. Required with
    /// --observed for deblur and sr; with --clean the default is levin:0 (deblur), k12:0 (sr).
    #[arg(long)]
    kernel: Option<String>,
    /// Super-resolution factor s (at least 2).
    #[arg(long, default_value_t = 2)]
    scale: i64,
    /// Noise level ν of the observation on the 0–255 scale (it sets the paper's σ and λ
    /// rules). Required with --observed for deblur, sr and denoise (inpaint: default 0);
    /// with --clean the default is 7.65.
    #[arg(long)]
    noise: Option<f64>,
    /// --observed inpaint: the mask, an image of the observation's size; non-zero = known
    /// pixel, zero = missing.
    #[arg(long, value_name = "M.png")]
    mask: Option<PathBuf>,
    /// --observed: a clean image to score the restoration against (PSNR / SSIM); for sr it
    /// is --scale times the observation's size.
    #[arg(long, value_name = "X.png", requires = "observed")]
    reference: Option<PathBuf>,
    /// --clean inpaint: a rectangular block X,Y,W,H (pixels from the upper left) missing too,
    /// on top of the random mask of --keep (--keep 1: only the block).
    #[arg(long, value_name = "X,Y,W,H", value_parser = hole)]
    hole: Option<Hole>,
    /// --clean: restore the centre crop of this side (smaller images are used whole); 0: the
    /// whole image.
    #[arg(long, default_value_t = 0)]
    crop: i64,
    /// Output folder, created if needed. The files this command writes there (observed.png,
    /// observed.npy, mask.png, restored.png, restored.npy (float32, not clipped),
    /// convergence.json, config.json, run.json, the plots and report.html) are first removed where an
    /// earlier run left them; other files are kept.
    outdir: PathBuf,
}

/// What `restore` writes into its output folder (with the plots, [`monitor::PLOT_FILES`]).
const OUTPUTS: [&str; 13] = [
    "observed.png",
    "observed.npy",
    "mask.png",
    "restored.png",
    "restored.npy",
    "convergence.json",
    "config.json",
    "run.json",
    monitor::PLOT_FILES[0],
    monitor::PLOT_FILES[1],
    monitor::PLOT_FILES[2],
    monitor::PLOT_FILES[3],
    REPORT_FILE,
];

/// Noise level of a synthetic observation when `--noise` is not given.
const DEFAULT_SYNTHETIC_NOISE: f64 = 7.65;

/// Longer side of the pictures in `report.html`, in pixels (larger images are scaled down).
const REPORT_PICTURE_SIDE: u32 = 512;

/// The kernel folder: the option, else `$GRADSTEP_SHARED/data/kernels`, else `../shared/data/kernels`.
pub fn kernel_dir(opt: &Option<PathBuf>) -> PathBuf {
    opt.clone().unwrap_or_else(|| {
        std::env::var_os("GRADSTEP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared"))
            .join("data/kernels")
    })
}

/// The kernel of `spec` (read from `--kernel-dir` for the benchmark sets); a user kernel file
/// that did not sum to 1 is normalised, with a warning naming the file.
pub fn load_kernel(spec: &KernelSpec, c: &Common) -> anyhow::Result<Kernel> {
    let kernel = spec.load(&kernel_dir(&c.kernel_dir))?;
    if let KernelSpec::File(path) = spec {
        if !kernel.was_normalised() {
            eprintln!(
                "warning: {}: the kernel sums to {}, not 1; it is normalised to sum 1",
                path.display(),
                kernel.input_sum()
            );
        }
    }
    Ok(kernel)
}

/// The degradation to synthesise for `task` with `kernel` (default: levin:0 for deblurring,
/// k12:0 for super-resolution) and `scale`; inpainting draws its mask from `--keep` and `--seed`.
pub fn task_for(
    task: Task,
    kernel: Option<&KernelSpec>,
    scale: i64,
    c: &Common,
) -> anyhow::Result<DegradationSpec> {
    Ok(match task {
        Task::Denoise => DegradationSpec::Denoise,
        Task::Inpaint => DegradationSpec::Inpaint {
            keep: c.keep,
            mask_seed: c.seed,
            hole: None,
        },
        Task::Deblur => {
            let spec = kernel.cloned().unwrap_or(KernelSpec::Levin(0));
            DegradationSpec::Deblur(load_kernel(&spec, c)?)
        }
        Task::Sr => {
            check_scale(scale)?;
            let spec = kernel.cloned().unwrap_or(KernelSpec::Kernels12(0));
            DegradationSpec::SuperResolution {
                kernel: load_kernel(&spec, c)?,
                scale,
            }
        }
    })
}

fn check_scale(scale: i64) -> anyhow::Result<()> {
    if scale < 2 {
        bail!("the super-resolution factor (--scale, --scales) must be at least 2, got {scale}");
    }
    Ok(())
}

/// The algorithm config: `--config` or the reference defaults for `task`, `kernel` and the
/// noise level, then the flags' overrides ([`AlgorithmConfig::with_overrides`]).
pub fn algorithm_config(
    c: &Common,
    task: Task,
    kernel: Option<&KernelSpec>,
    noise: f64,
) -> anyhow::Result<AlgorithmConfig> {
    let cfg = match &c.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let cfg: AlgorithmConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: bad algorithm config", p.display()))?;
            cfg.validate()
                .with_context(|| format!("{}: bad algorithm config", p.display()))?;
            cfg
        }
        None => AlgorithmConfig::reference(c.algorithm, task, kernel, noise),
    };
    Ok(cfg.with_overrides(&c.overrides())?)
}

/// Warnings about running `cfg` with the denoiser of `ckpt`: Prox-PnP's convergence needs a
/// proximal denoiser (`‖∇²g_σ‖₂ < 1`), which a GS checkpoint, or a Prox one whose recorded
/// `gradstep lipschitz` estimate reached 1, is not shown to be.
pub fn denoiser_warnings(cfg: &AlgorithmConfig, ckpt: &Checkpoint, path: &Path) -> Vec<String> {
    let prox_algorithm = matches!(
        cfg,
        AlgorithmConfig::ProxPgd(_) | AlgorithmConfig::ProxDrs(_) | AlgorithmConfig::ProxDrsDiff(_)
    );
    if !prox_algorithm {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if ckpt.model.kind != DenoiserKind::Prox {
        warnings.push(format!(
            "{} runs with {}, a {:?} denoiser: Prox-PnP's convergence guarantee needs a Prox \
             denoiser (‖∇²g_σ‖₂ < 1); the run is not covered by it",
            cfg.name(),
            path.display(),
            ckpt.model.kind
        ));
    }
    if let Some(max) = ckpt.recorded_lipschitz_max() {
        if max >= 1.0 {
            warnings.push(format!(
                "{}: its recorded Lipschitz estimate max ‖∇²g_σ‖₂ = {max:.4} is ≥ 1, so D_σ is \
                 not shown to be a proximal operator and {}'s guarantee does not apply",
                path.display(),
                cfg.name()
            ));
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    warnings
}

/// What `run.json` records: everything the restoration was given, so that it can be repeated.
#[derive(Debug, Serialize)]
struct RunRecord<'a> {
    /// `observed` (a given observation) or `clean` (a synthesised one).
    mode: &'static str,
    /// The image given (`--observed` or `--clean`).
    input: &'a Path,
    task: Task,
    checkpoint: &'a Path,
    /// `--kernel` as given (deblur, sr).
    kernel: Option<String>,
    /// The sum of the kernel's values before normalising (1 when it was normalised).
    kernel_input_sum: Option<f64>,
    /// The super-resolution factor (sr).
    scale: Option<i64>,
    /// The observation's noise level ν (0–255).
    noise: f64,
    /// The inpainting mask: a file (`--observed`) or the random one's keep probability and
    /// seed (`--clean`).
    mask: Option<&'a Path>,
    keep: Option<f64>,
    hole: Option<String>,
    /// The seed of the synthetic observation (`--clean`).
    seed: Option<i64>,
    crop: Option<i64>,
    reference: Option<&'a Path>,
    algorithm: &'a AlgorithmConfig,
}

/// Runs the command.
///
/// Everything the flags can get wrong is checked before the checkpoint is loaded, and the
/// images (sizes, mask, non-finite values) before anything is written.
pub fn run(a: Args) -> anyhow::Result<()> {
    checks::common_levels(&a.common)?;
    let c = &a.common;
    let (mode, input) = match (&a.clean, &a.observed) {
        (Some(x), None) => ("clean", x.as_path()),
        (None, Some(y)) => ("observed", y.as_path()),
        _ => bail!("give exactly one of --clean X (synthetic mode) and --observed Y (real data)"),
    };
    let observed = mode == "observed";
    let noise = observed_noise(&a, observed)?;
    checks::level_255("--noise", noise, true)?;
    check_mode_flags(&a, observed)?;
    let kernel_spec = a
        .kernel
        .as_deref()
        .map(str::parse::<KernelSpec>)
        .transpose()?;
    let kernel_spec = match (c.task, kernel_spec) {
        (Task::Deblur, None) if !observed => Some(KernelSpec::Levin(0)),
        (Task::Sr, None) if !observed => Some(KernelSpec::Kernels12(0)),
        (task, None) if task.blurs() => bail!(
            "--observed with --task {task} needs the blur kernel: --kernel file:K.png|K.npy|K.json \
             or a named one (levin:I, uniform, gaussian, k12:I)"
        ),
        (task, Some(_)) if !task.blurs() => bail!("--kernel applies to --task deblur and sr only"),
        (_, k) => k,
    };
    if c.task == Task::Sr {
        check_scale(a.scale)?;
    }
    check_outputs(&a, input, kernel_spec.as_ref())?;
    let kernel = kernel_spec
        .as_ref()
        .map(|k| load_kernel(k, c))
        .transpose()?;
    let kernel_input_sum = kernel.as_ref().map(Kernel::input_sum);
    let cfg = algorithm_config(c, c.task, kernel_spec.as_ref(), noise)?;
    let device = common::parse_device(c.device.as_deref())?;
    let (ckpt, den) = common::load_denoiser(&c.checkpoint, device)?;
    let warnings = denoiser_warnings(&cfg, &ckpt, &c.checkpoint);
    let den = den.with_options(&c.run.inference(device))?;
    let channels = ckpt.model.architecture.channels;

    let problem = if observed {
        observed_problem(&a, input, kernel.as_ref(), noise, channels, device)?
    } else {
        let spec = match (c.task, kernel) {
            (Task::Deblur, Some(k)) => DegradationSpec::Deblur(k),
            (Task::Sr, Some(k)) => DegradationSpec::SuperResolution {
                kernel: k,
                scale: a.scale,
            },
            (Task::Inpaint, _) => DegradationSpec::Inpaint {
                keep: c.keep,
                mask_seed: c.seed,
                hole: a.hole,
            },
            _ => DegradationSpec::Denoise,
        };
        let clean = load_image(input, channels, device)?;
        let clean = common::centre_crop(&clean, a.crop)?;
        let size = clean.size();
        check_kernel_fits(&spec, &a, size[2], size[3], input)?;
        if let Some(note) = gradstep_pnp::sr_crop_note(&spec, size[2], size[3]) {
            eprintln!("note: {}: {note}", input.display());
        }
        RestorationProblem::synthesize(&clean, &spec, noise, c.seed)
            .with_context(|| format!("{}", input.display()))?
    };
    common::create_dir(&a.outdir)?;
    checks::remove_earlier_outputs(&a.outdir, &OUTPUTS)?;
    let out = |name: &str| a.outdir.join(name);
    save_image(&out("observed.png"), &problem.observation)?;
    if !observed {
        // Lossless: `--observed observed.npy` restores exactly this observation.
        gradstep_pnp::save_npy_image(&out("observed.npy"), &problem.observation)?;
        if let gradstep_pnp::Degradation::Inpainting(m) = &problem.degradation {
            save_image(&out("mask.png"), m.mask())?;
        }
    }
    let r = restore(&den, &problem, &cfg)?;
    save_image(&out("restored.png"), &r.image)?;
    gradstep_pnp::save_npy_image(&out("restored.npy"), &r.image)?;
    monitor::write_json(&out("convergence.json"), &r, &cfg, &warnings)?;
    let plots = monitor::write_plots(&r.records, &a.outdir, cfg.name())?.len();
    std::fs::write(out("config.json"), serde_json::to_vec_pretty(&cfg)?)
        .with_context(|| format!("cannot write {}", out("config.json").display()))?;
    let record = RunRecord {
        mode,
        input,
        task: c.task,
        checkpoint: &c.checkpoint,
        kernel: kernel_spec.as_ref().map(|k| k.to_string()),
        kernel_input_sum,
        scale: (c.task == Task::Sr).then_some(a.scale),
        noise,
        mask: a.mask.as_deref(),
        keep: (!observed && c.task == Task::Inpaint).then_some(c.keep),
        hole: a.hole.map(|h| h.to_string()),
        seed: (!observed).then_some(c.seed),
        crop: (!observed && a.crop > 0).then_some(a.crop),
        reference: a.reference.as_deref(),
        algorithm: &cfg,
    };
    std::fs::write(out("run.json"), serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("cannot write {}", out("run.json").display()))?;
    let lines = report(&problem, &r, &cfg, plots, &a.outdir)?;
    write_html_report(
        &problem,
        &r,
        &cfg,
        &c.checkpoint,
        &warnings,
        lines,
        &a.outdir,
    )
}

/// `report.html`: the printed results, observed | restored | reference side by side and the
/// plots that were drawn.
fn write_html_report(
    problem: &RestorationProblem,
    r: &gradstep_pnp::Restoration,
    cfg: &AlgorithmConfig,
    checkpoint: &Path,
    warnings: &[String],
    lines: Vec<String>,
    outdir: &Path,
) -> anyhow::Result<()> {
    let mut report = Report::new(&format!(
        "restore: {} ({})",
        cfg.name(),
        problem.degradation.name()
    ));
    report
        .notes
        .push(format!("checkpoint {}", checkpoint.display()));
    report
        .notes
        .extend(warnings.iter().map(|w| format!("warning: {w}")));
    report.tables.push(Table {
        caption: "Results".into(),
        header: Vec::new(),
        rows: lines
            .iter()
            .filter(|l| !l.starts_with("wrote "))
            .map(|l| match l.split_once(": ") {
                Some((k, v)) => vec![k.to_string(), v.to_string()],
                None => vec![String::new(), l.clone()],
            })
            .collect(),
    });
    let side = REPORT_PICTURE_SIDE;
    let mut pictures = vec![
        Picture::thumbnail("observed", &problem.observation, side)?,
        Picture::thumbnail(
            &format!("restored ({})", cfg.returned_variable()),
            &r.image,
            side,
        )?,
    ];
    if let Some(truth) = &problem.ground_truth {
        pictures.push(Picture::thumbnail("reference", truth, side)?);
    }
    report.images.push(ImageRow {
        title: problem.degradation.name().to_string(),
        scores: lines
            .iter()
            .find(|l| l.starts_with("restored: "))
            .cloned()
            .unwrap_or_default(),
        pictures,
    });
    for plot in monitor::PLOT_FILES {
        let path = outdir.join(plot);
        if path.exists() {
            report.plots.push(Picture::from_png_file(&path)?);
        }
    }
    report.write(&outdir.join(REPORT_FILE))?;
    Ok(())
}

/// `--noise`: required with `--observed` except for inpainting (0 by default: the papers'
/// inpainting observations are noise-free); 7.65 by default with `--clean`.
fn observed_noise(a: &Args, observed: bool) -> anyhow::Result<f64> {
    match (a.noise, observed, a.common.task) {
        (Some(n), ..) => Ok(n),
        (None, false, _) => Ok(DEFAULT_SYNTHETIC_NOISE),
        (None, true, Task::Inpaint) => Ok(0.0),
        (None, true, task) => bail!(
            "--observed with --task {task} needs --noise ν, the observation's noise level on \
             the 0–255 scale (it sets the denoiser level σ and λ by the paper's rules)"
        ),
    }
}

/// Flags that belong to one mode (or one task) only.
fn check_mode_flags(a: &Args, observed: bool) -> anyhow::Result<()> {
    let task = a.common.task;
    if observed {
        if a.hole.is_some() {
            bail!("--hole applies to --clean (a synthetic inpainting mask); with --observed give --mask");
        }
        if a.crop != 0 {
            bail!("--crop applies to --clean only");
        }
        match (task, &a.mask) {
            (Task::Inpaint, None) => {
                bail!("--observed with --task inpaint needs --mask M.png (non-zero = known pixel)")
            }
            (Task::Inpaint, Some(_)) | (_, None) => {}
            (_, Some(_)) => bail!("--mask applies to --task inpaint only"),
        }
    } else {
        if a.mask.is_some() {
            bail!("--mask applies to --observed; with --clean the mask is drawn from --keep and --seed");
        }
        if a.hole.is_some() && task != Task::Inpaint {
            bail!("--hole applies to --task inpaint only");
        }
    }
    Ok(())
}

/// The problem around the observation the user gave: its file, mask and reference read and
/// checked against each other and the kernel, each error naming the file.
fn observed_problem(
    a: &Args,
    input: &Path,
    kernel: Option<&Kernel>,
    noise: f64,
    channels: i64,
    device: tch::Device,
) -> anyhow::Result<RestorationProblem> {
    let task = a.common.task;
    let y = gradstep_pnp::load_observation(input, channels, device)?;
    let (h, w) = (y.size()[2], y.size()[3]);
    let mask = match &a.mask {
        Some(m) => Some(gradstep_pnp::load_mask(m, h, w, device)?),
        None => None,
    };
    let (hi, wi) = if task == Task::Sr {
        (h * a.scale, w * a.scale)
    } else {
        (h, w)
    };
    if let Some(k) = kernel {
        if k.height() as i64 > hi || k.width() as i64 > wi {
            bail!(
                "{}: the kernel ({}×{}) is larger than the {hi}×{wi} image it blurs{}",
                a.kernel.as_deref().unwrap_or("kernel"),
                k.height(),
                k.width(),
                if task == Task::Sr {
                    format!(" ({} ×{})", input.display(), a.scale)
                } else {
                    format!(" ({})", input.display())
                }
            );
        }
    }
    let reference = match &a.reference {
        Some(r) => {
            let x = load_image(r, channels, device)?;
            let (rh, rw) = (x.size()[2], x.size()[3]);
            if (rh, rw) != (hi, wi) {
                let why = if task == Task::Sr {
                    format!(
                        "{} is {h}×{w}: super-resolution ×{} of it is {hi}×{wi}",
                        input.display(),
                        a.scale
                    )
                } else {
                    format!("{} is {h}×{w}", input.display())
                };
                bail!("{}: the reference is {rh}×{rw}, {why}", r.display());
            }
            Some(x)
        }
        None => None,
    };
    let stated = Observed {
        task,
        kernel,
        scale: a.scale,
        mask: mask.as_ref(),
    };
    RestorationProblem::from_observation(y, &stated, reference, noise)
        .with_context(|| format!("{}", input.display()))
}

/// A kernel larger than the (cropped) clean image is refused naming both.
fn check_kernel_fits(
    spec: &DegradationSpec,
    a: &Args,
    h: i64,
    w: i64,
    input: &Path,
) -> anyhow::Result<()> {
    let k = match spec {
        DegradationSpec::Deblur(k) | DegradationSpec::SuperResolution { kernel: k, .. } => k,
        _ => return Ok(()),
    };
    if k.height() as i64 > h || k.width() as i64 > w {
        bail!(
            "{}: the kernel ({}×{}) is larger than the {h}×{w} image {}",
            a.kernel.as_deref().unwrap_or("kernel"),
            k.height(),
            k.width(),
            input.display()
        );
    }
    Ok(())
}

/// None of the files `restore` writes may be one it reads: the image, the mask, the
/// reference, the config or the kernel.
fn check_outputs(a: &Args, input: &Path, kernel: Option<&KernelSpec>) -> anyhow::Result<()> {
    let mut inputs = vec![input];
    inputs.extend(a.common.config.as_deref());
    inputs.extend(a.mask.as_deref());
    inputs.extend(a.reference.as_deref());
    if let Some(KernelSpec::File(k)) = kernel {
        inputs.push(k);
    }
    for name in OUTPUTS {
        checks::not_an_input(&a.outdir.join(name), &inputs)?;
    }
    Ok(())
}

fn report(
    problem: &RestorationProblem,
    r: &gradstep_pnp::Restoration,
    cfg: &AlgorithmConfig,
    plots: usize,
    outdir: &Path,
) -> anyhow::Result<Vec<String>> {
    let truth = problem.ground_truth.as_ref();
    // Printed, and kept for report.html.
    let mut lines = Vec::new();
    let mut say = |line: String| {
        println!("{line}");
        lines.push(line);
    };
    if let Some(truth) = truth.filter(|t| problem.observation.size() == t.size()) {
        let obs = problem.observation.f_clamp(0.0, 1.0)?;
        say(format!(
            "observed: PSNR {:.2} dB  SSIM {}",
            metrics::psnr(&obs, truth)?[0],
            common::ssim_text(common::ssim_if_defined(&obs, truth)?)
        ));
    }
    say(format!(
        "{} ({}): {} iterations ({}), {:.2} s",
        cfg.name(),
        problem.degradation.name(),
        r.iterations,
        monitor::stop_label(r.stop, &r.monotonicity),
        r.seconds
    ));
    match truth {
        _ if r.stop == gradstep_pnp::StopReason::Diverged => {
            // Not scored: the image is the last finite iterate before the run blew up.
            say(
                "restored: diverged (no PSNR/SSIM; restored.png is the last finite iterate)".into(),
            );
        }
        None => say(
            "restored: no reference, so no PSNR/SSIM (give --reference X.png to score it)".into(),
        ),
        Some(truth) => {
            let restored = r.image.f_clamp(0.0, 1.0)?;
            let psnr = metrics::psnr(&restored, truth)?[0];
            let ssim = common::ssim_text(common::ssim_if_defined(&restored, truth)?);
            say(format!(
                "restored: PSNR {psnr:.2} dB  SSIM {ssim}  (returned: {})",
                cfg.returned_variable()
            ));
            if matches!(cfg, AlgorithmConfig::GsPgd(g) if g.output == GsOutput::Z) {
                let last = r.last_iterate.f_clamp(0.0, 1.0)?;
                say(format!(
                    "last iterate x: PSNR {:.2} dB  SSIM {}",
                    metrics::psnr(&last, truth)?[0],
                    common::ssim_text(common::ssim_if_defined(&last, truth)?)
                ));
            }
        }
    }
    say(format!(
        "wrote {} (observed.png, restored.png / .npy, convergence.json, config.json, run.json, {plots} plot(s), {REPORT_FILE})",
        outdir.display()
    ));
    Ok(lines)
}

/// `--hole`: `X,Y,W,H`.
fn hole(text: &str) -> Result<Hole, String> {
    text.parse::<Hole>().map_err(|e| e.to_string())
}

/// `--output`: `z` or `x`.
fn gs_output(text: &str) -> Result<GsOutput, String> {
    text.parse::<GsOutput>().map_err(|e| e.to_string())
}

/// A probability argument: a number in `[0, 1]`.
fn probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(p) => Err(format!("must be in [0, 1], got {p}")),
        Err(e) => Err(e.to_string()),
    }
}
