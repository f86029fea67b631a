//! The training loop: GS (and Prox) denoiser training with exact resume.
//!
//! Step `t` (counted from 0): clean patches `x` from the sampler, `y = x + σξ` from
//! `crate::noise` (a function of `(seed, t)`), `L = mean ‖D_σ(y) − x‖²` (plus
//! `μ · mean_b penalty_b` for Prox, from the same graph of `∇g_σ(y)`: `D_σ(y) = y − ∇g_σ(y)`),
//! backward, clip `‖∇θ L‖` to `clip_grad_norm`, Adam with
//! `lr(t)` of the schedule. A NaN / Inf loss or gradient stops the run before the update,
//! leaving the last checkpoint as it was. SIGINT / SIGTERM (checked each step) write a
//! checkpoint and stop; a second SIGINT / SIGTERM exits at once, with `128 +` the first
//! signal (`crate::signals`: installed before the decode-cache build, which a signal stops).
//! The run folder is locked first (`crate::run_lock`), and `--resume` continues from the
//! newest intact checkpoint (`crate::resume`).
//!
//! With `performance.precision = bf16` the forward pass of `D_σ` runs under CUDA autocast
//! in bfloat16 and the loss is taken in float32; the Prox penalty's Hessian-vector products
//! (backward passes) run outside the autocast region.
use std::path::PathBuf;

use gradstep_data::{validation_set, PatchSampler, SamplerPosition, ValidationSet};
use gradstep_model::{Checkpoint, Drunet, GradientStepDenoiser, Graph};
use tch::{Device, Kind, Tensor};

use crate::adam::Adam;
use crate::checkpoints::{CheckpointStore, TrainingState};
use crate::config::{Objective, TrainConfig};
use crate::error::{Result, TrainError};
use crate::graphed::GraphedStep;
use crate::logging::{self, StepScalars};
use crate::noise;
use crate::noise::NoisePrefetch;
use crate::performance::Precision;
use crate::progress::Progress;
use crate::resume::restore_newest_intact;
use crate::run_lock::RunLock;
use crate::signals::StopSignals;
use crate::tensorboard::EventWriter;
use crate::validation::{validate, Validation};

/// How to run (what is not part of the config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where to train.
    pub device: Device,
    /// Continue from the run's latest checkpoint (a fresh start when there is none).
    pub resume: bool,
    /// No progress bar, no progress lines (messages still printed).
    pub quiet: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Steps done in total.
    pub step: u64,
    /// The signal that stopped it before `steps` (SIGINT 2, SIGTERM 15), for the conventional
    /// exit status `128 + signal` of an interrupted command.
    pub signal: Option<i32>,
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
    /// The last validation (if any ran).
    pub validation: Option<Validation>,
    /// Best mean validation PSNR of `D_σ`.
    pub best_psnr: Option<f64>,
}

impl TrainOutcome {
    /// Stopped by SIGINT / SIGTERM before `steps`.
    pub fn interrupted(&self) -> bool {
        self.signal.is_some()
    }
}

/// Trains as `cfg` says; see the module doc.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    // `TrainConfig::load` validates too; a config built in code is checked here.
    cfg.validate().map_err(TrainError::Config)?;
    let device = opts.device;
    if device.is_cuda() {
        // Every step has the same shapes: let cuDNN pick the fastest algorithms once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let run_dir = cfg.run_dir();
    let store = CheckpointStore::new(&run_dir, cfg.checkpoint.keep_last);
    // One trainer per run, before anything in the run folder is written or pruned; it also
    // removes the temporary files of a killed trainer.
    let (_lock, mut messages) = RunLock::acquire(&run_dir, &[store.dir()])?;
    let latest = store.latest()?;
    if !opts.resume {
        if let Some(p) = &latest {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints ({}); pass --resume to continue, or choose another name",
                run_dir.display(),
                p.display()
            )));
        }
    }
    // Before any long operation (reading a checkpoint, building the decode cache).
    let signals = StopSignals::install()?;
    let config_json = serde_json::to_value(cfg)
        .map_err(|e| TrainError::Config(format!("cannot serialise the config: {e}")))?;

    tch::manual_seed(cfg.seed as i64);
    let mut net = Drunet::new(&cfg.model, device)?;
    net.set_memory_format(cfg.performance.memory_format)?;
    let mut denoiser = GradientStepDenoiser::new(net).with_method(cfg.performance.grad_method);
    let params = denoiser
        .network()
        .var_store()
        .variables()
        .into_iter()
        .collect();
    let mut adam = Adam::new(params, cfg.optimizer)?;
    let mut state = TrainingState {
        step: 0,
        adam_step: 0,
        lr: cfg.optimizer.lr,
        schedule_position: 0,
        noise_seed: cfg.seed,
        sampler: SamplerPosition::default(),
        best_psnr: None,
        config: config_json.clone(),
    };
    let restored = if opts.resume {
        restore_newest_intact(&store, cfg, &mut denoiser, &mut adam, device, &mut messages)?
    } else {
        None
    };
    match restored {
        Some((path, saved)) => {
            state = TrainingState {
                config: config_json.clone(),
                ..saved
            };
            messages.push(format!(
                "resuming from {} (step {})",
                path.display(),
                state.step
            ));
        }
        None => {
            if opts.resume {
                messages.push(format!(
                    "--resume: no checkpoint in {}, starting fresh",
                    store.dir().display()
                ));
            }
            if let Some(init) = &cfg.init_from {
                let ckpt = Checkpoint::read(init)?;
                copy_weights(&ckpt, &mut denoiser, device, init)?;
                messages.push(format!("initialised from {}", init.display()));
            }
        }
    }
    let interrupted = |during: String| TrainError::Interrupted {
        signal: signals.received().unwrap_or(signal_hook::consts::SIGTERM),
        during,
    };
    let mut sampler =
        match PatchSampler::resume_unless_stopped(&cfg.data, &state.sampler, signals.stop_flag()) {
            Err(gradstep_data::DataError::Interrupted(what)) => return Err(interrupted(what)),
            other => other?,
        };
    let validation = load_validation(cfg, &mut messages)?;
    if signals.received().is_some() {
        return Err(interrupted(
            "interrupted before the first step: no checkpoint was written".into(),
        ));
    }
    if cfg.performance.precision == Precision::Bf16
        && !(device.is_cuda() && gradstep_model::cuda::autocast_available())
    {
        messages.push(format!(
            "warning: performance.precision = bf16 has no effect on {device:?} (CUDA autocast only): training in float32"
        ));
    }
    gradstep_model::cuda::reset_peak(device);
    let cfg_text = serde_json::to_string_pretty(&config_json).unwrap_or_default();
    gradstep_model::write_atomic(&run_dir.join("config.json"), cfg_text.as_bytes())?;
    let mut events = EventWriter::create(&run_dir)?;
    logging::log_config(&mut events, &config_json, state.step as i64)?;

    let progress = Progress::new(state.step, cfg.steps, opts.quiet);
    for m in &messages {
        progress.message(m);
    }
    progress.message(&format!(
        "training {} ({} parameters) on {device:?}; logs in {}",
        cfg.name,
        cfg.model.parameter_count(),
        run_dir.display()
    ));
    let d = &cfg.data;
    let batch_shape = [d.batch_size, d.channels, d.patch_size, d.patch_size];
    let mut noise_ahead =
        NoisePrefetch::start(batch_shape, cfg.noise.clone(), cfg.seed, state.step, device);
    let mut graphed = if cfg.performance.cuda_graph {
        Some(GraphedStep::new(cfg, &adam, device)?)
    } else {
        None
    };
    let mut last_validation: Option<(u64, Validation)> = None;
    let mut last_saved: Option<(u64, PathBuf)> = None;
    let mut signal = None;
    while state.step < cfg.steps {
        signal = signals.received();
        if signal.is_some() {
            break;
        }
        let t = state.step;
        let lr = cfg.schedule.lr(cfg.optimizer.lr, t);
        let clean = sampler.next_batch(device)?;
        let noise = noise_ahead.next(t)?;
        let result = match graphed.as_mut() {
            Some(g) => g.step(&denoiser, &mut adam, &clean, noise, lr),
            None => train_step(cfg, &denoiser, &mut adam, &clean, noise, t, lr),
        };
        let scalars = match result {
            Ok(s) => s,
            Err(e @ TrainError::Diverged(_)) => {
                progress.finish();
                let kept = store.latest()?.map(|p| p.display().to_string());
                return Err(TrainError::Diverged(format!(
                    "{e} at step {t}; the last good checkpoint is {}",
                    kept.unwrap_or_else(|| "(none written yet)".into())
                )));
            }
            Err(e) => return Err(e),
        };
        state.step = t + 1;
        state.adam_step = adam.step_count();
        state.schedule_position = cfg.schedule.position(state.step);
        state.lr = cfg.schedule.lr(cfg.optimizer.lr, state.step);
        state.sampler = sampler.position();
        let log_now = due(state.step, cfg.log.every) || state.step == cfg.steps;
        if log_now {
            let s = StepScalars {
                steps_per_s: progress.rate(state.step),
                ..scalars.clone()
            };
            logging::log_step(&mut events, state.step as i64, &s, device)?;
            // The next logged peak is that of the next logging interval.
            gradstep_model::cuda::reset_peak(device);
        }
        // Prox: the Hessian norm estimates on the console too (they decide whether D_σ is a
        // proximal operator), not only in TensorBoard.
        let prox_norms = scalars
            .prox
            .map(|(_, mean, max, _)| format!("‖∇²g_σ‖ mean {mean:.3} max {max:.3}"))
            .unwrap_or_default();
        progress.step(state.step, scalars.loss, lr, &prox_norms, log_now);

        let mut is_best = false;
        let validate_now = cfg.validation.every > 0
            && (due(state.step, cfg.validation.every) || state.step == cfg.steps);
        if let (Some(set), true) = (&validation, validate_now) {
            let v = validate(&denoiser, set, cfg.validation.batch_size, device)?;
            logging::log_validation(&mut events, state.step as i64, &v, cfg.log.images)?;
            progress.message(&logging::validation_summary(state.step, &v));
            let mean = v.mean_denoiser_psnr();
            if state.best_psnr.is_none_or(|b| mean > b) {
                state.best_psnr = Some(mean);
                is_best = true;
            }
            last_validation = Some((state.step, v));
        }
        if due(state.step, cfg.checkpoint.every) || state.step == cfg.steps || is_best {
            let path = store.save(&denoiser, cfg, &adam, &state, is_best)?;
            last_saved = Some((state.step, path));
        }
    }
    let checkpoint = match last_saved {
        Some((s, p)) if s == state.step => p,
        _ => store.save(&denoiser, cfg, &adam, &state, false)?,
    };
    progress.finish();
    events.hparams_end(signal.is_none())?;
    let how = if signal.is_some() {
        "interrupted"
    } else {
        "finished"
    };
    progress.message(&format!(
        "{how} at step {}; checkpoint {}",
        state.step,
        checkpoint.display()
    ));
    Ok(TrainOutcome {
        step: state.step,
        signal,
        checkpoint,
        validation: last_validation.map(|(_, v)| v),
        best_psnr: state.best_psnr,
    })
}

/// Whether `step` is a multiple of `every` (`u64::is_multiple_of` needs Rust 1.87, the
/// workspace supports 1.85).
#[allow(clippy::manual_is_multiple_of)]
fn due(step: u64, every: u64) -> bool {
    every != 0 && step % every == 0
}

/// Optimizer step `step` on `clean` with its noise `(ξ, σ)`; the scalars to log.
/// Nothing is updated when the loss or the gradient is not finite.
fn train_step(
    cfg: &TrainConfig,
    denoiser: &GradientStepDenoiser,
    adam: &mut Adam,
    clean: &Tensor,
    noise: (Tensor, Vec<f64>),
    step: u64,
    lr: f64,
) -> Result<StepScalars> {
    let (noisy, sigma) = noise::add_noise(clean, &noise.0, noise.1)?;
    let precision = cfg.performance.precision;
    let (mse, loss, prox) = match &cfg.objective {
        Objective::Gs => {
            let mse = gradstep_model::cuda::autocast(precision, || {
                denoising_loss(denoiser, clean, &noisy, &sigma)
            })?;
            (mse.shallow_clone(), mse, None)
        }
        Objective::Prox(p) => {
            // One graph of ∇g_σ(y) serves both D_σ(y) = y − ∇g_σ(y) and the penalty.
            let (at, mse) = gradstep_model::cuda::autocast(precision, || -> Result<_> {
                let at = denoiser.gradient_at(&noisy, &sigma)?;
                let d = noisy.f_sub(&at.grad().f_to_kind(Kind::Float)?)?;
                let mse = squared_error(&d, clean)?;
                Ok((at, mse))
            })?;
            // The estimator's start: a pure function of the step's noise seed (same on
            // CPU and CUDA, nothing to save for an exact resume).
            let start = crate::prox::start_vector(
                &noisy.size(),
                noise::step_seed(cfg.seed, step),
                clean.device(),
            )?;
            let pen = crate::prox::penalty_at(&at, p, Some(&start))?;
            let mean_pen = pen.penalty.f_mean(Kind::Float)?;
            let loss = mse.f_add(&mean_pen.f_mul_scalar(p.mu)?)?;
            let n = pen.norms.len().max(1) as f64;
            let mean_norm = pen.norms.iter().sum::<f64>() / n;
            let max_norm = pen.norms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let stats = (
                mean_pen.f_double_value(&[])?,
                mean_norm,
                max_norm,
                pen.products,
            );
            (mse, loss, Some(stats))
        }
    };
    adam.zero_grad()?;
    loss.f_backward()?;
    let norm = match cfg.clip_grad_norm {
        Some(c) => adam.clip_grad_norm_on_device(c)?,
        None => adam.grad_norm_on_device()?,
    };
    let (loss_value, mse_value, grad_norm) = read_step_numbers(&loss, &mse, &norm, "")?;
    adam.set_lr(lr);
    adam.step()?;
    Ok(StepScalars {
        loss: loss_value,
        mse: mse_value,
        lr,
        grad_norm,
        steps_per_s: 0.0,
        prox,
    })
}

/// Reads a step's loss, MSE and gradient norm in one transfer (each read waits for the GPU
/// to drain its queue) and stops training when the loss or the gradient is not finite
/// (`note` is added to that message).
pub(crate) fn read_step_numbers(
    loss: &Tensor,
    mse: &Tensor,
    norm: &Tensor,
    note: &str,
) -> Result<(f64, f64, f64)> {
    let one = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([1])?)
    };
    let values = Vec::<f64>::try_from(
        &Tensor::f_cat(&[one(loss)?, one(mse)?, one(norm)?], 0)?.f_to_device(Device::Cpu)?,
    )?;
    let (loss, mse, norm) = (values[0], values[1], values[2]);
    if !loss.is_finite() {
        return Err(TrainError::Diverged(format!("loss is {loss}{note}")));
    }
    if !norm.is_finite() {
        return Err(TrainError::Diverged(format!(
            "gradient norm is {norm}{note}"
        )));
    }
    Ok((loss, mse, norm))
}

/// Copies a checkpoint's weights into `denoiser` (same architecture required).
pub(crate) fn copy_weights(
    ckpt: &Checkpoint,
    denoiser: &mut GradientStepDenoiser,
    device: Device,
    path: &std::path::Path,
) -> Result<()> {
    if &ckpt.model.architecture != denoiser.network().config() {
        return Err(TrainError::Config(format!(
            "{}: architecture {:?} differs from the config's {:?}",
            path.display(),
            ckpt.model.architecture,
            denoiser.network().config()
        )));
    }
    let loaded = ckpt.denoiser(device, Kind::Float, path)?;
    let src = loaded.network().var_store().variables();
    for (name, mut dst) in denoiser.network().var_store().variables() {
        if let Some(s) = src.get(&name) {
            tch::no_grad(|| dst.f_copy_(s))?;
        }
    }
    Ok(())
}

/// The validation set of the first existing configured directory, or `None` (with a
/// warning) when there is none or validation is off.
fn load_validation(cfg: &TrainConfig, messages: &mut Vec<String>) -> Result<Option<ValidationSet>> {
    let v = &cfg.validation;
    if v.every == 0 {
        return Ok(None);
    }
    let Some(dir) = v.directory() else {
        messages.push(format!(
            "warning: no validation directory among {:?}: training without validation",
            v.dirs
        ));
        return Ok(None);
    };
    let set = validation_set(
        dir,
        v.crop,
        cfg.model.channels,
        &v.sigmas_255,
        v.seed,
        v.limit,
    )?;
    messages.push(format!(
        "validation on {} crops of {} at σ = {:?}",
        set.clean.size()[0],
        dir.display(),
        v.sigmas_255
    ));
    Ok(Some(set))
}

/// The loss `mean ‖D_σ(y) − x‖²` for a batch (exposed for tests and benchmarks).
pub fn denoising_loss(
    denoiser: &GradientStepDenoiser,
    clean: &Tensor,
    noisy: &Tensor,
    sigma: &gradstep_model::Sigma,
) -> Result<Tensor> {
    let d = denoiser.denoise(noisy, sigma, Graph::Training)?;
    squared_error(&d, clean)
}

/// `mean ‖d − x‖²` in float32 (`d` may come from a bfloat16 autocast region).
fn squared_error(d: &Tensor, clean: &Tensor) -> Result<Tensor> {
    Ok(d.f_to_kind(Kind::Float)?
        .f_sub(clean)?
        .f_square()?
        .f_mean(Kind::Float)?)
}
