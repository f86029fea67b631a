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
use crate::distributed::{sampler_position_for, DataParallel};
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
    /// This process's rank in a data-parallel run (0 alone), and the number of ranks: it
    /// trains on rows `rank · b … (rank + 1) · b − 1` of each step's global batch.
    pub rank: usize,
    /// The number of ranks (1 alone).
    pub world: usize,
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
    /// Held by rank 0 alone (the other ranks only read the run folder).
    _lock: Option<RunLock>,
}

impl<'a> Run<'a> {
    /// Everything before the first step (see the module doc); `cfg` must be valid. As one
    /// rank of `ranks` ([`crate::distributed`]): rank 0 alone locks and writes the run folder
    /// and speaks; every rank starts from rank 0's weights.
    pub fn set_up(
        cfg: &'a TrainConfig,
        opts: &TrainOptions,
        mut ranks: Option<&mut DataParallel>,
    ) -> Result<Self> {
        let (rank, world) = ranks
            .as_ref()
            .map_or((0, 1), |r| (r.rank(), r.world_size()));
        let writes = rank == 0;
        let device = opts.device;
        if device.is_cuda() {
            // Every step has the same shapes: let cuDNN pick the fastest algorithms once.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let run_dir = cfg.run_dir();
        let store = CheckpointStore::new(&run_dir, cfg.checkpoint.keep_last);
        // One trainer per run, before anything in the run folder is written or pruned; it
        // also removes the temporary files of a killed trainer.
        let (lock, mut messages) = if writes {
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
        let config_json = serde_json::to_value(cfg).map_err(|source| TrainError::Serialise {
            what: "the config",
            source,
        })?;
        // Rank 0 restores first (it renames damaged checkpoints aside), then the others read
        // the same newest intact one.
        if let (Some(r), true) = (ranks.as_deref_mut(), !writes && opts.resume) {
            r.barrier()?;
        }
        let (denoiser, adam, state) =
            model_and_state(cfg, opts, &store, &config_json, world, &mut messages)?;
        if let Some(r) = ranks {
            if writes && opts.resume {
                r.barrier()?;
            }
            // Every rank starts from rank 0's weights (identical already: same seed or
            // checkpoint).
            r.broadcast_from_rank0(&canonical_parameters(&denoiser))?;
        }
        // Each rank draws the global batch of `world · batch_size` patches and trains on its
        // rows.
        let mut data_cfg = cfg.data.clone();
        data_cfg.batch_size *= world as i64;
        let sampler = match PatchSampler::resume_unless_stopped(
            &data_cfg,
            &state.sampler,
            signals.stop_flag(),
        ) {
            Err(gradstep_data::DataError::Interrupted(what)) => {
                return Err(signals.interrupted(what))
            }
            other => other?,
        };
        // Validation runs on rank 0 alone.
        let validation = if writes {
            load_validation(cfg, &mut messages)?
        } else {
            None
        };
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
        let events = if writes {
            let cfg_text = serde_json::to_string_pretty(&config_json).unwrap_or_default();
            gradstep_model::write_atomic(&run_dir.join("config.json"), cfg_text.as_bytes())?;
            let mut events = EventWriter::create(&run_dir)?;
            logging::log_config(&mut events, &config_json, state.step as i64)?;
            Some(events)
        } else {
            None
        };

        let progress = Progress::new(state.step, cfg.steps, opts.quiet || !writes);
        if world > 1 {
            messages.push(format!(
                "data-parallel: {world} ranks, batch {} per rank ({} per step)",
                cfg.data.batch_size,
                cfg.data.batch_size * world as i64
            ));
        }
        messages.push(format!(
            "training {} ({} parameters) on {device:?}; logs in {}",
            cfg.name,
            cfg.model.parameter_count(),
            run_dir.display()
        ));
        // Of a data-parallel run, rank 0 alone speaks for the run.
        if writes {
            for m in &messages {
                progress.message(m);
            }
        }
        let d = &cfg.data;
        let batch_shape = [
            d.batch_size * world as i64,
            d.channels,
            d.patch_size,
            d.patch_size,
        ];
        let noise_ahead =
            NoisePrefetch::start(batch_shape, cfg.noise.clone(), cfg.seed, state.step, device);
        let graphed = if cfg.performance.cuda_graph {
            Some(GraphedStep::new(cfg, &adam, device)?)
        } else {
            None
        };
        Ok(Run {
            cfg,
            rank,
            world,
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
    world: usize,
    messages: &mut Vec<String>,
) -> Result<(GradientStepDenoiser, Adam, TrainingState)> {
    let device = opts.device;
    tch::manual_seed(cfg.seed as i64);
    let mut net = Drunet::new(&cfg.model, device)?;
    net.set_memory_format(cfg.performance.memory_format)?;
    let mut denoiser = GradientStepDenoiser::new(net)
        .with_method(cfg.performance.grad_method)
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
        world_size: world as u64,
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
                sampler: sampler_position_for(
                    saved.sampler,
                    saved.world_size,
                    world as u64,
                    cfg.data.batch_size as u64,
                ),
                world_size: world as u64,
                ..saved
            };
            // The ranks only when they matter (the format of one process is parsed by scripts).
            let ranks = if saved.world_size > 1 || world > 1 {
                format!(
                    "; written by {} rank(s), continuing on {world}",
                    saved.world_size
                )
            } else {
                String::new()
            };
            messages.push(format!(
                "resuming from {} (step {}){ranks}",
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

/// The denoiser's parameters in a fixed order (by name), the same on every rank.
pub(crate) fn canonical_parameters(denoiser: &GradientStepDenoiser) -> Vec<tch::Tensor> {
    let mut named: Vec<_> = denoiser
        .network()
        .var_store()
        .variables()
        .into_iter()
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
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
