//! Super-resolution by a factor `s`: `A x = S(k ∗ x)` with `S` keeping the pixels `(s·i, s·j)`
//! (circular blur then decimation, as GS-PnP's `utils_sr.G`), `Aᵀ y = kᵀ ∗ Sᵀ y` (zero
//! upsampling, then the adjoint blur).
//!
//! The prox is the closed form of Zhao et al. (2016), as in GS-PnP's `prox_solution_L2`: with
//! `α = 1/τ`, `R̂ = conj(K̂)·F(Sᵀy) + α F v`,
//! `F z = (R̂ − conj(K̂) ⊙ ⇑[⇓(K̂ R̂) / (⇓|K̂|² + α)]) / α`,
//! where `⇓` averages the `s×s` blocks of a spectrum (each `H/s × W/s`) and `⇑` tiles them back.
use tch::{Device, Kind, Tensor};

use super::{cat, otf, select0, tau_4d, LinearOperator};
use crate::error::{PnpError, Result};
use crate::kernels::Kernel;

/// Blur then decimation by `scale`, one kernel per image (or one shared).
#[derive(Debug)]
pub struct SuperResolution {
    /// `K̂ = fft2(p2o(k))`, complex, `[B or 1, 1, H, W]` (high-resolution grid).
    otf: Tensor,
    scale: i64,
    height: i64,
    width: i64,
}

impl SuperResolution {
    /// The operator for high-resolution images of `height × width` (multiples of `scale`).
    pub fn new(
        kernel: &Kernel,
        scale: i64,
        height: i64,
        width: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if scale < 1 || height % scale != 0 || width % scale != 0 {
            return Err(PnpError::Invalid(format!(
                "super-resolution ×{scale} needs an image size divisible by it, got {height}×{width}"
            )));
        }
        Ok(SuperResolution {
            otf: otf(kernel, height, width, kind, device, false)?,
            scale,
            height,
            width,
        })
    }

    /// The scale factor `s`.
    pub fn scale(&self) -> i64 {
        self.scale
    }

    fn check(&self, x: &Tensor, h: i64, w: i64) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[2] != h || s[3] != w {
            return Err(PnpError::Invalid(format!(
                "super-resolution operator expects {h}×{w} here, got shape {s:?}"
            )));
        }
        Ok(())
    }

    fn fft(x: &Tensor) -> Result<Tensor> {
        Ok(x.f_fft_fft2(None::<&[i64]>, [2i64, 3], "backward")?)
    }

    fn ifft_real(f: &Tensor) -> Result<Tensor> {
        Ok(f.f_fft_ifft2(None::<&[i64]>, [2i64, 3], "backward")?
            .f_real()?)
    }

    /// `Sᵀ y`: zeros except at the kept pixels.
    fn upsample(&self, y: &Tensor) -> Result<Tensor> {
        let s = y.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let z = Tensor::f_zeros([b, c, h, self.scale, w, self.scale], (y.kind(), y.device()))?;
        let mut zi = z.f_select(3, 0)?.f_select(4, 0)?;
        zi.f_copy_(y)?;
        Ok(z.f_view([b, c, h * self.scale, w * self.scale])?)
    }

    /// `⇓`: the mean of the `s×s` blocks of a `[B, C, H, W]` spectrum, `[B, C, H/s, W/s]`.
    fn block_mean(&self, f: &Tensor) -> Result<Tensor> {
        let s = f.size();
        let k = self.scale;
        Ok(f.f_view([s[0], s[1], k, s[2] / k, k, s[3] / k])?
            .f_mean_dim([2i64, 4].as_slice(), false, None::<Kind>)?)
    }
}

impl LinearOperator for SuperResolution {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x, self.height, self.width)?;
        let blurred = Self::ifft_real(&Self::fft(x)?.f_mul(&self.otf)?)?;
        let k = self.scale;
        Ok(blurred
            .f_slice(2, 0, self.height, k)?
            .f_slice(3, 0, self.width, k)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.check(y, self.height / self.scale, self.width / self.scale)?;
        let up = self.upsample(y)?;
        Self::ifft_real(&Self::fft(&up)?.f_mul(&self.otf.f_conj()?)?)
    }

    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        self.check(v, self.height, self.width)?;
        self.check(y, self.height / self.scale, self.width / self.scale)?;
        let alpha = tau_4d(tau, v)?.f_reciprocal()?;
        let otf_c = self.otf.f_conj()?;
        let r = otf_c
            .f_mul(&Self::fft(&self.upsample(y)?)?)?
            .f_add(&Self::fft(v)?.f_mul(&alpha)?)?;
        let kr = self.block_mean(&self.otf.f_mul(&r)?)?;
        let k2 = self.block_mean(&self.otf.f_abs()?.f_square()?)?;
        let inner = kr.f_div(&k2.f_add(&alpha)?)?;
        let tiled = inner.f_repeat([1i64, 1, self.scale, self.scale])?;
        let fz = r.f_sub(&otf_c.f_mul(&tiled)?)?.f_div(&alpha)?;
        Self::ifft_real(&fz)
    }

    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        vec![
            image[0],
            image[1],
            image[2] / self.scale,
            image[3] / self.scale,
        ]
    }

    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(SuperResolution {
            otf: select0(&self.otf, index)?,
            scale: self.scale,
            height: self.height,
            width: self.width,
        })
    }

    fn concat(ops: &[&Self]) -> Result<Self> {
        let f = ops
            .first()
            .ok_or_else(|| PnpError::Invalid("no operator to stack".into()))?;
        if ops
            .iter()
            .any(|o| o.height != f.height || o.width != f.width || o.scale != f.scale)
        {
            return Err(PnpError::Invalid(
                "super-resolution problems of one batch must share size and scale".into(),
            ));
        }
        Ok(SuperResolution {
            otf: cat(ops.iter().map(|o| &o.otf).collect())?,
            scale: f.scale,
            height: f.height,
            width: f.width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{adjointness_gap, prox_residual};

    fn kernel() -> Kernel {
        Kernel::new(3, 3, vec![1.0, 2.0, 0.5, 3.0, 4.0, 1.0, 0.2, 2.0, 1.0]).unwrap()
    }

    #[test]
    fn adjointness() {
        for s in [2, 3] {
            let op =
                SuperResolution::new(&kernel(), s, 12, 6 * s, Kind::Double, Device::Cpu).unwrap();
            let gap = adjointness_gap(&op, &[2, 3, 12, 6 * s]);
            assert!(gap < 1e-12, "×{s}: gap {gap}");
        }
    }

    #[test]
    fn forward_is_blur_then_decimation() {
        let k = kernel();
        let blur = super::super::CircularBlur::new(&k, 12, 12, Kind::Double, Device::Cpu).unwrap();
        let sr = SuperResolution::new(&k, 3, 12, 12, Kind::Double, Device::Cpu).unwrap();
        let x = Tensor::rand([1, 2, 12, 12], (Kind::Double, Device::Cpu));
        let want = blur
            .forward(&x)
            .unwrap()
            .slice(2, 0, 12, 3)
            .slice(3, 0, 12, 3);
        let err = (sr.forward(&x).unwrap() - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-12, "{err}");
    }

    #[test]
    fn prox_optimality() {
        for s in [2, 3] {
            let op = SuperResolution::new(&kernel(), s, 6 * s, 4 * s, Kind::Double, Device::Cpu)
                .unwrap();
            let r = prox_residual(&op, &[2, 3, 6 * s, 4 * s], &[0.2, 5.0]);
            assert!(r < 1e-5, "×{s}: residual {r}");
        }
    }
}
