//! GS-PnP (Hurault et al., ICLR 2022): proximal gradient descent on `F = f + λ g_σ`,
//! `x_{k+1} = prox_{τf}(x_k − τλ∇g_σ(x_k))`, started at `x₀ = prox_{τ₀f}(init)`.
//!
//! `F` is evaluated exactly at every iterate: the `(g_σ, ∇g_σ)` computed at `x_{k+1}` to test
//! it are kept for the next step, so one network pass is made per trial.
//!
//! The image shown at each iterate (and returned) is, by default, the official code's
//! `z_k = x_k − τλ∇g_σ(x_k)` with the `τ` that produced `x_k` ([`GsOutput`]): it costs nothing,
//! since `∇g_σ(x_k)` is computed anyway to test `F(x_k)`.
use gradstep_model::{GradientStepDenoiser, Graph};
use tch::{Kind, Tensor};

use super::config::{GsOutput, GsPgdConfig};
use super::driver::{merge, sigma_of, tensor_of, Active, Rules, Scheme, State, Step, StepCache};
use crate::error::Result;
use crate::operators::LinearOperator;

/// `∇g_σ(x_k)` of the active problems, computed to test `F(x_k)` and kept for the step from
/// `x_k`, with the `σ` (0–1 scale) of each row: a step whose `σ` differs (the warm-up ends)
/// computes it again. Empty after a start or a merge that could not keep every row.
#[derive(Default)]
pub(crate) struct GradientCache(Option<CachedGradient>);

struct CachedGradient {
    grad: Tensor,
    sigma: Vec<f64>,
}

impl StepCache for GradientCache {
    fn merge(new: &Self, old: &Self, accept: &[bool], accepted: &Tensor) -> Result<Self> {
        Ok(GradientCache(match (&new.0, &old.0) {
            (Some(new), Some(old)) => Some(CachedGradient {
                grad: merge(accepted, &new.grad, &old.grad)?,
                sigma: accept
                    .iter()
                    .zip(new.sigma.iter().zip(&old.sigma))
                    .map(|(&a, (&n, &o))| if a { n } else { o })
                    .collect(),
            }),
            (Some(new), None) if accept.iter().all(|&a| a) => Some(CachedGradient {
                grad: new.grad.shallow_clone(),
                sigma: new.sigma.clone(),
            }),
            _ => None,
        }))
    }

    fn select(&self, keep: &[usize], idx: &Tensor) -> Result<Self> {
        Ok(GradientCache(match &self.0 {
            Some(c) => Some(CachedGradient {
                grad: c.grad.f_index_select(0, idx)?,
                sigma: keep.iter().map(|&j| c.sigma[j]).collect(),
            }),
            None => None,
        }))
    }
}

/// GS-PnP over a batch, one config per problem.
pub(crate) struct GsPgd<'c> {
    pub configs: Vec<&'c GsPgdConfig>,
}

impl GsPgd<'_> {
    fn sigma(&self, id: usize, iter: usize) -> f64 {
        let c = self.configs[id];
        match c.warmup {
            Some(w) if iter < w.iterations => w.sigma,
            _ => c.sigma,
        }
    }

    fn in_warmup(&self, id: usize, iter: usize) -> bool {
        self.configs[id].warmup.is_some_and(|w| iter < w.iterations)
    }

    /// `F(x) = f(x) + λ g_σ(x)` with `∇g_σ(x)`, at the levels for the problems' iterations,
    /// and the image shown at `x`: `x − τλ∇g_σ(x)` ([`GsOutput::Z`]) or `x` itself.
    fn evaluate(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        x: &Tensor,
        iters: &[usize],
        tau: &[f64],
    ) -> Result<Step<GradientCache>> {
        let sigmas: Vec<f64> = a
            .ids
            .iter()
            .zip(iters)
            .map(|(&i, &k)| self.sigma(i, k))
            .collect();
        let (g, grad) = den.potential_and_grad(x, &sigma_of(&sigmas), Graph::Inference)?;
        let f = a.op.data_fidelity(x, &a.y)?.f_to_kind(Kind::Double)?;
        let g = g.f_to_kind(Kind::Double)?;
        let lambdas: Vec<f64> = a.ids.iter().map(|&i| self.configs[i].lambda).collect();
        let objective = f.f_add(&g.f_mul(&tensor_of(&lambdas, &f)?)?)?;
        // The choice is per problem (configs of one batch may differ): step 0 where `x` is asked.
        let outputs: Vec<GsOutput> = a.ids.iter().map(|&i| self.configs[i].output).collect();
        let output = if outputs.iter().all(|&o| o == GsOutput::X) {
            x.shallow_clone()
        } else {
            let step: Vec<f64> = a
                .ids
                .iter()
                .zip(tau)
                .zip(&outputs)
                .map(|((&i, t), o)| match o {
                    GsOutput::Z => t * self.configs[i].lambda,
                    GsOutput::X => 0.0,
                })
                .collect();
            x.f_sub(&grad.f_mul(&tensor_of(&step, x)?.f_view([-1, 1, 1, 1])?)?)?
        };
        Ok(Step {
            next: State {
                x: x.shallow_clone(),
                output,
                value: Vec::new(),
                cache: GradientCache(Some(CachedGradient {
                    grad,
                    sigma: sigmas,
                })),
            },
            value: objective.shallow_clone(),
            objective,
            data: f,
            regulariser: g,
        })
    }
}

impl Scheme for GsPgd<'_> {
    type Cache = GradientCache;

    fn start(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        x0: &Tensor,
        tau: &[f64],
    ) -> Result<Step<GradientCache>> {
        let x = a.op.prox_data(x0, &a.y, &tensor_of(tau, x0)?)?;
        self.evaluate(den, a, &x, &a.iters, tau)
    }

    fn step(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        s: &State<GradientCache>,
        tau: &[f64],
    ) -> Result<Step<GradientCache>> {
        let sigmas: Vec<f64> = a
            .ids
            .iter()
            .zip(&a.iters)
            .map(|(&i, &k)| self.sigma(i, k))
            .collect();
        let grad = match &s.cache.0 {
            Some(c) if c.sigma == sigmas => c.grad.shallow_clone(),
            _ => den.grad(&s.x, &sigma_of(&sigmas), Graph::Inference)?,
        };
        let tl: Vec<f64> = a
            .ids
            .iter()
            .zip(tau)
            .map(|(&i, t)| t * self.configs[i].lambda)
            .collect();
        let z =
            s.x.f_sub(&grad.f_mul(&tensor_of(&tl, &s.x)?.f_view([-1, 1, 1, 1])?)?)?;
        let x = a.op.prox_data(&z, &a.y, &tensor_of(tau, &s.x)?)?;
        let next_iters: Vec<usize> = a.iters.iter().map(|k| k + 1).collect();
        self.evaluate(den, a, &x, &next_iters, tau)
    }

    fn rules(&self, id: usize, iter: usize) -> Rules {
        let c = self.configs[id];
        let warm = self.in_warmup(id, iter);
        Rules {
            backtracking: (c.backtracking && !warm).then_some((c.gamma, c.eta)),
            tol: if warm { None } else { c.tol },
            max_iter: c.max_iter,
            // F changes with σ during the warm-up: Theorem 2.1 applies after it.
            monotone: !warm,
        }
    }

    fn tau0(&self, id: usize) -> f64 {
        let c = self.configs[id];
        c.tau0.unwrap_or(1.0 / c.lambda)
    }
}
