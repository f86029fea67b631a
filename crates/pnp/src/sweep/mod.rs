//! Evaluation sweeps: grids over the PnP parameters, run in shards (one per Slurm array
//! task), recorded as JSON Lines, merged into tables and figures.
//!
//! - [`SweepConfig`]: the typed grid (`configs/sweeps/*.json`), validated before any work;
//! - [`expand`], [`Point::id`], [`Shard`]: the grid's points, their deterministic ids
//!   (SHA-256 of the parameters), and the share `i mod N` of shard `I/N`;
//! - [`run_shard`] with a [`PointRunner`] ([`PnpRunner`] restores with [`crate::algorithms::restore_all`]):
//!   finished points are skipped, a failing or panicking point is recorded as `failed`;
//! - [`SweepDir`]: `runs/sweeps/<name>/` (`grid.json`, `records-<I>of<N>.jsonl`; a torn last
//!   line is moved aside on the shard's next run, bad lines stop a command unless skipped);
//! - [`merge()`]: `table.csv`, `table.md`, `u-curve.png`, `tau0.png`, `convergence.png`,
//!   `report.html`, rows sorted by the grid's parameters ([`grid_order`]).
//!
//! ```no_run
//! use gradstep_pnp::sweep::{run_shard, PnpRunner, Shard, SweepConfig, SweepDir};
//! let config = SweepConfig::load("configs/sweeps/deblur-sigma.json".as_ref())?;
//! let dir = SweepDir::new("runs/sweeps".as_ref(), "deblur-sigma")?;
//! let mut runner = PnpRunner::new(tch::Device::Cpu, 4);
//! let summary = run_shard(&config, &dir, "0/4".parse::<Shard>()?, &mut runner, &mut |_| {})?;
//! println!("{} of {} points run", summary.done, summary.shard);
//! # Ok::<(), gradstep_pnp::sweep::SweepError>(())
//! ```
mod config;
mod engine;
mod error;
mod figures;
mod grid;
mod merge;
mod runner;
mod store;

pub use crate::plot::{draw, Chart, Series};
pub use config::{Algorithm, Axes, ImageSet, KernelName, Settings, SigmaDen, SweepConfig, Task};
pub use engine::{run_point, run_shard, PointResult, PointRunner, RunSummary};
pub use error::{SweepError, SweepResult};
pub use grid::{expand, GridPoint, Point, Shard};
pub use merge::{grid_order, markdown, merge, MergeReport, Row};
pub use runner::{algorithm_config, load_set, PnpRunner};
pub use store::{BadLine, Curve, GridFile, ImageScore, Outcome, Record, SweepDir};

#[cfg(test)]
mod tests;
