//! The PnP-HQS baseline, DPIR-style (Zhang et al. 2021): `σ_k` log-spaced from `σ_start` to
//! `σ_end`, `τ_k = σ_k² / (λ ν²)`, `z = prox_{τ_k f}(x_k)`, `x_{k+1} = D_{σ_k}(z)`, a fixed
//! number of iterations. `D_σ` is the gradient-step denoiser. It has no objective: `F` and
//! `g` are recorded as NaN (`null` in JSON), `f` is `f(x_{k+1})`.
use gradstep_model::{GradientStepDenoiser, Graph};

use super::config::HqsConfig;
use super::driver::{sigma_of, tensor_of, Active, Rules, Scheme, State, Step};
use crate::error::Result;
use crate::operators::LinearOperator;

/// PnP-HQS over a batch.
pub(crate) struct Hqs<'c> {
    pub configs: Vec<&'c HqsConfig>,
    /// Noise level `ν` (0–255) of each problem.
    pub noise: Vec<f64>,
}

impl Hqs<'_> {
    fn sigma(&self, id: usize, k: usize) -> f64 {
        let c = self.configs[id];
        let n = c.iterations.max(2) - 1;
        let t = (k.min(n)) as f64 / n as f64;
        (c.sigma_start.ln() * (1.0 - t) + c.sigma_end.ln() * t).exp()
    }
}

impl Scheme for Hqs<'_> {
    type Cache = ();

    fn step(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        s: &State,
        _tau: &[f64],
    ) -> Result<Step> {
        let sig: Vec<f64> = a
            .ids
            .iter()
            .zip(&a.iters)
            .map(|(&i, &k)| self.sigma(i, k))
            .collect();
        let taus: Vec<f64> = a
            .ids
            .iter()
            .zip(&sig)
            .map(|(&i, sk)| {
                let nu = self.noise[i].max(0.1);
                sk * sk / (self.configs[i].lambda * nu * nu)
            })
            .collect();
        let z = a.op.prox_data(&s.x, &a.y, &tensor_of(&taus, &s.x)?)?;
        let x = den.denoise(&z, &sigma_of(&sig), Graph::Inference)?;
        Step::data_only(a, x.shallow_clone(), x)
    }

    fn rules(&self, id: usize, _iter: usize) -> Rules {
        Rules {
            backtracking: None,
            tol: None,
            max_iter: self.configs[id].iterations,
            // HQS monitors no objective.
            monotone: false,
        }
    }

    fn tau0(&self, _id: usize) -> f64 {
        f64::NAN
    }
}
