//! The validation set: centre crops of a directory of test images (CBSD68) with Gaussian
//! noise drawn once per `σ` from a fixed seed, so that validation PSNR is comparable across
//! runs and machines.
//!
//! Noise: `y = x + (σ/255)·ξ`, not clipped, `ξ ~ N(0, I)` drawn by our own generator
//! (ChaCha8 seeded by `(seed, σ)`, standard normal from `rand_distr`), image after image in
//! sorted file order, values in `[C, S, S]` order, through [`crate::noise::NormalGenerator`].
//! It never touches torch's global RNG.
use std::path::Path;

use tch::{Device, Tensor};

use crate::dataset::{scan, ImageFile};
use crate::error::{DataError, Result};
use crate::image_io;
use crate::noise::NormalGenerator;
use crate::patch::rng_for;

/// Clean centre crops and their noisy versions, on the CPU.
#[derive(Debug)]
pub struct ValidationSet {
    /// `[N, C, S, S]` on `[0, 1]`.
    pub clean: Tensor,
    /// For each `σ` (on the 0–255 scale), `clean + (σ/255)·ξ`.
    pub noisy: Vec<(f64, Tensor)>,
}

/// Loads the images under `dir` (sorted by path; the first `limit` when given), takes their
/// centre `crop × crop` (an image smaller than that is an error naming it), converts them to
/// `channels`, and adds noise of each `σ` in `sigmas_255` from `seed`.
pub fn validation_set(
    dir: &Path,
    crop: i64,
    channels: i64,
    sigmas_255: &[f64],
    seed: u64,
    limit: Option<usize>,
) -> Result<ValidationSet> {
    if crop < 1 {
        return Err(DataError::Invalid(format!(
            "crop must be positive, got {crop}"
        )));
    }
    let (mut files, _) = scan(&[dir.to_path_buf()])?;
    files.truncate(limit.unwrap_or(usize::MAX));
    if files.is_empty() {
        return Err(DataError::file(dir, "no image for the validation set"));
    }
    let crops = files
        .iter()
        .map(|f| centre_crop(f, crop, channels))
        .collect::<Result<Vec<_>>>()?;
    let clean = Tensor::f_stack(&crops, 0)?;
    let mut noisy = Vec::with_capacity(sigmas_255.len());
    for &sigma in sigmas_255 {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(DataError::Invalid(format!("σ must be ≥ 0, got {sigma}")));
        }
        // `(ξ σ) / 255` in float64 on the host, then float32: the values this set has
        // always had (libtorch divides by a scalar through its reciprocal).
        let xi = rng_for(&[seed, sigma.to_bits()]).standard_normal(&clean.size())?;
        let noise: Vec<f32> = Vec::<f64>::try_from(&xi.f_flatten(0, -1)?)?
            .into_iter()
            .map(|v| (v * sigma / 255.0) as f32)
            .collect();
        let noise = Tensor::f_from_slice(&noise)?.f_view_as(&clean)?;
        noisy.push((sigma, clean.f_add(&noise)?));
    }
    Ok(ValidationSet { clean, noisy })
}

fn centre_crop(f: &ImageFile, crop: i64, channels: i64) -> Result<Tensor> {
    let img = image_io::load_image(&f.path, channels, Device::Cpu)?;
    let (h, w) = (img.size()[2], img.size()[3]);
    if h < crop || w < crop {
        return Err(DataError::file(
            &f.path,
            format!("{w}×{h} is smaller than the {crop}×{crop} validation crop"),
        ));
    }
    let (top, left) = ((h - crop) / 2, (w - crop) / 2);
    Ok(img
        .f_squeeze_dim(0)?
        .f_narrow(1, top, crop)?
        .f_narrow(2, left, crop)?
        .f_contiguous()?)
}
