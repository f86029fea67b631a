//! The loop shared by every algorithm: a batch of problems, each with its own step size `τ`,
//! backtracking decision, stopping flag and monitor; finished problems leave the batch.
//!
//! An algorithm ([`Scheme`]) only says how to start and how to make one step on the active
//! problems; acceptance (backtracking), the stopping rule and the records are written here once.
//! What a scheme carries from one step to the next besides the iterate (GS-PnP's `∇g_σ`) is
//! its own [`Scheme::Cache`]: the driver keeps its rows in step with the problems'
//! ([`StepCache`]) without knowing what it holds.
//!
//! A step's per-problem numbers (`F`, `f`, `g`, the tested value, `‖x_{k+1} − x_k‖`, `‖x_k‖`
//! and the PSNR's MSE) stay on the device until the driver reads them all in one transfer:
//! on a GPU every read waits for the queue to drain, and the decisions (backtracking,
//! stopping) need them once per iteration, not once per number.
use std::time::Instant;

use gradstep_model::GradientStepDenoiser;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::monitor::IterationRecord;
use crate::operators::{Degradation, LinearOperator};

/// The active problems of a batch.
pub(crate) struct Active {
    /// Index of each active problem in the batch given to [`run`].
    pub ids: Vec<usize>,
    /// Accepted iterations so far, per active problem.
    pub iters: Vec<usize>,
    /// Their operator.
    pub op: Degradation,
    /// Their observations.
    pub y: Tensor,
}

/// What a scheme keeps from one step for the next, one row per active problem. The driver
/// keeps it beside the iterate: a rejected trial keeps the old rows, a finished problem's
/// row leaves the batch.
pub(crate) trait StepCache: Default {
    /// `new`'s rows where `accept`, `old`'s elsewhere (`accepted`: `accept` as a
    /// `[k, 1, 1, 1]` bool tensor on the device).
    fn merge(new: &Self, old: &Self, accept: &[bool], accepted: &Tensor) -> Result<Self>;
    /// The rows `keep` of the problems still running (`idx`: `keep` as an index tensor on
    /// the device).
    fn select(&self, keep: &[usize], idx: &Tensor) -> Result<Self>;
}

/// Schemes that keep nothing between steps.
impl StepCache for () {
    fn merge(_: &Self, _: &Self, _: &[bool], _: &Tensor) -> Result<Self> {
        Ok(())
    }

    fn select(&self, _: &[usize], _: &Tensor) -> Result<Self> {
        Ok(())
    }
}

/// The iterate of the active problems, with the scheme's cache `C`.
pub(crate) struct State<C = ()> {
    /// `x_k`.
    pub x: Tensor,
    /// The image reported as the result at this point (`x_k`, or `D^α(x_k)` for DRS).
    pub output: Tensor,
    /// The value whose decrease is tested and whose relative change stops (`F` or `Ψ`);
    /// filled in by the driver from [`Step::value`].
    pub value: Vec<f64>,
    /// What the scheme keeps for its next step.
    pub cache: C,
}

/// One step (or the start) of the active problems. The per-problem numbers are `[B]`
/// tensors on the device (NaN where a scheme does not know them).
pub(crate) struct Step<C = ()> {
    /// The proposed next state (its `value` is left empty).
    pub next: State<C>,
    /// The tested value (`F` or `Ψ`) at the proposed point.
    pub value: Tensor,
    /// The objective `F`.
    pub objective: Tensor,
    /// Data term `f`.
    pub data: Tensor,
    /// Regulariser `g` (or `φ`).
    pub regulariser: Tensor,
}

impl<C: StepCache> Step<C> {
    /// A step to `x` (shown as `output`) where only the data term `f(x)` is known: schemes
    /// that test no objective (HQS, and the starts of the Prox-PnP schemes); nothing cached.
    pub(crate) fn data_only(a: &Active, x: Tensor, output: Tensor) -> Result<Step<C>> {
        let f = a.op.data_fidelity(&x, &a.y)?.f_to_kind(Kind::Double)?;
        let unknown = f.f_full_like(f64::NAN)?;
        Ok(Step {
            next: State {
                x,
                output,
                value: Vec::new(),
                cache: C::default(),
            },
            value: unknown.shallow_clone(),
            objective: unknown.shallow_clone(),
            data: f,
            regulariser: unknown,
        })
    }
}

/// A step's numbers on the host, one `Vec` per quantity (one entry per active problem).
struct Readout {
    value: Vec<f64>,
    objective: Vec<f64>,
    data: Vec<f64>,
    regulariser: Vec<f64>,
    step_norm: Vec<f64>,
    x_norm: Vec<f64>,
    psnr: Vec<Option<f64>>,
    /// Whether the proposed iterate and output hold only finite values.
    finite: Vec<bool>,
}

/// Reads `step`'s numbers, `‖x_next − x‖` and `‖x‖` (when `x` is given) and the PSNR of
/// the output against `truth`, with a single device-to-host transfer.
fn read_out<C>(step: &Step<C>, x: Option<&Tensor>, truth: &Option<Tensor>) -> Result<Readout> {
    let k = step.data.size()[0];
    let nan = step.data.f_full_like(f64::NAN)?;
    let (dx, xn) = match x {
        Some(x) => (per_image_norm(&step.next.x.f_sub(x)?)?, per_image_norm(x)?),
        None => (nan.shallow_clone(), nan.shallow_clone()),
    };
    let mse = match truth {
        Some(t) => gradstep_data::metrics::mse_per_image(&step.next.output.f_clamp(0.0, 1.0)?, t)?,
        None => nan,
    };
    let finite = all_finite(&step.next.x)?.f_logical_and(&all_finite(&step.next.output)?)?;
    let rows = [
        &step.value,
        &step.objective,
        &step.data,
        &step.regulariser,
        &dx,
        &xn,
        &mse,
        &finite,
    ]
    .iter()
    .map(|t| t.f_to_kind(Kind::Double))
    .collect::<std::result::Result<Vec<_>, _>>()?;
    let all = to_vec(&Tensor::f_stack(&rows, 0)?.f_flatten(0, -1)?)?;
    let row = |i: usize| all[i * k as usize..(i + 1) * k as usize].to_vec();
    Ok(Readout {
        value: row(0),
        objective: row(1),
        data: row(2),
        regulariser: row(3),
        step_norm: row(4),
        x_norm: row(5),
        // A non-finite output has no PSNR (None), never a number.
        psnr: row(6)
            .into_iter()
            .map(|m| {
                truth
                    .as_ref()
                    .map(|_| gradstep_data::metrics::psnr_of_mse(m))
                    .filter(|p| p.is_finite())
            })
            .collect(),
        finite: row(7).into_iter().map(|f| f == 1.0).collect(),
    })
}

/// `[B]` bool tensor: whether each image of `t` holds only finite values.
fn all_finite(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_isfinite()?.f_flatten(1, -1)?.f_all_dim(1, false)?)
}

/// Whether a per-problem number went from known to non-finite: `±∞`, or NaN where the
/// previous value was a number (schemes write NaN for numbers they do not know, e.g. the
/// objective of HQS, which stays NaN throughout).
fn became_non_finite(previous: f64, now: f64) -> bool {
    now.is_infinite() || (now.is_nan() && !previous.is_nan())
}

/// Acceptance and stopping rules of one problem at one iteration.
pub(crate) struct Rules {
    /// `Some((γ, η))` when backtracking applies.
    pub backtracking: Option<(f64, f64)>,
    /// Relative-change tolerance, when early stopping applies.
    pub tol: Option<f64>,
    /// Maximum number of iterations.
    pub max_iter: usize,
    /// Whether the theory says the tested value (`F` or `Ψ`) does not increase here: increases
    /// are then counted ([`Monotonicity`]) and a tolerance stop is not called converged.
    pub monotone: bool,
}

/// Increases of the tested value within this relative size are float32 evaluation noise
/// (`g_σ` is a float32 network output summed over the image) and are not counted.
const MONOTONE_RTOL: f64 = 1e-7;

/// How the tested value (`F` for PGD, `Ψ` for DRS) behaved over the accepted iterations
/// where the theory says it does not increase.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Monotonicity {
    /// The tested value: `"objective"` (F) or `"lyapunov"` (Ψ); empty when none is tested.
    pub quantity: &'static str,
    /// Accepted iterations where it was tested.
    pub tested: usize,
    /// Accepted iterations where it increased by more than 10⁻⁷ relative.
    pub increases: usize,
    /// The largest such increase, relative to the previous value (0 when none).
    pub max_relative_increase: f64,
}

impl Monotonicity {
    /// Whether no increase was seen.
    pub fn is_monotone(&self) -> bool {
        self.increases == 0
    }
}

/// An algorithm written as a start and a step.
pub(crate) trait Scheme {
    /// What the scheme keeps from one step for the next (`()`: nothing).
    type Cache: StepCache;
    /// The starting state from `x₀` (before the scheme's own initial prox, if any); by
    /// default `x₀` itself, where only the data term is known.
    fn start(
        &self,
        _den: &GradientStepDenoiser,
        a: &Active,
        x0: &Tensor,
        _tau: &[f64],
    ) -> Result<Step<Self::Cache>> {
        Step::data_only(a, x0.shallow_clone(), x0.shallow_clone())
    }
    /// One step from `s` with step sizes `tau`.
    fn step(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        s: &State<Self::Cache>,
        tau: &[f64],
    ) -> Result<Step<Self::Cache>>;
    /// The rules for problem `id` at iteration `iter`.
    fn rules(&self, id: usize, iter: usize) -> Rules;
    /// `τ₀` of problem `id`.
    fn tau0(&self, id: usize) -> f64;
    /// Whether the tested value is a Lyapunov function `Ψ` rather than the objective.
    fn value_is_lyapunov(&self) -> bool {
        false
    }
}

/// Why a problem stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The relative change fell below the tolerance and the tested value never increased.
    Converged,
    /// The relative change fell below the tolerance, but the tested value increased at some
    /// accepted iterations (the convergence theory's assumption failed; see [`Monotonicity`]).
    ToleranceNotMonotone,
    /// The iteration budget was used.
    MaxIterations,
    /// Backtracking shrank `τ` below `10⁻¹²τ₀` without an accepted step.
    StepCollapsed,
    /// The iterate, the tested value or the objective became non-finite (NaN or `±∞`) where
    /// no backtracking applies: the problem stopped at once, with no PSNR/SSIM.
    Diverged,
}

impl StopReason {
    /// The name used in JSON, tables and labels.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Converged => "converged",
            StopReason::ToleranceNotMonotone => "tolerance-not-monotone",
            StopReason::MaxIterations => "max-iterations",
            StopReason::StepCollapsed => "step-collapsed",
            StopReason::Diverged => "diverged",
        }
    }
}

/// What [`run`] returns per problem.
pub(crate) struct Outcome {
    pub image: Tensor,
    pub last_iterate: Tensor,
    pub monotonicity: Monotonicity,
    pub iterations: usize,
    pub stop: StopReason,
    pub records: Vec<IterationRecord>,
    pub seconds: f64,
}

fn rows(mask: &[bool], like: &Tensor) -> Result<Tensor> {
    let m: Vec<u8> = mask.iter().map(|&b| b as u8).collect();
    Ok(Tensor::f_from_slice(&m)?
        .f_to_kind(Kind::Bool)?
        .f_to_device(like.device())?
        .f_view([-1, 1, 1, 1])?)
}

/// `new`'s rows where `m`, `old`'s elsewhere.
pub(crate) fn merge(m: &Tensor, new: &Tensor, old: &Tensor) -> Result<Tensor> {
    Ok(new.f_where_self(m, old)?)
}

fn per_image_norm(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_to_kind(Kind::Double)?
        .f_flatten(1, -1)?
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?)
}

/// Runs `scheme` on a batch: `op`, `y`, `x0` (and `truth`) hold all problems stacked.
pub(crate) fn run<S: Scheme>(
    scheme: &S,
    den: &GradientStepDenoiser,
    op: Degradation,
    y: Tensor,
    x0: &Tensor,
    truth: Option<Tensor>,
) -> Result<Vec<Outcome>> {
    let t0 = Instant::now();
    let n = x0.size()[0] as usize;
    let mut a = Active {
        ids: (0..n).collect(),
        iters: vec![0; n],
        op,
        y,
    };
    let mut truth = truth;
    let mut tau: Vec<f64> = (0..n).map(|i| scheme.tau0(i)).collect();
    let mut records: Vec<Vec<IterationRecord>> = vec![Vec::new(); n];
    let mut pending_backtracks = vec![0usize; n];
    let mut done: Vec<Option<(Tensor, Tensor, usize, StopReason)>> = (0..n).map(|_| None).collect();

    let lyapunov = scheme.value_is_lyapunov();
    let mut monotonicity = vec![Monotonicity::default(); n];
    let start = scheme.start(den, &a, x0, &tau)?;
    let r0 = read_out(&start, None, &truth)?;
    // ‖x₀‖ of each problem, the scale of the papers' residual ‖x_{k+1} − x_k‖² / ‖x₀‖².
    let x0_norm = to_vec(&per_image_norm(&start.next.x)?)?;
    for i in 0..n {
        records[i].push(IterationRecord {
            iteration: 0,
            objective: r0.objective[i],
            data: r0.data[i],
            regulariser: r0.regulariser[i],
            lyapunov: f64::NAN,
            relative_step: f64::NAN,
            relative_value_change: f64::NAN,
            residual: f64::NAN,
            tau: tau[i],
            psnr: r0.psnr[i],
            backtracks: 0,
        });
    }
    // A start that is not finite diverges at the first pass of the loop (its step is wasted).
    let start_diverged: Vec<bool> = (0..n)
        .map(|i| {
            !r0.finite[i]
                || [r0.value[i], r0.objective[i], r0.data[i]]
                    .iter()
                    .any(|&v| became_non_finite(f64::NAN, v))
        })
        .collect();
    let mut s = start.next;
    s.value = r0.value;

    while !a.ids.is_empty() {
        let k = a.ids.len();
        let tau_active: Vec<f64> = a.ids.iter().map(|&i| tau[i]).collect();
        let step = scheme.step(den, &a, &s, &tau_active)?;
        let r = read_out(&step, Some(&s.x), &truth)?;
        let (dx, xn) = (&r.step_norm, &r.x_norm);
        let mut accept = vec![false; k];
        let mut finished: Vec<Option<StopReason>> = vec![None; k];
        for j in 0..k {
            let id = a.ids[j];
            let rules = scheme.rules(id, a.iters[j]);
            let (old, new) = (s.value[j], r.value[j]);
            let (last_objective, last_data) = records[id]
                .last()
                .map_or((f64::NAN, f64::NAN), |l| (l.objective, l.data));
            let finite = !start_diverged[id]
                && r.finite[j]
                && !became_non_finite(old, new)
                && !became_non_finite(last_objective, r.objective[j])
                && !became_non_finite(last_data, r.data[j]);
            let ok = match rules.backtracking {
                // A non-finite trial fails the sufficient-decrease test (also `F = −∞`, which
                // `old − new ≥ …` would accept): `τ` shrinks as for any rejected trial.
                Some((gamma, _)) => finite && old - new >= gamma / tau[id] * dx[j] * dx[j],
                None => finite,
            };
            if !finite && (rules.backtracking.is_none() || start_diverged[id]) {
                // Stop at once; the result stays the last accepted iterate.
                finished[j] = Some(StopReason::Diverged);
                continue;
            }
            if !ok {
                let (_, eta) = rules.backtracking.unwrap_or((0.1, 0.9));
                tau[id] *= eta;
                pending_backtracks[id] += 1;
                if tau[id] < 1e-12 * scheme.tau0(id) {
                    finished[j] = Some(StopReason::StepCollapsed);
                }
                continue;
            }
            accept[j] = true;
            a.iters[j] += 1;
            let rel = (old - new).abs() / new.abs().max(1e-300);
            if rules.monotone && old.is_finite() && new.is_finite() {
                let m = &mut monotonicity[id];
                m.quantity = if lyapunov { "lyapunov" } else { "objective" };
                m.tested += 1;
                if new - old > MONOTONE_RTOL * old.abs() {
                    m.increases += 1;
                    m.max_relative_increase = m
                        .max_relative_increase
                        .max((new - old) / old.abs().max(1e-300));
                }
            }
            records[id].push(IterationRecord {
                iteration: a.iters[j],
                objective: r.objective[j],
                data: r.data[j],
                regulariser: r.regulariser[j],
                lyapunov: if lyapunov { new } else { f64::NAN },
                relative_step: dx[j] / xn[j].max(1e-30),
                residual: (dx[j] / x0_norm[id].max(1e-30)).powi(2),
                relative_value_change: rel,
                tau: tau_active[j],
                psnr: r.psnr[j],
                backtracks: std::mem::take(&mut pending_backtracks[id]),
            });
            if rules.tol.is_some_and(|tol| rel < tol) {
                finished[j] = Some(if monotonicity[id].is_monotone() {
                    StopReason::Converged
                } else {
                    StopReason::ToleranceNotMonotone
                });
            } else if a.iters[j] >= rules.max_iter {
                finished[j] = Some(StopReason::MaxIterations);
            }
        }
        // Accepted problems move; rejected ones keep their state.
        let m = rows(&accept, &s.x)?;
        s = State {
            x: merge(&m, &step.next.x, &s.x)?,
            output: merge(&m, &step.next.output, &s.output)?,
            value: (0..k)
                .map(|j| if accept[j] { r.value[j] } else { s.value[j] })
                .collect(),
            cache: StepCache::merge(&step.next.cache, &s.cache, &accept, &m)?,
        };
        if finished.iter().all(Option::is_none) {
            continue;
        }
        let mut keep = Vec::new();
        for (j, fin) in finished.iter().enumerate() {
            match *fin {
                Some(reason) => {
                    let id = a.ids[j];
                    let row = Tensor::f_from_slice(&[j as i64])?.f_to_device(s.output.device())?;
                    done[id] = Some((
                        s.output.f_index_select(0, &row)?,
                        s.x.f_index_select(0, &row)?,
                        a.iters[j],
                        reason,
                    ));
                }
                None => keep.push(j as i64),
            }
        }
        if keep.is_empty() {
            break;
        }
        let idx = Tensor::f_from_slice(&keep)?.f_to_device(s.x.device())?;
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.f_index_select(0, &idx)?) };
        let keep_u: Vec<usize> = keep.iter().map(|&j| j as usize).collect();
        s = State {
            x: pick(&s.x)?,
            output: pick(&s.output)?,
            value: keep_u.iter().map(|&j| s.value[j]).collect(),
            cache: s.cache.select(&keep_u, &idx)?,
        };
        a = Active {
            ids: keep_u.iter().map(|&j| a.ids[j]).collect(),
            iters: keep_u.iter().map(|&j| a.iters[j]).collect(),
            op: a.op.select(&idx)?,
            y: pick(&a.y)?,
        };
        truth = truth.as_ref().map(pick).transpose()?;
    }
    let seconds = t0.elapsed().as_secs_f64() / n as f64;
    done.into_iter()
        .zip(records)
        .zip(monotonicity)
        .map(|((d, records), monotonicity)| {
            let (image, last_iterate, iterations, stop) = d.ok_or(
                crate::error::PnpError::Internal("a problem ended without a result"),
            )?;
            Ok(Outcome {
                image,
                last_iterate,
                monotonicity,
                iterations,
                stop,
                records,
                seconds,
            })
        })
        .collect()
}

/// `σ` values (0–255 scale) as the per-image [`gradstep_model::Sigma`] on the `[0, 1]` scale.
pub(crate) fn sigma_of(levels_255: &[f64]) -> gradstep_model::Sigma {
    gradstep_model::Sigma::PerImage(levels_255.iter().map(|s| s / 255.0).collect())
}

/// `[B]` tensor → `Vec<f64>`.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        &t.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?,
    )?)
}

/// A `[B]` tensor of `values` like `like`.
pub(crate) fn tensor_of(values: &[f64], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(values)?
        .f_to_kind(like.kind())?
        .f_to_device(like.device())?)
}
