//! Restoring what a user observed (`gradstep restore --observed`): the observation `y` read
//! from an image file or losslessly from a float `.npy` (as the synthetic mode writes it), an
//! inpainting mask, and the problem built around `y` with the operator the user states.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{PnpError, Result};
use crate::kernels::npy;
use crate::kernels::Kernel;
use crate::operators::{CircularBlur, Degradation, Denoising, Inpainting, SuperResolution};
use crate::problem::RestorationProblem;
use crate::task::Task;

/// The most values an observation `.npy` may hold (`2²⁸`: a 16384 × 16384 gray or a
/// 9459 × 9459 colour image), so that a hostile header is refused before any allocation.
pub const MAX_OBSERVATION_VALUES: usize = 1 << 28;

/// Reads an observation as a `[1, C, H, W]` float32 tensor (`C = channels`, 1 or 3):
/// - an image file (PNG, JPEG, BMP, TIFF; 8 or 16 bits): values on `[0, 1]`, converted to
///   `channels` as [`gradstep_data::load_image`] does;
/// - a `.npy` array of float32 or float64, `[H, W]` (gray) or `[H, W, C]` (NumPy's image
///   layout, as `restore --clean` writes `observed.npy`), on the `[0, 1]` scale and not
///   clipped (noise takes values outside it): read exactly. A gray array is replicated for a
///   colour denoiser; a colour one for a gray denoiser is refused.
///
/// Non-finite values are refused, naming the file.
pub fn load_observation(path: &Path, channels: i64, device: Device) -> Result<Tensor> {
    let is_npy = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        return Ok(gradstep_data::load_image(path, channels, device)?);
    }
    let (shape, values) = npy::read_array(path, MAX_OBSERVATION_VALUES, |shape| match shape {
        [h, w] | [h, w, 1 | 3] if *h > 0 && *w > 0 => Ok(()),
        _ => Err(format!(
            "shape {shape:?}: an observation .npy is [H, W] or [H, W, C] with C = 1 or 3"
        )),
    })
    .map_err(|e| PnpError::file(path, e))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let count = values.iter().filter(|v| !v.is_finite()).count();
        return Err(PnpError::file(
            path,
            format!(
                "{count} non-finite value(s) (the first, {}, at flat index {i})",
                values[i]
            ),
        ));
    }
    let (h, w) = (shape[0] as i64, shape[1] as i64);
    let c = shape.get(2).copied().unwrap_or(1) as i64;
    if c != channels && c != 1 {
        return Err(PnpError::file(
            path,
            format!("holds {c} channels, the denoiser takes {channels}"),
        ));
    }
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    let y = Tensor::f_from_slice(&values)?
        .f_view([h, w, c])?
        .f_permute([2, 0, 1])?
        .f_unsqueeze(0)?
        .f_expand([1, channels, h, w], false)?
        .f_contiguous()?;
    Ok(y.f_to_device(device)?)
}

/// Writes an image `[1, C, H, W]` (an observation, a restoration) losslessly as a float32
/// `.npy` of shape `[H, W, C]` (NumPy's image layout; values not clipped), which
/// [`load_observation`] reads back exactly.
pub fn save_npy_image(path: &Path, image: &Tensor) -> Result<()> {
    let s = image.size();
    let [1, c, h, w] = s[..] else {
        return Err(PnpError::Invalid(format!(
            "an image is [1, C, H, W], got {s:?}"
        )));
    };
    let hwc = image
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_squeeze_dim(0)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    let values = Vec::<f32>::try_from(&hwc)?;
    npy::write_f32(path, &[h as usize, w as usize, c as usize], &values)
}

/// Reads an inpainting mask `M` as `[1, 1, H, W]` in `{0, 1}`: a non-zero pixel is known
/// (`1`), a zero one missing. Colour masks are read through their luma, so any non-zero
/// channel counts. It must be `height × width` (the observation's size) and keep a pixel.
pub fn load_mask(path: &Path, height: i64, width: i64, device: Device) -> Result<Tensor> {
    let (values, h, w) = gradstep_data::image_io::decode(path, 1)?;
    if (h as i64, w as i64) != (height, width) {
        return Err(PnpError::file(
            path,
            format!("the mask is {h}×{w}, the observation {height}×{width}"),
        ));
    }
    let known: Vec<f32> = values
        .iter()
        .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
        .collect();
    if !known.contains(&1.0) {
        return Err(PnpError::file(
            path,
            "the mask keeps no pixel (every value is 0; non-zero = known)",
        ));
    }
    Ok(Tensor::f_from_slice(&known)?
        .f_view([1, 1, height, width])?
        .f_to_device(device)?)
}

/// What a user states about how their observation was made (`restore --observed`): the task
/// and, as it needs them, the kernel, the scale and the mask.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The task.
    pub task: Task,
    /// The blur kernel (deblurring, super-resolution).
    pub kernel: Option<&'a Kernel>,
    /// The super-resolution factor `s` (the restored image is `s` times larger).
    pub scale: i64,
    /// The mask `[1, 1, H, W]` in `{0, 1}` (inpainting; see [`load_mask`]).
    pub mask: Option<&'a Tensor>,
}

impl RestorationProblem {
    /// The problem of restoring `observation` (`[1, C, h, w]`): its operator is built for the
    /// image the observation came from (`h × w`, or `s·h × s·w` for super-resolution, whose
    /// start is the bicubic upsampling of `y`), the ground truth is `reference` when given
    /// (its size must be that image's). For inpainting the missing pixels of `y` are set to 0,
    /// as the synthetic observation has them (they carry no information and would otherwise
    /// shift `f = ½‖M x − y‖²` by a constant).
    ///
    /// Errors (each naming the problem): a missing kernel or mask, a kernel larger than the
    /// image, a mask of another size, a scale below 2, a reference of the wrong size.
    pub fn from_observation(
        observation: Tensor,
        stated: &Observed,
        reference: Option<Tensor>,
        noise_255: f64,
    ) -> Result<Self> {
        let s = observation.size();
        let [1, _, h, w] = s[..] else {
            return Err(PnpError::Invalid(format!(
                "expected one [1, C, H, W] observation, got {s:?}"
            )));
        };
        gradstep_model::Sigma::check_level_255(noise_255, true)
            .map_err(|e| PnpError::Invalid(format!("noise level {e}")))?;
        let (kind, device) = (observation.kind(), observation.device());
        let kernel = || {
            stated
                .kernel
                .ok_or_else(|| PnpError::Invalid(format!("{} needs a blur kernel", stated.task)))
        };
        let mut observation = observation;
        let degradation = match stated.task {
            Task::Denoise => Degradation::Denoising(Denoising),
            Task::Deblur => Degradation::Blur(CircularBlur::new(kernel()?, h, w, kind, device)?),
            Task::Sr => {
                let scale = stated.scale;
                if scale < 2 {
                    return Err(PnpError::Invalid(format!(
                        "the super-resolution factor must be at least 2, got {scale}"
                    )));
                }
                Degradation::SuperResolution(SuperResolution::new(
                    kernel()?,
                    scale,
                    h * scale,
                    w * scale,
                    kind,
                    device,
                )?)
            }
            Task::Inpaint => {
                let mask = stated
                    .mask
                    .ok_or_else(|| PnpError::Invalid("inpainting needs a mask".into()))?;
                if mask.size() != [1, 1, h, w] {
                    return Err(PnpError::Invalid(format!(
                        "the mask is {:?}, the observation {s:?}",
                        mask.size()
                    )));
                }
                let mask = mask.f_to_kind(kind)?.f_to_device(device)?;
                observation = observation.f_mul(&mask)?;
                Degradation::Inpainting(Inpainting::from_mask(mask)?)
            }
        };
        RestorationProblem::new(degradation, observation, reference, noise_255)
    }
}
