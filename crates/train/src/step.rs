//! One optimizer step of GS or Prox training: the only copy, called by the trainer, the
//! CUDA-graph step ([`crate::graphed`]) and the benchmarks (`gradstep-bench`), so what a
//! benchmark times is what training runs.
//!
//! A step on clean patches `x` and noisy inputs `y = x + σξ`:
//! 1. the loss, `D_σ` under autocast in the configured precision (the loss itself in
//!    float32): `L = mean ‖D_σ(y) − x‖²` ([`crate::loss`]) for GS; for Prox, from one graph
//!    of `∇g_σ(y)` (`D_σ(y) = y − ∇g_σ(y)`), `L = mean ‖D_σ(y) − x‖² + μ · mean_b penalty_b`
//!    ([`crate::prox`]) with the estimator started from [`crate::prox::start_vector`] of the
//!    step's seed (the penalty's Hessian-vector products run outside the autocast region);
//! 2. backward;
//! 3. the gradient-sync hook ([`GradientSync`]): [`LocalOnly`] on one process, an all-reduce
//!    average for data-parallel training;
//! 4. `‖∇θ L‖` clipped to `clip_grad_norm` on the device
//!    ([`Adam::clip_grad_norm_on_device`]);
//! 5. Adam with the step's learning rate: on the host after reading the loss and the norm
//!    (a NaN / Inf stops training before the update: [`TrainError::Diverged`]), or, for a
//!    step captured in a CUDA graph, from device-resident hyper-parameters
//!    ([`GsStep::run_on_device`], nothing read back).
use gradstep_model::cuda::autocast;
use gradstep_model::{GradientStepDenoiser, Precision, Sigma};
use tch::{Device, Kind, Tensor};

use crate::adam::{Adam, DeviceHyper};
use crate::config::{Objective, TrainConfig};
use crate::error::{Result, TrainError};
use crate::logging::StepScalars;
use crate::loss::{denoising_loss, squared_error};
use crate::noise;
use crate::prox::{penalty_at, start_vector, ProxPenaltyConfig};

/// Averages the gradients of the processes that train one model together, between the
/// backward pass and clipping.
pub trait GradientSync {
    /// Replaces each of `grads` (the parameters' `.grad()` tensors, in the optimizer's
    /// canonical order: by parameter name) by its average over the processes, in place.
    fn average(&mut self, grads: &[Tensor]) -> std::result::Result<(), TrainError>;
}

/// One process trains alone: the gradients are already the average.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOnly;

impl GradientSync for LocalOnly {
    fn average(&mut self, _grads: &[Tensor]) -> Result<()> {
        Ok(())
    }
}

/// A training batch: clean patches `x` `[B, C, P, P]`, noisy inputs `y = x + σξ`, and `σ` as
/// the denoiser takes it.
#[derive(Debug)]
pub struct NoisyBatch {
    /// `x`.
    pub clean: Tensor,
    /// `y = x + σξ`.
    pub noisy: Tensor,
    /// `σ` on the `[0, 1]` scale.
    pub sigma: Sigma,
}

impl NoisyBatch {
    /// The batch of `clean` with a step's noise `ξ` (any device) and levels `σ` (one, or one
    /// per image), as [`crate::noise::draw_noise`] gives them.
    pub fn from_noise(clean: &Tensor, xi: &Tensor, sigmas: Vec<f64>) -> Result<Self> {
        let (noisy, sigma) = noise::add_noise(clean, xi, sigmas)?;
        Ok(NoisyBatch {
            clean: clean.shallow_clone(),
            noisy,
            sigma,
        })
    }
}

/// The loss, the MSE and the gradient norm (before clipping) a step leaves on the device,
/// each a one-element float32 tensor.
#[derive(Debug)]
pub struct StepTensors {
    /// The total loss.
    pub loss: Tensor,
    /// `mean ‖D_σ(y) − x‖²`.
    pub mse: Tensor,
    /// `‖∇θ L‖₂` after the gradient sync, before clipping.
    pub grad_norm: Tensor,
}

impl StepTensors {
    /// The same tensors, sharing storage (a captured step's outputs are rewritten by each
    /// replay).
    pub fn shallow_clone(&self) -> Self {
        StepTensors {
            loss: self.loss.shallow_clone(),
            mse: self.mse.shallow_clone(),
            grad_norm: self.grad_norm.shallow_clone(),
        }
    }
}

/// The GS training step: `L = mean ‖D_σ(y) − x‖²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GsStep {
    /// Precision of `D_σ`'s forward pass (`performance.precision`).
    pub precision: Precision,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    pub clip_grad_norm: Option<f64>,
}

impl GsStep {
    /// The step of `cfg` (whatever its objective: the GS part of it).
    pub fn from_config(cfg: &TrainConfig) -> Self {
        GsStep {
            precision: cfg.performance.precision,
            clip_grad_norm: cfg.clip_grad_norm,
        }
    }

    /// One step at learning rate `lr`; the scalars to log. Nothing is updated when the loss
    /// or the gradient norm is not finite ([`TrainError::Diverged`]).
    pub fn run(
        &self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        batch: &NoisyBatch,
        lr: f64,
        sync: &mut dyn GradientSync,
    ) -> Result<StepScalars> {
        let mse = self.loss(den, batch)?;
        let norm = backward_sync_clip(adam, &mse, self.clip_grad_norm, sync)?;
        update_on_host(adam, &mse, &mse, &norm, lr, None)
    }

    /// One step that reads nothing back (so that it can be captured in a CUDA graph): Adam's
    /// step count and learning rate come from `hyper` ([`Adam::step_on_device`]). The update
    /// is applied whatever the loss; the caller reads the returned tensors afterwards
    /// ([`read_step_numbers`]) and counts the step ([`Adam::count_device_step`]).
    pub fn run_on_device(
        &self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        batch: &NoisyBatch,
        hyper: &mut DeviceHyper,
        sync: &mut dyn GradientSync,
    ) -> Result<StepTensors> {
        let mse = self.loss(den, batch)?;
        let grad_norm = backward_sync_clip(adam, &mse, self.clip_grad_norm, sync)?;
        adam.step_on_device(hyper)?;
        let mse = mse.f_detach()?.f_reshape([1])?;
        Ok(StepTensors {
            loss: mse.shallow_clone(),
            mse,
            grad_norm,
        })
    }

    /// `mean ‖D_σ(y) − x‖²`, `D_σ` under autocast in [`GsStep::precision`].
    fn loss(&self, den: &GradientStepDenoiser, batch: &NoisyBatch) -> Result<Tensor> {
        autocast(self.precision, || {
            denoising_loss(den, &batch.clean, &batch.noisy, &batch.sigma)
        })
    }
}

/// The Prox training step: the GS loss plus `μ · mean_b penalty_b` (ICML 2022).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxStep {
    /// The penalty's settings (`objective.prox`).
    pub penalty: ProxPenaltyConfig,
    /// Precision of `∇g_σ`'s forward pass (the penalty's products run in float32).
    pub precision: Precision,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    pub clip_grad_norm: Option<f64>,
    /// The run's seed: the estimator of step `t` starts from
    /// `start_vector(step_seed(seed, t))`, so a resumed run is exact.
    pub seed: u64,
}

impl ProxStep {
    /// The step of `cfg` when its objective is Prox.
    pub fn from_config(cfg: &TrainConfig) -> Option<Self> {
        match &cfg.objective {
            Objective::Prox(p) => Some(ProxStep {
                penalty: p.clone(),
                precision: cfg.performance.precision,
                clip_grad_norm: cfg.clip_grad_norm,
                seed: cfg.seed,
            }),
            Objective::Gs => None,
        }
    }

    /// Step `step` (counted from 0, it seeds the estimator's start) at learning rate `lr`;
    /// the scalars to log, with the penalty's (mean penalty, mean and max `‖∇²g_σ‖₂`,
    /// Hessian-vector products). Nothing is updated when the loss or the gradient norm is
    /// not finite ([`TrainError::Diverged`]).
    pub fn run(
        &self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        batch: &NoisyBatch,
        step: u64,
        lr: f64,
        sync: &mut dyn GradientSync,
    ) -> Result<StepScalars> {
        let noisy = &batch.noisy;
        // One graph of ∇g_σ(y) serves both D_σ(y) = y − ∇g_σ(y) and the penalty.
        let (at, mse) = autocast(self.precision, || -> Result<_> {
            let at = den.gradient_at(noisy, &batch.sigma)?;
            let d = noisy.f_sub(&at.grad().f_to_kind(Kind::Float)?)?;
            let mse = squared_error(&d, &batch.clean)?;
            Ok((at, mse))
        })?;
        // The estimator's start: a pure function of the step's noise seed (same on CPU and
        // CUDA, nothing to save for an exact resume).
        let start = start_vector(
            &noisy.size(),
            noise::step_seed(self.seed, step),
            batch.clean.device(),
        )?;
        let pen = penalty_at(&at, &self.penalty, Some(&start))?;
        let mean_pen = pen.penalty.f_mean(Kind::Float)?;
        let loss = mse.f_add(&mean_pen.f_mul_scalar(self.penalty.mu)?)?;
        let n = pen.norms.len().max(1) as f64;
        let mean_norm = pen.norms.iter().sum::<f64>() / n;
        let max_norm = pen.norms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let stats = (
            mean_pen.f_double_value(&[])?,
            mean_norm,
            max_norm,
            pen.products,
        );
        let norm = backward_sync_clip(adam, &loss, self.clip_grad_norm, sync)?;
        update_on_host(adam, &loss, &mse, &norm, lr, Some(stats))
    }
}

/// The step of a training config: GS or Prox as its objective says.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingStep {
    /// [`GsStep`].
    Gs(GsStep),
    /// [`ProxStep`].
    Prox(ProxStep),
}

impl TrainingStep {
    /// The step `cfg` trains with.
    pub fn from_config(cfg: &TrainConfig) -> Self {
        match ProxStep::from_config(cfg) {
            Some(p) => TrainingStep::Prox(p),
            None => TrainingStep::Gs(GsStep::from_config(cfg)),
        }
    }

    /// Step `step` at learning rate `lr` ([`GsStep::run`] or [`ProxStep::run`]).
    pub fn run(
        &self,
        den: &GradientStepDenoiser,
        adam: &mut Adam,
        batch: &NoisyBatch,
        step: u64,
        lr: f64,
        sync: &mut dyn GradientSync,
    ) -> Result<StepScalars> {
        match self {
            TrainingStep::Gs(s) => s.run(den, adam, batch, lr, sync),
            TrainingStep::Prox(s) => s.run(den, adam, batch, step, lr, sync),
        }
    }
}

/// Zeroes the gradients, back-propagates `loss`, lets `sync` average the gradients, and
/// clips their global norm to `clip` on the device; the norm before clipping.
fn backward_sync_clip(
    adam: &mut Adam,
    loss: &Tensor,
    clip: Option<f64>,
    sync: &mut dyn GradientSync,
) -> Result<Tensor> {
    adam.zero_grad()?;
    loss.f_backward()?;
    sync.average(&adam.gradients())?;
    match clip {
        Some(c) => adam.clip_grad_norm_on_device(c),
        None => adam.grad_norm_on_device(),
    }
}

/// Reads the step's numbers (stopping on a non-finite loss or norm), then Adam at `lr`.
fn update_on_host(
    adam: &mut Adam,
    loss: &Tensor,
    mse: &Tensor,
    norm: &Tensor,
    lr: f64,
    prox: Option<(f64, f64, f64, usize)>,
) -> Result<StepScalars> {
    let (loss, mse, grad_norm) = read_step_numbers(loss, mse, norm, "")?;
    adam.set_lr(lr);
    adam.step()?;
    Ok(StepScalars {
        loss,
        mse,
        lr,
        grad_norm,
        steps_per_s: 0.0,
        prox,
    })
}

/// Reads a step's loss, MSE and gradient norm in one transfer (each read waits for the GPU
/// to drain its queue) and stops training when the loss or the gradient is not finite
/// (`note` is added to that message).
pub fn read_step_numbers(
    loss: &Tensor,
    mse: &Tensor,
    norm: &Tensor,
    note: &str,
) -> Result<(f64, f64, f64)> {
    let one = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([1])?)
    };
    let values = Vec::<f64>::try_from(
        &Tensor::f_cat(&[one(loss)?, one(mse)?, one(norm)?], 0)?.f_to_device(Device::Cpu)?,
    )?;
    let (loss, mse, norm) = (values[0], values[1], values[2]);
    if !loss.is_finite() {
        return Err(TrainError::Diverged(format!("loss is {loss}{note}")));
    }
    if !norm.is_finite() {
        return Err(TrainError::Diverged(format!(
            "gradient norm is {norm}{note}"
        )));
    }
    Ok((loss, mse, norm))
}
