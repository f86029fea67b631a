//! Training of Gradient-Step and Proximal denoisers.
//!
//! - [`config`]: the typed training configuration (`configs/*.json`, `--set` overrides);
//! - [`step`]: one GS or Prox optimizer step (loss, backward, gradient sync, clipping,
//!   Adam), the only copy: the trainer, [`graphed`] and the benchmarks call it;
//!   [`loss`]: the GS denoising loss;
//! - [`distributed`]: data-parallel training over c10d (one rank per device);
//! - [`trainer`]: the loop (LR schedule, validation,
//!   divergence stop, SIGINT / SIGTERM checkpoint) with exact resume, from the newest intact
//!   checkpoint (`resume`), one trainer per run folder (`run_lock`), signal handling from
//!   the start (`signals`);
//! - [`checkpoints`]: checkpoints with the optimizer's moments and the training state;
//! - [`tensorboard`]: a small event-file writer; [`adam`]: Adam with saveable moments;
//! - [`performance`]: bf16 autocast and the `∇g_σ` differentiation method;
//! - [`prox`], [`spectral`]: the Prox penalty `max(‖∇²g_σ‖₂, 1 − ε)` and its estimators.
//!
//! ```no_run
//! use gradstep_train::{train, TrainConfig, TrainOptions};
//! let cfg = TrainConfig::load("configs/gs-drunet-tiny.json".as_ref(), &["steps=10".into()])?;
//! let out = train(&cfg, &TrainOptions { device: tch::Device::Cpu, resume: false, quiet: false })?;
//! println!("checkpoint {}", out.checkpoint.display());
//! # Ok::<(), gradstep_train::TrainError>(())
//! ```
#![deny(missing_docs)]

pub mod adam;
mod bookkeeping;
mod bounds;
pub mod checkpoints;
pub mod config;
pub mod distributed;
mod error;
pub mod graphed;
pub mod logging;
pub mod loss;
pub mod noise;
pub mod overrides;
pub mod performance;
pub mod progress;
pub mod prox;
mod resume;
mod run_lock;
mod setup;
mod signals;
pub mod spectral;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod validation;

pub use adam::{Adam, AdamConfig, DeviceHyper};
pub use config::{Objective, TrainConfig};
pub use distributed::DataParallel;
pub use error::{Result, TrainError};
pub use step::{GradientSync, GsStep, LocalOnly, NoisyBatch, ProxStep, TrainingStep};
pub use trainer::{train, train_data_parallel, train_with, TrainOptions, TrainOutcome};
