//! The residual blocks' non-linearity `φ` and its derivative `φ'`, which the explicit
//! adjoint pass multiplies by (`J_Nᵀ` of a block is `I + W₁ᵀ diag(φ'(a)) W₂ᵀ`).
use tch::Tensor;

use crate::config::Activation;
use crate::error::Result;

/// PyTorch's Softplus switches to the identity above this input (β = 1).
const SOFTPLUS_THRESHOLD: f64 = 20.0;

impl Activation {
    /// `φ(a)`.
    pub(crate) fn apply(self, a: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Elu => a.f_elu()?,
            Activation::Softplus => a.f_softplus()?,
            Activation::Relu => a.f_relu()?,
        })
    }

    /// `φ'(a)`, written with differentiable operations so that the adjoint pass can itself
    /// be differentiated (training through `D_σ`, Hessian-vector products):
    /// - ELU: `φ'(a) = exp(min(a, 0))` (1 for `a > 0`);
    /// - Softplus: `φ'(a) = sigmoid(a)`, and 1 above the threshold, as PyTorch;
    /// - ReLU: the indicator of `a > 0` (no second derivative).
    pub(crate) fn derivative(self, a: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Elu => a.f_clamp_max(0.0)?.f_exp()?,
            Activation::Softplus => {
                let above = a.f_gt(SOFTPLUS_THRESHOLD)?;
                a.f_sigmoid()?.f_masked_fill(&above, 1.0)?
            }
            Activation::Relu => a.f_gt(0.0)?.f_to_kind(a.f_kind()?)?,
        })
    }
}
