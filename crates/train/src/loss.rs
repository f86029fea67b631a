//! The GS denoising loss (Hurault, Leclaire, Papadakis, ICLR 2022), per batch of clean
//! patches `x` and noisy inputs `y = x + σξ`:
//! ```text
//! L(θ) = mean ‖D_σ(y) − x‖²
//! ```
//! (mean over pixels, as `nn.MSELoss` in the reference). The Prox objective adds
//! `μ · mean_b penalty_b` ([`crate::prox`]); the training steps ([`crate::step`]) put the two
//! together.
use gradstep_model::{GradientStepDenoiser, Graph, Sigma};
use tch::{Kind, Tensor};

use crate::error::Result;

/// `mean ‖D_σ(noisy) − clean‖²` with the training graph of `D_σ` (float32, whatever
/// precision `D_σ` ran in).
pub fn denoising_loss(
    denoiser: &GradientStepDenoiser,
    clean: &Tensor,
    noisy: &Tensor,
    sigma: &Sigma,
) -> Result<Tensor> {
    let d = denoiser.denoise(noisy, sigma, Graph::Training)?;
    squared_error(&d, clean)
}

/// `mean ‖d − x‖²` in float32 (`d` may come from a bfloat16 autocast region).
pub(crate) fn squared_error(d: &Tensor, clean: &Tensor) -> Result<Tensor> {
    Ok(d.f_to_kind(Kind::Float)?
        .f_sub(clean)?
        .f_square()?
        .f_mean(Kind::Float)?)
}
