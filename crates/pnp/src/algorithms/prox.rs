//! Prox-PnP (Hurault et al., ICML 2022) with the relaxed denoiser
//! `D^α = (1 − α)I + αD_σ`, i.e. `D^α(x) = x − α∇g_σ(x)`, and `λ` the step on `f`:
//! - PGD: `x⁺ = D^α(x − λ∇f(x))`;
//! - DRS: `y = D^α(x)`, `z = prox_{λf}(2y − x)`, `x⁺ = x + z − y`;
//! - DRSdiff: `y = prox_{λf}(x)`, `z = D^α(2y − x)`, `x⁺ = x + z − y`.
//!
//! With `φ_σ(D_σ(u)) = g_σ(u) − ½‖u − D_σ(u)‖²` (evaluated, as the official code does, from the
//! point `u` the denoiser was applied to and its output), the monitored quantities are
//! `F = f + φ_σ/λ` and the DRS Lyapunov function
//! `Ψ = φ_σ(y)/λ + f(z) + (⟨y − x, y − z⟩ + ½‖y − z‖²)/λ`.
use gradstep_model::{GradientStepDenoiser, Graph};
use tch::{Kind, Tensor};

use super::config::ProxConfig;
use super::driver::{sigma_of, tensor_of, Active, Rules, Scheme, State, Step};
use crate::error::Result;
use crate::operators::{per_image_half_sq_norm, LinearOperator};

/// Which Prox-PnP iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxVariant {
    Pgd,
    Drs,
    DrsDiff,
}

/// Prox-PnP over a batch.
pub(crate) struct ProxPnp<'c> {
    pub variant: ProxVariant,
    pub configs: Vec<&'c ProxConfig>,
}

fn per_image_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.f_mul(b)?
        .f_flatten(1, -1)?
        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)
}

impl ProxPnp<'_> {
    fn sigmas(&self, a: &Active) -> Vec<f64> {
        a.ids
            .iter()
            .zip(&a.iters)
            .map(|(&i, &k)| {
                let c = self.configs[i];
                match c.warmup {
                    Some(w) if k < w.iterations => w.sigma,
                    _ => c.sigma,
                }
            })
            .collect()
    }

    fn per_problem(
        &self,
        a: &Active,
        like: &Tensor,
        f: impl Fn(&ProxConfig) -> f64,
    ) -> Result<Tensor> {
        let v: Vec<f64> = a.ids.iter().map(|&i| f(self.configs[i])).collect();
        Ok(tensor_of(&v, like)?.f_view([-1, 1, 1, 1])?)
    }

    /// `(D^α(u), g_σ(u), φ-part g_σ(u) − ½‖u − D^α(u)‖²)`.
    fn relaxed_denoise(
        &self,
        den: &GradientStepDenoiser,
        a: &Active,
        u: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (g, grad) = den.potential_and_grad(u, &sigma_of(&self.sigmas(a)), Graph::Inference)?;
        let alpha = self.per_problem(a, u, |c| c.alpha)?;
        let d = u.f_sub(&grad.f_mul(&alpha)?)?;
        let phi = g.f_sub(&per_image_half_sq_norm(&u.f_sub(&d)?)?)?;
        Ok((d, g, phi))
    }
}

impl Scheme for ProxPnp<'_> {
    type Cache = ();

    fn step(&self, den: &GradientStepDenoiser, a: &Active, s: &State, tau: &[f64]) -> Result<Step> {
        let x = &s.x;
        let lam = tensor_of(tau, x)?;
        let lam4 = lam.f_view([-1, 1, 1, 1])?;
        let (next_x, output, f_out, phi, value) = match self.variant {
            ProxVariant::Pgd => {
                let z = x.f_sub(&a.op.data_gradient(x, &a.y)?.f_mul(&lam4)?)?;
                let (d, _, phi) = self.relaxed_denoise(den, a, &z)?;
                let f = a.op.data_fidelity(&d, &a.y)?;
                let obj = f.f_add(&phi.f_div(&lam)?)?;
                (d.shallow_clone(), d, f, phi, obj)
            }
            ProxVariant::Drs | ProxVariant::DrsDiff => {
                let (y, z, phi) = if self.variant == ProxVariant::Drs {
                    let (y, _, phi) = self.relaxed_denoise(den, a, x)?;
                    let z =
                        a.op.prox_data(&y.f_mul_scalar(2.0)?.f_sub(x)?, &a.y, &lam)?;
                    (y, z, phi)
                } else {
                    let y = a.op.prox_data(x, &a.y, &lam)?;
                    let y2 = y.f_mul_scalar(2.0)?.f_sub(x)?;
                    let (z, g, _) = self.relaxed_denoise(den, a, &y2)?;
                    // The official code evaluates φ with the pair (x, y) here.
                    let phi = g.f_sub(&per_image_half_sq_norm(&x.f_sub(&y)?)?)?;
                    (y, z, phi)
                };
                let ymz = y.f_sub(&z)?;
                let psi = phi
                    .f_div(&lam)?
                    .f_add(&a.op.data_fidelity(&z, &a.y)?)?
                    .f_add(
                        &per_image_dot(&y.f_sub(x)?, &ymz)?
                            .f_add(&per_image_half_sq_norm(&ymz)?)?
                            .f_div(&lam)?,
                    )?;
                let f = a.op.data_fidelity(&y, &a.y)?;
                (x.f_add(&z)?.f_sub(&y)?, y, f, phi, psi)
            }
        };
        let f = f_out.f_to_kind(Kind::Double)?;
        let phi = phi.f_to_kind(Kind::Double)?;
        let objective = f.f_add(&phi.f_div(&tensor_of(tau, &f)?)?)?;
        let value = match self.variant {
            ProxVariant::Pgd => objective.shallow_clone(),
            _ => value.f_to_kind(Kind::Double)?,
        };
        Ok(Step {
            next: State {
                x: next_x,
                output,
                value: Vec::new(),
                cache: (),
            },
            value,
            objective,
            data: f,
            regulariser: phi,
        })
    }

    fn rules(&self, id: usize, iter: usize) -> Rules {
        let c = self.configs[id];
        let warm = c.warmup.is_some_and(|w| iter < w.iterations);
        Rules {
            backtracking: None,
            tol: if warm { None } else { c.tol },
            max_iter: c.max_iter,
            // F (PGD) and Ψ (DRS) decrease when D_σ is a proximal operator, after any warm-up.
            monotone: !warm,
        }
    }

    fn tau0(&self, id: usize) -> f64 {
        self.configs[id].lambda
    }

    fn value_is_lyapunov(&self) -> bool {
        self.variant != ProxVariant::Pgd
    }
}
