//! Deblurring: `A x = k ∗ x`, circular convolution computed with `rfft2`
//! (`A x = F⁻¹(K̂ · F x)`, `Aᵀ y = F⁻¹(conj(K̂) · F y)`), and the closed-form prox
//! `prox_{τf}(v) = F⁻¹[(F v / τ + conj(K̂) F y) / (1/τ + |K̂|²)]`.
use tch::{Device, Kind, Tensor};

use super::{cat, otf, select0, tau_4d, LinearOperator};
use crate::error::{PnpError, Result};
use crate::kernels::Kernel;

/// Circular blur by one kernel per image (or one shared by the batch).
#[derive(Debug)]
pub struct CircularBlur {
    /// `K̂ = rfft2(p2o(k))`, complex, `[B or 1, 1, H, W/2 + 1]`.
    otf: Tensor,
    height: i64,
    width: i64,
}

impl CircularBlur {
    /// The blur by `kernel` of `height × width` images, computed in `kind` on `device`.
    /// Errors when the kernel is larger than the image.
    pub fn new(
        kernel: &Kernel,
        height: i64,
        width: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        Ok(CircularBlur {
            otf: otf(kernel, height, width, kind, device, true)?,
            height,
            width,
        })
    }

    fn spectrum(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        if s.len() != 4 || s[2] != self.height || s[3] != self.width {
            return Err(PnpError::Invalid(format!(
                "blur built for {}×{} images, got shape {s:?}",
                self.height, self.width
            )));
        }
        Ok(x.f_fft_rfft2(None::<&[i64]>, [2i64, 3], "backward")?)
    }

    fn inverse(&self, f: &Tensor) -> Result<Tensor> {
        Ok(f.f_fft_irfft2(
            Some([self.height, self.width].as_slice()),
            [2i64, 3],
            "backward",
        )?)
    }
}

impl LinearOperator for CircularBlur {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inverse(&self.spectrum(x)?.f_mul(&self.otf)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.inverse(&self.spectrum(y)?.f_mul(&self.otf.f_conj()?)?)
    }

    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        let inv_tau = tau_4d(tau, v)?.f_reciprocal()?;
        let num = self
            .spectrum(v)?
            .f_mul(&inv_tau)?
            .f_add(&self.spectrum(y)?.f_mul(&self.otf.f_conj()?)?)?;
        let den = self.otf.f_abs()?.f_square()?.f_add(&inv_tau)?;
        self.inverse(&num.f_div(&den)?)
    }

    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        image.to_vec()
    }

    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(CircularBlur {
            otf: select0(&self.otf, index)?,
            height: self.height,
            width: self.width,
        })
    }

    fn concat(ops: &[&Self]) -> Result<Self> {
        let first = ops
            .first()
            .ok_or_else(|| PnpError::Invalid("no blur to stack".into()))?;
        if ops
            .iter()
            .any(|o| o.height != first.height || o.width != first.width)
        {
            return Err(PnpError::Invalid(
                "blurs of one batch must share the image size".into(),
            ));
        }
        Ok(CircularBlur {
            otf: cat(ops.iter().map(|o| &o.otf).collect())?,
            height: first.height,
            width: first.width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{adjointness_gap, prox_residual};

    fn kernel() -> Kernel {
        let v: Vec<f64> = (0..15).map(|i| 1.0 + ((i * 7) % 5) as f64).collect();
        Kernel::new(3, 5, v).unwrap()
    }

    #[test]
    fn adjointness() {
        let op = CircularBlur::new(&kernel(), 12, 10, Kind::Double, Device::Cpu).unwrap();
        let gap = adjointness_gap(&op, &[2, 3, 12, 10]);
        assert!(gap < 1e-12, "⟨Ax,y⟩ − ⟨x,Aᵀy⟩ relative gap {gap}");
    }

    #[test]
    fn fft_blur_equals_direct_circular_convolution() {
        let k = kernel();
        let (h, w) = (9i64, 11i64);
        let op = CircularBlur::new(&k, h, w, Kind::Double, Device::Cpu).unwrap();
        tch::manual_seed(3);
        let x = Tensor::rand([1, 1, h, w], (Kind::Double, Device::Cpu));
        let fx = op.forward(&x).unwrap();
        let xv = Vec::<f64>::try_from(&x.flatten(0, -1)).unwrap();
        let fv = Vec::<f64>::try_from(&fx.flatten(0, -1)).unwrap();
        let (kh, kw) = (k.height() as i64, k.width() as i64);
        let mut worst: f64 = 0.0;
        for i in 0..h {
            for j in 0..w {
                // (x ∗ k)[i, j] = Σ_{a,b} k[a, b] x[i − a + ⌊kh/2⌋, j − b + ⌊kw/2⌋] (circular).
                let mut s = 0.0;
                for a in 0..kh {
                    for b in 0..kw {
                        let ii = (i - a + kh / 2).rem_euclid(h);
                        let jj = (j - b + kw / 2).rem_euclid(w);
                        s += k.values()[(a * kw + b) as usize] * xv[(ii * w + jj) as usize];
                    }
                }
                worst = worst.max((s - fv[(i * w + j) as usize]).abs());
            }
        }
        assert!(
            worst < 1e-12,
            "FFT blur differs from direct convolution by {worst}"
        );
    }

    #[test]
    fn prox_optimality() {
        let op = CircularBlur::new(&kernel(), 8, 12, Kind::Double, Device::Cpu).unwrap();
        let r = prox_residual(&op, &[2, 3, 8, 12], &[0.3, 7.0]);
        assert!(r < 1e-5, "‖z − v + τ∇f(z)‖∞ = {r}");
    }

    #[test]
    fn kernel_larger_than_image_is_an_error() {
        let k = Kernel::uniform(9).unwrap();
        let err = CircularBlur::new(&k, 8, 20, Kind::Float, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
