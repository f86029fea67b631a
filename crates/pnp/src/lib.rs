//! Plug-and-Play image restoration with Gradient-Step denoisers (Hurault, Leclaire,
//! Papadakis: GS-PnP, ICLR 2022; Prox-PnP, ICML 2022).
//!
//! - [`operators`]: degradations `A` (denoising, FFT deblurring, super-resolution, inpainting)
//!   with `Aᵀ` and `prox_{τf}` of `f(x) = ½‖Ax − y‖²`;
//! - [`kernels`]: benchmark and user blur kernels;
//! - [`Task`] and [`Algorithm`]: the names shared by the command line, the configs and sweeps;
//! - [`RestorationProblem`]: operator, observation, ground truth, starting point, synthesised
//!   from a clean image ([`DegradationSpec`]) or built around a given observation;
//! - [`AlgorithmConfig`]: GS-PnP, Prox-PnP (PGD, DRS, DRSdiff) and PnP-HQS with the papers'
//!   reference defaults; [`restore`], [`restore_batch`], [`restore_all`];
//! - [`monitor`]: per-iteration records as JSON and PNG plots;
//! - [`report`]: the self-contained `report.html` of `restore`, `eval` and `sweep merge`.
//!
//! ```no_run
//! use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser};
//! use gradstep_pnp::{restore, Algorithm, AlgorithmConfig, DegradationSpec, Kernel, KernelSpec, RestorationProblem, Task};
//! let den = GradientStepDenoiser::new(Drunet::new(&DrunetConfig::tiny(Activation::Elu), tch::Device::Cpu)?);
//! let clean = tch::Tensor::rand([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
//! let problem = RestorationProblem::synthesize(&clean, &DegradationSpec::Deblur(Kernel::uniform(9)?), 7.65, 0)?;
//! let config = AlgorithmConfig::reference(Algorithm::GsPgd, Task::Deblur, Some(&KernelSpec::Uniform), 7.65);
//! let result = restore(&den, &problem, &config)?;
//! println!("{} iterations, PSNR {:?}", result.iterations, result.psnr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod algorithms;
mod error;
pub mod kernels;
pub mod monitor;
pub mod observation;
pub mod operators;
pub mod plot;
mod problem;
pub mod report;
pub mod sweep;
mod task;

pub use algorithms::{
    restore, restore_all, restore_all_with_progress, restore_batch, AlgorithmConfig, GsOutput,
    GsPgdConfig, HqsConfig, Monotonicity, Overrides, ProxConfig, Restoration, SigmaWarmup,
    StopReason,
};
pub use error::{PnpError, Result};
pub use kernels::{Kernel, KernelSpec};
pub use monitor::IterationRecord;
pub use observation::{load_mask, load_observation, save_npy_image, Observed};
pub use operators::{Degradation, Hole, LinearOperator};
pub use problem::{bicubic_upsample, sr_crop_note, DegradationSpec, RestorationProblem};
pub use task::{Algorithm, Task};
