//! A restoration problem: the operator `A`, the observation `y = A x + ν n` and, when known,
//! the ground truth `x`, with the algorithms' starting point.
use tch::{Device, Kind, Tensor};

use crate::error::{PnpError, Result};
use crate::kernels::Kernel;
use crate::operators::{
    CircularBlur, Degradation, Denoising, Inpainting, LinearOperator, SuperResolution,
};

/// The degradation to simulate on a clean image.
#[derive(Debug, Clone)]
pub enum Task {
    /// `A = I`.
    Denoise,
    /// Circular blur by a kernel.
    Deblur(Kernel),
    /// Blur then decimation by `scale` (2 or 3 in the papers).
    SuperResolution {
        /// The blur kernel.
        kernel: Kernel,
        /// The factor `s`.
        scale: i64,
    },
    /// A random mask keeping each pixel with probability `keep`, drawn from `mask_seed`.
    Inpaint {
        /// Keep probability `p` (0.5 by default in the paper).
        keep: f64,
        /// Seed of the mask.
        mask_seed: i64,
    },
}

/// One problem: operator, observation, ground truth and starting point (batch size 1).
#[derive(Debug)]
pub struct RestorationProblem {
    /// The degradation `A`.
    pub degradation: Degradation,
    /// `y`, of shape `A`'s observation shape.
    pub observation: Tensor,
    /// The clean image when known (`[1, C, H, W]`), for PSNR.
    pub ground_truth: Option<Tensor>,
    /// The starting point before any prox: `y` (denoising, deblurring), the bicubic upsampling
    /// of `y` (super-resolution), `y` with missing pixels at 0.5 (inpainting).
    pub init: Tensor,
    /// The noise level `ν` of `y` on the 0–255 scale.
    pub noise_255: f64,
}

impl RestorationProblem {
    /// Degrades `clean` (`[1, C, H, W]` on `[0, 1]`): `y = A x + (ν/255) n` with `n ~ N(0, I)`
    /// drawn from `seed` on the CPU (so `y` does not depend on the device). For
    /// super-resolution the image is first cropped to a multiple of the scale.
    pub fn synthesize(clean: &Tensor, task: &Task, noise_255: f64, seed: i64) -> Result<Self> {
        let s = clean.size();
        if s.len() != 4 || s[0] != 1 {
            return Err(PnpError::Invalid(format!(
                "expected one [1, C, H, W] image, got {s:?}"
            )));
        }
        gradstep_model::Sigma::check_level_255(noise_255, true)
            .map_err(|e| PnpError::Invalid(format!("noise level {e}")))?;
        let (kind, device) = (clean.kind(), clean.device());
        let (mut h, mut w) = (s[2], s[3]);
        let mut clean = clean.shallow_clone();
        let degradation = match task {
            Task::Denoise => Degradation::Denoising(Denoising),
            Task::Deblur(k) => Degradation::Blur(CircularBlur::new(k, h, w, kind, device)?),
            Task::SuperResolution { kernel, scale } => {
                if *scale < 1 {
                    return Err(PnpError::Invalid(format!("scale must be ≥ 1, got {scale}")));
                }
                h -= h % scale;
                w -= w % scale;
                clean = clean.f_slice(2, 0, h, 1)?.f_slice(3, 0, w, 1)?;
                Degradation::SuperResolution(SuperResolution::new(
                    kernel, *scale, h, w, kind, device,
                )?)
            }
            Task::Inpaint { keep, mask_seed } => {
                Degradation::Inpainting(Inpainting::random(h, w, *keep, *mask_seed, kind, device)?)
            }
        };
        let ax = degradation.forward(&clean)?;
        tch::manual_seed(seed);
        let noise = Tensor::f_randn(ax.size(), (Kind::Double, Device::Cpu))?
            .f_mul_scalar(noise_255 / 255.0)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        let noise = match &degradation {
            Degradation::Inpainting(m) => noise.f_mul(m.mask())?,
            _ => noise,
        };
        let observation = ax.f_add(&noise)?;
        Self::new(degradation, observation, Some(clean), noise_255)
    }

    /// A problem from an observation (with the ground truth when known); checks the shapes
    /// and computes the starting point.
    pub fn new(
        degradation: Degradation,
        observation: Tensor,
        ground_truth: Option<Tensor>,
        noise_255: f64,
    ) -> Result<Self> {
        let init = match &degradation {
            Degradation::SuperResolution(sr) => bicubic_upsample(&observation, sr.scale())?,
            Degradation::Inpainting(m) => {
                let mask = m.mask();
                observation.f_mul(mask)?.f_add(
                    &mask
                        .f_mul_scalar(-1.0)?
                        .f_add_scalar(1.0)?
                        .f_mul_scalar(0.5)?,
                )?
            }
            _ => observation.shallow_clone(),
        };
        if let Some(t) = &ground_truth {
            let want = degradation.observation_shape(&t.size());
            if want != observation.size() || init.size() != t.size() {
                return Err(PnpError::Invalid(format!(
                    "observation {:?} does not match the ground truth {:?}",
                    observation.size(),
                    t.size()
                )));
            }
        }
        Ok(RestorationProblem {
            degradation,
            observation,
            ground_truth,
            init,
            noise_255,
        })
    }

    /// The image shape `[1, C, H, W]` the problem restores.
    pub fn image_shape(&self) -> Vec<i64> {
        self.init.size()
    }
}

/// Bicubic upsampling by `scale` aligned with the decimation that keeps pixel `(s·i, s·j)`:
/// high-resolution pixel `p` takes the bicubic interpolant at low-resolution coordinate `p/s`
/// (what GS-PnP does with `cv2.resize(INTER_CUBIC)` then `shift_pixel`), borders clamped.
pub fn bicubic_upsample(y: &Tensor, scale: i64) -> Result<Tensor> {
    let s = y.size();
    let (b, h, w) = (s[0], s[2], s[3]);
    let opts = (y.kind(), y.device());
    let coord = |n: i64| -> Result<Tensor> {
        // normalised coordinate with align_corners: −1 ↔ pixel 0, 1 ↔ pixel n − 1.
        let p = Tensor::f_arange(n * scale, opts)?.f_div_scalar(scale as f64)?;
        Ok(p.f_mul_scalar(2.0 / ((n - 1).max(1) as f64))?
            .f_sub_scalar(1.0)?)
    };
    let gy = coord(h)?
        .f_view([h * scale, 1])?
        .f_expand([h * scale, w * scale], false)?;
    let gx = coord(w)?
        .f_view([1, w * scale])?
        .f_expand([h * scale, w * scale], false)?;
    let grid = Tensor::f_stack(&[gx, gy], 2)?
        .f_unsqueeze(0)?
        .f_expand([b, h * scale, w * scale, 2], false)?
        .f_contiguous()?;
    // interpolation 2 = bicubic, padding 1 = border.
    Ok(y.f_grid_sampler(&grid, 2, 1, true)?)
}
