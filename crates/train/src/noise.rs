//! The noise of each training step, a pure function of `(seed, step)`.
//!
//! No generator state has to be saved for an exact resume: step `t` draws
//! - `σ ~ U[σ_min, σ_max] / 255` (one per batch, or one per image) from a ChaCha8 stream
//!   seeded with `mix(seed, t)`;
//! - `ξ ~ N(0, I)` on the host from ChaCha8 seeded with `mix(seed, t)` on stream 1 (the one
//!   noise helper, [`gradstep_data::noise`]; never torch's global generator), then moved to
//!   the device, so the noise is the same on CPU and CUDA.
//!
//! The noise can therefore be drawn ahead: [`NoisePrefetch`] draws the next steps' `ξ` on a
//! worker thread while the device trains (a 16×3×128² batch takes milliseconds on the CPU,
//! long enough to leave a GPU idle at every step), with exactly the values [`draw_noise`]
//! gives.
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use gradstep_data::noise::{add_drawn_noise, seeded, NormalGenerator};
use gradstep_model::Sigma;
use rand::Rng;
use tch::{Device, Kind, Tensor};

use serde::{Deserialize, Serialize};

use crate::bounds::{in_range, show};
use crate::error::{Result, TrainError};

/// Largest noise level on the 0–255 scale (`noise.*`, `validation.sigmas_255`): the
/// whole range of the pixels.
pub const MAX_SIGMA_255: f64 = 255.0;

/// The noise level drawn for each training step: `σ ~ U[min, max] / 255`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// Lower bound of `σ` on the 0–255 scale.
    pub sigma_min_255: f64,
    /// Upper bound of `σ` on the 0–255 scale.
    pub sigma_max_255: f64,
    /// One `σ` per image instead of one per batch (the reference draws one per batch).
    pub per_image: bool,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            sigma_min_255: 0.0,
            sigma_max_255: 50.0,
            per_image: false,
        }
    }
}

impl NoiseConfig {
    /// Checks `0 ≤ sigma_min_255 ≤ sigma_max_255 ≤ MAX_SIGMA_255`; the message names the
    /// field (`noise.…`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        in_range(
            "noise.sigma_min_255",
            self.sigma_min_255,
            0.0,
            false,
            MAX_SIGMA_255,
        )?;
        in_range(
            "noise.sigma_max_255",
            self.sigma_max_255,
            0.0,
            false,
            MAX_SIGMA_255,
        )?;
        if self.sigma_min_255 > self.sigma_max_255 {
            return Err(format!(
                "noise.sigma_min_255 = {} exceeds noise.sigma_max_255 = {}",
                show(self.sigma_min_255),
                show(self.sigma_max_255)
            ));
        }
        Ok(())
    }
}

/// Held while torch's global CPU generator is drawn from (only the Prox estimator's
/// unseeded start, [`crate::prox::hessian_norms_at`] without a start; noise never uses it),
/// so that two such draws in one process cannot interleave.
static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f`, which seeds or draws from torch's global CPU generator, alone among such
/// callers in this process.
pub(crate) fn with_torch_generator<T>(f: impl FnOnce() -> T) -> T {
    let _guard = GLOBAL_GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f()
}

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

/// The noise of step `step` for a batch of `shape` `[B, C, P, P]`: `ξ` (float32, on the
/// CPU) and the levels `σ` on the `[0, 1]` scale (one, or one per image with `per_image`).
pub fn draw_noise(
    shape: &[i64],
    cfg: &NoiseConfig,
    seed: u64,
    step: u64,
) -> Result<(Tensor, Vec<f64>)> {
    let s = step_seed(seed, step);
    let mut rng = seeded(s, 0);
    let (lo, hi) = (cfg.sigma_min_255 / 255.0, cfg.sigma_max_255 / 255.0);
    let mut draw = || if hi > lo { rng.gen_range(lo..hi) } else { lo };
    let sigmas: Vec<f64> = if cfg.per_image {
        (0..shape[0]).map(|_| draw()).collect()
    } else {
        vec![draw()]
    };
    let xi = seeded(s, 1)
        .standard_normal(shape)?
        .f_to_kind(Kind::Float)?;
    Ok((xi, sigmas))
}

/// `y = x + σξ` for clean patches `clean` `[B, C, P, P]` and the noise of a step (`ξ` on
/// any device, moved to `clean`'s), and the `σ` to give the denoiser.
pub fn add_noise(clean: &Tensor, xi: &Tensor, sigmas: Vec<f64>) -> Result<(Tensor, Sigma)> {
    let noisy = add_drawn_noise(clean, xi, &sigmas)?;
    let sigma = if sigmas.len() > 1 {
        Sigma::PerImage(sigmas)
    } else {
        Sigma::Scalar(sigmas[0])
    };
    Ok((noisy, sigma))
}

/// The noisy batch `y = x + σξ` of step `step` for clean patches `clean` `[B, C, P, P]`,
/// and its `σ` (on the `[0, 1]` scale).
pub fn noisy_batch(
    clean: &Tensor,
    cfg: &NoiseConfig,
    seed: u64,
    step: u64,
) -> Result<(Tensor, Sigma)> {
    let (xi, sigmas) = draw_noise(&clean.size(), cfg, seed, step)?;
    add_noise(clean, &xi, sigmas)
}

/// Steps whose noise may be drawn ahead of the training loop.
const AHEAD: usize = 2;

/// What the worker sends: the step, its `ξ` (CPU) and its levels `σ`.
type Drawn = Result<(u64, Tensor, Vec<f64>)>;

/// The noise of steps `first, first + 1, …`, drawn `AHEAD` (2) steps ahead on a worker thread
/// (into page-locked memory when the batches go to CUDA, so that the copy does not block).
pub struct NoisePrefetch {
    rx: Option<Receiver<Drawn>>,
    worker: Option<JoinHandle<()>>,
}

impl NoisePrefetch {
    /// Starts drawing the noise of batches of `shape` from step `first` on.
    pub fn start(shape: [i64; 4], cfg: NoiseConfig, seed: u64, first: u64, device: Device) -> Self {
        let (tx, rx) = sync_channel(AHEAD);
        let pin = device.is_cuda();
        let worker = std::thread::spawn(move || {
            for step in first.. {
                let drawn = draw_noise(&shape, &cfg, seed, step).and_then(|(xi, sigmas)| {
                    // `_pin_memory`, not `pin_memory`: tch always passes the device, which
                    // libtorch 2.11's `pin_memory` / `is_pinned` answer with two deprecation
                    // warnings per call (600 log lines in a 300-step GPU run). `ξ` is freshly
                    // drawn, so the `is_pinned` check that `pin_memory` adds is moot.
                    let xi = if pin {
                        xi.f_internal_pin_memory(device)?
                    } else {
                        xi
                    };
                    Ok((step, xi, sigmas))
                });
                // The loop ends when the trainer drops its end of the channel.
                if tx.send(drawn).is_err() {
                    break;
                }
            }
        });
        NoisePrefetch {
            rx: Some(rx),
            worker: Some(worker),
        }
    }

    /// The noise of `step`, which must be the step after the previous call's (or `first`).
    pub fn next(&mut self, step: u64) -> Result<(Tensor, Vec<f64>)> {
        let got = self
            .rx
            .as_ref()
            .and_then(|rx| rx.recv().ok())
            .ok_or(TrainError::NoiseWorkerStopped)??;
        let (drawn_for, xi, sigmas) = got;
        if drawn_for != step {
            return Err(TrainError::NoiseOutOfStep {
                drawn_for,
                asked: step,
            });
        }
        Ok((xi, sigmas))
    }
}

impl Drop for NoisePrefetch {
    fn drop(&mut self) {
        // Closing the channel ends the worker after its current draw.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
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

    #[test]
    fn prefetched_noise_is_the_noise_of_each_step() {
        tch::set_num_threads(1);
        let cfg = NoiseConfig {
            per_image: true,
            ..Default::default()
        };
        let shape = [3i64, 1, 4, 4];
        let mut ahead = NoisePrefetch::start(shape, cfg.clone(), 5, 10, Device::Cpu);
        for step in 10..16 {
            let (xi, sigmas) = ahead.next(step).unwrap();
            let (want, want_sigmas) = draw_noise(&shape, &cfg, 5, step).unwrap();
            assert!(xi.equal(&want), "step {step}");
            assert_eq!(sigmas, want_sigmas);
        }
        // Asking out of order is an error, not silently other noise.
        assert!(ahead.next(20).is_err());
        // Dropping it stops the worker (the test would hang otherwise).
        drop(ahead);
    }
}
