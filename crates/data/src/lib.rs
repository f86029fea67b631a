//! Images in, tensors out: the one image loader and writer, PSNR / SSIM, and (for
//! training) patch sampling and validation sets.
//!
//! ```no_run
//! use gradstep_data::{PatchSampler, PatchSamplerConfig};
//! let cfg = PatchSamplerConfig {
//!     roots: vec!["datasets/samples/train".into()],
//!     cache_dir: Some("datasets/cache".into()),
//!     ..Default::default()
//! };
//! let mut sampler = PatchSampler::new(&cfg)?;
//! let batch = sampler.next_batch(tch::Device::Cpu)?; // [16, 3, 128, 128], f32 on [0, 1]
//! let resume_here = sampler.position();
//! # Ok::<(), gradstep_data::DataError>(())
//! ```
#![deny(missing_docs)]

mod cache;
pub mod dataset;
mod error;
pub mod file_lock;
pub mod image_io;
pub mod metrics;
pub mod noise;
pub mod observation_noise;
pub mod patch;
pub mod plan;
pub mod reduce;
pub mod sampler;
pub mod validation;
mod worker;

pub use error::{DataError, Result};
pub use image_io::{load_image, save_image};
pub use metrics::{psnr, ssim};
pub use patch::{Dihedral, PatchSpec};
pub use plan::SamplerPosition;
pub use sampler::{PatchSampler, PatchSamplerConfig};
pub use validation::{validation_set, ValidationSet};
