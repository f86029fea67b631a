//! `gradstep bench …`: parses the options and the device, and runs the benchmark of
//! `gradstep-bench` (which prints its rows).
use gradstep_bench::{data, dist, memory, model, pnp, prox};

use crate::common;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// ∇g of one 256² colour image and one GS training step (batch 16 of 128²), full model.
    Model(OnDevice<model::ModelOptions>),
    /// Training patches per second (from PNG and from the decode-once cache) vs a PyTorch DataLoader.
    Data(DataCommand),
    /// One Prox training step (batch 16 of 128², Softplus): power iteration vs Lanczos.
    Prox(OnDevice<prox::ProxOptions>),
    /// GS-PnP deblurring of CBSD10: batched vs one at a time vs deepinv one at a time.
    Pnp(OnDevice<pnp::PnpOptions>),
    /// Largest training batch, largest ∇g image (gray, colour), and tiles for larger ones.
    Memory(OnDevice<memory::MemoryOptions>),
    /// Data-parallel GS training steps: 1 rank vs N ranks (Gloo processes on the CPU, one
    /// GPU each on CUDA) beside PyTorch DDP; last line `bench-dist efficiency <ratio>`.
    Dist(OnDevice<dist::DistOptions>),
}

/// A benchmark's options and the device it runs on.
#[derive(Debug, clap::Args)]
pub struct OnDevice<T: clap::Args> {
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    options: T,
}

/// `gradstep bench data`'s options and where its batches go.
#[derive(Debug, clap::Args)]
pub struct DataCommand {
    /// Where batches are delivered: cpu, cuda or cuda:N (default cpu).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    options: data::DataOptions,
}

/// Runs a benchmark.
pub fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Model(a) => model::run(&a.options, common::parse_device(a.device.as_deref())?)?,
        Bench::Data(a) => {
            let device = common::parse_device(Some(a.device.as_deref().unwrap_or("cpu")))?;
            data::run(&a.options, device)?
        }
        Bench::Prox(a) => prox::run(&a.options, common::parse_device(a.device.as_deref())?)?,
        Bench::Pnp(a) => pnp::run(&a.options, common::parse_device(a.device.as_deref())?)?,
        Bench::Memory(a) => memory::run(&a.options, common::parse_device(a.device.as_deref())?)?,
        Bench::Dist(a) => dist::run(&a.options, common::parse_device(a.device.as_deref())?)?,
    }
    Ok(())
}
