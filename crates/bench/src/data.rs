//! `gradstep bench data`: training patches per second, from PNGs and from the decode-once
//! cache, beside the PyTorch anchor (PIL + torchvision `DataLoader`) run in the same call.
use std::path::{Path, PathBuf};
use std::time::Instant;

use gradstep_data::{save_image, PatchSampler, PatchSamplerConfig};
use tch::{Device, Kind, Tensor};

use crate::anchor::{metric, run_anchor};
use crate::error::{BenchError, Result};
use crate::timing::sync;

/// Options of `gradstep bench data`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DataOptions {
    /// Directory of PNGs to sample (default: 16 synthetic 2040×1356 PNGs made once under --work).
    #[cfg_attr(feature = "clap", arg(long))]
    pub images: Option<PathBuf>,
    /// Where the synthetic PNGs and the cache go (default: $GRADSTEP_CACHE/bench-data,
    /// else ~/.cache/gradstep/bench-data).
    #[cfg_attr(feature = "clap", arg(long))]
    pub work: Option<PathBuf>,
    /// Patches per measurement (the anchor's default is 2,048).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2048))]
    pub patches: usize,
    /// Threads decoding and cutting (0 = one per core, as the anchor's workers).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub threads: usize,
    /// `anchor_deepinv.py` to run in the same call for the PyTorch numbers.
    #[cfg_attr(feature = "clap", arg(long))]
    pub anchor: Option<PathBuf>,
    /// Python that runs the anchor (needs torch 2.11, torchvision and Pillow).
    #[cfg_attr(feature = "clap", arg(long, default_value = "python3"))]
    pub anchor_python: PathBuf,
}

const SYNTHETIC: usize = 16;
const W: i64 = 2040;
const H: i64 = 1356;

/// Runs the data benchmark, delivering the batches to `device`, printing its rows.
pub fn run(a: &DataOptions, device: Device) -> Result<()> {
    let work = a.work.clone().unwrap_or_else(default_work);
    let images = match &a.images {
        Some(d) => d.clone(),
        None => synthetic_images(&work.join("png"))?,
    };
    let batch = 16usize;
    let batches = a.patches.div_ceil(batch).max(1);
    let cfg = PatchSamplerConfig {
        roots: vec![images.clone()],
        threads: a.threads,
        ..Default::default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "images: {} ; {} patches of 128² in batches of {batch} to {device:?}; {} threads on {cores} cores",
        images.display(),
        batches * batch,
        if a.threads == 0 { cores } else { a.threads }
    );

    let from_png =
        patches_per_s(&cfg, batches, device).map_err(|e| e.context("sampling from PNG"))?;
    println!("ours from PNG: {from_png:.1} patches/s");

    let cached = PatchSamplerConfig {
        cache_dir: Some(work.join("cache")),
        ..cfg.clone()
    };
    let t0 = Instant::now();
    let (_, rebuilt) = PatchSampler::new(&cached)?.cache_state();
    let open_s = t0.elapsed().as_secs_f64();
    println!(
        "cache: {} in {open_s:.2} s",
        if rebuilt { "built" } else { "opened (valid)" }
    );
    let from_cache = patches_per_s(&cached, batches, device)
        .map_err(|e| e.context("sampling from the cache"))?;
    println!("ours from cache: {from_cache:.1} patches/s");

    let Some(anchor) = &a.anchor else {
        println!("no --anchor given: PyTorch anchor not run");
        println!("bench-data speedup n/a");
        return Ok(());
    };
    let got = run_anchor(
        &a.anchor_python,
        anchor,
        "data",
        Device::Cpu,
        &[
            "--images".into(),
            images.display().to_string(),
            "--patches".into(),
            (batches * batch).to_string(),
        ],
    )?;
    let Some(theirs) = metric(&got, "data_patches_per_s") else {
        return Err(BenchError::Anchor(format!(
            "the anchor printed no data_patches_per_s: {got:?}"
        )));
    };
    println!("| pipeline | patches/s | vs anchor |");
    println!("|---|---|---|");
    println!("| PyTorch DataLoader, PIL + torchvision, {cores} workers | {theirs:.1} | 1.00 |");
    println!(
        "| gradstep, from PNG | {from_png:.1} | {:.2} |",
        from_png / theirs
    );
    println!(
        "| gradstep, from the decode-once cache | {from_cache:.1} | {:.2} |",
        from_cache / theirs
    );
    println!("bench-data speedup {:.3}", from_cache / theirs);
    Ok(())
}

/// Patches per second of a fresh sampler over `batches` batches, start-up included. Also
/// prints the process's CPU time per 1,000 patches: on a machine shared with other work the
/// wall-clock rate drops, the CPU cost does not (cores / CPU cost = the rate on idle cores).
fn patches_per_s(cfg: &PatchSamplerConfig, batches: usize, device: Device) -> Result<f64> {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut s = PatchSampler::new(cfg)?;
    let mut n = 0i64;
    for _ in 0..batches {
        let b = s.next_batch(device)?;
        n += b.size()[0];
    }
    sync(device);
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu0, cpu_seconds()) {
        println!(
            "  CPU time {:.3} s per 1000 patches",
            (b - a) * 1000.0 / n as f64
        );
    }
    Ok(rate)
}

/// User + system CPU seconds of this process, all threads (Linux `/proc/self/stat`, at the
/// usual 100 ticks per second); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn default_work() -> PathBuf {
    let base = std::env::var_os("GRADSTEP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("gradstep")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/gradstep")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("bench-data")
}

/// `SYNTHETIC` 2040×1356 colour PNGs in `dir`, made once: smooth waves plus noise, so that
/// they compress (and decode) about like photographs. Written under a temporary name and
/// renamed, so an interrupted run never leaves a partial image behind.
fn synthetic_images(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    tch::manual_seed(0);
    let y = Tensor::arange(H, (Kind::Float, Device::Cpu)).view([1, H, 1]);
    let x = Tensor::arange(W, (Kind::Float, Device::Cpu)).view([1, 1, W]);
    for i in 0..SYNTHETIC {
        let path = dir.join(format!("synthetic_{i:02}.png"));
        if path.exists() {
            continue;
        }
        let f = 0.004 + 0.002 * i as f64;
        let phase = Tensor::from_slice(&[0.0f32, 2.1, 4.2]).view([3, 1, 1]);
        let waves = (&y * f + &x * (0.7 * f) + &phase).sin() * 0.3
            + ((&x * (1.3 * f) - &y * (0.5 * f)).cos() * 0.15)
            + 0.5;
        let img =
            (waves + Tensor::randn([3, H, W], (Kind::Float, Device::Cpu)) * 0.04).clamp(0.0, 1.0);
        let tmp = dir
            .parent()
            .unwrap_or(dir)
            .join(format!("synthetic_{i:02}.partial.png"));
        save_image(&tmp, &img)?;
        std::fs::rename(&tmp, &path).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(dir.to_path_buf())
}
