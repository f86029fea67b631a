//! The training steps the benchmarks time: the training crate's own
//! ([`gradstep_train::step`]), with the settings of the shipped configs, on one process
//! ([`LocalOnly`]). Nothing here computes a loss, clips or updates by itself.
use gradstep_model::{GradientStepDenoiser, Precision};
use gradstep_train::logging::StepScalars;
use gradstep_train::prox::ProxPenaltyConfig;
use gradstep_train::step::{GsStep, LocalOnly, NoisyBatch, ProxStep};
use gradstep_train::Adam;
use tch::Tensor;

use crate::error::Result;

/// The gradient-norm clipping of `configs/gs-drunet.json` and `configs/prox-drunet.json`
/// (and the training config's default).
pub const CLIP_GRAD_NORM: f64 = 1e-2;

/// The noise level of the benchmarked batches, `σ = 25/255`.
pub const SIGMA: f64 = 25.0 / 255.0;

/// One GS training step on `clean` with noise `ξ` (`y = x + σξ`, one `σ`) at Adam's current
/// learning rate, `D_σ` in `precision`: [`GsStep::run`] as the trainer calls it.
pub fn gs_step(
    den: &GradientStepDenoiser,
    adam: &mut Adam,
    clean: &Tensor,
    xi: &Tensor,
    sigma: f64,
    precision: Precision,
) -> Result<StepScalars> {
    let step = GsStep {
        precision,
        clip_grad_norm: Some(CLIP_GRAD_NORM),
    };
    let batch = NoisyBatch::from_noise(clean, xi, vec![sigma])?;
    let lr = adam.lr();
    Ok(step.run(den, adam, &batch, lr, &mut LocalOnly)?)
}

/// Step `step` of Prox training on `clean` with noise `ξ` (one `σ`) at Adam's current
/// learning rate, float32 (as `configs/prox-drunet.json`), the estimator started from the
/// seeded vector of `(seed 0, step)`: [`ProxStep::run`] as the trainer calls it.
pub fn prox_step(
    den: &GradientStepDenoiser,
    adam: &mut Adam,
    clean: &Tensor,
    xi: &Tensor,
    sigma: f64,
    penalty: &ProxPenaltyConfig,
    step: u64,
) -> Result<StepScalars> {
    let prox = ProxStep {
        penalty: penalty.clone(),
        precision: Precision::Fp32,
        clip_grad_norm: Some(CLIP_GRAD_NORM),
        seed: 0,
    };
    let batch = NoisyBatch::from_noise(clean, xi, vec![sigma])?;
    let lr = adam.lr();
    Ok(prox.run(den, adam, &batch, step, lr, &mut LocalOnly)?)
}
