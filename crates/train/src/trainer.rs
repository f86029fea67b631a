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
//! [`train_data_parallel`] runs the same loop as one rank of several
//! ([`crate::distributed`]).
//!
//! With `performance.precision = bf16` the forward pass of `D_σ` runs under CUDA autocast
//! in bfloat16 and the loss is taken in float32; the Prox penalty's Hessian-vector products
//! (backward passes) run outside the autocast region.
use gradstep_dist::ReduceOp;

use crate::bookkeeping::{due, StepDone};
use crate::config::TrainConfig;
use crate::distributed::DataParallel;
use crate::error::{Result, TrainError};
use crate::logging::StepScalars;
use crate::setup::{canonical_parameters, Run};
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
    run_loop(cfg, opts, Team::Alone(sync))
}

/// [`train`] as one rank of a data-parallel run ([`crate::distributed`]): `data.batch_size`
/// per rank, gradients averaged over the ranks, rank 0 alone writing checkpoints,
/// TensorBoard, `config.json` and progress.
pub fn train_data_parallel(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    ranks: &mut DataParallel,
) -> Result<TrainOutcome> {
    run_loop(cfg, opts, Team::Ranks(ranks))
}

/// Who trains the model: this process alone, or the ranks of a data-parallel run.
enum Team<'a> {
    Alone(&'a mut dyn GradientSync),
    Ranks(&'a mut DataParallel),
}

impl Team<'_> {
    fn sync(&mut self) -> &mut dyn GradientSync {
        match self {
            Team::Alone(s) => &mut **s,
            Team::Ranks(r) => &mut **r,
        }
    }
}

fn run_loop(cfg: &TrainConfig, opts: &TrainOptions, mut team: Team<'_>) -> Result<TrainOutcome> {
    // `TrainConfig::load` validates too; a config built in code is checked here.
    cfg.validate().map_err(TrainError::Config)?;
    let ranks = match &mut team {
        Team::Ranks(r) => Some(&mut **r),
        Team::Alone(_) => None,
    };
    let mut run = Run::set_up(cfg, opts, ranks)?;
    let parameters = canonical_parameters(&run.denoiser);
    let mut signal = None;
    while run.state.step < cfg.steps {
        signal = run.signals.received();
        if let Team::Ranks(r) = &mut team {
            // A signal to any rank stops every rank before the same step.
            let any = r.max_flag(i64::from(signal.unwrap_or(0)))?;
            signal = (any > 0).then_some(any as i32);
        }
        if signal.is_some() {
            break;
        }
        let lr = cfg.schedule.lr(cfg.optimizer.lr, run.state.step);
        let mut scalars = run.one_step(lr, team.sync())?;
        if let Team::Ranks(r) = &mut team {
            let step = run.state.step;
            if due(step, cfg.log.every) || step == cfg.steps {
                // The logged loss is the global batch's (the mean of the ranks'), the Prox
                // norm estimate the largest of any rank's.
                let mean = r.reduce_scalars(&[scalars.loss, scalars.mse], ReduceOp::Average)?;
                (scalars.loss, scalars.mse) = (mean[0], mean[1]);
                if let Some((pen, mean_norm, max_norm, products)) = scalars.prox {
                    let max = r.reduce_scalars(&[max_norm], ReduceOp::Max)?;
                    scalars.prox = Some((pen, mean_norm, max[0], products));
                }
            }
            if due(step, cfg.checkpoint.every) {
                r.check_identical(&parameters, step)?;
            }
        }
        let done = StepDone {
            cfg,
            device: run.device,
            denoiser: &run.denoiser,
            adam: &run.adam,
        };
        run.books.after_step(done, &mut run.state, &scalars, lr)?;
    }
    if let (Team::Ranks(r), 0) = (&team, run.rank) {
        if let Some((seconds, megabytes)) = r.comm_per_step() {
            run.books.progress.message(&format!(
                "communication: {:.2} ms per step in collectives, {megabytes:.1} MB of gradients all-reduced per step ({} ranks, {})",
                seconds * 1e3,
                run.world,
                r.backend_name()
            ));
        }
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
        let mut clean = self.sampler.next_batch(self.device)?;
        let mut noise = self.noise_ahead.next(t)?;
        if self.world > 1 {
            // This rank's rows of the global batch.
            let b = cfg.data.batch_size;
            let first = self.rank as i64 * b;
            clean = clean.f_narrow(0, first, b)?;
            noise.0 = noise.0.f_narrow(0, first, b)?;
            if noise.1.len() > 1 {
                noise.1 = noise.1[first as usize..(first + b) as usize].to_vec();
            }
        }
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
