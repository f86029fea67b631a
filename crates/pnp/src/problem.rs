//! A restoration problem: the operator `A`, the observation `y = A x + ν n` and, when known,
//! the ground truth `x`, with the algorithms' starting point.
use tch::Tensor;

use gradstep_data::observation_noise::official_gaussian_noise;

use crate::error::{PnpError, Result};
use crate::kernels::Kernel;
use crate::operators::{
    CircularBlur, Degradation, Denoising, Hole, Inpainting, LinearOperator, SuperResolution,
};
use crate::task::Task;

/// What to simulate on a clean image: a [`Task`] with its parameters (kernel, scale, mask).
#[derive(Debug, Clone)]
pub enum DegradationSpec {
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
    /// A random mask keeping each pixel with probability `keep`, drawn from `mask_seed`; with
    /// a `hole`, a rectangular block is missing too (missing pixels = random ∪ block: the
    /// large holes of the GS-PnP paper's Fig. 13; with `keep = 1` only the block is missing).
    Inpaint {
        /// Keep probability `p` (0.5 by default in the paper).
        keep: f64,
        /// Seed of the mask.
        mask_seed: i64,
        /// A missing block on top of the random mask.
        hole: Option<Hole>,
    },
}

impl DegradationSpec {
    /// The task it simulates.
    pub fn task(&self) -> Task {
        match self {
            DegradationSpec::Denoise => Task::Denoise,
            DegradationSpec::Deblur(_) => Task::Deblur,
            DegradationSpec::SuperResolution { .. } => Task::Sr,
            DegradationSpec::Inpaint { .. } => Task::Inpaint,
        }
    }
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
    /// drawn on the host as the official scripts draw it (`np.random.seed(seed)`, then
    /// `np.random.normal` over the `H × W × C` observation; see
    /// [`official_gaussian_noise`]), so `y` does not depend on the device. The inpainting mask
    /// comes from an independent generator of the same seed. For super-resolution the image is
    /// first cropped to a multiple of the scale (a deviation, announced on stderr: the
    /// official script blurs the uncropped image and then cannot score it).
    pub fn synthesize(
        clean: &Tensor,
        task: &DegradationSpec,
        noise_255: f64,
        seed: i64,
    ) -> Result<Self> {
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
            DegradationSpec::Denoise => Degradation::Denoising(Denoising),
            DegradationSpec::Deblur(k) => {
                Degradation::Blur(CircularBlur::new(k, h, w, kind, device)?)
            }
            DegradationSpec::SuperResolution { kernel, scale } => {
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
            DegradationSpec::Inpaint {
                keep,
                mask_seed,
                hole,
            } => {
                let random = Inpainting::random(h, w, *keep, *mask_seed, kind, device)?;
                Degradation::Inpainting(match hole {
                    Some(hole) => random.with_hole(hole)?,
                    None => random,
                })
            }
        };
        let ax = degradation.forward(&clean)?;
        let noise = official_gaussian_noise(&ax.size(), noise_255 / 255.0, seed)?
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
    ///
    /// For super-resolution this is the clean image cropped to a multiple of the scale: see
    /// [`sr_crop_note`].
    pub fn image_shape(&self) -> Vec<i64> {
        self.init.size()
    }
}

/// A note when super-resolution by `scale` crops an `h × w` image (a deviation from the
/// official script, which blurs the uncropped image and then cannot score it); `None` when
/// the scale divides both sides or the task is not super-resolution.
pub fn sr_crop_note(task: &DegradationSpec, h: i64, w: i64) -> Option<String> {
    match task {
        DegradationSpec::SuperResolution { scale, .. } if *scale > 0 && (h % scale != 0 || w % scale != 0) => {
            Some(format!(
                "super-resolution ×{scale}: the {h}×{w} image is cropped to {}×{} (a multiple of \
                 the scale) before it is blurred and decimated; see configs/pnp/README.md, deviation 6",
                h - h % scale,
                w - w % scale
            ))
        }
        _ => None,
    }
}

/// The official super-resolution start: `cv2.resize(y, (s·w, s·h), INTER_CUBIC)` followed by
/// `shift_pixel(·, s)` (GS-PnP's `utils_sr`), i.e.
/// 1. bicubic upsampling with half-pixel centres (`a = −0.75`, replicated borders: torch's
///    `upsample_bicubic2d` without `align_corners` is OpenCV's `INTER_CUBIC`), then
/// 2. the shift towards the upper left by `(s − 1)/2` pixels: bilinear interpolation at
///    `min(p + (s − 1)/2, n − 1)` (scipy's linear `interp2d`, whose evaluation points are
///    clipped to the grid), which aligns high-resolution pixel `s·i` with low-resolution pixel
///    `i` as the decimation keeps it.
pub fn bicubic_upsample(y: &Tensor, scale: i64) -> Result<Tensor> {
    let s = y.size();
    let (b, h, w) = (s[0], s[2], s[3]);
    let (hs, ws) = (h * scale, w * scale);
    let up = y.f_upsample_bicubic2d([hs, ws], false, scale as f64, scale as f64)?;
    let shift = (scale - 1) as f64 * 0.5;
    let opts = (y.kind(), y.device());
    let coord = |n: i64| -> Result<Tensor> {
        // Clipped evaluation point, normalised with align_corners: −1 ↔ 0, 1 ↔ n − 1.
        let p = Tensor::f_arange(n, opts)?
            .f_add_scalar(shift)?
            .f_clamp_max((n - 1) as f64)?;
        Ok(p.f_mul_scalar(2.0 / ((n - 1).max(1) as f64))?
            .f_sub_scalar(1.0)?)
    };
    let gy = coord(hs)?.f_view([hs, 1])?.f_expand([hs, ws], false)?;
    let gx = coord(ws)?.f_view([1, ws])?.f_expand([hs, ws], false)?;
    let grid = Tensor::f_stack(&[gx, gy], 2)?
        .f_unsqueeze(0)?
        .f_expand([b, hs, ws, 2], false)?
        .f_contiguous()?;
    // interpolation 0 = bilinear, padding 1 = border.
    Ok(up.f_grid_sampler(&grid, 0, 1, true)?)
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn an_inpainting_hole_is_missing_from_the_observation_and_starts_at_grey() {
        let clean = Tensor::full([1, 3, 16, 20], 0.8, (Kind::Double, Device::Cpu));
        let hole: Hole = "5,3,10,6".parse().unwrap();
        let task = DegradationSpec::Inpaint {
            keep: 0.9,
            mask_seed: 1,
            hole: Some(hole),
        };
        let p = RestorationProblem::synthesize(&clean, &task, 2.55, 0).unwrap();
        let block = |t: &Tensor| t.narrow(2, 3, 6).narrow(3, 5, 10);
        assert_eq!(
            block(&p.observation)
                .abs()
                .sum(Kind::Double)
                .double_value(&[]),
            0.0
        );
        let grey = (block(&p.init) - 0.5).abs().max().double_value(&[]);
        assert_eq!(grey, 0.0);
        // The same seed without the hole: the same mask outside the block.
        let plain = DegradationSpec::Inpaint {
            keep: 0.9,
            mask_seed: 1,
            hole: None,
        };
        let q = RestorationProblem::synthesize(&clean, &plain, 2.55, 0).unwrap();
        let (Degradation::Inpainting(a), Degradation::Inpainting(b)) =
            (&p.degradation, &q.degradation)
        else {
            panic!("not inpainting");
        };
        let outside = Tensor::ones([1, 1, 16, 20], (Kind::Double, Device::Cpu));
        let _ = block(&outside).fill_(0.0);
        let diff = ((a.mask() - b.mask()) * &outside)
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
        let e = RestorationProblem::synthesize(
            &clean,
            &DegradationSpec::Inpaint {
                keep: 0.9,
                mask_seed: 1,
                hole: Some("15,0,6,4".parse().unwrap()),
            },
            2.55,
            0,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("reaches past the 16×20 image"),
            "{e}"
        );
    }
}
