//! Inpainting: `A x = M ⊙ x` with a binary mask `M` (one per image, shared by the channels),
//! so `Aᵀ = A` and `prox_{τf}(v) = (τ M y + v) / (τ M + 1)`: kept pixels move towards `y`,
//! missing ones are left as they are (as `τ → ∞` this is the projection onto `{Mx = My}`).
use tch::{Device, Kind, Tensor};

use super::{cat, select0, tau_4d, LinearOperator};
use crate::error::{PnpError, Result};

/// A random pixel mask.
#[derive(Debug)]
pub struct Inpainting {
    /// `M ∈ {0, 1}`, `[B or 1, 1, H, W]`.
    mask: Tensor,
}

impl Inpainting {
    /// A mask keeping each pixel with probability `keep`, drawn from `seed` on the host by a
    /// generator of its own ([`gradstep_data::observation_noise::random_mask`]): it does not
    /// depend on the device and is independent of the observation noise of the same seed.
    pub fn random(
        height: i64,
        width: i64,
        keep: f64,
        seed: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&keep) {
            return Err(PnpError::Invalid(format!(
                "keep probability must be in [0, 1], got {keep}"
            )));
        }
        let mask = gradstep_data::observation_noise::random_mask(height, width, keep, seed)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        Ok(Inpainting { mask })
    }

    /// A given mask `[B or 1, 1, H, W]` with values in `{0, 1}`.
    pub fn from_mask(mask: Tensor) -> Result<Self> {
        if mask.dim() != 4 || mask.size()[1] != 1 {
            return Err(PnpError::Invalid(format!(
                "mask must be [B, 1, H, W], got {:?}",
                mask.size()
            )));
        }
        Ok(Inpainting { mask })
    }

    /// The mask `M`.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }
}

impl LinearOperator for Inpainting {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_mul(&self.mask)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.f_mul(&self.mask)?)
    }

    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        let tm = self.mask.f_mul(&tau_4d(tau, v)?)?;
        Ok(tm.f_mul(y)?.f_add(v)?.f_div(&tm.f_add_scalar(1.0)?)?)
    }

    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        image.to_vec()
    }

    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(Inpainting {
            mask: select0(&self.mask, index)?,
        })
    }

    fn concat(ops: &[&Self]) -> Result<Self> {
        Ok(Inpainting {
            mask: cat(ops.iter().map(|o| &o.mask).collect())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{adjointness_gap, prox_residual};

    #[test]
    fn adjointness() {
        let op = Inpainting::random(7, 9, 0.5, 1, Kind::Double, Device::Cpu).unwrap();
        let gap = adjointness_gap(&op, &[2, 3, 7, 9]);
        assert!(gap < 1e-12, "gap {gap}");
    }

    #[test]
    fn prox_optimality_and_projection() {
        let op = Inpainting::random(7, 9, 0.5, 1, Kind::Double, Device::Cpu).unwrap();
        let r = prox_residual(&op, &[2, 3, 7, 9], &[0.4, 2.0]);
        assert!(r < 1e-5, "residual {r}");
        // τ → ∞: the projection: kept pixels equal y, missing ones keep v.
        let v = Tensor::rand([1, 3, 7, 9], (Kind::Double, Device::Cpu));
        let y = Tensor::rand([1, 3, 7, 9], (Kind::Double, Device::Cpu));
        let z = op.prox_data(&v, &y, &Tensor::from_slice(&[1e12])).unwrap();
        let m = op.mask();
        let want: Tensor = m * &y + (1.0 - m) * &v;
        let err = (z - want).abs().max().double_value(&[]);
        assert!(err < 1e-5, "projection error {err}");
        let kept = m.mean(Kind::Double).double_value(&[]);
        assert!((0.2..0.8).contains(&kept), "kept fraction {kept}");
    }
}
