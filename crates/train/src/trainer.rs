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
//! The parts: set-up and resume (`crate::setup`), the step ([`crate::step`], or its
//! CUDA-graph form [`crate::graphed`]), the bookkeeping after each step (logging,
//! validation, checkpoints: `crate::bookkeeping`), signal handling (`crate::signals`).
//!
//! With `performance.precision = bf16` the forward pass of `D_σ` runs under CUDA autocast
//! in bfloat16 and the loss is taken in float32; the Prox penalty's Hessian-vector products
//! (backward passes) run outside the autocast region.
use crate::bookkeeping::StepDone;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::logging::StepScalars;
use crate::setup::Run;
use crate::step::{GradientSync, LocalOnly, NoisyBatch};

pub use crate::bookkeeping::TrainOutcome;
pub use crate::setup::TrainOptions;

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
    // `TrainConfig::load` validates too; a config built in code is checked here.
    cfg.validate().map_err(TrainError::Config)?;
    let mut run = Run::set_up(cfg, opts)?;
    let mut signal = None;
    while run.state.step < cfg.steps {
        signal = run.signals.received();
        if signal.is_some() {
            break;
        }
        let lr = cfg.schedule.lr(cfg.optimizer.lr, run.state.step);
        let scalars = run.one_step(lr, sync)?;
        let done = StepDone {
            cfg,
            device: run.device,
            denoiser: &run.denoiser,
            adam: &run.adam,
        };
        run.books.after_step(done, &mut run.state, &scalars, lr)?;
    }
    let done = StepDone {
        cfg,
        device: run.device,
        denoiser: &run.denoiser,
        adam: &run.adam,
    };
    run.books.finish(done, &run.state, signal)
}

impl Run<'_> {
    /// Step `state.step` at learning rate `lr` on the next batch and its noise, then the
    /// training state advanced past it. A divergence names the step and the last good
    /// checkpoint.
    fn one_step(&mut self, lr: f64, sync: &mut dyn GradientSync) -> Result<StepScalars> {
        let (cfg, t) = (self.cfg, self.state.step);
        let clean = self.sampler.next_batch(self.device)?;
        let noise = self.noise_ahead.next(t)?;
        let result = match self.graphed.as_mut() {
            Some(g) => g.step(&self.denoiser, &mut self.adam, &clean, noise, lr, sync),
            None => {
                let batch = NoisyBatch::from_noise(&clean, &noise.0, noise.1)?;
                self.step
                    .run(&self.denoiser, &mut self.adam, &batch, t, lr, sync)
            }
        };
        let scalars = match result {
            Ok(s) => s,
            Err(e @ TrainError::Diverged(_)) => {
                self.books.progress.finish();
                let kept = self.books.store.latest()?.map(|p| p.display().to_string());
                return Err(TrainError::Diverged(format!(
                    "{e} at step {t}; the last good checkpoint is {}",
                    kept.unwrap_or_else(|| "(none written yet)".into())
                )));
            }
            Err(e) => return Err(e),
        };
        let state = &mut self.state;
        state.step = t + 1;
        state.adam_step = self.adam.step_count();
        state.schedule_position = cfg.schedule.position(state.step);
        state.lr = cfg.schedule.lr(cfg.optimizer.lr, state.step);
        state.sampler = self.sampler.position();
        Ok(scalars)
    }
}
