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
use gradstep_model::{Checkpoint, Drunet, GradientStepDenoiser};
use tch::{Device, Kind};

use crate::adam::Adam;
use crate::checkpoints::{CheckpointStore, TrainingState};
use crate::config::TrainConfig;
use crate::distributed::DataParallel;
use crate::error::{Result, TrainError};
use crate::graphed::GraphedStep;
use crate::logging::{self, StepScalars};
use crate::noise::NoisePrefetch;
use crate::performance::Precision;
use crate::progress::Progress;
use crate::resume::restore_newest_intact;
use crate::run_lock::RunLock;
use crate::signals::StopSignals;
use crate::step::{GradientSync, LocalOnly, NoisyBatch, TrainingStep};
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
    train_with(cfg, opts, &mut LocalOnly)
}

/// [`train`] with `sync` averaging the gradients of each step between the backward pass and
/// clipping ([`crate::step`]): the hook of data-parallel training.
pub fn train_with(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    sync: &mut dyn GradientSync,
) -> Result<TrainOutcome> {
    run(cfg, opts, Team::Alone(sync))
}

/// [`train`] as one rank of a data-parallel run ([`crate::distributed`]): `data.batch_size`
/// per rank, gradients averaged over the ranks, rank 0 alone writing checkpoints,
/// TensorBoard, `config.json` and progress.
pub fn train_data_parallel(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    ranks: &mut DataParallel,
) -> Result<TrainOutcome> {
    run(cfg, opts, Team::Ranks(ranks))
}

/// Who trains the model: this process alone, or the ranks of a data-parallel run.
enum Team<'a> {
    Alone(&'a mut dyn GradientSync),
    Ranks(&'a mut DataParallel),
}

impl Team<'_> {
    fn rank(&self) -> usize {
        match self {
            Team::Alone(_) => 0,
            Team::Ranks(r) => r.rank(),
        }
    }

    fn world_size(&self) -> usize {
        match self {
            Team::Alone(_) => 1,
            Team::Ranks(r) => r.world_size(),
        }
    }

    /// Rank 0 writes the run folder; the other ranks only read it.
    fn writes(&self) -> bool {
        self.rank() == 0
    }

    fn sync(&mut self) -> &mut dyn GradientSync {
        match self {
            Team::Alone(s) => &mut **s,
            Team::Ranks(r) => &mut **r,
        }
    }
}

fn run(cfg: &TrainConfig, opts: &TrainOptions, mut team: Team<'_>) -> Result<TrainOutcome> {
    let (rank, world) = (team.rank(), team.world_size());
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
    // removes the temporary files of a killed trainer. Of a data-parallel run, rank 0.
    let (_lock, mut messages) = if team.writes() {
        let (lock, messages) = RunLock::acquire(&run_dir, &[store.dir()])?;
        (Some(lock), messages)
    } else {
        (None, Vec::new())
    };
    if cfg.performance.cuda_graph && world > 1 {
        return Err(TrainError::Config(
            "performance.cuda_graph cannot be combined with data-parallel training (the \
             gradient all-reduce is not captured): set it to false"
                .into(),
        ));
    }
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
    let mut denoiser =
        GradientStepDenoiser::new(net).with_method(cfg.performance.grad_method.into());
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
        world_size: world as u64,
        config: config_json.clone(),
    };
    // Rank 0 restores first (it renames damaged checkpoints aside), then the others read
    // the same newest intact one.
    if let (Team::Ranks(r), true) = (&mut team, rank != 0 && opts.resume) {
        r.barrier()?;
    }
    let restored = if opts.resume {
        restore_newest_intact(&store, cfg, &mut denoiser, &mut adam, device, &mut messages)?
    } else {
        None
    };
    if let (Team::Ranks(r), true) = (&mut team, rank == 0 && opts.resume) {
        r.barrier()?;
    }
    match restored {
        Some((path, saved)) => {
            state = TrainingState {
                config: config_json.clone(),
                sampler: crate::distributed::sampler_position_for(
                    saved.sampler,
                    saved.world_size,
                    world as u64,
                    cfg.data.batch_size as u64,
                ),
                world_size: world as u64,
                ..saved
            };
            messages.push(format!(
                "resuming from {} (step {}, written by {} rank(s), continuing on {world})",
                path.display(),
                state.step,
                saved.world_size
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
    // Every rank starts from rank 0's weights (identical already: same seed or checkpoint).
    if let Team::Ranks(r) = &mut team {
        r.broadcast_from_rank0(&canonical_parameters(&denoiser))?;
    }
    let interrupted = |during: String| TrainError::Interrupted {
        signal: signals.received().unwrap_or(signal_hook::consts::SIGTERM),
        during,
    };
    // Each rank draws the global batch of `world · batch_size` patches and trains on its rows.
    let mut data_cfg = cfg.data.clone();
    data_cfg.batch_size *= world as i64;
    let mut sampler =
        match PatchSampler::resume_unless_stopped(&data_cfg, &state.sampler, signals.stop_flag()) {
            Err(gradstep_data::DataError::Interrupted(what)) => return Err(interrupted(what)),
            other => other?,
        };
    // Validation runs on rank 0 alone.
    let validation = if team.writes() {
        load_validation(cfg, &mut messages)?
    } else {
        None
    };
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
    let mut events = if team.writes() {
        let cfg_text = serde_json::to_string_pretty(&config_json).unwrap_or_default();
        gradstep_model::write_atomic(&run_dir.join("config.json"), cfg_text.as_bytes())?;
        let mut events = EventWriter::create(&run_dir)?;
        logging::log_config(&mut events, &config_json, state.step as i64)?;
        Some(events)
    } else {
        None
    };

    let progress = Progress::new(state.step, cfg.steps, opts.quiet || !team.writes());
    if world > 1 {
        messages.push(format!(
            "data-parallel: {world} ranks, batch {} per rank ({} per step)",
            cfg.data.batch_size,
            cfg.data.batch_size * world as i64
        ));
    }
    // Of a data-parallel run, rank 0 alone speaks for the run.
    let say = |m: &str| {
        if rank == 0 {
            progress.message(m)
        }
    };
    for m in &messages {
        say(m);
    }
    say(&format!(
        "training {} ({} parameters) on {device:?}; logs in {}",
        cfg.name,
        cfg.model.parameter_count(),
        run_dir.display()
    ));
    let d = &cfg.data;
    let batch_shape = [
        d.batch_size * world as i64,
        d.channels,
        d.patch_size,
        d.patch_size,
    ];
    let mut noise_ahead =
        NoisePrefetch::start(batch_shape, cfg.noise.clone(), cfg.seed, state.step, device);
    let mut graphed = if cfg.performance.cuda_graph {
        Some(GraphedStep::new(cfg, &adam, device)?)
    } else {
        None
    };
    let step = TrainingStep::from_config(cfg);
    let mut last_validation: Option<(u64, Validation)> = None;
    let mut last_saved: Option<(u64, PathBuf)> = None;
    let mut signal = None;
    let parameters = canonical_parameters(&denoiser);
    while state.step < cfg.steps {
        signal = signals.received();
        if let Team::Ranks(r) = &mut team {
            // A signal to any rank stops every rank before the same step.
            let any = r.max_flag(i64::from(signal.unwrap_or(0)))?;
            signal = (any > 0).then_some(any as i32);
        }
        if signal.is_some() {
            break;
        }
        let t = state.step;
        let lr = cfg.schedule.lr(cfg.optimizer.lr, t);
        let mut clean = sampler.next_batch(device)?;
        let mut noise = noise_ahead.next(t)?;
        if world > 1 {
            // This rank's rows of the global batch.
            let b = d.batch_size;
            let first = rank as i64 * b;
            clean = clean.f_narrow(0, first, b)?;
            noise.0 = noise.0.f_narrow(0, first, b)?;
            if noise.1.len() > 1 {
                noise.1 = noise.1[first as usize..(first + b) as usize].to_vec();
            }
        }
        let result = match graphed.as_mut() {
            Some(g) => g.step(&denoiser, &mut adam, &clean, noise, lr, team.sync()),
            None => {
                let batch = NoisyBatch::from_noise(&clean, &noise.0, noise.1)?;
                step.run(&denoiser, &mut adam, &batch, t, lr, team.sync())
            }
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
        let mut scalars = scalars;
        if let (Team::Ranks(r), true) = (&mut team, log_now) {
            // The logged loss is the global batch's (the mean of the ranks'); the Prox norm
            // estimate the largest of any rank.
            let mean = r.reduce_scalars(
                &[scalars.loss, scalars.mse],
                gradstep_dist::ReduceOp::Average,
            )?;
            (scalars.loss, scalars.mse) = (mean[0], mean[1]);
            if let Some((pen, mean_norm, max_norm, products)) = scalars.prox {
                let max = r.reduce_scalars(&[max_norm], gradstep_dist::ReduceOp::Max)?;
                scalars.prox = Some((pen, mean_norm, max[0], products));
            }
        }
        if let (Some(events), true) = (events.as_mut(), log_now) {
            let s = StepScalars {
                steps_per_s: progress.rate(state.step),
                ..scalars.clone()
            };
            logging::log_step(events, state.step as i64, &s, device)?;
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
        if let (Some(set), Some(events), true) = (&validation, events.as_mut(), validate_now) {
            let v = validate(&denoiser, set, cfg.validation.batch_size, device)?;
            logging::log_validation(events, state.step as i64, &v, cfg.log.images)?;
            progress.message(&logging::validation_summary(state.step, &v));
            let mean = v.mean_denoiser_psnr();
            if state.best_psnr.is_none_or(|b| mean > b) {
                state.best_psnr = Some(mean);
                is_best = true;
            }
            last_validation = Some((state.step, v));
        }
        if let (Team::Ranks(r), true) = (&mut team, due(state.step, cfg.checkpoint.every)) {
            r.check_identical(&parameters, state.step)?;
        }
        if due(state.step, cfg.checkpoint.every) || state.step == cfg.steps || is_best {
            let path = if team.writes() {
                store.save(&denoiser, cfg, &adam, &state, is_best)?
            } else {
                store.step_path(state.step)
            };
            last_saved = Some((state.step, path));
        }
    }
    let checkpoint = match last_saved {
        Some((s, p)) if s == state.step => p,
        _ if team.writes() => store.save(&denoiser, cfg, &adam, &state, false)?,
        _ => store.step_path(state.step),
    };
    progress.finish();
    if let Some(events) = events.as_mut() {
        events.hparams_end(signal.is_none())?;
    }
    if let (Team::Ranks(r), true) = (&team, rank == 0) {
        if let Some((seconds, megabytes)) = r.comm_per_step() {
            progress.message(&format!(
                "communication: {:.2} ms per step in collectives, {megabytes:.1} MB of gradients all-reduced per step ({world} ranks, {})",
                seconds * 1e3,
                r.backend_name()
            ));
        }
    }
    let how = if signal.is_some() {
        "interrupted"
    } else {
        "finished"
    };
    say(&format!(
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

/// The denoiser's parameters in a fixed order (by name), the same on every rank.
fn canonical_parameters(denoiser: &GradientStepDenoiser) -> Vec<tch::Tensor> {
    let mut named: Vec<_> = denoiser
        .network()
        .var_store()
        .variables()
        .into_iter()
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// Whether `step` is a multiple of `every` (`u64::is_multiple_of` needs Rust 1.87, the
/// workspace supports 1.85).
#[allow(clippy::manual_is_multiple_of)]
fn due(step: u64, every: u64) -> bool {
    every != 0 && step % every == 0
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
