//! The noise of each training step, a pure function of `(seed, step)`.
//!
//! No generator state has to be saved for an exact resume: step `t` draws
//! - `σ ~ U[σ_min, σ_max] / 255` (one per batch, or one per image) from a ChaCha8 stream
//!   seeded with `mix(seed, t)`;
//! - `ξ ~ N(0, I)` from torch's CPU generator after `tch::manual_seed(mix(seed, t))`, then
//!   moved to the device, so the noise is the same on CPU and CUDA.
//!
//! The global torch seed is left at `mix(seed, t)`, so anything random later in the step
//! is reproducible as well (the Prox estimator's start is drawn from `mix(seed, t)` by
//! `crate::prox::start_vector`).
use gradstep_model::Sigma;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::config::NoiseConfig;
use crate::error::Result;

/// Held while torch's global CPU generator is seeded and drawn from, so that two draws in
/// one process (parallel tests, a validation thread) cannot interleave between the seed and
/// the draw.
pub(crate) static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The seed of step `step`: SplitMix64 of `seed` and `step`, so consecutive steps and
/// seeds give unrelated streams.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(step)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The noise of step `step` for a batch shaped like `like` `[B, C, P, P]`: `ξ` (on `like`'s
/// device, in its precision) and the levels `σ` on the `[0, 1]` scale (one, or one per
/// image with `per_image`).
pub fn step_noise(
    like: &Tensor,
    cfg: &NoiseConfig,
    seed: u64,
    step: u64,
) -> Result<(Tensor, Vec<f64>)> {
    let s = step_seed(seed, step);
    let b = like.size()[0];
    let mut rng = ChaCha8Rng::seed_from_u64(s);
    let (lo, hi) = (cfg.sigma_min_255 / 255.0, cfg.sigma_max_255 / 255.0);
    let mut draw = || if hi > lo { rng.gen_range(lo..hi) } else { lo };
    let sigmas: Vec<f64> = if cfg.per_image {
        (0..b).map(|_| draw()).collect()
    } else {
        vec![draw()]
    };
    let xi = {
        let _guard = GLOBAL_GENERATOR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Reinterpreting the bits keeps every u64 seed distinct.
        tch::manual_seed(s as i64);
        Tensor::f_randn(like.size(), (Kind::Float, Device::Cpu))?
    }
    .f_to_kind(like.kind())?
    .f_to_device(like.device())?;
    Ok((xi, sigmas))
}

/// The noisy batch `y = x + σξ` of step `step` for clean patches `clean` `[B, C, P, P]`,
/// and its `σ` (on the `[0, 1]` scale).
pub fn noisy_batch(
    clean: &Tensor,
    cfg: &NoiseConfig,
    seed: u64,
    step: u64,
) -> Result<(Tensor, Sigma)> {
    let (xi, sigmas) = step_noise(clean, cfg, seed, step)?;
    let b = clean.size()[0];
    let (scale, sigma) = if cfg.per_image {
        let t = Tensor::f_from_slice(&sigmas)?
            .f_to_kind(clean.kind())?
            .f_to_device(clean.device())?
            .f_view([b, 1, 1, 1])?;
        (t, Sigma::PerImage(sigmas))
    } else {
        (
            Tensor::f_from_slice(&sigmas)?
                .f_to_kind(clean.kind())?
                .f_to_device(clean.device())?,
            Sigma::Scalar(sigmas[0]),
        )
    };
    Ok((clean.f_add(&xi.f_mul(&scale)?)?, sigma))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigma_values(s: &Sigma) -> Vec<f64> {
        match s {
            Sigma::Scalar(v) => vec![*v],
            Sigma::PerImage(v) => v.clone(),
            Sigma::Map(_) => unreachable!(),
        }
    }

    #[test]
    fn same_step_same_noise_other_step_other_noise() {
        let clean = Tensor::zeros([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let cfg = NoiseConfig {
            per_image: true,
            ..Default::default()
        };
        let (a, sa) = noisy_batch(&clean, &cfg, 7, 3).unwrap();
        let _ = noisy_batch(&clean, &cfg, 7, 4).unwrap();
        let (b, sb) = noisy_batch(&clean, &cfg, 7, 3).unwrap();
        let (c, _) = noisy_batch(&clean, &cfg, 7, 4).unwrap();
        assert_eq!(sigma_values(&sa), sigma_values(&sb));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        let sv = sigma_values(&sa);
        assert_eq!(sv.len(), 4);
        assert!(sv.iter().all(|s| (0.0..50.0 / 255.0).contains(s)));
        // Per image: the noise of image i has standard deviation ≈ σ_i (192 samples each).
        for (i, s) in sv.iter().enumerate() {
            let std = a.get(i as i64).std(true).double_value(&[]);
            assert!(
                (std - s).abs() < 0.2 * s + 1e-6,
                "image {i}: std {std} vs σ {s}"
            );
        }
    }

    #[test]
    fn sigma_is_uniform_over_the_range() {
        let clean = Tensor::zeros([1, 1, 1, 1], (Kind::Float, Device::Cpu));
        let cfg = NoiseConfig::default();
        let draws: Vec<f64> = (0..2000)
            .map(|t| sigma_values(&noisy_batch(&clean, &cfg, 1, t).unwrap().1)[0] * 255.0)
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 25.0).abs() < 1.0, "mean σ {mean}");
        assert!(draws.iter().all(|s| (0.0..50.0).contains(s)));
    }
}
