//! Gradient-Step and Proximal denoisers on DRUNet, for convergent Plug-and-Play.
//!
//! - [`Drunet`]: the network `N_σ` (DRUNet "light", no bias, σ as an extra input channel);
//! - [`GradientStepDenoiser`]: `g_σ(x) = ½‖x − N_σ(x)‖²`, `∇g_σ`, `D_σ = I − ∇g_σ` and
//!   Hessian-vector products, with or without a training graph;
//! - [`Checkpoint`]: self-describing safetensors checkpoints, written atomically;
//! - [`import`]: loading deepinv / GS-PnP state dicts; [`export`]: writing them back.
//!
//! ```no_run
//! use gradstep_model::{Drunet, DrunetConfig, Activation, GradientStepDenoiser, Graph, Sigma};
//! let net = Drunet::new(&DrunetConfig::tiny(Activation::Elu), tch::Device::Cpu)?;
//! let denoiser = GradientStepDenoiser::new(net);
//! let noisy = tch::Tensor::rand([1, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
//! let clean = denoiser.denoise(&noisy, &Sigma::from_255(25.0), Graph::Inference)?;
//! # Ok::<(), gradstep_model::ModelError>(())
//! ```
#![deny(missing_docs)]

mod activation;
pub mod autocast;
mod checkpoint;
mod config;
pub mod cuda;
mod drunet;
mod error;
pub mod export;
mod gradient_step;
pub mod import;
mod res_block;
mod sigma;
pub mod tiling;

pub use checkpoint::{
    is_write_atomic_temp, write_atomic, write_safetensors, Checkpoint, ModelDescription, FORMAT,
    FORMAT_VERSION, LIPSCHITZ_SECTION, MODEL_PREFIX,
};
pub use config::{Activation, DenoiserKind, DrunetConfig, MemoryFormat, Precision};
pub use drunet::{Drunet, ForwardCache};
pub use error::{ModelError, Result};
pub use gradient_step::{GradMethod, GradientAt, GradientStepDenoiser, Graph, InferenceOptions};
pub use res_block::ResBlock;
pub use sigma::Sigma;
pub use tiling::Tiling;
