//! What follows each training step: the scalars to TensorBoard and the console (every
//! `log.every` steps, and the last), validation (every `validation.every` steps, and the
//! last), checkpoints (every `checkpoint.every` steps, the last, and each new best), and at
//! the end the final checkpoint and the closing lines.
use std::path::PathBuf;

use gradstep_data::ValidationSet;
use gradstep_model::GradientStepDenoiser;
use tch::Device;

use crate::adam::Adam;
use crate::checkpoints::{CheckpointStore, TrainingState};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::logging::{self, StepScalars};
use crate::progress::Progress;
use crate::tensorboard::EventWriter;
use crate::validation::{validate, Validation};

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

/// The run's logs, validation set and checkpoints, and what was last validated and saved.
pub(crate) struct Bookkeeping {
    /// The run's checkpoints.
    pub store: CheckpointStore,
    /// TensorBoard; `None` on the ranks other than 0 of a data-parallel run, which write
    /// nothing (no events, checkpoints or lines).
    events: Option<EventWriter>,
    /// The progress bar or lines.
    pub progress: Progress,
    validation: Option<ValidationSet>,
    last_validation: Option<(u64, Validation)>,
    last_saved: Option<(u64, PathBuf)>,
}

/// What a step's bookkeeping needs to read from the run.
pub(crate) struct StepDone<'a> {
    /// The run's config.
    pub cfg: &'a TrainConfig,
    /// Where it trains.
    pub device: Device,
    /// `D_σ` after the step.
    pub denoiser: &'a GradientStepDenoiser,
    /// The optimizer after the step.
    pub adam: &'a Adam,
}

impl Bookkeeping {
    /// Bookkeeping into `store` and `events`, validating on `validation` (if any).
    pub fn new(
        store: CheckpointStore,
        events: Option<EventWriter>,
        progress: Progress,
        validation: Option<ValidationSet>,
    ) -> Self {
        Bookkeeping {
            store,
            events,
            progress,
            validation,
            last_validation: None,
            last_saved: None,
        }
    }

    /// After the step that made `state` (its `step` already counted) with `scalars` at
    /// learning rate `lr`: logs, validates, checkpoints when due; a new best validation
    /// PSNR updates `state.best_psnr`.
    pub fn after_step(
        &mut self,
        run: StepDone<'_>,
        state: &mut TrainingState,
        scalars: &StepScalars,
        lr: f64,
    ) -> Result<()> {
        let StepDone {
            cfg,
            device,
            denoiser,
            adam,
        } = run;
        let log_now = due(state.step, cfg.log.every) || state.step == cfg.steps;
        if let (Some(events), true) = (self.events.as_mut(), log_now) {
            let s = StepScalars {
                steps_per_s: self.progress.rate(state.step),
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
        self.progress
            .step(state.step, scalars.loss, lr, &prox_norms, log_now);

        let mut is_best = false;
        let validate_now = cfg.validation.every > 0
            && (due(state.step, cfg.validation.every) || state.step == cfg.steps);
        if let (Some(set), Some(events), true) =
            (&self.validation, self.events.as_mut(), validate_now)
        {
            let v = validate(denoiser, set, cfg.validation.batch_size, device)?;
            logging::log_validation(events, state.step as i64, &v, cfg.log.images)?;
            self.progress
                .message(&logging::validation_summary(state.step, &v));
            let mean = v.mean_denoiser_psnr();
            if state.best_psnr.is_none_or(|b| mean > b) {
                state.best_psnr = Some(mean);
                is_best = true;
            }
            self.last_validation = Some((state.step, v));
        }
        if due(state.step, cfg.checkpoint.every) || state.step == cfg.steps || is_best {
            let path = if self.writes() {
                self.store.save(denoiser, cfg, adam, state, is_best)?
            } else {
                self.store.step_path(state.step)
            };
            self.last_saved = Some((state.step, path));
        }
        Ok(())
    }

    /// The end of a run (all steps done, or `signal` received): a checkpoint of the last
    /// step unless one was just written, the closing TensorBoard record and line.
    pub fn finish(
        mut self,
        run: StepDone<'_>,
        state: &TrainingState,
        signal: Option<i32>,
    ) -> Result<TrainOutcome> {
        let checkpoint = match self.last_saved.take() {
            Some((s, p)) if s == state.step => p,
            _ if self.writes() => self
                .store
                .save(run.denoiser, run.cfg, run.adam, state, false)?,
            _ => self.store.step_path(state.step),
        };
        self.progress.finish();
        let Some(events) = self.events.as_mut() else {
            return Ok(TrainOutcome {
                step: state.step,
                signal,
                checkpoint,
                validation: None,
                best_psnr: state.best_psnr,
            });
        };
        events.hparams_end(signal.is_none())?;
        let how = if signal.is_some() {
            "interrupted"
        } else {
            "finished"
        };
        self.progress.message(&format!(
            "{how} at step {}; checkpoint {}",
            state.step,
            checkpoint.display()
        ));
        Ok(TrainOutcome {
            step: state.step,
            signal,
            checkpoint,
            validation: self.last_validation.take().map(|(_, v)| v),
            best_psnr: state.best_psnr,
        })
    }
}

impl Bookkeeping {
    /// Whether this process writes the run folder (rank 0, or one process alone).
    fn writes(&self) -> bool {
        self.events.is_some()
    }
}

/// Whether `step` is a multiple of `every` (`u64::is_multiple_of` needs Rust 1.87, the
/// workspace supports 1.85).
#[allow(clippy::manual_is_multiple_of)]
pub(crate) fn due(step: u64, every: u64) -> bool {
    every != 0 && step % every == 0
}
