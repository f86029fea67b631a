//! The PnP algorithms, all run by one shared loop (`driver`) over batches of problems.
//!
//! [`restore`] runs one problem; [`restore_batch`] runs problems of one image size, degradation
//! kind and algorithm together (each keeps its own `τ`, backtracking and stopping; results
//! equal the one-at-a-time run); [`restore_all`] groups any list of problems into such batches.
use std::collections::BTreeMap;

use gradstep_model::GradientStepDenoiser;
use tch::Tensor;

use crate::error::{PnpError, Result};
use crate::monitor::IterationRecord;
use crate::operators::{Degradation, LinearOperator};
use crate::problem::RestorationProblem;

mod config;
mod driver;
mod gs_pgd;
mod hqs;
mod prox;

pub use config::{
    AlgorithmConfig, GsOutput, GsPgdConfig, HqsConfig, Overrides, ProxConfig, SigmaWarmup,
};
pub use driver::{Monotonicity, StopReason};

/// The result of one restoration.
#[derive(Debug)]
pub struct Restoration {
    /// The restored image `[1, C, H, W]` (not clipped): the variable the official code returns
    /// ([`AlgorithmConfig::returned_variable`]) at the last accepted iterate (for
    /// [`StopReason::Diverged`], the one before the non-finite step).
    pub image: Tensor,
    /// The algorithm's last iterate `x_K` (GS-PnP: the last data-prox output; Prox-PnP-DRS:
    /// the DRS variable), not clipped. Equal to `image` where the algorithm returns `x_K`.
    pub last_iterate: Tensor,
    /// PSNR (dB) of the clipped last iterate when the ground truth is known.
    pub last_iterate_psnr: Option<f64>,
    /// Increases of the tested value over the accepted iterations.
    pub monotonicity: Monotonicity,
    /// Accepted iterations.
    pub iterations: usize,
    /// Why the algorithm stopped.
    pub stop: StopReason,
    /// One record per accepted iteration, the start (iteration 0) first.
    pub records: Vec<IterationRecord>,
    /// PSNR (dB) of the clipped result when the ground truth is known; `None` for a
    /// [`StopReason::Diverged`] result (its image must not be scored).
    pub psnr: Option<f64>,
    /// Wall time in seconds (a batch's time shared equally by its problems).
    pub seconds: f64,
}

/// Restores one problem.
pub fn restore(
    den: &GradientStepDenoiser,
    problem: &RestorationProblem,
    config: &AlgorithmConfig,
) -> Result<Restoration> {
    let mut out = restore_batch(den, &[problem], &[config])?;
    out.pop().ok_or(PnpError::Internal("no result"))
}

/// Restores problems of one image size, degradation kind and algorithm in one batch.
pub fn restore_batch(
    den: &GradientStepDenoiser,
    problems: &[&RestorationProblem],
    configs: &[&AlgorithmConfig],
) -> Result<Vec<Restoration>> {
    if problems.is_empty() {
        return Ok(Vec::new());
    }
    if problems.len() != configs.len() {
        return Err(PnpError::Invalid(format!(
            "{} problems but {} configs",
            problems.len(),
            configs.len()
        )));
    }
    let channels = den.network().config().channels;
    let shape = problems[0].image_shape();
    for (p, c) in problems.iter().zip(configs) {
        c.validate()?;
        let s = p.image_shape();
        if s[1] != channels {
            return Err(PnpError::Invalid(format!(
                "the image has {} channels but the denoiser expects {channels}",
                s[1]
            )));
        }
        if s != shape || p.degradation.name() != problems[0].degradation.name() {
            return Err(PnpError::Invalid(
                "problems of one batch must share image size and degradation kind".into(),
            ));
        }
        if std::mem::discriminant(*c) != std::mem::discriminant(configs[0]) {
            return Err(PnpError::Invalid(
                "problems of one batch must use one algorithm".into(),
            ));
        }
    }
    let op = Degradation::concat(&problems.iter().map(|p| &p.degradation).collect::<Vec<_>>())?;
    let cat = |f: &dyn Fn(&RestorationProblem) -> &Tensor| -> Result<Tensor> {
        Ok(Tensor::f_cat(
            &problems.iter().map(|p| f(p)).collect::<Vec<_>>(),
            0,
        )?)
    };
    let y = cat(&|p| &p.observation)?;
    let x0 = cat(&|p| &p.init)?;
    let truth = if problems.iter().all(|p| p.ground_truth.is_some()) {
        Some(cat(&|p| p.ground_truth.as_ref().expect("checked"))?)
    } else {
        None
    };
    let outcomes = match configs[0] {
        AlgorithmConfig::GsPgd(_) => {
            let configs = configs
                .iter()
                .filter_map(|c| match c {
                    AlgorithmConfig::GsPgd(g) => Some(g),
                    _ => None,
                })
                .collect();
            driver::run(
                &gs_pgd::GsPgd { configs },
                den,
                op,
                y,
                &x0,
                truth.as_ref().map(Tensor::shallow_clone),
            )?
        }
        AlgorithmConfig::ProxPgd(_)
        | AlgorithmConfig::ProxDrs(_)
        | AlgorithmConfig::ProxDrsDiff(_) => {
            let variant = match configs[0] {
                AlgorithmConfig::ProxPgd(_) => prox::ProxVariant::Pgd,
                AlgorithmConfig::ProxDrs(_) => prox::ProxVariant::Drs,
                _ => prox::ProxVariant::DrsDiff,
            };
            let configs = configs
                .iter()
                .filter_map(|c| match c {
                    AlgorithmConfig::ProxPgd(p)
                    | AlgorithmConfig::ProxDrs(p)
                    | AlgorithmConfig::ProxDrsDiff(p) => Some(p),
                    _ => None,
                })
                .collect();
            driver::run(
                &prox::ProxPnp { variant, configs },
                den,
                op,
                y,
                &x0,
                truth.as_ref().map(Tensor::shallow_clone),
            )?
        }
        AlgorithmConfig::Hqs(_) => {
            let configs = configs
                .iter()
                .filter_map(|c| match c {
                    AlgorithmConfig::Hqs(h) => Some(h),
                    _ => None,
                })
                .collect();
            let noise = problems.iter().map(|p| p.noise_255).collect();
            driver::run(
                &hqs::Hqs { configs, noise },
                den,
                op,
                y,
                &x0,
                truth.as_ref().map(Tensor::shallow_clone),
            )?
        }
    };
    outcomes
        .into_iter()
        .zip(problems)
        .map(|(o, p)| {
            // A diverged result is not scored: no code path turns NaN into a number.
            let psnr_of = |image: &Tensor| -> Result<Option<f64>> {
                Ok(match &p.ground_truth {
                    Some(t) if o.stop != StopReason::Diverged => {
                        Some(gradstep_data::psnr(&image.f_clamp(0.0, 1.0)?, t)?[0])
                            .filter(|p| p.is_finite())
                    }
                    _ => None,
                })
            };
            Ok(Restoration {
                psnr: psnr_of(&o.image)?,
                last_iterate_psnr: psnr_of(&o.last_iterate)?,
                image: o.image,
                last_iterate: o.last_iterate,
                monotonicity: o.monotonicity,
                iterations: o.iterations,
                stop: o.stop,
                records: o.records,
                seconds: o.seconds,
            })
        })
        .collect()
}

/// Restores any list of problems, batching those of equal image size, degradation kind and
/// algorithm, at most `max_batch` at a time; results come back in the input order.
pub fn restore_all(
    den: &GradientStepDenoiser,
    items: &[(&RestorationProblem, &AlgorithmConfig)],
    max_batch: usize,
) -> Result<Vec<Restoration>> {
    restore_all_with_progress(den, items, max_batch, &mut |_| {})
}

/// [`restore_all`], calling `batch_done(n)` after each batch with the number `n` of problems
/// it restored (for progress bars).
pub fn restore_all_with_progress(
    den: &GradientStepDenoiser,
    items: &[(&RestorationProblem, &AlgorithmConfig)],
    max_batch: usize,
    batch_done: &mut dyn FnMut(usize),
) -> Result<Vec<Restoration>> {
    let mut groups: BTreeMap<(Vec<i64>, &'static str, &'static str), Vec<usize>> = BTreeMap::new();
    for (i, (p, c)) in items.iter().enumerate() {
        groups
            .entry((p.image_shape(), p.degradation.name(), c.name()))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Option<Restoration>> = (0..items.len()).map(|_| None).collect();
    for idx in groups.values() {
        for chunk in idx.chunks(max_batch.max(1)) {
            let ps: Vec<_> = chunk.iter().map(|&i| items[i].0).collect();
            let cs: Vec<_> = chunk.iter().map(|&i| items[i].1).collect();
            for (i, r) in chunk.iter().zip(restore_batch(den, &ps, &cs)?) {
                out[*i] = Some(r);
            }
            batch_done(chunk.len());
        }
    }
    out.into_iter()
        .map(|r| r.ok_or(PnpError::Internal("missing result")))
        .collect()
}

/// `f(x)` of a problem (for callers that report the data term of a result).
pub fn data_fidelity(problem: &RestorationProblem, x: &Tensor) -> Result<f64> {
    Ok(problem
        .degradation
        .data_fidelity(x, &problem.observation)?
        .f_double_value(&[0])?)
}
