//! Degradation operators `A` and their data term `f(x) = ½‖Ax − y‖²`.
//!
//! Every operator works on batches `[B, C, H, W]` and may hold one set of parameters per image
//! (one kernel, one mask), so problems of equal size run in one batch. Step sizes `τ` are
//! `[B]` tensors: one per problem.
use tch::{Kind, Tensor};

use crate::error::{PnpError, Result};

mod blur;
mod denoising;
mod inpainting;
mod super_resolution;
#[cfg(test)]
mod testing;

pub use blur::CircularBlur;
pub use denoising::Denoising;
pub use inpainting::{Hole, Inpainting};
pub use super_resolution::SuperResolution;

/// A linear degradation `A` with its adjoint and the proximal map of `f(x) = ½‖Ax − y‖²`.
pub trait LinearOperator {
    /// `A x` for images `x` of shape `[B, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// `Aᵀ y` for observations `y` of shape [`LinearOperator::observation_shape`].
    fn adjoint(&self, y: &Tensor) -> Result<Tensor>;

    /// `prox_{τf}(v) = argmin_z ½‖Az − y‖² + ‖z − v‖²/(2τ)`, i.e. the `z` with
    /// `z − v + τAᵀ(Az − y) = 0`, with one `τ` per image (`tau` of shape `[B]`).
    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor>;

    /// The shape of `Ax` for an image of shape `image` (`[B, C, H, W]`).
    fn observation_shape(&self, image: &[i64]) -> Vec<i64>;

    /// The operator restricted to the images `index` (a `[n]` int64 tensor) of the batch.
    fn select(&self, index: &Tensor) -> Result<Self>
    where
        Self: Sized;

    /// The operators of several problems, stacked along the batch.
    fn concat(ops: &[&Self]) -> Result<Self>
    where
        Self: Sized;

    /// `f(x) = ½‖Ax − y‖²`, one value per image (`[B]`).
    fn data_fidelity(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        per_image_half_sq_norm(&self.forward(x)?.f_sub(y)?)
    }

    /// `∇f(x) = Aᵀ(Ax − y)`.
    fn data_gradient(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.adjoint(&self.forward(x)?.f_sub(y)?)
    }
}

/// The degradation of a restoration problem: one of the four operators.
#[derive(Debug)]
pub enum Degradation {
    /// `A = I`.
    Denoising(Denoising),
    /// Circular convolution by FFT.
    Blur(CircularBlur),
    /// Circular convolution then keeping every `s`-th pixel.
    SuperResolution(SuperResolution),
    /// A random binary mask.
    Inpainting(Inpainting),
}

macro_rules! each {
    ($self:expr, $op:ident => $body:expr) => {
        match $self {
            Degradation::Denoising($op) => $body,
            Degradation::Blur($op) => $body,
            Degradation::SuperResolution($op) => $body,
            Degradation::Inpainting($op) => $body,
        }
    };
}

impl Degradation {
    /// A short name of the kind of degradation (`denoise`, `deblur`, `sr`, `inpaint`).
    pub fn name(&self) -> &'static str {
        match self {
            Degradation::Denoising(_) => "denoise",
            Degradation::Blur(_) => "deblur",
            Degradation::SuperResolution(_) => "sr",
            Degradation::Inpainting(_) => "inpaint",
        }
    }
}

fn same_kind<'a, T>(
    ops: &[&'a Degradation],
    pick: impl Fn(&'a Degradation) -> Option<&'a T>,
) -> Result<Vec<&'a T>> {
    ops.iter()
        .map(|o| {
            pick(o).ok_or_else(|| {
                PnpError::Invalid(
                    "problems of one batch must have the same kind of degradation".into(),
                )
            })
        })
        .collect()
}

impl LinearOperator for Degradation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        each!(self, op => op.forward(x))
    }
    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        each!(self, op => op.adjoint(y))
    }
    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        each!(self, op => op.prox_data(v, y, tau))
    }
    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        each!(self, op => op.observation_shape(image))
    }
    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(match self {
            Degradation::Denoising(o) => Degradation::Denoising(o.select(index)?),
            Degradation::Blur(o) => Degradation::Blur(o.select(index)?),
            Degradation::SuperResolution(o) => Degradation::SuperResolution(o.select(index)?),
            Degradation::Inpainting(o) => Degradation::Inpainting(o.select(index)?),
        })
    }
    fn concat(ops: &[&Self]) -> Result<Self> {
        let first = ops
            .first()
            .ok_or_else(|| PnpError::Invalid("no operators to stack".into()))?;
        Ok(match first {
            Degradation::Denoising(_) => {
                Degradation::Denoising(Denoising::concat(&same_kind(ops, |o| match o {
                    Degradation::Denoising(x) => Some(x),
                    _ => None,
                })?)?)
            }
            Degradation::Blur(_) => {
                Degradation::Blur(CircularBlur::concat(&same_kind(ops, |o| match o {
                    Degradation::Blur(x) => Some(x),
                    _ => None,
                })?)?)
            }
            Degradation::SuperResolution(_) => Degradation::SuperResolution(
                SuperResolution::concat(&same_kind(ops, |o| match o {
                    Degradation::SuperResolution(x) => Some(x),
                    _ => None,
                })?)?,
            ),
            Degradation::Inpainting(_) => {
                Degradation::Inpainting(Inpainting::concat(&same_kind(ops, |o| match o {
                    Degradation::Inpainting(x) => Some(x),
                    _ => None,
                })?)?)
            }
        })
    }
}

/// `½‖r_b‖²` for each image `b` of a `[B, …]` tensor, accumulated in float64 (the
/// backtracking test compares differences of `F` that float32 sums would blur).
pub fn per_image_half_sq_norm(r: &Tensor) -> Result<Tensor> {
    Ok(r.f_to_kind(Kind::Double)?
        .f_square()?
        .f_flatten(1, -1)?
        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?
        .f_mul_scalar(0.5)?)
}

/// `τ` as a `[B, 1, 1, 1]` tensor of `like`'s kind and device, checking its length.
pub(crate) fn tau_4d(tau: &Tensor, like: &Tensor) -> Result<Tensor> {
    let b = like.size()[0];
    let n = tau.numel() as i64;
    if n != b && n != 1 {
        return Err(PnpError::Invalid(format!(
            "{n} step sizes given for a batch of {b}"
        )));
    }
    Ok(tau
        .f_to_kind(like.kind())?
        .f_to_device(like.device())?
        .f_view([n, 1, 1, 1])?)
}

/// Concatenates per-batch parameter tensors along dimension 0.
pub(crate) fn cat(ts: Vec<&Tensor>) -> Result<Tensor> {
    Ok(Tensor::f_cat(&ts, 0)?)
}

/// Selects images along dimension 0 unless the tensor is shared by the batch (size 1).
pub(crate) fn select0(t: &Tensor, index: &Tensor) -> Result<Tensor> {
    if t.size()[0] == 1 {
        Ok(t.shallow_clone())
    } else {
        Ok(t.f_index_select(0, &index.f_to_device(t.device())?)?)
    }
}

/// The optical transfer function of `kernel` on an `H×W` grid: the kernel padded at the top
/// left, rolled by `(−⌊h/2⌋, −⌊w/2⌋)` so that its centre sits at `(0, 0)` (GS-PnP's `p2o`),
/// then transformed (`rfft2` when `real`, else the full `fft2`). Shape `[1, 1, H, W']`.
pub(crate) fn otf(
    kernel: &crate::kernels::Kernel,
    height: i64,
    width: i64,
    kind: Kind,
    device: tch::Device,
    real: bool,
) -> Result<Tensor> {
    let (h, w) = (kernel.height() as i64, kernel.width() as i64);
    if h > height || w > width {
        return Err(PnpError::Invalid(format!(
            "kernel of {h}×{w} is larger than the {height}×{width} image"
        )));
    }
    let k = kernel.to_tensor(kind, device)?;
    let padded = k.f_constant_pad_nd([0, width - w, 0, height - h])?;
    let rolled = padded.f_roll([-(h / 2), -(w / 2)], [0i64, 1])?;
    let f = if real {
        rolled.f_fft_rfft2(None::<&[i64]>, [0i64, 1], "backward")?
    } else {
        rolled.f_fft_fft2(None::<&[i64]>, [0i64, 1], "backward")?
    };
    Ok(f.f_view([1, 1, f.size()[0], f.size()[1]])?)
}
