//! The one PSNR and SSIM of the project, for images on `[0, 1]`.
use tch::{Kind, Tensor};

use crate::error::{DataError, Result};

/// PSNR in dB of each image of `[B, C, H, W]` tensors, peak 1: `10 log₁₀(1 / MSE)`.
/// No clipping or rounding is applied: callers clip first where the paper does.
pub fn psnr(x: &Tensor, reference: &Tensor) -> Result<Vec<f64>> {
    let mse = mse_per_image(x, reference)?;
    let mse = Vec::<f64>::try_from(&mse.f_to_device(tch::Device::Cpu)?)?;
    Ok(mse.into_iter().map(psnr_of_mse).collect())
}

/// The mean squared error of each image of `[B, C, H, W]` tensors, as a `[B]` float64 tensor
/// left on the device (so that a caller can read it together with other values).
pub fn mse_per_image(x: &Tensor, reference: &Tensor) -> Result<Tensor> {
    same_shape(x, reference)?;
    Ok(x.f_to_kind(Kind::Double)?
        .f_sub(&reference.f_to_kind(Kind::Double)?)?
        .f_square()?
        .f_mean_dim([1i64, 2, 3].as_slice(), false, None::<Kind>)?)
}

/// `PSNR = −10 log₁₀ MSE` for images on `[0, 1]` (an MSE of 0 floored at 10⁻²⁰, i.e. 200 dB).
/// A NaN MSE (a diverged image) gives NaN: `f64::max` would take the floor instead and score
/// it 200 dB.
pub fn psnr_of_mse(mse: f64) -> f64 {
    if mse.is_nan() {
        return f64::NAN;
    }
    -10.0 * mse.max(1e-20).log10()
}

/// The side of SSIM's window: images smaller than it have no SSIM.
pub const SSIM_WINDOW: i64 = 11;

/// SSIM of each image of `[B, C, H, W]` tensors on `[0, 1]`, as in the papers' tooling
/// (DPIR's `calculate_ssim`): 11×11 Gaussian window of std 1.5, valid region only,
/// `C₁ = (0.01)²`, `C₂ = (0.03)²`, averaged over channels.
pub fn ssim(x: &Tensor, reference: &Tensor) -> Result<Vec<f64>> {
    same_shape(x, reference)?;
    let s = x.size();
    if s[2] < SSIM_WINDOW || s[3] < SSIM_WINDOW {
        return Err(DataError::Invalid(
            "SSIM needs images of at least 11×11".into(),
        ));
    }
    let dev = x.device();
    let (b, c) = (s[0], s[1]);
    let g: Vec<f64> = (0..11)
        .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    let g = Tensor::f_from_slice(&g)?
        .f_div_scalar(sum)?
        .f_to_device(dev)?;
    let window = g
        .f_unsqueeze(1)?
        .f_matmul(&g.f_unsqueeze(0)?)?
        .f_view([1, 1, 11, 11])?;
    let flat = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_to_kind(Kind::Double)?
            .f_reshape([b * c, 1, s[2], s[3]])?)
    };
    let (a, r) = (flat(x)?, flat(reference)?);
    let blur = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_conv2d(&window, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
    };
    let (mu_a, mu_r) = (blur(&a)?, blur(&r)?);
    let var_a = blur(&a.f_square()?)?.f_sub(&mu_a.f_square()?)?;
    let var_r = blur(&r.f_square()?)?.f_sub(&mu_r.f_square()?)?;
    let cov = blur(&a.f_mul(&r)?)?.f_sub(&mu_a.f_mul(&mu_r)?)?;
    let (c1, c2) = (1e-4, 9e-4);
    let num = mu_a
        .f_mul(&mu_r)?
        .f_mul_scalar(2.0)?
        .f_add_scalar(c1)?
        .f_mul(&cov.f_mul_scalar(2.0)?.f_add_scalar(c2)?)?;
    let den = mu_a
        .f_square()?
        .f_add(&mu_r.f_square()?)?
        .f_add_scalar(c1)?
        .f_mul(&var_a.f_add(&var_r)?.f_add_scalar(c2)?)?;
    let map =
        num.f_div(&den)?
            .f_reshape([b, -1])?
            .f_mean_dim([1i64].as_slice(), false, None::<Kind>)?;
    Ok(Vec::<f64>::try_from(&map.f_to_device(tch::Device::Cpu)?)?)
}

fn same_shape(x: &Tensor, reference: &Tensor) -> Result<()> {
    if x.size() != reference.size() || x.dim() != 4 {
        return Err(DataError::Invalid(format!(
            "metrics need two [B, C, H, W] tensors of one shape, got {:?} and {:?}",
            x.size(),
            reference.size()
        )));
    }
    Ok(())
}
