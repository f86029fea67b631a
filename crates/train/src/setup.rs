//! Setting a run up, before its first step: the run folder locked and checked, the signal
//! handlers installed (before any long operation: reading a checkpoint, building the decode
//! cache), the network and Adam built from the config's seed, then resumed from the newest
//! intact checkpoint (`--resume`, [`crate::resume`]) or initialised from `init_from`, the
//! patch sampler and the validation set, the config and TensorBoard files, the noise drawn
//! ahead and the step chosen ([`crate::step`], or its CUDA-graph form).
use gradstep_data::{validation_set, PatchSampler, SamplerPosition, ValidationSet};
use gradstep_model::{Checkpoint, Drunet, GradientStepDenoiser};
use tch::Device;

use crate::adam::Adam;
use crate::bookkeeping::Bookkeeping;
use crate::checkpoints::{CheckpointStore, TrainingState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::graphed::GraphedStep;
use crate::logging;
use crate::noise::NoisePrefetch;
use crate::performance::Precision;
use crate::progress::Progress;
use crate::resume::{copy_weights, restore_newest_intact};
use crate::run_lock::RunLock;
use crate::signals::StopSignals;
use crate::step::TrainingStep;
use crate::tensorboard::EventWriter;

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

/// A run ready for its next step. Fields drop in order: the run folder's lock last.
pub(crate) struct Run<'a> {
    /// The run's config.
    pub cfg: &'a TrainConfig,
    /// Where it trains.
    pub device: Device,
    /// Logging, validation and checkpoints after each step.
    pub books: Bookkeeping,
    /// The CUDA-graph step (`performance.cuda_graph`), else `None`.
    pub graphed: Option<GraphedStep>,
    /// The noise of the next steps, drawn ahead.
    pub noise_ahead: NoisePrefetch,
    /// The step of the config's objective.
    pub step: TrainingStep,
    /// The training patches.
    pub sampler: PatchSampler,
    /// `D_σ`.
    pub denoiser: GradientStepDenoiser,
    /// The optimizer.
    pub adam: Adam,
    /// What a checkpoint saves besides the weights and Adam.
    pub state: TrainingState,
    /// SIGINT / SIGTERM.
    pub signals: StopSignals,
    _lock: RunLock,
}

impl<'a> Run<'a> {
    /// Everything before the first step (see the module doc); `cfg` must be valid.
    pub fn set_up(cfg: &'a TrainConfig, opts: &TrainOptions) -> Result<Self> {
        let device = opts.device;
        if device.is_cuda() {
            // Every step has the same shapes: let cuDNN pick the fastest algorithms once.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let run_dir = cfg.run_dir();
        let store = CheckpointStore::new(&run_dir, cfg.checkpoint.keep_last);
        // One trainer per run, before anything in the run folder is written or pruned; it
        // also removes the temporary files of a killed trainer.
        let (lock, mut messages) = RunLock::acquire(&run_dir, &[store.dir()])?;
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
            .map_err(|source| TrainError::Serialise {
                what: "the config",
                source,
            })?;
        let (denoiser, adam, state) =
            model_and_state(cfg, opts, &store, &config_json, &mut messages)?;
        let sampler = match PatchSampler::resume_unless_stopped(
            &cfg.data,
            &state.sampler,
            signals.stop_flag(),
        ) {
            Err(gradstep_data::DataError::Interrupted(what)) => {
                return Err(signals.interrupted(what))
            }
            other => other?,
        };
        let validation = load_validation(cfg, &mut messages)?;
        if signals.received().is_some() {
            return Err(signals.interrupted(
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
        let noise_ahead =
            NoisePrefetch::start(batch_shape, cfg.noise.clone(), cfg.seed, state.step, device);
        let graphed = if cfg.performance.cuda_graph {
            Some(GraphedStep::new(cfg, &adam, device)?)
        } else {
            None
        };
        Ok(Run {
            cfg,
            device,
            books: Bookkeeping::new(store, events, progress, validation),
            graphed,
            noise_ahead,
            step: TrainingStep::from_config(cfg),
            sampler,
            denoiser,
            adam,
            state,
            signals,
            _lock: lock,
        })
    }
}

/// The network and Adam built from the config's seed, then resumed (`--resume`) or
/// initialised from `init_from`, and the training state to continue from.
fn model_and_state(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    store: &CheckpointStore,
    config_json: &serde_json::Value,
    messages: &mut Vec<String>,
) -> Result<(GradientStepDenoiser, Adam, TrainingState)> {
    let device = opts.device;
    tch::manual_seed(cfg.seed as i64);
    let mut net = Drunet::new(&cfg.model, device)?;
    net.set_memory_format(cfg.performance.memory_format)?;
    let mut denoiser =
        GradientStepDenoiser::new(net)
            .with_method(cfg.performance.grad_method.into())
            // The denoiser owns the precision: its passes open their own autocast regions
            // (the step's region around the loss nests outside them).
            .with_precision(cfg.performance.precision);
    let params = denoiser
        .network()
        .var_store()
        .variables()
        .into_iter()
        .collect();
    let mut adam = Adam::new(params, cfg.optimizer)?;
    let fresh = TrainingState {
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
        restore_newest_intact(store, cfg, &mut denoiser, &mut adam, device, messages)?
    } else {
        None
    };
    let state = match restored {
        Some((path, saved)) => {
            let state = TrainingState {
                config: config_json.clone(),
                ..saved
            };
            messages.push(format!(
                "resuming from {} (step {})",
                path.display(),
                state.step
            ));
            state
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
            fresh
        }
    };
    Ok((denoiser, adam, state))
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
