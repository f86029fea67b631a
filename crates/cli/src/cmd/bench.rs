//! `gradstep bench …`: timings of our code beside the PyTorch anchor run in the same call.
//! This module holds what every benchmark shares (timing, the anchor, the device); each
//! benchmark lives in its own `bench_*` module.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use gradstep_model::{Activation, DrunetConfig};
use tch::Device;

use crate::common;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// ∇g of one 256² colour image and one GS training step (batch 16 of 128²), full model.
    Model(crate::cmd::bench_model::ModelArgs),
    /// Training patches per second (from PNG and from the decode-once cache) vs a PyTorch DataLoader.
    Data(crate::cmd::bench_data::DataArgs),
    /// One Prox training step (batch 16 of 128², Softplus): power iteration vs Lanczos.
    Prox(crate::cmd::bench_prox::ProxArgs),
    /// GS-PnP deblurring of CBSD10: batched vs one at a time vs deepinv one at a time.
    Pnp(crate::cmd::bench_pnp::PnpArgs),
    /// Largest training batch, largest ∇g image (gray, colour), and tiles for larger ones.
    Memory(crate::cmd::bench_memory::MemoryArgs),
}

/// The benchmarked network: the paper's widths (64…512), or the tiny ones (8…64) that keep a
/// CPU run short.
pub fn architecture(tiny: bool, activation: Activation) -> DrunetConfig {
    if tiny {
        DrunetConfig::tiny(activation)
    } else {
        DrunetConfig {
            activation,
            ..Default::default()
        }
    }
}

/// Runs a benchmark.
pub fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Model(a) => crate::cmd::bench_model::run(a),
        Bench::Data(a) => crate::cmd::bench_data::run(a),
        Bench::Prox(a) => crate::cmd::bench_prox::run(a),
        Bench::Pnp(a) => crate::cmd::bench_pnp::run(a),
        Bench::Memory(a) => crate::cmd::bench_memory::run(a),
    }
}

/// Waits for the device to finish its queued work.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median milliseconds of `f` over `reps` runs after `warm` warm-ups.
pub fn time_ms(
    device: Device,
    warm: usize,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut ts = Vec::with_capacity(reps);
    for i in 0..warm + reps {
        sync(device);
        let t0 = Instant::now();
        f()?;
        sync(device);
        if i >= warm {
            ts.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

/// Bytes as GiB, or `n/a` (CPU, or no CUDA statistics).
pub fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    })
}

/// Runs `anchor_deepinv.py MODE --device D [extra…]` and returns its `anchor <metric> <value>` lines.
pub fn run_anchor(
    python: &Path,
    anchor: &Path,
    mode: &str,
    device: Device,
    extra: &[String],
) -> anyhow::Result<Vec<(String, f64)>> {
    let dev = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let out = Command::new(python)
        .arg(anchor)
        .arg(mode)
        .args(["--device", &dev])
        .args(extra)
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), anchor.display()))?;
    if !out.status.success() {
        bail!(
            "{} {mode} failed: {}",
            anchor.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next().map(str::parse::<f64>)) {
                (Some("anchor"), Some(k), Some(Ok(v))) => Some((k.to_string(), v)),
                _ => None,
            }
        })
        .collect())
}

/// The device a benchmark runs on: cuDNN's autotuning on a GPU (as the anchor does), or a
/// plain note that the timings are CPU ones (`cpu_hint` says how to keep them short).
pub fn bench_device(spec: Option<&str>, cpu_hint: &str) -> anyhow::Result<Device> {
    let device = common::parse_device(spec)?;
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    } else {
        println!(
            "note: no GPU in use: timing on the CPU ({} threads){cpu_hint}",
            tch::get_num_threads()
        );
    }
    Ok(device)
}
