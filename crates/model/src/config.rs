//! Typed architecture configuration: what a checkpoint must record to be rebuilt.
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The pointwise non-linearity between the two convolutions of each residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `ELU(t) = t` for `t > 0`, `eᵗ − 1` otherwise: the GS-DRUNet of the ICLR 2022 paper.
    Elu,
    /// `Softplus(t) = log(1 + eᵗ)` (β = 1, threshold 20 as in PyTorch): twice
    /// differentiable, required by the Prox-DRUNet (its Hessian is penalised).
    Softplus,
    /// `ReLU`, only for the ablation: `g_σ` is then not C², so the PnP proofs do not apply.
    Relu,
}

impl std::str::FromStr for Activation {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "elu" | "e" => Ok(Activation::Elu),
            "softplus" | "s" => Ok(Activation::Softplus),
            "relu" | "r" => Ok(Activation::Relu),
            other => Err(ModelError::Invalid(format!(
                "unknown activation `{other}` (expected elu, softplus or relu)"
            ))),
        }
    }
}

/// Whether a checkpoint holds a plain gradient-step denoiser or one fine-tuned so that
/// `‖∇²g_σ‖ < 1` (then `D_σ` is a proximal operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenoiserKind {
    /// Gradient-Step denoiser `D_σ = I − ∇g_σ` (Hurault et al., ICLR 2022).
    Gs,
    /// Proximal denoiser: a Softplus GS denoiser trained with the spectral-norm penalty
    /// (Hurault et al., ICML 2022).
    Prox,
}

impl std::str::FromStr for DenoiserKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gs" => Ok(DenoiserKind::Gs),
            "prox" => Ok(DenoiserKind::Prox),
            other => Err(ModelError::Invalid(format!(
                "unknown denoiser kind `{other}` (expected gs or prox)"
            ))),
        }
    }
}

/// How the network's weights and activations are laid out in memory. Numbers do not depend
/// on it (up to the rounding of different convolution algorithms); speed may: cuDNN's
/// tensor-core kernels work in NHWC, and with NCHW tensors it transposes around them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// NCHW, PyTorch's default.
    #[default]
    Contiguous,
    /// NHWC strides behind the same `[B, C, H, W]` shapes (PyTorch's `channels_last`).
    ChannelsLast,
}

impl MemoryFormat {
    /// The layout inference uses unless told otherwise. On CUDA, channels-last: cuDNN's
    /// tensor-core convolutions are NHWC, and in NCHW it transposes around them. Measured on
    /// an H100 (2026-11-26, `gradstep bench pnp`): GS-PnP deblurring of CBSD10 went from 2.79
    /// to 4.17 restorations/s in fp32, max |ΔPSNR| 6e-3 dB (TF32 algorithms differ by
    /// layout), and ∇g of a 256² image from 4.6 to 2.9 ms. On the CPU nothing was measured:
    /// NCHW stays.
    pub fn default_for(device: tch::Device) -> Self {
        if device.is_cuda() {
            MemoryFormat::ChannelsLast
        } else {
            MemoryFormat::Contiguous
        }
    }
}

impl std::str::FromStr for MemoryFormat {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "contiguous" | "nchw" => Ok(MemoryFormat::Contiguous),
            "channels_last" | "nhwc" => Ok(MemoryFormat::ChannelsLast),
            other => Err(ModelError::Invalid(format!(
                "unknown memory format `{other}` (expected contiguous or channels_last)"
            ))),
        }
    }
}

/// Arithmetic precision of the network's convolutions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 (TF32 convolutions on GPUs that have them, libtorch's default).
    #[default]
    Fp32,
    /// CUDA autocast in bfloat16: convolutions in bf16, weights and reductions in float32.
    /// No effect on the CPU.
    Bf16,
    /// CUDA autocast in float16, for inference (training refuses it: float16 gradients
    /// would need loss scaling). fp16 keeps TF32's 10-bit mantissa, which float32
    /// convolutions already round their inputs to on tensor cores, where bf16 keeps 7, at
    /// bf16's speed; its range (±65504, normal down to 6e-5) is ample for images in
    /// `[0, 1]` and the residuals `x − N_σ(x)`. No effect on the CPU.
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "float16" | "half" => Ok(Precision::Fp16),
            other => Err(ModelError::Invalid(format!(
                "unknown precision `{other}` (expected fp32, bf16 or fp16)"
            ))),
        }
    }
}

/// Architecture of the DRUNet "light" network `N_σ`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrunetConfig {
    /// Image channels: 3 for colour, 1 for gray. The network sees one more (the σ map).
    pub channels: i64,
    /// Feature widths of the four scales, finest first. The paper: 64, 128, 256, 512.
    pub widths: [i64; 4],
    /// Residual blocks per scale (in each encoder, decoder and the body). The paper: 2.
    pub blocks: usize,
    /// Non-linearity of the residual blocks.
    pub activation: Activation,
}

impl Default for DrunetConfig {
    /// The published GS-DRUNet: colour, widths 64/128/256/512, 2 blocks, ELU.
    fn default() -> Self {
        DrunetConfig {
            channels: 3,
            widths: [64, 128, 256, 512],
            blocks: 2,
            activation: Activation::Elu,
        }
    }
}

impl DrunetConfig {
    /// The tiny widths (8, 16, 32, 64) used by the reference vectors and the CPU tests.
    pub fn tiny(activation: Activation) -> Self {
        DrunetConfig {
            widths: [8, 16, 32, 64],
            activation,
            ..Default::default()
        }
    }

    /// Checks the values a network can be built with.
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(ModelError::Invalid(format!(
                "channels must be 1 (gray) or 3 (colour), got {}",
                self.channels
            )));
        }
        if self.widths.iter().any(|&w| w <= 0) {
            return Err(ModelError::Invalid(format!(
                "widths must be positive, got {:?}",
                self.widths
            )));
        }
        if self.blocks == 0 {
            return Err(ModelError::Invalid("blocks must be at least 1".into()));
        }
        Ok(())
    }

    /// Number of scalar parameters of the network (no biases anywhere).
    pub fn parameter_count(&self) -> i64 {
        let [w1, w2, w3, w4] = self.widths;
        let c = self.channels;
        let b = self.blocks as i64;
        let res = |w: i64| 2 * w * w * 9;
        (c + 1) * w1 * 9
            + c * w1 * 9
            + 2 * b * (res(w1) + res(w2) + res(w3))
            + b * res(w4)
            + 2 * 4 * (w1 * w2 + w2 * w3 + w3 * w4)
    }

    /// Floating-point operations (a multiply-add counts 2) of one forward pass `N_σ(x)` on
    /// one `height × width` image (after padding to a multiple of 8): the convolutions only,
    /// which are all but a negligible part of the work. `∇g_σ` by the explicit adjoint costs
    /// about twice this, a training step through `D_σ` about six times.
    pub fn forward_flops(&self, height: i64, width: i64) -> f64 {
        let pad = |n: i64| ((n + 7) / 8 * 8) as f64;
        let (h, w) = (pad(height), pad(width));
        let c = self.channels as f64;
        let nb = self.blocks as f64;
        let wd: Vec<f64> = self.widths.iter().map(|&v| v as f64).collect();
        let px = |level: i32| h * w / 4f64.powi(level);
        let mut f = 2.0 * (c + 1.0) * wd[0] * 9.0 * px(0) + 2.0 * wd[0] * c * 9.0 * px(0);
        for l in 0..3 {
            // Encoder and decoder blocks at this level, then the two resampling convolutions.
            f += 2.0 * nb * 2.0 * (2.0 * wd[l] * wd[l] * 9.0 * px(l as i32));
            f += 2.0 * (2.0 * wd[l] * wd[l + 1] * px(l as i32));
        }
        f + nb * 2.0 * (2.0 * wd[3] * wd[3] * 9.0 * px(3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_parse_by_name_and_alias_and_name_the_bad_one() {
        for (text, want) in [
            ("fp32", Precision::Fp32),
            ("BF16", Precision::Bf16),
            ("bfloat16", Precision::Bf16),
            ("fp16", Precision::Fp16),
            ("half", Precision::Fp16),
        ] {
            assert_eq!(text.parse::<Precision>().unwrap(), want, "{text}");
        }
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("`fp8`") && err.contains("fp16"), "{err}");
        // Configs spell them in lowercase, as the CLI does.
        let p: Precision = serde_json::from_str("\"fp16\"").unwrap();
        assert_eq!(p, Precision::Fp16);
    }
}
