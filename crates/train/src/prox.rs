//! The Prox-DRUNet spectral-norm penalty (Hurault, Leclaire, Papadakis, ICML 2022).
//!
//! `D_σ = I − ∇g_σ` is the proximal operator of a weakly convex `φ_σ` when `∇g_σ` is
//! `L`-Lipschitz with `L < 1`, i.e. when `‖∇²g_σ(y)‖₂ < 1`. Training adds, per image `b`,
//! ```text
//! penalty_b = clip(max(‖∇²g_σ(y_b)‖₂, 1 − ε), 0, clip_max)
//! ```
//! at the noisy training inputs `y_b`, and the caller adds `μ · mean_b(penalty_b)` to the
//! denoising loss. The norm is estimated by [`crate::spectral`] with Hessian-vector products
//! that keep no graph, reusing one graph of `∇g_σ(y)` for all of them (with the explicit
//! adjoint each is a first-order backward), then ONE differentiable product gives the
//! Rayleigh quotient `‖∇²g_σ(y_b)‖ ≈ |⟨v_b, ∇²g_σ(y_b) v_b⟩| / ‖v_b‖²`, whose gradient
//! reaches the network's parameters. At an exact eigenvector `v_b` this is also the exact
//! derivative of `|λ_max|` (Hellmann–Feynman: `∂λ = vᵀ (∂∇²g) v` for unit `v`).
use gradstep_model::{GradientAt, GradientStepDenoiser, Graph, Sigma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::bounds::show;
use crate::error::{Result, TrainError};
pub use crate::spectral::SpectralEstimator;
use crate::spectral::{self, batch_dot};

/// The penalty's settings (defaults: the paper's and the reference code's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxPenaltyConfig {
    /// Weight `μ` of the penalty in the loss (`10⁻³`).
    pub mu: f64,
    /// Margin `ε`: norms below `1 − ε` are not penalised further (`0.1`).
    pub epsilon: f64,
    /// Upper clip of the per-image penalty (`10³`), against exploding first steps.
    pub clip_max: f64,
    /// How `‖∇²g_σ‖₂` is estimated.
    pub estimator: SpectralEstimator,
    /// Most Hessian-vector products without graph per estimate (`50`).
    pub max_products: usize,
    /// Stopping tolerance of the estimator (`10⁻²`): on `‖v_{k+1} − v_k‖` for the power
    /// iteration, on the relative Ritz residual for Lanczos.
    pub tolerance: f64,
}

impl Default for ProxPenaltyConfig {
    fn default() -> Self {
        ProxPenaltyConfig {
            mu: 1e-3,
            epsilon: 0.1,
            clip_max: 1e3,
            estimator: SpectralEstimator::PowerIteration,
            max_products: 50,
            tolerance: 1e-2,
        }
    }
}

impl ProxPenaltyConfig {
    /// Checks the values (every one must be usable before a long run starts): `mu` in
    /// `[0, 10³]`, `epsilon` finite and ≤ 1, `clip_max` in `(0, 10⁶]`, `max_products` and
    /// the Lanczos `steps` in `1..=10⁴`, `tolerance` in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("prox penalty: {m}")));
        if !(self.mu >= 0.0 && self.mu <= 1e3) {
            return bad(format!("mu must be in [0, 1000], got {}", show(self.mu)));
        }
        if !(self.epsilon.is_finite() && self.epsilon <= 1.0) {
            return bad(format!(
                "epsilon must be finite and ≤ 1, got {}",
                show(self.epsilon)
            ));
        }
        if !(self.clip_max > 0.0 && self.clip_max <= 1e6) {
            return bad(format!(
                "clip_max must be in (0, 1e6], got {}",
                show(self.clip_max)
            ));
        }
        if !(1..=MAX_PRODUCTS).contains(&self.max_products) {
            return bad(format!(
                "max_products must be in 1..={MAX_PRODUCTS}, got {}",
                self.max_products
            ));
        }
        if !(self.tolerance >= 0.0 && self.tolerance <= 1.0) {
            return bad(format!(
                "tolerance must be in [0, 1], got {}",
                show(self.tolerance)
            ));
        }
        if let SpectralEstimator::Lanczos { steps } = self.estimator {
            if !(1..=MAX_PRODUCTS).contains(&steps) {
                return bad(format!(
                    "Lanczos steps must be in 1..={MAX_PRODUCTS}, got {steps}"
                ));
            }
        }
        Ok(())
    }
}

/// Most Hessian-vector products per estimate (`max_products`, Lanczos `steps`).
const MAX_PRODUCTS: usize = 10_000;

/// The penalty of a batch.
#[derive(Debug)]
pub struct ProxPenalty {
    /// `penalty_b`, shape `[B]`, differentiable with respect to the network's parameters.
    pub penalty: Tensor,
    /// The estimated `‖∇²g_σ(y_b)‖₂` (detached), for logging.
    pub norms: Vec<f64>,
    /// Hessian-vector products taken, the final differentiable one included.
    pub products: usize,
}

/// Estimated `‖∇²g_σ(y_b)‖₂` per image.
#[derive(Debug)]
pub struct HessianNorms {
    /// The Rayleigh quotient of the final product: `[B]`, differentiable with
    /// [`Graph::Training`], detached with [`Graph::Inference`].
    pub norms: Tensor,
    /// The same values on the host.
    pub values: Vec<f64>,
    /// Hessian-vector products taken, the final one included.
    pub products: usize,
}

/// The ChaCha stream of [`start_vector`]: a seed shared with another use of ChaCha8 (the
/// training step's `σ` draws in `crate::noise`) still gives an unrelated start.
const START_STREAM: u64 = 0x7072_6f78; // "prox"

/// A uniform `U[0, 1)` starting vector of `shape` for the estimators, a pure function of
/// `seed` (a ChaCha8 stream drawn on the host, then moved to `device`): unlike torch's
/// global generator it is the same on CPU and CUDA, is not disturbed by other threads, and
/// needs no saved state for an exact resume (pass e.g. the training step's noise seed).
/// Float32; [`hessian_norms_at`] converts it to the inputs' kind and device.
pub fn start_vector(shape: &[i64], seed: u64, device: Device) -> Result<Tensor> {
    let numel = shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    let Some(numel) = numel else {
        return Err(TrainError::Config(format!(
            "estimator start: bad shape {shape:?}"
        )));
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(START_STREAM);
    let values: Vec<f32> = (0..numel).map(|_| rng.gen::<f32>()).collect();
    Ok(Tensor::f_from_slice(&values)?
        .f_view(shape)?
        .f_to_device(device)?)
}

/// `penalty_b` for the noisy inputs `y` (`[B, C, H, W]`).
pub fn penalty(
    den: &GradientStepDenoiser,
    y: &Tensor,
    sigma: &Sigma,
    cfg: &ProxPenaltyConfig,
) -> Result<ProxPenalty> {
    penalty_at(&den.gradient_at(y, sigma)?, cfg, None)
}

/// `penalty_b` at a `∇g_σ(y)` already computed with its graph: a training step can take
/// `D_σ(y) = y − at.grad()` from the same graph and save a forward pass. `start` is the
/// estimator's starting vector (shape of `y`); `None` draws a uniform one from the global
/// torch RNG (as the reference code); pass [`start_vector`] of a per-step seed for runs that
/// must resume bit-exactly.
pub fn penalty_at(
    at: &GradientAt,
    cfg: &ProxPenaltyConfig,
    start: Option<&Tensor>,
) -> Result<ProxPenalty> {
    cfg.validate()?;
    let h = hessian_norms_at(at, cfg, Graph::Training, start)?;
    let penalty = h
        .norms
        .f_clamp_min(1.0 - cfg.epsilon)?
        .f_clamp(0.0, cfg.clip_max)?;
    Ok(ProxPenalty {
        penalty,
        norms: h.values,
        products: h.products,
    })
}

/// Estimated `‖∇²g_σ(y_b)‖₂` without graph (verification: `gradstep lipschitz`).
pub fn hessian_norms(
    den: &GradientStepDenoiser,
    y: &Tensor,
    sigma: &Sigma,
    cfg: &ProxPenaltyConfig,
) -> Result<HessianNorms> {
    cfg.validate()?;
    hessian_norms_at(&den.gradient_at(y, sigma)?, cfg, Graph::Inference, None)
}

/// The estimator from `start` (any kind and device, converted to those of the inputs;
/// `None`: a uniform random vector from torch's global generator, as the reference code),
/// then the final product `∇²g_σ v` with `graph`, and `|⟨v_b, ∇²g_σ v_b⟩| / ‖v_b‖²`.
pub fn hessian_norms_at(
    at: &GradientAt,
    cfg: &ProxPenaltyConfig,
    graph: Graph,
    start: Option<&Tensor>,
) -> Result<HessianNorms> {
    let start = match start {
        Some(s) if s.size() != at.grad().size() => {
            return Err(TrainError::Config(format!(
                "estimator start has shape {:?}, the inputs {:?}",
                s.size(),
                at.grad().size()
            )))
        }
        Some(s) => s
            .f_detach()?
            .f_to_kind(at.grad().kind())?
            .f_to_device(at.grad().device())?,
        None => crate::noise::with_torch_generator(|| at.grad().f_detach()?.f_rand_like())?,
    };
    let est = spectral::estimate(
        |v| Ok(at.hessian_vector_product(v, Graph::Inference)?),
        &start,
        cfg.estimator,
        cfg.max_products,
        cfg.tolerance,
    )?;
    let v = est.vectors;
    let hv = at.hessian_vector_product(&v, graph)?;
    let norms = batch_dot(&v, &hv)?.f_abs()?.f_div(&batch_dot(&v, &v)?)?;
    let values = Vec::<f64>::try_from(
        &norms
            .f_detach()?
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Double)?,
    )?;
    Ok(HessianNorms {
        norms,
        values,
        products: est.products + 1,
    })
}
