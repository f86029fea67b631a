//! The noise level `σ` given to the network as an extra constant input channel.
use tch::Tensor;

use crate::error::{ModelError, Result};

/// The noise level `σ`, on the `[0, 1]` image scale (i.e. `ν/255` for a level `ν` on
/// the 0–255 scale). The network receives it as one extra input channel.
#[derive(Debug)]
pub enum Sigma {
    /// One `σ` for the whole batch.
    Scalar(f64),
    /// One `σ` per image of the batch (length `B`).
    PerImage(Vec<f64>),
    /// A per-pixel map of shape `[B, 1, H, W]` (or `[1, 1, H, W]`, broadcast over the batch).
    Map(Tensor),
}

impl Sigma {
    /// The largest noise level accepted on the 0–255 scale: noise as strong as the whole
    /// range of the image. Beyond it nothing is left to restore, and huge levels (`1e308`)
    /// overflow `σ²` and the float32 network input.
    pub const MAX_LEVEL_255: f64 = 255.0;

    /// Checks a noise level on the 0–255 scale: finite, at most [`Sigma::MAX_LEVEL_255`],
    /// and positive (or also 0 when `zero_allowed`). The error says what was expected and
    /// what was given; the caller prefixes the flag or the config field.
    pub fn check_level_255(level: f64, zero_allowed: bool) -> std::result::Result<(), String> {
        let low_ok = if zero_allowed {
            level >= 0.0
        } else {
            level > 0.0
        };
        if low_ok && level <= Self::MAX_LEVEL_255 {
            return Ok(());
        }
        let open = if zero_allowed { '[' } else { '(' };
        // `1e308`, not its 309 digits.
        let got = if level.abs() >= 1e6 {
            format!("{level:e}")
        } else {
            level.to_string()
        };
        Err(format!(
            "must be in {open}0, {}] (0–255 scale), got {got}",
            Self::MAX_LEVEL_255
        ))
    }

    /// `σ = level / 255` for a level on the 0–255 scale.
    pub fn from_255(level: f64) -> Self {
        Sigma::Scalar(level / 255.0)
    }

    /// The `[B, 1, H, W]` channel for an input of `shape = [B, C, H, W]`, on the device and
    /// in the precision of `like`.
    pub fn channel(&self, shape: &[i64], like: &Tensor) -> Result<Tensor> {
        let (b, h, w) = (shape[0], shape[2], shape[3]);
        let opts = (like.f_kind()?, like.device());
        // Levels are checked here, not only where users type them: tch panics (in a `Drop`)
        // when a scalar overflows the tensor's float type, as `σ = 1e308 / 255` does.
        let levels: &[f64] = match self {
            Sigma::Scalar(s) => std::slice::from_ref(s),
            Sigma::PerImage(v) => v,
            Sigma::Map(_) => &[],
        };
        let max = Self::MAX_LEVEL_255 / 255.0;
        if let Some(bad) = levels.iter().find(|s| !(0.0..=max).contains(*s)) {
            return Err(ModelError::Invalid(format!(
                "σ = {bad} is outside [0, 1] (the 0–255 scale's [0, {}])",
                Self::MAX_LEVEL_255
            )));
        }
        match self {
            Sigma::Scalar(s) => Ok(Tensor::f_full([b, 1, h, w], *s, opts)?),
            Sigma::PerImage(v) => {
                if v.len() as i64 != b {
                    return Err(ModelError::Invalid(format!(
                        "{} noise levels given for a batch of {b} images",
                        v.len()
                    )));
                }
                Ok(Tensor::f_from_slice(v)?
                    .f_to_kind(opts.0)?
                    .f_to_device(opts.1)?
                    .f_view([b, 1, 1, 1])?
                    .f_expand([b, 1, h, w], false)?)
            }
            Sigma::Map(t) => {
                let s = t.size();
                if s.len() != 4 || s[1] != 1 || s[2] != h || s[3] != w || (s[0] != 1 && s[0] != b) {
                    return Err(ModelError::Invalid(format!(
                        "σ map has shape {s:?}, expected [{b} or 1, 1, {h}, {w}]"
                    )));
                }
                Ok(t.f_to_kind(opts.0)?
                    .f_to_device(opts.1)?
                    .f_expand([b, 1, h, w], false)?)
            }
        }
    }
}

impl Sigma {
    /// `σ` for the window `[top, top + h) × [left, left + w)` of the image (a map is cut;
    /// scalar and per-image levels are unchanged).
    pub(crate) fn window(&self, top: i64, left: i64, h: i64, w: i64) -> Result<Sigma> {
        Ok(match self {
            Sigma::Scalar(s) => Sigma::Scalar(*s),
            Sigma::PerImage(v) => Sigma::PerImage(v.clone()),
            Sigma::Map(t) => {
                let s = t.size();
                if s.len() != 4 || s[2] < top + h || s[3] < left + w {
                    return Err(ModelError::Invalid(format!(
                        "σ map has shape {s:?}, too small for the window at ({top}, {left}) of {h}×{w}"
                    )));
                }
                Sigma::Map(t.f_narrow(2, top, h)?.f_narrow(3, left, w)?)
            }
        })
    }
}

impl From<f64> for Sigma {
    fn from(s: f64) -> Self {
        Sigma::Scalar(s)
    }
}
