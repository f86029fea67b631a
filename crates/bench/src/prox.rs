//! `gradstep bench prox`: one Prox-DRUNet training step with the reference power iteration
//! and with Lanczos, and how far apart their norm estimates are on the same batch.
//!
//! The step is the trainer's ([`crate::train_step::prox_step`]): `y = x + σξ`, `∇g_σ(y)`
//! with its graph, `D_σ(y) = y − ∇g_σ(y)`, the penalty (products without graph from the
//! seeded start vector, one differentiable product), `loss = mean_b ‖D_σ(y_b) − x_b‖²/n
//! + μ · mean_b penalty_b`, backward, clipping, Adam: the anchor's `prox` mode, done our way.
use std::path::PathBuf;

use gradstep_data::noise::{add_noise, seeded};
use gradstep_model::{Activation, Drunet, GradientStepDenoiser, Graph, MemoryFormat, Sigma};
use gradstep_train::prox::{hessian_norms_at, ProxPenaltyConfig, SpectralEstimator};
use gradstep_train::{Adam, AdamConfig};
use tch::{Device, Kind, Tensor};

use crate::anchor::{metric, run_anchor};
use crate::error::{BenchError, Result};
use crate::setup::{announce_device, architecture};
use crate::timing::{gib, time_ms};
use crate::train_step::{prox_step, SIGMA};

/// Options of `gradstep bench prox`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ProxOptions {
    /// Timed steps per estimator (median reported); default 5 on a GPU, 1 on the CPU.
    #[cfg_attr(feature = "clap", arg(long))]
    pub reps: Option<usize>,
    /// Patches per batch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub batch: i64,
    /// Side of the colour patches.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 128))]
    pub size: i64,
    /// Tiny widths (8, 16, 32, 64) instead of the full model: for a quick CPU run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub tiny: bool,
    /// Lanczos steps (Hessian-vector products before the final one).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub lanczos_steps: usize,
    /// Lanczos stopping tolerance on the relative Ritz residual.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1e-3))]
    pub lanczos_tolerance: f64,
    /// `anchor_deepinv.py` to run in the same call (its `prox` mode) for the PyTorch time.
    #[cfg_attr(feature = "clap", arg(long))]
    pub anchor: Option<PathBuf>,
    /// Python that runs the anchor (needs torch 2.11 and deepinv 0.5.0).
    #[cfg_attr(feature = "clap", arg(long, default_value = "python3"))]
    pub anchor_python: PathBuf,
}

/// Runs the benchmark on `device`, printing its rows.
pub fn run(a: &ProxOptions, device: Device) -> Result<()> {
    if a.batch < 1 || a.size < 8 {
        return Err(BenchError::Options(
            "--batch must be ≥ 1 and --size ≥ 8".into(),
        ));
    }
    if a.anchor.is_some() && (a.batch, a.size, a.tiny) != (16, 128, false) {
        return Err(BenchError::Options(
            "--anchor times the full model on 16 patches of 128²: drop --tiny, --batch, --size"
                .into(),
        ));
    }
    announce_device(device, "; --tiny --batch 2 --size 32 keeps it short");
    let gpu = device.is_cuda();
    let reps = a.reps.unwrap_or(if gpu { 5 } else { 1 });
    let warm = 1;
    tch::manual_seed(0);
    let arch = architecture(a.tiny, Activation::Softplus);
    let mut den = GradientStepDenoiser::new(Drunet::new(&arch, device)?);
    let sigma = SIGMA;
    let clean = Tensor::f_rand([a.batch, 3, a.size, a.size], (Kind::Float, device))?;
    let power = ProxPenaltyConfig::default();
    let lanczos = ProxPenaltyConfig {
        estimator: SpectralEstimator::Lanczos {
            steps: a.lanczos_steps,
        },
        tolerance: a.lanczos_tolerance,
        ..Default::default()
    };
    lanczos.validate()?;

    // Accuracy first, on one fixed batch and the initial weights.
    let y = add_noise(&clean, &[sigma], &mut seeded(1, 0))?;
    let at = den.gradient_at(&y, &Sigma::Scalar(sigma))?;
    let start = y.f_rand_like()?;
    let np = hessian_norms_at(&at, &power, Graph::Inference, Some(&start))?;
    let nl = hessian_norms_at(&at, &lanczos, Graph::Inference, Some(&start))?;
    drop(at);
    let rel_diff = np
        .values
        .iter()
        .zip(&nl.values)
        .map(|(p, l)| (l - p).abs() / p.abs().max(1e-12))
        .fold(0.0f64, f64::max);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "estimates on one batch: power max {:.5} ({} products), Lanczos max {:.5} ({} products), max relative difference {:.3e}",
        max(&np.values),
        np.products,
        max(&nl.values),
        nl.products,
        rel_diff
    );

    let mut times = Vec::new();
    // The headline rows run `configs/prox-drunet.json`'s settings (fp32, NCHW); on CUDA a
    // third row measures Lanczos in channels-last, the GS training default, not yet Prox's.
    let mut rows = vec![
        ("power iteration", &power, MemoryFormat::Contiguous),
        ("Lanczos", &lanczos, MemoryFormat::Contiguous),
    ];
    if gpu {
        rows.push((
            "Lanczos, channels-last",
            &lanczos,
            MemoryFormat::ChannelsLast,
        ));
    }
    for (name, cfg, layout) in rows {
        den.network_mut().set_memory_format(layout)?;
        let params = den.network().var_store().variables().into_iter().collect();
        let mut adam = Adam::new(params, AdamConfig::default())?;
        let mut products = Vec::new();
        gradstep_model::cuda::reset_peak(device);
        let ms = time_ms(device, warm, reps, || {
            let xi = clean.f_randn_like()?;
            let step = products.len() as u64;
            let scalars = prox_step(&den, &mut adam, &clean, &xi, sigma, cfg, step)?;
            products.push(scalars.prox.map_or(0, |(_, _, _, n)| n));
            Ok(())
        })?;
        products.sort_unstable();
        let median = products[products.len() / 2];
        let peak = gradstep_model::cuda::peak_allocated(device);
        let tflops =
            prox_step_forwards(median) * a.batch as f64 * arch.forward_flops(a.size, a.size) / ms
                * 1e-9;
        println!(
            "ours ({name}): prox_step_b{}_{}_ms {ms:.3} (~{tflops:.1} TFLOP/s)  products (median) {median}  peak {}",
            a.batch,
            a.size,
            gib(peak)
        );
        times.push(ms);
    }
    let (power_ms, lanczos_ms) = (times[0], times[1]);
    let lanczos_nhwc_ms = times.get(2).copied();
    let base = match &a.anchor {
        Some(anchor) => {
            let got = run_anchor(
                &a.anchor_python,
                anchor,
                "prox",
                device,
                &["--reps".into(), (5 * reps).to_string()],
            )?;
            let Some(anchor_ms) = metric(&got, "prox_step_b16_128_ms") else {
                return Err(BenchError::Anchor(format!(
                    "the anchor printed no prox_step_b16_128_ms: {got:?}"
                )));
            };
            if let Some(k) = metric(&got, "prox_power_iterations_median") {
                println!("anchor: power iterations (median) {k}");
            }
            println!("| Prox step | ms | speedup vs anchor |");
            println!("|---|---|---|");
            println!("| PyTorch (deepinv), power iteration | {anchor_ms:.3} | 1.00 |");
            println!(
                "| gradstep, power iteration | {power_ms:.3} | {:.2} |",
                anchor_ms / power_ms
            );
            println!(
                "| gradstep, Lanczos ({} steps) | {lanczos_ms:.3} | {:.2} |",
                a.lanczos_steps,
                anchor_ms / lanczos_ms
            );
            if let Some(ms) = lanczos_nhwc_ms {
                println!(
                    "| gradstep, Lanczos, channels-last | {ms:.3} | {:.2} |",
                    anchor_ms / ms
                );
            }
            anchor_ms
        }
        None => {
            println!("no --anchor given: speedup against our own power iteration");
            power_ms
        }
    };
    println!("bench-prox speedup {:.3}", base / lanczos_ms);
    Ok(())
}

/// The work of one Prox training step with `products` Hessian-vector products, in network
/// forward passes (convolutions only, as `DrunetConfig::forward_flops` counts them):
/// `D_σ`'s loss as in the GS step, forward and backward with the weight gradients (6); each
/// product but the last, a first-order backward of the `∇g` graph to its input (2, the
/// graph being two passes: `N` and the adjoint); the last product, kept in the graph, with
/// its backward to the weights (6, as the loss). An estimate for the TFLOP/s column, not a
/// count of kernels.
fn prox_step_forwards(products: usize) -> f64 {
    6.0 + 2.0 * products.saturating_sub(1) as f64 + 6.0
}
