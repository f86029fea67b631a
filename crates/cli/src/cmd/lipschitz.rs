//! `gradstep lipschitz`: the estimated `‖∇²g_σ(y)‖₂` at noisy images, per σ and image.
//!
//! The check of the Prox-DRUNet paper: `D_σ` is a proximal operator when `∇g_σ` is
//! `L`-Lipschitz with `L < 1`, so a Prox checkpoint must give max < 1 on CBSD68.
use std::path::PathBuf;

use anyhow::{bail, Context};
use gradstep_data::load_image;
use gradstep_data::noise::{add_noise, seeded};
use gradstep_data::reduce;
use gradstep_model::{write_atomic, Checkpoint, Graph, Sigma, LIPSCHITZ_SECTION};
use gradstep_train::prox::{hessian_norms_at, start_vector, ProxPenaltyConfig, SpectralEstimator};
use serde::Serialize;
use tch::Tensor;

use crate::common;

/// The estimator as chosen on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EstimatorArg {
    /// Power iteration (the reference code's).
    Power,
    /// Lanczos with `--steps` products.
    Lanczos,
}

/// Options of the spectral-norm estimator, shared with `gradstep bench prox`.
#[derive(Debug, clap::Args)]
pub struct EstimatorArgs {
    /// Spectral-norm estimator.
    #[arg(long, value_enum, default_value = "lanczos")]
    pub estimator: EstimatorArg,
    /// Lanczos steps (products). Ritz values are lower bounds of `max |λ|`: verification
    /// errs on the side of more steps than training needs.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Most products without graph.
    #[arg(long, default_value_t = 100)]
    pub max_products: usize,
    /// Stopping tolerance (power: ‖v_{k+1} − v_k‖; Lanczos: relative Ritz residual).
    #[arg(long)]
    pub tolerance: Option<f64>,
}

impl EstimatorArgs {
    /// The penalty configuration these options select (other fields at their defaults).
    pub fn config(&self) -> anyhow::Result<ProxPenaltyConfig> {
        let estimator = match self.estimator {
            EstimatorArg::Power => SpectralEstimator::PowerIteration,
            EstimatorArg::Lanczos => SpectralEstimator::Lanczos { steps: self.steps },
        };
        let default_tol = match self.estimator {
            EstimatorArg::Power => 1e-2,
            EstimatorArg::Lanczos => 1e-3,
        };
        let cfg = ProxPenaltyConfig {
            estimator,
            max_products: self.max_products,
            tolerance: self.tolerance.unwrap_or(default_tol),
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Arguments of `gradstep lipschitz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// gradstep checkpoint (a Softplus GS or Prox denoiser).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of clean images (PNG, JPEG, BMP, TIFF), used in name order.
    #[arg(long)]
    images: PathBuf,
    /// Noise levels on the 0–255 scale, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "5,15,25,50")]
    sigma: Vec<f64>,
    /// Centre crop of this side (images smaller than it are used whole); 0: whole images.
    #[arg(long, default_value_t = 256)]
    crop: i64,
    /// Use at most this many images.
    #[arg(long)]
    limit: Option<usize>,
    /// Base seed: the noise of image i at σ index j uses seed + 1000 j + i, the estimator's
    /// start for a batch from image i uses seed + 1000 j + 500 + i.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Images per batch of products (consecutive images of equal size are batched; the
    /// Hessian is block diagonal across images, so the estimates are per image).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[command(flatten)]
    estimator: EstimatorArgs,
    /// Write the per-image results and the summary here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Record the result (max over images and levels, per-σ max and mean, estimator) in the
    /// checkpoint itself (section `lipschitz`, rewritten atomically), so that `restore`,
    /// `eval` and sweeps can warn when a Prox-PnP run uses a denoiser with max ≥ 1.
    #[arg(long)]
    record: bool,
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    device: Option<String>,
}

/// One σ's results.
#[derive(Debug, Serialize)]
struct SigmaReport {
    sigma_255: f64,
    max: f64,
    mean: f64,
    images: Vec<ImageNorm>,
}

#[derive(Debug, Serialize)]
struct ImageNorm {
    image: String,
    norm: f64,
    products: usize,
}

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.sigma.is_empty() || a.sigma.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        bail!(
            "--sigma must be positive levels on the 0–255 scale, got {:?}",
            a.sigma
        );
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = a.estimator.config()?;
    let device = common::parse_device(a.device.as_deref())?;
    let (ckpt, den) = common::load_denoiser(&a.checkpoint, device)?;
    let channels = ckpt.model.architecture.channels;
    let mut files = gradstep_data::dataset::list_images(&a.images)?;
    files.truncate(a.limit.unwrap_or(usize::MAX));
    let images = files
        .iter()
        .map(|f| common::centre_crop(&load_image(f, channels, device)?, a.crop))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "‖∇²g_σ‖₂ of {} at {} images of {} ({:?}, device {device:?})",
        a.checkpoint.display(),
        images.len(),
        a.images.display(),
        cfg.estimator
    );
    println!("| σ (/255) | max | mean | images ≥ 1 | products (mean) |");
    println!("|---|---|---|---|---|");
    let mut reports = Vec::new();
    for (j, &s255) in a.sigma.iter().enumerate() {
        let sigma = s255 / 255.0;
        let mut rows = Vec::new();
        let mut i = 0;
        while i < images.len() {
            // Consecutive images of the same size, at most --batch of them.
            let mut end = i + 1;
            while end < images.len() && end - i < a.batch && images[end].size() == images[i].size()
            {
                end += 1;
            }
            let mut noisy = Vec::new();
            for (k, x) in images.iter().enumerate().take(end).skip(i) {
                let seed = a.seed + 1000 * j as i64 + k as i64;
                noisy.push(add_noise(x, &[sigma], &mut seeded(seed as u64, 0))?);
            }
            let y = Tensor::f_cat(&noisy, 0)?;
            let start_seed = a.seed + 1000 * j as i64 + 500 + i as i64;
            let start = start_vector(&y.size(), start_seed as u64, device)?;
            let h = den
                .gradient_at(&y, &Sigma::Scalar(sigma))
                .map_err(anyhow::Error::from)
                .and_then(|at| Ok(hessian_norms_at(&at, &cfg, Graph::Inference, Some(&start))?))
                .with_context(|| format!("{} at σ = {s255}", files[i].display()))?;
            for (k, f) in files.iter().enumerate().take(end).skip(i) {
                rows.push(ImageNorm {
                    image: f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    norm: h.values[k - i],
                    products: h.products,
                });
            }
            i = end;
        }
        let max = reduce::max(rows.iter().map(|r| r.norm)).unwrap_or(f64::NAN);
        let mean = reduce::mean(rows.iter().map(|r| r.norm)).unwrap_or(f64::NAN);
        let above = rows.iter().filter(|r| r.norm >= 1.0).count();
        let products = reduce::mean(rows.iter().map(|r| r.products as f64)).unwrap_or(f64::NAN);
        println!(
            "| {s255} | {max:.4} | {mean:.4} | {above}/{} | {products:.1} |",
            rows.len()
        );
        reports.push(SigmaReport {
            sigma_255: s255,
            max,
            mean,
            images: rows,
        });
    }
    if a.record {
        let overall = reports
            .iter()
            .map(|r| r.max)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut ckpt = Checkpoint::read(&a.checkpoint)?;
        ckpt.sections.insert(
            LIPSCHITZ_SECTION.into(),
            serde_json::json!({
                "max": overall,
                "images": a.images,
                "image_count": images.len(),
                "crop": a.crop,
                "estimator": cfg.estimator,
                "sigmas": reports.iter().map(|r| serde_json::json!({
                    "sigma_255": r.sigma_255, "max": r.max, "mean": r.mean,
                })).collect::<Vec<_>>(),
            }),
        );
        ckpt.write(&a.checkpoint)?;
        println!(
            "recorded max ‖∇²g_σ‖₂ = {overall:.4} in {} (section {LIPSCHITZ_SECTION})",
            a.checkpoint.display()
        );
    }
    if let Some(out) = &a.out {
        let json = serde_json::json!({
            "checkpoint": a.checkpoint,
            "images": a.images,
            "crop": a.crop,
            "seed": a.seed,
            "estimator": cfg.estimator,
            "max_products": cfg.max_products,
            "tolerance": cfg.tolerance,
            "sigmas": reports,
        });
        write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
