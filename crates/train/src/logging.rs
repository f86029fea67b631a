//! What the loop writes to TensorBoard: training scalars, validation PSNRs and images.
use tch::Device;

use crate::error::Result;
use crate::tensorboard::EventWriter;
use crate::validation::Validation;

/// The scalars of one training step.
#[derive(Debug, Clone, Default)]
pub struct StepScalars {
    /// Total loss (MSE plus the weighted penalty).
    pub loss: f64,
    /// `mean ‖D_σ(y) − x‖²`.
    pub mse: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Steps per second since the start of this process.
    pub steps_per_s: f64,
    /// Prox objective: mean penalty, mean and max `‖∇²g_σ‖₂`, Hessian-vector products.
    pub prox: Option<(f64, f64, f64, usize)>,
}

/// Writes a step's scalars, and on CUDA the memory held by tensors now and at its peak
/// since the last `gradstep_model::cuda::reset_peak` (the trainer resets it after each log,
/// so the peak is that of the logging interval), in MiB.
pub fn log_step(w: &mut EventWriter, step: i64, s: &StepScalars, device: Device) -> Result<()> {
    w.scalar("train/loss", step, s.loss)?;
    w.scalar("train/mse", step, s.mse)?;
    w.scalar("train/lr", step, s.lr)?;
    w.scalar("train/grad_norm", step, s.grad_norm)?;
    w.scalar("train/steps_per_s", step, s.steps_per_s)?;
    if let Some((pen, mean, max, products)) = s.prox {
        w.scalar("prox/penalty", step, pen)?;
        w.scalar("prox/hessian_norm_mean", step, mean)?;
        w.scalar("prox/hessian_norm_max", step, max)?;
        w.scalar("prox/hessian_products", step, products as f64)?;
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if let Some(bytes) = gradstep_model::cuda::allocated(device) {
        w.scalar("system/gpu_allocated_mib", step, mib(bytes))?;
    }
    if let Some(bytes) = gradstep_model::cuda::peak_allocated(device) {
        w.scalar("system/gpu_peak_allocated_mib", step, mib(bytes))?;
    }
    w.flush()
}

/// Writes a validation pass: PSNR of `D_σ`, `N_σ` and the input per level, their means, and
/// the example images when `images` is set.
pub fn log_validation(w: &mut EventWriter, step: i64, v: &Validation, images: bool) -> Result<()> {
    for l in &v.levels {
        let s = l.sigma_255;
        w.scalar(&format!("val/psnr_D_sigma{s}"), step, l.denoiser)?;
        w.scalar(&format!("val/psnr_N_sigma{s}"), step, l.network)?;
        w.scalar(&format!("val/psnr_noisy_sigma{s}"), step, l.noisy)?;
    }
    w.scalar("val/psnr_D_mean", step, v.mean_denoiser_psnr())?;
    if images {
        if let Some((s, noisy, den, clean)) = &v.example {
            w.image(&format!("val/sigma{s}/noisy"), step, noisy)?;
            w.image(&format!("val/sigma{s}/denoised"), step, den)?;
            w.image(&format!("val/sigma{s}/clean"), step, clean)?;
        }
    }
    w.flush()
}

/// The run's config as text (the Text tab) and as hyper-parameters with the mean validation
/// PSNR of `D_σ` as their metric (the HParams tab, to compare runs).
pub fn log_config(w: &mut EventWriter, config: &serde_json::Value, step: i64) -> Result<()> {
    let text = serde_json::to_string_pretty(config).unwrap_or_default();
    // Four leading spaces make a Markdown code block, which keeps the JSON's indentation.
    let block: String = text.lines().map(|l| format!("    {l}\n")).collect();
    w.text("config", step, &block)?;
    w.hparams_start(
        &crate::tensorboard::flatten_hparams(config),
        &["val/psnr_D_mean"],
    )?;
    w.flush()
}

/// One line per level for the console.
pub fn validation_summary(step: u64, v: &Validation) -> String {
    let parts: Vec<String> = v
        .levels
        .iter()
        .map(|l| {
            format!(
                "σ={}: D {:.2} / N {:.2} (input {:.2})",
                l.sigma_255, l.denoiser, l.network, l.noisy
            )
        })
        .collect();
    format!(
        "validation at step {step}: {}; mean D {:.2} dB",
        parts.join(", "),
        v.mean_denoiser_psnr()
    )
}
