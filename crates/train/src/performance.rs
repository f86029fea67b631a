//! Speed settings of a training run that do not change what is learned (up to rounding):
//! the precision of the forward pass, the memory layout, and how `∇g_σ` is differentiated.
pub use gradstep_model::{GradMethod, MemoryFormat, Precision};
use serde::{Deserialize, Serialize};

/// The `performance` section of a training config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceConfig {
    /// Precision of the denoiser's forward pass: with `bf16`, CUDA autocast runs the
    /// forward pass of `D_σ` (and the Prox penalty's products) in bfloat16; parameters, their
    /// gradients, Adam and the loss `‖D_σ(y) − x‖²` stay float32. No effect on the CPU
    /// (the trainer warns once). `fp16` is refused (inference only).
    #[serde(default)]
    pub precision: Precision,
    /// Memory layout of weights and activations (`channels_last`: NHWC strides).
    #[serde(default)]
    pub memory_format: MemoryFormat,
    /// Capture the GS training step in a CUDA graph after a few eager steps and replay it
    /// (see [`crate::graphed`]); on the CPU the same device-resident step runs eagerly.
    #[serde(default)]
    pub cuda_graph: bool,
    /// How `J_N(y)ᵀ r` in `∇g_σ(y)` is computed (and so how the loss is differentiated).
    #[serde(default)]
    pub grad_method: GradMethod,
}
