//! The benchmarks behind `gradstep bench …`: each times our code beside the PyTorch anchor
//! (`anchor_deepinv.py`) run in the same call, and prints its rows and a last line
//! `bench-<name> <metric> <value>` that `make bench`, `scripts/bench-gpu.sh`,
//! `scripts/gpu-checks.sh` and `docs/performance.md` parse (the printed format is part of
//! the interface: change it with them).
//!
//! - [`model`]: `∇g_σ` of one 256² image and one GS training step, in every variant;
//! - [`prox`]: one Prox training step, power iteration against Lanczos;
//! - [`pnp`]: GS-PnP deblurring, batched against one at a time;
//! - [`data`]: training patches per second, from PNG and from the decode-once cache;
//! - [`dist`]: data-parallel GS steps, 1 rank against N, beside PyTorch DDP;
//! - [`memory`]: the largest training batch and `∇g_σ` image, and what tiles cost.
//!
//! A benchmark of training runs the training crate's own step
//! ([`gradstep_train::step`], through [`train_step`]): what is timed is what `gradstep
//! train` runs, clipping, autocast and the Prox estimator's seeded start included.
//! Shared pieces: [`timing`] (device sync, median time, sizes), [`anchor`] (running the
//! PyTorch script), [`setup`] (the benchmarked network, the device note).
//!
//! With the `clap` feature the option structs are `clap::Args`, for the command line.
#![deny(missing_docs)]

pub mod anchor;
pub mod data;
pub mod dist;
mod error;
pub mod memory;
pub mod model;
pub mod pnp;
pub mod prox;
pub mod setup;
pub mod timing;
pub mod train_step;

pub use error::{BenchError, Result};
