//! Seeded, explicit generators for synthetic observations: the Gaussian noise `n` of
//! `y = A x + ν n` and the inpainting masks, drawn on the host from generators owned by the
//! caller (never torch's global generator), so that two draws can never share a stream.
//!
//! The noise reproduces the official GS-PnP / Prox-PnP scripts bit for bit: they call
//! `np.random.seed(seed)` then `np.random.normal(0, ν/255, y.shape)` on `H × W × C` arrays,
//! i.e. numpy's legacy `RandomState`: MT19937 ([`rand_mt::Mt`], whose `new` is MT19937's
//! `init_genrand`, numpy's legacy integer seeding), 53-bit doubles from two 32-bit draws, and
//! the polar Box–Muller method that returns the second normal of each pair first and keeps
//! the first for the next call. Written here because no crate offers numpy's legacy
//! Gaussian; the unit test pins numpy's own first values.
//!
//! Both draw through [`crate::noise`], the one noise helper: [`NumpyLegacyNormal`] is a
//! [`NormalGenerator`] laid out as numpy's arrays.
//!
//! Masks come from ChaCha8 on a stream of their own, so a mask is independent of the noise
//! drawn with the same seed (the official inpainting script draws its mask unseeded).
use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::error::{DataError, Result};
use crate::noise::{gaussian_noise, seeded, NormalGenerator};

/// numpy's legacy `RandomState` Gaussian generator.
#[derive(Debug, Clone)]
pub struct NumpyLegacyNormal {
    mt: rand_mt::Mt,
    cached: Option<f64>,
}

impl NumpyLegacyNormal {
    /// `np.random.seed(seed)`.
    pub fn new(seed: u32) -> Self {
        NumpyLegacyNormal {
            mt: rand_mt::Mt::new(seed),
            cached: None,
        }
    }

    /// `np.random.seed(seed)` for a seed numpy accepts (`0 ≤ seed < 2³²`).
    pub fn seeded(seed: i64) -> Result<Self> {
        Ok(Self::new(numpy_seed(seed)?))
    }

    /// numpy's `legacy_double`: a uniform double in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        let a = (self.mt.next_u32() >> 5) as f64;
        let b = (self.mt.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// One standard normal, as numpy's `legacy_gauss`.
    pub fn next_normal(&mut self) -> f64 {
        if let Some(g) = self.cached.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.uniform() - 1.0;
            let x2 = 2.0 * self.uniform() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.cached = Some(f * x1);
                return f * x2;
            }
        }
    }
}

/// The seed as numpy accepts it (`0 ≤ seed < 2³²`).
fn numpy_seed(seed: i64) -> Result<u32> {
    u32::try_from(seed).map_err(|_| {
        DataError::Invalid(format!(
            "noise seed must be in [0, 2^32) (numpy's legacy seeding), got {seed}"
        ))
    })
}

impl NormalGenerator for NumpyLegacyNormal {
    /// `n ~ N(0, I)` of shape `[1, C, H, W]` (float64 on the CPU), drawn as numpy fills an
    /// `(H, W, C)` array: `np.random.normal(0, 1, (H, W, C))`.
    fn standard_normal(&mut self, shape: &[i64]) -> Result<Tensor> {
        let &[1, c, h, w] = shape else {
            return Err(DataError::Invalid(format!(
                "noise is drawn for one [1, C, H, W] image, got {shape:?}"
            )));
        };
        let hwc: Vec<f64> = (0..c * h * w).map(|_| self.next_normal()).collect();
        Ok(Tensor::f_from_slice(&hwc)?
            .f_view([h, w, c])?
            .f_permute([2, 0, 1])?
            .f_contiguous()?
            .f_unsqueeze(0)?)
    }
}

/// `std · n` for `n ~ N(0, I)` of shape `[1, C, H, W]` (float64 on the CPU), drawn as the
/// official scripts draw it: `np.random.seed(seed); np.random.normal(0, std, (H, W, C))`.
pub fn official_gaussian_noise(shape: &[i64], std: f64, seed: i64) -> Result<Tensor> {
    gaussian_noise(shape, std, &mut NumpyLegacyNormal::seeded(seed)?)
}

/// A `[1, 1, H, W]` mask (float64 on the CPU) keeping each pixel with probability `keep`,
/// from ChaCha8 seeded with `seed` on stream 1 (independent of the noise of the same seed).
pub fn random_mask(height: i64, width: i64, keep: f64, seed: i64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&keep) {
        return Err(DataError::Invalid(format!(
            "keep probability must be in [0, 1], got {keep}"
        )));
    }
    let mut rng = seeded(seed as u64, 1);
    let m: Vec<f64> = (0..height * width)
        .map(|_| f64::from(u8::from(rng.gen::<f64>() < keep)))
        .collect();
    Ok(Tensor::f_from_slice(&m)?
        .f_view([1, 1, height, width])?
        .f_to_kind(Kind::Double)?
        .f_to_device(Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_legacy_normal_matches_numpy() {
        // np.random.seed(0); np.random.normal(size=6)
        let want = [
            1.764_052_345_967_664,
            0.400_157_208_367_223_3,
            0.978_737_984_105_739_2,
            2.240_893_199_201_458,
            1.867_557_990_149_967_5,
            -0.977_277_879_876_411,
        ];
        let mut rng = NumpyLegacyNormal::new(0);
        for (i, w) in want.iter().enumerate() {
            let got = rng.next_normal();
            assert!((got - w).abs() < 1e-15, "draw {i}: {got} vs numpy {w}");
        }
    }

    #[test]
    fn noise_is_laid_out_as_numpys_hwc_array() {
        let t = official_gaussian_noise(&[1, 3, 2, 2], 1.0, 0).unwrap();
        let mut rng = NumpyLegacyNormal::new(0);
        // numpy's element (h=0, w=0, c=1) is its second draw, (h=0, w=1, c=0) its fourth.
        let draws: Vec<f64> = (0..12).map(|_| rng.next_normal()).collect();
        assert_eq!(t.double_value(&[0, 1, 0, 0]), draws[1]);
        assert_eq!(t.double_value(&[0, 0, 0, 1]), draws[3]);
        assert_eq!(t.double_value(&[0, 2, 1, 1]), draws[11]);
        assert!(official_gaussian_noise(&[1, 3, 2, 2], 1.0, -1).is_err());
    }

    #[test]
    fn masks_keep_the_asked_fraction_and_differ_by_seed() {
        let a = random_mask(64, 64, 0.3, 5).unwrap();
        let b = random_mask(64, 64, 0.3, 6).unwrap();
        let kept = a.mean(Kind::Double).double_value(&[]);
        assert!((kept - 0.3).abs() < 0.03, "kept {kept}");
        assert!(a.not_equal_tensor(&b).any().int64_value(&[]) == 1);
        assert!(random_mask(4, 4, 1.5, 0).is_err());
    }
}
