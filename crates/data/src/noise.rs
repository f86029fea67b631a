//! The one way gradstep adds Gaussian noise to an image: `y = x + σ ξ`, `ξ ~ N(0, I)` drawn
//! on the host from a generator the caller owns and passes in.
//!
//! No library seeds or draws from torch's global generator for noise: a generator passed by
//! `&mut` cannot be shared by two threads between a seed and a draw (parallel tests, a
//! validation thread, the training noise worker), and the values do not depend on the device
//! (the noise is drawn on the CPU, then moved). The one deliberate use of torch's global
//! generator left in the libraries is the weight initialisation of a new training run
//! (`tch::manual_seed(seed)` before `Drunet::new` in the trainer): tch's `nn` initialisers
//! take no generator, it happens once, before any thread that draws exists, and a resumed
//! run loads its weights instead of drawing them.
//!
//! Two generators implement [`NormalGenerator`]:
//! - any [`rand::RngCore`] (gradstep uses [`seeded`]: ChaCha8 on a chosen stream), through
//!   `rand_distr`'s ziggurat `StandardNormal`, filled in the tensor's own `[B, C, H, W]` order;
//! - [`crate::observation_noise::NumpyLegacyNormal`], numpy's legacy `RandomState` laid out as
//!   numpy's `H × W × C` array, so that the official GS-PnP observations are reproduced.
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Kind, Tensor};

use crate::error::{DataError, Result};

/// A source of standard normal tensors.
pub trait NormalGenerator {
    /// `ξ ~ N(0, I)` of `shape`, float64 on the CPU.
    fn standard_normal(&mut self, shape: &[i64]) -> Result<Tensor>;
}

impl<R: RngCore> NormalGenerator for R {
    fn standard_normal(&mut self, shape: &[i64]) -> Result<Tensor> {
        let numel = element_count(shape)?;
        let values: Vec<f64> = (0..numel).map(|_| StandardNormal.sample(self)).collect();
        Ok(Tensor::f_from_slice(&values)?.f_view(shape)?)
    }
}

/// The number of elements of `shape`, refusing negative sides.
fn element_count(shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &side| {
        usize::try_from(side)
            .ok()
            .and_then(|side| n.checked_mul(side))
            .ok_or_else(|| DataError::Invalid(format!("noise of shape {shape:?}")))
    })
}

/// The generator of seed `seed` on stream `stream`: ChaCha8, whose streams are independent,
/// so draws that share a seed (a step's σ and its ξ) can still never share values.
pub fn seeded(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// `σ ξ` with `ξ ~ N(0, I)` of `shape` from `rng`, float64 on the CPU.
pub fn gaussian_noise(shape: &[i64], sigma: f64, rng: &mut impl NormalGenerator) -> Result<Tensor> {
    Ok(rng.standard_normal(shape)?.f_mul_scalar(sigma)?)
}

/// `y = x + σ ξ`, `ξ ~ N(0, I)` from `rng`, in `x`'s kind and on its device. `sigma` holds
/// one level, or one per image of the batch `x` (`[B, …]`); levels are on `x`'s scale.
pub fn add_noise(x: &Tensor, sigma: &[f64], rng: &mut impl NormalGenerator) -> Result<Tensor> {
    let xi = rng.standard_normal(&x.size())?;
    add_drawn_noise(x, &xi, sigma)
}

/// `y = x + σ ξ` for a `ξ` drawn ahead (of `x`'s shape, any kind and device): what
/// [`add_noise`] does after its draw.
pub fn add_drawn_noise(x: &Tensor, xi: &Tensor, sigma: &[f64]) -> Result<Tensor> {
    let (kind, device) = (x.kind(), x.device());
    let xi = xi.f_to_device_(device, kind, true, false)?;
    let scale = match sigma {
        [] => return Err(DataError::Invalid("add_noise: no noise level".into())),
        [s] => Tensor::f_scalar_tensor(*s, (Kind::Double, tch::Device::Cpu))?,
        levels => {
            let batch = x.size().first().copied().unwrap_or(0);
            if levels.len() as i64 != batch {
                return Err(DataError::Invalid(format!(
                    "add_noise: {} noise levels for a batch of {batch}",
                    levels.len()
                )));
            }
            let mut per_image = vec![batch];
            per_image.resize(x.dim(), 1);
            Tensor::f_from_slice(levels)?.f_view(per_image.as_slice())?
        }
    };
    let scale = scale.f_to_kind(kind)?.f_to_device(device)?;
    Ok(x.f_add(&xi.f_mul(&scale)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_generator_state_same_noise_other_stream_other_noise() {
        let x = Tensor::zeros([2, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let a = add_noise(&x, &[0.1], &mut seeded(4, 0)).unwrap();
        let b = add_noise(&x, &[0.1], &mut seeded(4, 0)).unwrap();
        let c = add_noise(&x, &[0.1], &mut seeded(4, 1)).unwrap();
        assert_eq!(a.kind(), Kind::Float);
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        let std = a.std(true).double_value(&[]);
        assert!((std - 0.1).abs() < 0.01, "std {std}");
    }

    #[test]
    fn per_image_levels_scale_each_image() {
        let x = Tensor::zeros([2, 1, 32, 32], (Kind::Double, tch::Device::Cpu));
        let y = add_noise(&x, &[0.0, 0.5], &mut seeded(1, 0)).unwrap();
        assert_eq!(y.get(0).abs().max().double_value(&[]), 0.0);
        let std = y.get(1).std(true).double_value(&[]);
        assert!((std - 0.5).abs() < 0.05, "std {std}");
        assert!(add_noise(&x, &[0.1, 0.2, 0.3], &mut seeded(1, 0)).is_err());
        assert!(add_noise(&x, &[], &mut seeded(1, 0)).is_err());
    }
}
