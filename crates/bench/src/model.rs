//! `gradstep bench model`: `∇g_σ` of one 256² colour image and one GS training step
//! (batch 16 of 128², Adam with clipping) on the full model, in every variant (gradient
//! method, precision, layout, CUDA graph), beside the PyTorch anchor run in the same call.
//! The headline row is the `performance` section of the training config users run. The
//! step timed is the trainer's ([`crate::train_step::gs_step`]: loss, backward, clipping on
//! the device, Adam), the CUDA-graph rows its device-resident form.
use std::path::PathBuf;

use gradstep_model::{
    Activation, Drunet, DrunetConfig, GradMethod, GradientStepDenoiser, Graph, MemoryFormat,
    Precision, Sigma,
};
use gradstep_train::step::{GsStep, LocalOnly, NoisyBatch};
use gradstep_train::{Adam, AdamConfig};
use tch::{Device, Kind, Tensor};

use crate::anchor::{metric, run_anchor};
use crate::error::{BenchError, Result};
use crate::setup::{announce_device, architecture};
use crate::timing::{gib, time_ms};
use crate::train_step::{gs_step, CLIP_GRAD_NORM, SIGMA};

/// Options of `gradstep bench model`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ModelOptions {
    /// Timed repetitions (median reported); default 20 on a GPU, 2 on the CPU.
    #[cfg_attr(feature = "clap", arg(long))]
    pub reps: Option<usize>,
    /// `anchor_deepinv.py` to run in the same call for the PyTorch numbers.
    #[cfg_attr(feature = "clap", arg(long))]
    pub anchor: Option<PathBuf>,
    /// Python that runs the anchor (needs torch 2.11 and deepinv 0.5.0).
    #[cfg_attr(feature = "clap", arg(long, default_value = "python3"))]
    pub anchor_python: PathBuf,
    /// Tiny widths (8, 16, 32, 64) instead of the full model: for a quick CPU run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub tiny: bool,
    /// Training config whose `performance` section is the headline row (what `make
    /// train-gs` runs); the other rows are printed beside it.
    #[cfg_attr(feature = "clap", arg(long, default_value = "configs/gs-drunet.json"))]
    pub config: PathBuf,
}

/// Runs the benchmark on `device`, printing its rows.
pub fn run(a: &ModelOptions, device: Device) -> Result<()> {
    announce_device(device, "; --tiny --reps 1 keeps it short");
    let gpu = device.is_cuda();
    let reps = a.reps.unwrap_or(if gpu { 20 } else { 2 });
    let warm = if gpu { 3 } else { 1 };
    if a.tiny && a.anchor.is_some() {
        return Err(BenchError::Options(
            "--anchor times the full model: drop --tiny".into(),
        ));
    }
    let arch = architecture(a.tiny, Activation::Elu);
    tch::manual_seed(0);
    let net = Drunet::new(&arch, device)?;
    let mut den = GradientStepDenoiser::new(net);
    let sigma = Sigma::Scalar(SIGMA);
    let x = Tensor::f_rand([1, 3, 256, 256], (Kind::Float, device))?;
    let xb = Tensor::f_rand([16, 3, 128, 128], (Kind::Float, device))?;
    let mut rows = Vec::new();
    // The headline: the training configuration users run.
    let perf = match gradstep_train::TrainConfig::load(&a.config, &[]) {
        Ok(c) => c.performance,
        Err(e) => {
            println!("note: {e}; the headline row is the fp32 adjoint step");
            Default::default()
        }
    };
    let headline = (
        perf.grad_method,
        perf.precision == Precision::Bf16,
        perf.memory_format,
    );
    // (label, method, bf16 autocast, layout).
    let variants = [
        (
            "adjoint fp32",
            GradMethod::Adjoint,
            false,
            MemoryFormat::Contiguous,
        ),
        (
            "autograd double-backward fp32",
            GradMethod::Autograd,
            false,
            MemoryFormat::Contiguous,
        ),
        (
            "adjoint bf16-autocast",
            GradMethod::Adjoint,
            true,
            MemoryFormat::Contiguous,
        ),
        (
            "adjoint fp32 channels-last",
            GradMethod::Adjoint,
            false,
            MemoryFormat::ChannelsLast,
        ),
        (
            "adjoint bf16-autocast channels-last",
            GradMethod::Adjoint,
            true,
            MemoryFormat::ChannelsLast,
        ),
        (
            "autograd double-backward bf16-autocast",
            GradMethod::Autograd,
            true,
            MemoryFormat::Contiguous,
        ),
        (
            "autograd double-backward fp32 channels-last",
            GradMethod::Autograd,
            false,
            MemoryFormat::ChannelsLast,
        ),
    ];
    let bf16_ok = gpu && gradstep_model::cuda::autocast_available();
    let runnable = |bf16: bool, layout: MemoryFormat| {
        (!bf16 || bf16_ok) && (layout == MemoryFormat::Contiguous || gpu)
    };
    // Where the configured combination cannot run here (bf16 or channels-last on the CPU),
    // the headline falls back to the fp32 adjoint row.
    let headline = if runnable(headline.1, headline.2) {
        headline
    } else {
        (GradMethod::Adjoint, false, MemoryFormat::Contiguous)
    };
    for (label, method, bf16, layout) in variants {
        if !runnable(bf16, layout) {
            println!("ours ({label}): skipped (needs CUDA)");
            continue;
        }
        let is_headline = (method, bf16, layout) == headline;
        den = den.with_method(method);
        den.network_mut().set_memory_format(layout)?;
        gradstep_model::cuda::reset_peak(device);
        let grad_ms = time_ms(device, warm, reps, || {
            gradstep_model::cuda::bf16_autocast(bf16, || -> Result<()> {
                den.grad(&x, &sigma, Graph::Inference)?
                    .f_sum(Kind::Float)?
                    .f_double_value(&[])?;
                Ok(())
            })
        })?;
        let grad_peak = gradstep_model::cuda::peak_allocated(device);
        let params = den.network().var_store().variables().into_iter().collect();
        let mut adam = Adam::new(params, AdamConfig::default())?;
        let train_reps = if gpu { reps } else { 1 };
        gradstep_model::cuda::reset_peak(device);
        let step_ms = time_ms(device, warm, train_reps, || {
            let xi = xb.f_randn_like()?;
            gs_step(&den, &mut adam, &xb, &xi, SIGMA, precision_of(bf16))?;
            Ok(())
        })?;
        let step_peak = gradstep_model::cuda::peak_allocated(device);
        let cfg = den.network().config();
        let grad_tflops = 2.0 * cfg.forward_flops(256, 256) / grad_ms * 1e-9;
        let step_tflops = step_tflops(cfg, step_ms);
        println!(
            "ours ({label}): grad_256_ms {grad_ms:.3} (~{grad_tflops:.1} TFLOP/s, peak {})  train_step_b16_128_ms {step_ms:.3} (~{step_tflops:.1} TFLOP/s, peak {})",
            gib(grad_peak),
            gib(step_peak)
        );
        rows.push((label, grad_ms, step_ms, is_headline));
    }
    let Some(&(head_label, ours_grad, ours_step, _)) = rows.iter().find(|r| r.3) else {
        return Err(BenchError::Failed("no benchmark row ran".into()));
    };
    println!(
        "headline: {head_label} (the `performance` of {})",
        a.config.display()
    );
    // Strict float32 for the comparison: TF32 alone differs from float32 by ~1e-4.
    let strict = gradstep_model::cuda::set_cudnn_tf32(false);
    let (grad_err, param_err) = adjoint_vs_autograd(&arch, device)?;
    if strict {
        gradstep_model::cuda::set_cudnn_tf32(true);
    }
    let precision = if strict || !gpu {
        "float32"
    } else {
        "float32 with TF32 convolutions"
    };
    println!("adjoint vs autograd on {device:?} ({precision}): ∇g rel err {grad_err:.2e}, parameter gradients max rel err {param_err:.2e}");
    if bf16_ok {
        // What a 16-bit inference precision costs in ∇g (the PyTorch figures:
        // 1.5e-3 in bf16, 1.7e-4 in fp16); `bench pnp` gives the cost in PSNR.
        let reference = den.grad(&x, &sigma, Graph::Inference)?;
        let error = |p: Precision| -> Result<f64> {
            let g = gradstep_model::cuda::autocast(p, || den.grad(&x, &sigma, Graph::Inference))?;
            Ok(g.f_sub(&reference)?.f_norm()?.f_double_value(&[])?
                / reference.f_norm()?.f_double_value(&[])?)
        };
        println!(
            "∇g of 1×3×256² against float32 (TF32), relative: bf16 {:.2e}, fp16 {:.2e}",
            error(Precision::Bf16)?,
            error(Precision::Fp16)?
        );
    }
    let Some(anchor) = a.anchor.as_ref() else {
        println!("no --anchor given: PyTorch anchor not run");
        println!("bench-model speedup n/a");
        return graph_rows(den, &xb, &arch, device, warm, reps, bf16_ok, None);
    };
    let got = run_anchor(
        &a.anchor_python,
        anchor,
        "model",
        device,
        &["--reps".into(), reps.to_string()],
    )?;
    let (Some(pg), Some(ps)) = (
        metric(&got, "grad_256_ms"),
        metric(&got, "train_step_b16_128_ms"),
    ) else {
        return Err(BenchError::Anchor(format!(
            "the anchor printed no grad_256_ms / train_step_b16_128_ms: {got:?}"
        )));
    };
    println!("| work | PyTorch (deepinv) ms | gradstep ms | speedup |");
    println!("|---|---|---|---|");
    println!(
        "| ∇g, 1×3×256² ({head_label}) | {pg:.3} | {ours_grad:.3} | {:.2} |",
        pg / ours_grad
    );
    println!(
        "| GS train step, 16×3×128² ({head_label}) | {ps:.3} | {ours_step:.3} | {:.2} |",
        ps / ours_step
    );
    for (label, grad_ms, step_ms, _) in rows.iter().filter(|r| !r.3) {
        println!("| ({label}) ∇g / train step | {pg:.3} / {ps:.3} | {grad_ms:.3} / {step_ms:.3} | {:.2} / {:.2} |", pg / grad_ms, ps / step_ms);
    }
    println!("bench-model speedup {:.3}", ps / ours_step);
    graph_rows(den, &xb, &arch, device, warm, reps, bf16_ok, Some(ps))
}

/// Achieved TFLOP/s of a GS training step of batch 16 of 128² taking `ms`: about 6 forward
/// passes (∇g is two, the backward through it twice that), convolutions only.
fn step_tflops(arch: &DrunetConfig, ms: f64) -> f64 {
    6.0 * 16.0 * arch.forward_flops(128, 128) / ms * 1e-9
}

/// The GS training step captured once in a CUDA graph and replayed (no per-kernel launch
/// cost, no host read): a lead of issue 8, measured beside the eager rows, not the default.
/// Printed last, after the speedup line: a capture that goes wrong costs only these rows.
#[allow(clippy::too_many_arguments)]
fn graph_rows(
    mut den: GradientStepDenoiser,
    xb: &Tensor,
    arch: &DrunetConfig,
    device: Device,
    warm: usize,
    reps: usize,
    bf16_ok: bool,
    anchor_step_ms: Option<f64>,
) -> Result<()> {
    if !device.is_cuda() {
        return Ok(());
    }
    for (label, bf16, layout) in [
        ("adjoint fp32, CUDA graph", false, MemoryFormat::Contiguous),
        (
            "adjoint bf16-autocast, CUDA graph",
            true,
            MemoryFormat::Contiguous,
        ),
        (
            "adjoint bf16-autocast channels-last, CUDA graph",
            true,
            MemoryFormat::ChannelsLast,
        ),
    ] {
        if bf16 && !bf16_ok {
            continue;
        }
        den = den.with_method(GradMethod::Adjoint);
        den.network_mut().set_memory_format(layout)?;
        match graph_step_ms(&den, xb, bf16, device, warm, reps) {
            Ok((ms, peak, loss)) => {
                let step_tflops = step_tflops(arch, ms);
                let ratio = anchor_step_ms
                    .map(|ps| format!(", {:.2}× the anchor's step", ps / ms))
                    .unwrap_or_default();
                println!(
                    "ours ({label}): train_step_b16_128_ms {ms:.3} (~{step_tflops:.1} TFLOP/s, peak {}){ratio}, loss after the replays {loss:.4e}",
                    gib(peak)
                );
            }
            Err(e) => println!("ours ({label}): failed: {}", e.chain_text()),
        }
    }
    Ok(())
}

/// Milliseconds per replay of the GS training step ([`GsStep::run_on_device`], the
/// trainer's `performance.cuda_graph` step; noise drawn into a fixed buffer before each
/// replay), captured once in a CUDA graph after three eager warm-up steps on the capture
/// stream; the peak memory; the loss after the replays (finite, or the capture went wrong).
fn graph_step_ms(
    den: &GradientStepDenoiser,
    clean: &Tensor,
    bf16: bool,
    device: Device,
    warm: usize,
    reps: usize,
) -> Result<(f64, Option<u64>, f64)> {
    use gradstep_model::cuda::CudaGraph;
    use gradstep_train::DeviceHyper;
    let params = den.network().var_store().variables().into_iter().collect();
    let mut adam = Adam::new(params, AdamConfig::default())?;
    let mut hyper = adam.device_hyper()?;
    let noise = clean.f_zeros_like()?;
    let gs = GsStep {
        precision: precision_of(bf16),
        clip_grad_norm: Some(CLIP_GRAD_NORM),
    };
    let step = |adam: &mut Adam, hyper: &mut DeviceHyper| -> Result<Tensor> {
        let batch = NoisyBatch {
            clean: clean.shallow_clone(),
            noisy: clean.f_add(&noise.f_mul_scalar(SIGMA)?)?,
            sigma: Sigma::Scalar(SIGMA),
        };
        Ok(gs
            .run_on_device(den, adam, &batch, hyper, &mut LocalOnly)?
            .loss)
    };
    let refresh = || -> Result<()> {
        let _ = noise.shallow_clone().f_normal_(0.0, 1.0)?;
        Ok(())
    };
    let mut graph = CudaGraph::new(device).map_err(BenchError::CudaGraph)?;
    graph
        .on_side_stream(|| -> Result<()> {
            for _ in 0..3 {
                refresh()?;
                let _ = step(&mut adam, &mut hyper)?;
            }
            Ok(())
        })
        .map_err(BenchError::CudaGraph)??;
    let loss = graph
        .capture(|| step(&mut adam, &mut hyper))
        .map_err(BenchError::CudaGraph)?;
    // A replay must really train: the weights and the device step counter move.
    let head = den.network().var_store().variables()["m_head.weight"].shallow_clone();
    let checksum = |t: &Tensor| -> Result<f64> {
        Ok(t.f_to_kind(Kind::Double)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?)
    };
    let before = (checksum(&head)?, hyper.step.f_double_value(&[0])?);
    gradstep_model::cuda::reset_peak(device);
    let ms = time_ms(device, warm, reps, || {
        refresh()?;
        graph.replay().map_err(BenchError::CudaGraph)
    })?;
    let peak = gradstep_model::cuda::peak_allocated(device);
    let after = (checksum(&head)?, hyper.step.f_double_value(&[0])?);
    let loss = loss.f_double_value(&[0])?;
    if !loss.is_finite() {
        return Err(BenchError::Failed(format!(
            "the replayed step's loss is {loss}"
        )));
    }
    if after.0 == before.0 || after.1 != before.1 + (warm + reps) as f64 {
        return Err(BenchError::Failed(format!(
            "the replays did not train (weights {} → {}, device step {} → {}, {} replays)",
            before.0,
            after.0,
            before.1,
            after.1,
            warm + reps
        )));
    }
    Ok((ms, peak, loss))
}

/// The training precision of a row: bf16 autocast or float32.
fn precision_of(bf16: bool) -> Precision {
    if bf16 {
        Precision::Bf16
    } else {
        Precision::Fp32
    }
}

/// Relative errors of the explicit adjoint against autograd on `device` in float32: `∇g` of
/// a 256² image, and the parameter gradients of a training loss on `D_σ` (batch 4 of 64²).
fn adjoint_vs_autograd(arch: &DrunetConfig, device: Device) -> Result<(f64, f64)> {
    tch::manual_seed(1);
    let net = Drunet::new(arch, device)?;
    let adjoint = GradientStepDenoiser::new(net);
    let mut autograd =
        GradientStepDenoiser::new(Drunet::new(arch, device)?).with_method(GradMethod::Autograd);
    autograd
        .network_mut()
        .var_store_mut()
        .copy(adjoint.network().var_store())?;
    let sigma = Sigma::Scalar(25.0 / 255.0);
    let rel = |a: &Tensor, b: &Tensor| -> Result<f64> {
        let num = a.f_sub(b)?.f_abs()?.f_max()?.f_double_value(&[])?;
        Ok(num / b.f_abs()?.f_max()?.f_double_value(&[])?.max(1e-30))
    };
    let x = Tensor::f_rand([1, 3, 256, 256], (Kind::Float, device))?;
    let grad_err = rel(
        &adjoint.grad(&x, &sigma, Graph::Inference)?,
        &autograd.grad(&x, &sigma, Graph::Inference)?,
    )?;
    let clean = Tensor::f_rand([4, 3, 64, 64], (Kind::Float, device))?;
    let noisy = clean.f_add(&clean.f_randn_like()?.f_mul_scalar(25.0 / 255.0)?)?;
    let mut grads = Vec::new();
    for den in [&adjoint, &autograd] {
        let loss = gradstep_train::loss::denoising_loss(den, &clean, &noisy, &sigma)?;
        let vars = den.network().var_store().variables();
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        let params: Vec<&Tensor> = names.iter().map(|n| &vars[n]).collect();
        grads.push(Tensor::f_run_backward(&[loss], &params, false, false)?);
    }
    let mut param_err: f64 = 0.0;
    for (a, b) in grads[0].iter().zip(&grads[1]) {
        param_err = param_err.max(rel(a, b)?);
    }
    Ok((grad_err, param_err))
}
