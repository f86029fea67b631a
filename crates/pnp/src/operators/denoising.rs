//! Denoising: `A = I`, `prox_{τf}(v) = (v + τ y) / (1 + τ)`.
use tch::Tensor;

use super::{tau_4d, LinearOperator};
use crate::error::Result;

/// The identity degradation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Denoising;

impl LinearOperator for Denoising {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.shallow_clone())
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.shallow_clone())
    }

    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        let t = tau_4d(tau, v)?;
        Ok(v.f_add(&y.f_mul(&t)?)?.f_div(&t.f_add_scalar(1.0)?)?)
    }

    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        image.to_vec()
    }

    fn select(&self, _index: &Tensor) -> Result<Self> {
        Ok(Denoising)
    }

    fn concat(_ops: &[&Self]) -> Result<Self> {
        Ok(Denoising)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{adjointness_gap, prox_residual};

    #[test]
    fn adjointness() {
        let gap = adjointness_gap(&Denoising, &[2, 3, 6, 5]);
        assert!(gap < 1e-12, "gap {gap}");
    }

    #[test]
    fn prox_optimality() {
        let r = prox_residual(&Denoising, &[2, 3, 6, 5], &[0.5, 3.0]);
        assert!(r < 1e-5, "residual {r}");
    }
}
