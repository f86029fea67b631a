//! The residual block of DRUNet: `y = x + W₂ * φ(W₁ * x)` with 3×3 convolutions, no bias.
use tch::{nn, Tensor};

use crate::config::Activation;
use crate::error::Result;

/// One residual block; deepinv names its weights `<prefix>.res.0.weight` and
/// `<prefix>.res.2.weight` (`res.1` is the activation).
#[derive(Debug)]
pub struct ResBlock {
    conv1: Tensor,
    conv2: Tensor,
    activation: Activation,
}

/// PyTorch's default convolution initialisation (`kaiming_uniform_(a = √5)`), i.e.
/// `U(−1/√fan_in, 1/√fan_in)`, which the official GS-DRUNet training starts from.
/// (tch's `DEFAULT_KAIMING_UNIFORM` uses the ReLU gain and is √6 times wider: through
/// DRUNet's 30 convolutions that makes `N_σ` explode.)
pub(crate) fn pytorch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// 3×3 convolution with zero padding 1 and stride 1: `W * x`.
pub(crate) fn conv3x3(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.f_conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)?)
}

/// The adjoint of [`conv3x3`]: `Wᵀ * r`, a transposed convolution with the same weight.
pub(crate) fn conv3x3_adjoint(r: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(r.f_conv_transpose2d(w, None::<Tensor>, [1, 1], [1, 1], [0, 0], 1, [1, 1])?)
}

/// 2×2 stride-2 convolution (the encoder's downsampling), weight `[out, in, 2, 2]`.
/// It is also the adjoint of [`conv_transpose2x2`] with the same weight.
pub(crate) fn conv2x2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.f_conv2d(w, None::<Tensor>, [2, 2], [0, 0], [1, 1], 1)?)
}

/// 2×2 stride-2 transposed convolution (the decoder's upsampling), weight `[in, out, 2, 2]`.
/// It is also the adjoint of [`conv2x2`] with the same weight.
pub(crate) fn conv_transpose2x2(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.f_conv_transpose2d(w, None::<Tensor>, [2, 2], [0, 0], [0, 0], 1, [1, 1])?)
}

impl ResBlock {
    /// Creates (or names, for loading) the block's weights under `p`.
    pub fn new(p: &nn::Path, width: i64, activation: Activation) -> Result<Self> {
        let res = p / "res";
        let init = pytorch_default_init(width * 9);
        Ok(ResBlock {
            conv1: (&res / 0).f_var("weight", &[width, width, 3, 3], init)?,
            conv2: (&res / 2).f_var("weight", &[width, width, 3, 3], init)?,
            activation,
        })
    }

    /// `y = x + W₂ * φ(W₁ * x)`. When `cache` is given, the pre-activation `a = W₁ * x`
    /// is pushed onto it for the adjoint pass.
    pub fn forward(&self, x: &Tensor, cache: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        let a = conv3x3(x, &self.conv1)?;
        let h = conv3x3(&self.activation.apply(&a)?, &self.conv2)?;
        if let Some(cache) = cache {
            cache.push(a);
        }
        Ok(x.f_add(&h)?)
    }

    /// `J_blockᵀ r = r + W₁ᵀ * (φ'(a) ⊙ (W₂ᵀ * r))`, with `a` the cached pre-activation.
    pub fn adjoint(&self, r: &Tensor, a: &Tensor) -> Result<Tensor> {
        let t = conv3x3_adjoint(r, &self.conv2)?.f_mul(&self.activation.derivative(a)?)?;
        Ok(r.f_add(&conv3x3_adjoint(&t, &self.conv1)?)?)
    }
}
