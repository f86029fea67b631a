//! `gradstep bench pnp`: GS-PnP deblurring (uniform 9×9, ν = 7.65, λ = 0.1, σ = 1.8ν,
//! τ = 1/λ, fixed iterations, as the anchor) of CBSD10, batched against one at a time, and
//! against deepinv's PGD run one image at a time (`anchor_deepinv.py pnp`) in the same call.
use std::path::PathBuf;
use std::time::Instant;

use gradstep_data::load_image;
use gradstep_model::{
    Activation, Checkpoint, Drunet, GradientStepDenoiser, InferenceOptions, MemoryFormat, Precision,
};
use gradstep_pnp::{
    restore, restore_all, AlgorithmConfig, DegradationSpec, GsOutput, GsPgdConfig, Kernel,
    Restoration, RestorationProblem,
};

use tch::{Device, Kind};

use crate::anchor::{metric, run_anchor};
use crate::error::{BenchError, Result};
use crate::setup::{announce_device, architecture};
use crate::timing::{gib, sync};

/// Options of `gradstep bench pnp`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct PnpOptions {
    /// Image folder (default: $GRADSTEP_SHARED/data/CBSD10, else ../shared/data/CBSD10).
    #[cfg_attr(feature = "clap", arg(long))]
    pub images: Option<PathBuf>,
    /// Number of images.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub count: usize,
    /// Iterations per restoration (fixed, no early stopping).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 50))]
    pub iters: usize,
    /// Problems per batch (default: all).
    #[cfg_attr(feature = "clap", arg(long))]
    pub batch: Option<usize>,
    /// Use the tiny model (quick CPU runs) instead of the full one.
    #[cfg_attr(feature = "clap", arg(long))]
    pub tiny: bool,
    /// Weights to use (default: randomly initialised; speed does not depend on them).
    #[cfg_attr(feature = "clap", arg(long))]
    pub checkpoint: Option<PathBuf>,
    /// Use GS-PnP's backtracking (the anchor has none).
    #[cfg_attr(feature = "clap", arg(long))]
    pub backtracking: bool,
    /// `anchor_deepinv.py` to run in the same call for the PyTorch numbers.
    #[cfg_attr(feature = "clap", arg(long))]
    pub anchor: Option<PathBuf>,
    /// Python that runs the anchor (needs torch 2.11 and deepinv 0.5.0).
    #[cfg_attr(feature = "clap", arg(long, default_value = "python3"))]
    pub anchor_python: PathBuf,
}

/// Runs the benchmark on `device`, printing its rows.
pub fn run(a: &PnpOptions, device: Device) -> Result<()> {
    announce_device(device, "; --tiny --count 2 --iters 5 keeps it short");
    let mut den = match &a.checkpoint {
        Some(p) => Checkpoint::read(p)?.denoiser(device, Kind::Float, p)?,
        None => {
            tch::manual_seed(0);
            let cfg = architecture(a.tiny, Activation::Elu);
            GradientStepDenoiser::new(Drunet::new(&cfg, device)?)
        }
    };
    // The headline runs what `gradstep eval` runs by default on this device.
    let default_options = InferenceOptions {
        memory_format: MemoryFormat::default_for(device),
        ..Default::default()
    };
    den = den.with_options(&default_options)?;
    let dir = a.images.clone().unwrap_or_else(|| {
        std::env::var_os("GRADSTEP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared"))
            .join("data/CBSD10")
    });
    let mut files = gradstep_data::dataset::list_images(&dir)?;
    files.truncate(a.count);
    let nu = 7.65;
    let kernel = Kernel::uniform(9)?;
    let problems: Vec<RestorationProblem> = files
        .iter()
        .map(|f| {
            let x = load_image(f, 3, device)?;
            Ok(RestorationProblem::synthesize(
                &x,
                &DegradationSpec::Deblur(kernel.clone()),
                nu,
                0,
            )?)
        })
        .collect::<Result<_>>()?;
    let cfg = AlgorithmConfig::GsPgd(GsPgdConfig {
        lambda: 0.1,
        sigma: 1.8 * nu,
        tau0: None,
        gamma: 0.1,
        eta: 0.9,
        backtracking: a.backtracking,
        max_iter: a.iters,
        tol: None,
        warmup: None,
        output: GsOutput::Z,
    });
    let n = problems.len();
    println!(
        "GS-PnP deblurring: {n} images, {} iterations each, {} model, {device:?}, backtracking {}, default {:?} {:?}",
        a.iters,
        if a.tiny { "tiny" } else { "full" },
        a.backtracking,
        default_options.precision,
        default_options.memory_format
    );
    // Warm-up of both paths on every shape they will see (cuDNN autotunes each new input
    // shape in benchmark mode: that must not fall inside the timed region).
    let mut warm = cfg.clone();
    if let AlgorithmConfig::GsPgd(g) = &mut warm {
        g.max_iter = 2;
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &problems {
        if seen.insert(p.image_shape()) {
            restore(&den, p, &warm)?;
        }
    }
    let batch = a.batch.unwrap_or(n).max(1);
    let warm_items: Vec<_> = problems.iter().map(|p| (p, &warm)).collect();
    restore_all(&den, &warm_items, batch)?;
    sync(device);
    gradstep_model::cuda::reset_peak(device);
    let t0 = Instant::now();
    let mut single = Vec::with_capacity(n);
    for p in &problems {
        single.push(restore(&den, p, &cfg)?);
    }
    sync(device);
    let single_rate = n as f64 / t0.elapsed().as_secs_f64();
    let single_peak = gradstep_model::cuda::peak_allocated(device);
    let items: Vec<_> = problems.iter().map(|p| (p, &cfg)).collect();
    // Restorations per second and peak memory of all problems restored in batches.
    let timed_batches =
        |den: &GradientStepDenoiser| -> Result<(f64, Option<u64>, Vec<Restoration>)> {
            sync(device);
            gradstep_model::cuda::reset_peak(device);
            let t0 = Instant::now();
            let out = restore_all(den, &items, batch)?;
            sync(device);
            let rate = n as f64 / t0.elapsed().as_secs_f64();
            Ok((rate, gradstep_model::cuda::peak_allocated(device), out))
        };
    let (batched_rate, batched_peak, batched) = timed_batches(&den)?;
    let max_dpsnr = max_psnr_gap(&single, &batched);
    // Work per restoration: one ∇g_σ (≈ 2 forward passes) at the start and per iteration
    // (without backtracking every iteration makes exactly one).
    let arch = den.network().config().clone();
    let flops_per_restoration = problems
        .iter()
        .map(|p| {
            let s = p.image_shape();
            2.0 * (a.iters as f64 + 1.0) * arch.forward_flops(s[s.len() - 2], s[s.len() - 1])
        })
        .sum::<f64>()
        / n as f64;
    let tflops = |rate: f64| rate * flops_per_restoration * 1e-12;
    println!(
        "ours one at a time: {single_rate:.4} restorations/s (~{:.1} TFLOP/s), peak {}",
        tflops(single_rate),
        gib(single_peak)
    );
    println!(
        "ours batched (≤{batch} per batch): {batched_rate:.4} restorations/s (~{:.1} TFLOP/s), peak {}",
        tflops(batched_rate),
        gib(batched_peak)
    );
    println!("batched vs one at a time: max |ΔPSNR| = {max_dpsnr:.2e} dB");
    // Speed switches that are not the default yet: measured here, beside the default, so
    // that a decision to change the default rests on one call's numbers.
    let mut variants = Vec::new();
    if device.is_cuda() {
        for (label, precision, layout) in [
            ("fp32 contiguous", Precision::Fp32, MemoryFormat::Contiguous),
            ("bf16 contiguous", Precision::Bf16, MemoryFormat::Contiguous),
            (
                "fp32 channels-last",
                Precision::Fp32,
                MemoryFormat::ChannelsLast,
            ),
            (
                "bf16 channels-last",
                Precision::Bf16,
                MemoryFormat::ChannelsLast,
            ),
            (
                "fp16 channels-last",
                Precision::Fp16,
                MemoryFormat::ChannelsLast,
            ),
        ] {
            if (precision, layout) == (default_options.precision, default_options.memory_format) {
                continue;
            }
            den = den.with_options(&InferenceOptions {
                precision,
                memory_format: layout,
                ..Default::default()
            })?;
            restore_all(&den, &warm_items, batch)?;
            let (rate, peak, out) = timed_batches(&den)?;
            let gap = max_psnr_gap(&batched, &out);
            println!(
                "ours batched, {label}: {rate:.4} restorations/s (~{:.1} TFLOP/s), peak {}, max |ΔPSNR| vs the default {gap:.2e} dB",
                tflops(rate),
                gib(peak)
            );
            variants.push((label, rate, gap));
        }
        den = den.with_options(&default_options)?;
    }
    if !a.backtracking {
        den = backtracking_check(den, &problems, &cfg, batch, &default_options)?;
    }
    drop(den);
    let Some(anchor) = &a.anchor else {
        println!("no --anchor given: PyTorch anchor not run; ratio below is batched / ours one at a time");
        println!("bench-pnp speedup {:.3}", batched_rate / single_rate);
        return Ok(());
    };
    let got = run_anchor(
        &a.anchor_python,
        anchor,
        "pnp",
        device,
        &[
            "--images".into(),
            dir.display().to_string(),
            "--count".into(),
            n.to_string(),
            "--iters".into(),
            a.iters.to_string(),
        ],
    )?;
    let Some(anchor_rate) = metric(&got, "pnp_restorations_per_s") else {
        return Err(BenchError::Anchor(format!(
            "the anchor printed no pnp_restorations_per_s: {got:?}"
        )));
    };
    println!("| run | restorations/s | vs PyTorch one at a time |");
    println!("|---|---|---|");
    println!("| PyTorch (deepinv) one at a time | {anchor_rate:.4} | 1.00 |");
    println!(
        "| gradstep one at a time | {single_rate:.4} | {:.2} |",
        single_rate / anchor_rate
    );
    println!(
        "| gradstep batched | {batched_rate:.4} | {:.2} |",
        batched_rate / anchor_rate
    );
    for (label, rate, gap) in &variants {
        println!(
            "| gradstep batched, {label} (max ΔPSNR {gap:.1e} dB) | {rate:.4} | {:.2} |",
            rate / anchor_rate
        );
    }
    println!("bench-pnp speedup {:.3}", batched_rate / anchor_rate);
    Ok(())
}

/// GS-PnP *with* backtracking (the papers' setting, which the timed runs leave out to match
/// the anchor) in the default precision and, on CUDA, in bf16 and fp16: their rounding of
/// `F` could reject good steps near convergence (more backtracks, smaller `τ`, other
/// results). Prints the rate, the backtracks, the smallest `τ`, the accepted increases of
/// `F` (0 by construction) and the PSNR gap, the numbers that decide whether a 16-bit
/// precision can be the default.
fn backtracking_check(
    mut den: GradientStepDenoiser,
    problems: &[RestorationProblem],
    cfg: &AlgorithmConfig,
    batch: usize,
    default_options: &InferenceOptions,
) -> Result<GradientStepDenoiser> {
    let mut with_bt = cfg.clone();
    if let AlgorithmConfig::GsPgd(g) = &mut with_bt {
        g.backtracking = true;
    }
    let items: Vec<_> = problems.iter().map(|p| (p, &with_bt)).collect();
    let device = den.network().device();
    let mut precisions = vec![default_options.precision];
    if device.is_cuda() {
        for p in [Precision::Bf16, Precision::Fp16] {
            if p != default_options.precision {
                precisions.push(p);
            }
        }
    }
    let mut first: Option<Vec<Restoration>> = None;
    for precision in precisions {
        den = den.with_options(&InferenceOptions {
            precision,
            ..*default_options
        })?;
        sync(device);
        let t0 = Instant::now();
        let out = restore_all(&den, &items, batch)?;
        sync(device);
        let rate = out.len() as f64 / t0.elapsed().as_secs_f64();
        let records = out.iter().flat_map(|r| r.records.iter());
        let backtracks: usize = records.clone().map(|r| r.backtracks).sum();
        let min_tau = records.clone().map(|r| r.tau).fold(f64::INFINITY, f64::min);
        let increases: usize = out
            .iter()
            .map(|r| {
                r.records
                    .windows(2)
                    .filter(|w| w[1].objective > w[0].objective)
                    .count()
            })
            .sum();
        let gap = first
            .as_deref()
            .map(|f| {
                format!(
                    ", max |ΔPSNR| vs {:?} {:.2e} dB",
                    default_options.precision,
                    max_psnr_gap(f, &out)
                )
            })
            .unwrap_or_default();
        println!(
            "with backtracking, {precision:?} {:?}: {rate:.4} restorations/s, {backtracks} backtracks, min τ {min_tau:.3e}, {increases} accepted increases of F{gap}",
            default_options.memory_format
        );
        first.get_or_insert(out);
    }
    Ok(den.with_options(default_options)?)
}

/// The largest PSNR difference between two runs of the same problems.
fn max_psnr_gap(a: &[Restoration], b: &[Restoration]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.psnr.unwrap_or(0.0) - y.psnr.unwrap_or(0.0)).abs())
        .fold(0.0, f64::max)
}
