//! `gradstep restore`: degrade one image, restore it with a PnP algorithm, write the observed
//! and restored images, the convergence JSON and plots, and print PSNR / SSIM.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_data::{load_image, metrics, save_image};
use gradstep_model::{Checkpoint, DenoiserKind};
use gradstep_pnp::{
    monitor, restore, AlgorithmConfig, AlgorithmKind, GsOutput, Hole, KernelSpec,
    RestorationProblem, Task, TaskKind,
};

use gradstep_pnp::report::{ImageRow, Picture, Report, Table, REPORT_FILE};

use crate::{checks, common};

/// The degradations of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    /// Circular blur (levin:I, uniform, gaussian or file:K kernels).
    Deblur,
    /// Blur then decimation by --scale (kernels12 kernels: k12:I).
    Sr,
    /// Random mask keeping each pixel with probability --keep.
    Inpaint,
    /// Additive Gaussian noise only.
    Denoise,
}

/// Options shared by `restore` and `eval`.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// gradstep checkpoint (`gradstep import` converts PyTorch ones).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The degradation.
    #[arg(long, value_enum)]
    pub task: TaskArg,
    /// gs-pgd, prox-pgd, prox-drs, prox-drsdiff or hqs.
    #[arg(long, default_value = "gs-pgd")]
    pub algorithm: String,
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
    /// Keep probability of the inpainting mask (0 to 1).
    #[arg(long, default_value_t = 0.5, value_parser = probability)]
    pub keep: f64,
    /// Seed of the noise (and of the inpainting mask).
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

/// Arguments of `gradstep restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// levin:I, uniform, gaussian, k12:I or file:PATH (.json, .npy, gray .png).
    #[arg(long)]
    kernel: Option<String>,
    /// Super-resolution factor.
    #[arg(long, default_value_t = 2)]
    scale: i64,
    /// Noise level ν of the observation on the 0–255 scale.
    #[arg(long, default_value_t = 7.65)]
    noise: f64,
    /// Inpainting: a rectangular block X,Y,W,H (pixels from the upper left) missing too, on
    /// top of the random mask of --keep (--keep 1: only the block).
    #[arg(long, value_name = "X,Y,W,H", value_parser = hole)]
    hole: Option<Hole>,
    /// Restore the centre crop of this side (smaller images are used whole); 0: the whole image.
    #[arg(long, default_value_t = 0)]
    crop: i64,
    /// Clean input image (the reference for PSNR / SSIM).
    input: PathBuf,
    /// Output folder, created if needed. The files this command writes there (observed.png,
    /// restored.png, convergence.json, config.json, objective.png, psnr.png, residual.png,
    /// tau.png, report.html) are first removed where an earlier run left them (HQS draws no
    /// objective plot); other files are kept.
    outdir: PathBuf,
}

/// What `restore` writes into its output folder (with the plots, [`monitor::PLOT_FILES`]).
const OUTPUTS: [&str; 9] = [
    "observed.png",
    "restored.png",
    "convergence.json",
    "config.json",
    monitor::PLOT_FILES[0],
    monitor::PLOT_FILES[1],
    monitor::PLOT_FILES[2],
    monitor::PLOT_FILES[3],
    REPORT_FILE,
];

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

/// The task and the reference-default task kind for a kernel.
pub fn task_for(
    task: TaskArg,
    kernel: Option<&KernelSpec>,
    scale: i64,
    c: &Common,
) -> anyhow::Result<(Task, TaskKind)> {
    let dir = kernel_dir(&c.kernel_dir);
    Ok(match task {
        TaskArg::Denoise => (Task::Denoise, TaskKind::Denoise),
        TaskArg::Inpaint => (
            Task::Inpaint {
                keep: c.keep,
                mask_seed: c.seed,
            },
            TaskKind::Inpaint,
        ),
        TaskArg::Deblur => {
            let spec = kernel.cloned().unwrap_or(KernelSpec::Levin(0));
            let generated = matches!(spec, KernelSpec::Uniform | KernelSpec::Gaussian);
            (
                Task::Deblur(spec.load(&dir)?),
                TaskKind::Deblur { generated },
            )
        }
        TaskArg::Sr => {
            if scale < 2 {
                bail!("the super-resolution factor (--scale, --scales) must be at least 2, got {scale}");
            }
            let spec = kernel.cloned().unwrap_or(KernelSpec::Kernels12(0));
            (
                Task::SuperResolution {
                    kernel: spec.load(&dir)?,
                    scale,
                },
                TaskKind::SuperResolution,
            )
        }
    })
}

/// The algorithm config: `--config` or the reference defaults, then the overrides.
pub fn algorithm_config(c: &Common, kind: TaskKind, noise: f64) -> anyhow::Result<AlgorithmConfig> {
    let mut cfg = match &c.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let cfg: AlgorithmConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: bad algorithm config", p.display()))?;
            cfg.validate()
                .with_context(|| format!("{}: bad algorithm config", p.display()))?;
            cfg
        }
        None => AlgorithmConfig::reference(c.algorithm.parse::<AlgorithmKind>()?, kind, noise),
    };
    if let Some(l) = c.lambda {
        cfg.set_lambda(l);
    }
    if let Some(s) = c.sigma_denoiser {
        cfg.set_sigma(s);
    }
    if let Some(m) = c.max_iter {
        cfg.set_iterations(m);
    }
    if let Some(o) = c.output {
        cfg.set_output(o)?;
    }
    cfg.validate()?;
    Ok(cfg)
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

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    checks::level_255("--noise", a.noise, true)?;
    checks::common_levels(&a.common)?;
    let c = &a.common;
    let device = common::parse_device(c.device.as_deref())?;
    let kernel = a
        .kernel
        .as_deref()
        .map(str::parse::<KernelSpec>)
        .transpose()?;
    check_outputs(&a, kernel.as_ref())?;
    let (task, kind) = task_for(c.task, kernel.as_ref(), a.scale, c)?;
    let task = with_hole(task, a.hole)?;
    let cfg = algorithm_config(c, kind, a.noise)?;
    let (ckpt, den) = common::load_denoiser(&c.checkpoint, device)?;
    let warnings = denoiser_warnings(&cfg, &ckpt, &c.checkpoint);
    let den = den.with_options(&c.run.inference(device))?;
    let clean = load_image(&a.input, ckpt.model.architecture.channels, device)?;
    let clean = common::centre_crop(&clean, a.crop)?;
    let size = clean.size();
    if let Some(note) = gradstep_pnp::sr_crop_note(&task, size[2], size[3]) {
        eprintln!("note: {}: {note}", a.input.display());
    }
    let problem = RestorationProblem::synthesize(&clean, &task, a.noise, c.seed)
        .with_context(|| format!("{}", a.input.display()))?;
    common::create_dir(&a.outdir)?;
    checks::remove_earlier_outputs(&a.outdir, &OUTPUTS)?;
    let out = |name: &str| a.outdir.join(name);
    save_image(&out("observed.png"), &problem.observation)?;
    let r = restore(&den, &problem, &cfg)?;
    save_image(&out("restored.png"), &r.image)?;
    monitor::write_json(&out("convergence.json"), &r, &cfg, &warnings)?;
    let plots = monitor::write_plots(&r.records, &a.outdir, cfg.name())?.len();
    std::fs::write(out("config.json"), serde_json::to_vec_pretty(&cfg)?)
        .with_context(|| format!("cannot write {}", out("config.json").display()))?;
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

/// None of the files `restore` writes may be one it reads: the image, the config or the kernel.
fn check_outputs(a: &Args, kernel: Option<&KernelSpec>) -> anyhow::Result<()> {
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.common.config.as_deref());
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
    let truth = problem.ground_truth.as_ref().context("no ground truth")?;
    // Printed, and kept for report.html.
    let mut lines = Vec::new();
    let mut say = |line: String| {
        println!("{line}");
        lines.push(line);
    };
    if problem.observation.size() == truth.size() {
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
    if r.stop == gradstep_pnp::StopReason::Diverged {
        // Not scored: the image is the last finite iterate before the run blew up.
        say("restored: diverged (no PSNR/SSIM; restored.png is the last finite iterate)".into());
    } else {
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
    say(format!(
        "wrote {} (observed.png, restored.png, convergence.json, config.json, {plots} plot(s), {REPORT_FILE})",
        outdir.display()
    ));
    Ok(lines)
}

/// The inpainting task with `--hole`'s block missing too; `--hole` with another task is an error.
fn with_hole(task: Task, hole: Option<Hole>) -> anyhow::Result<Task> {
    Ok(match (task, hole) {
        (task, None) => task,
        (Task::Inpaint { keep, mask_seed }, Some(hole)) => Task::InpaintHole {
            keep,
            mask_seed,
            hole,
        },
        (_, Some(_)) => bail!("--hole applies to --task inpaint only"),
    })
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
