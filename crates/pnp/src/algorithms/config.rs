//! Typed algorithm settings, with the papers' reference defaults.
//!
//! Noise levels `σ` are on the 0–255 scale in configs (the denoiser receives `σ/255`).
use serde::{Deserialize, Serialize};

use crate::error::{PnpError, Result};
use crate::kernels::KernelSpec;
use crate::task::{Algorithm, Task};

/// A denoiser level used for the first iterations only (GS-PnP inpainting: `σ = 50` for 10
/// iterations, without backtracking or stopping).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaWarmup {
    /// `σ` of the warm-up iterations (0–255 scale).
    pub sigma: f64,
    /// Number of warm-up iterations.
    pub iterations: usize,
}

/// GS-PnP (ICLR 2022): `x_{k+1} = prox_{τf}(x_k − τλ∇g_σ(x_k))` on `F = f + λ g_σ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GsPgdConfig {
    /// Regularisation weight `λ`.
    pub lambda: f64,
    /// Denoiser level `σ` (0–255 scale).
    pub sigma: f64,
    /// Initial step `τ₀`; `None` means `1/λ`.
    #[serde(default)]
    pub tau0: Option<f64>,
    /// Backtracking: accept only if `F(x_k) − F(x_{k+1}) ≥ (γ/τ)‖x_{k+1} − x_k‖²`.
    pub gamma: f64,
    /// Backtracking: `τ ← ητ` on rejection.
    pub eta: f64,
    /// Whether backtracking is used.
    pub backtracking: bool,
    /// Maximum number of (accepted) iterations.
    pub max_iter: usize,
    /// Stop when `|F(x_k) − F(x_{k+1})| / |F(x_{k+1})| < tol`; `None` runs `max_iter`.
    pub tol: Option<f64>,
    /// Optional warm-up level (inpainting).
    #[serde(default)]
    pub warmup: Option<SigmaWarmup>,
    /// The image returned: `z` (default, as the official code and the papers' tables) or `x`.
    #[serde(default)]
    pub output: GsOutput,
}

/// What GS-PnP returns after its last accepted iterate `x_K` (with its step `τ_K`).
///
/// The official code (both the ICLR-era and the current GSPnP) returns
/// `z_K = x_K − τ_K λ ∇g_σ(x_K)`, the denoised point before the data prox, and the papers'
/// tables are computed on it; `x_K = prox_{τf}(z_{K−1})` puts the observation's noise back
/// through the data prox (1.8 dB lower on a Levin-kernel deblurring at ν = 7.65).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GsOutput {
    /// `z_K = x_K − τ_K λ ∇g_σ(x_K)` (the official output).
    #[default]
    Z,
    /// `x_K`, the last output of the data prox.
    X,
}

impl std::str::FromStr for GsOutput {
    type Err = PnpError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "z" => Ok(GsOutput::Z),
            "x" => Ok(GsOutput::X),
            _ => Err(PnpError::Invalid(format!(
                "unknown GS-PnP output `{s}` (expected z or x)"
            ))),
        }
    }
}

impl GsOutput {
    /// `"z"` or `"x"`.
    pub fn name(self) -> &'static str {
        match self {
            GsOutput::Z => "z",
            GsOutput::X => "x",
        }
    }
}

/// Prox-PnP (ICML 2022) with `D^α = (1 − α)I + αD_σ` and step `λ` on `f`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxConfig {
    /// Step `λ` on the data term (`prox_{λf}` or `x − λ∇f(x)`).
    pub lambda: f64,
    /// Relaxation `α` of the denoiser.
    pub alpha: f64,
    /// Denoiser level `σ` (0–255 scale).
    pub sigma: f64,
    /// Maximum number of iterations.
    pub max_iter: usize,
    /// Stop on the relative change of the Lyapunov function `Ψ` (DRS) or of `F` (PGD).
    pub tol: Option<f64>,
    /// Optional warm-up level (inpainting).
    #[serde(default)]
    pub warmup: Option<SigmaWarmup>,
}

/// DPIR-style PnP-HQS: `z = prox_{τ_k f}(x_k)`, `x_{k+1} = D_{σ_k}(z)` with `σ_k` log-spaced
/// from `sigma_start` to `sigma_end` and `τ_k = σ_k² / (λ ν²)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqsConfig {
    /// DPIR's `λ` (0.23).
    pub lambda: f64,
    /// First denoiser level (49 in DPIR, 0–255 scale).
    pub sigma_start: f64,
    /// Last denoiser level, normally the noise level `ν` (0–255 scale).
    pub sigma_end: f64,
    /// Number of iterations (8 in DPIR).
    pub iterations: usize,
}

/// Values that replace those of a reference or file config ([`AlgorithmConfig::with_overrides`]);
/// `None` keeps the config's own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overrides {
    /// `λ` (GS-PnP's regularisation weight, Prox-PnP's data step, DPIR's `λ`).
    pub lambda: Option<f64>,
    /// The denoiser level `σ` (0–255; HQS: the last level).
    pub sigma: Option<f64>,
    /// The iteration budget (`max_iter`, HQS's `iterations`).
    pub max_iter: Option<usize>,
    /// The stopping tolerance (ignored by HQS, which runs a fixed number of iterations).
    pub tol: Option<f64>,
    /// GS-PnP's initial step `τ₀`.
    pub tau0: Option<f64>,
    /// Prox-PnP's relaxation `α`.
    pub alpha: Option<f64>,
    /// GS-PnP's backtracking on or off.
    pub backtracking: Option<bool>,
    /// What GS-PnP returns (`z` or `x`).
    pub output: Option<GsOutput>,
}

/// Which algorithm, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "kebab-case")]
pub enum AlgorithmConfig {
    /// GS-PnP proximal gradient descent with backtracking.
    GsPgd(GsPgdConfig),
    /// Prox-PnP-PGD: `x⁺ = D^α(x − λ∇f(x))`.
    ProxPgd(ProxConfig),
    /// Prox-PnP-DRS: `y = D^α(x)`, `z = prox_{λf}(2y − x)`, `x⁺ = x + z − y`.
    ProxDrs(ProxConfig),
    /// Prox-PnP-DRSdiff: `y = prox_{λf}(x)`, `z = D^α(2y − x)`, `x⁺ = x + z − y`.
    #[serde(rename = "prox-drsdiff")]
    ProxDrsDiff(ProxConfig),
    /// PnP-HQS baseline.
    Hqs(HqsConfig),
}

impl AlgorithmConfig {
    /// The reference defaults of the official GS-PnP / Prox-PnP code for a task, its kernel
    /// (deblurring: the generated uniform and Gaussian kernels of the table get λ = 0.075,
    /// the others 0.1) and the noise level `ν` (0–255); see `configs/pnp/README.md` for their
    /// sources and our deviations.
    pub fn reference(
        algorithm: Algorithm,
        task: Task,
        kernel: Option<&KernelSpec>,
        noise: f64,
    ) -> Self {
        match algorithm {
            Algorithm::GsPgd => {
                let generated = kernel.is_some_and(KernelSpec::is_generated);
                let (lambda, factor, tol) = match task {
                    Task::Deblur if generated => (0.075, 1.8, 1e-5),
                    Task::Deblur => (0.1, 1.8, 1e-5),
                    Task::Sr => (0.065, 2.0, 1e-6),
                    Task::Denoise => (0.1, 1.8, 1e-5),
                    Task::Inpaint => (0.1, 0.0, 1e-5),
                };
                let inpaint = task == Task::Inpaint;
                AlgorithmConfig::GsPgd(GsPgdConfig {
                    lambda,
                    sigma: if inpaint { 10.0 } else { factor * noise },
                    tau0: None,
                    gamma: 0.1,
                    eta: 0.9,
                    backtracking: !inpaint,
                    max_iter: if inpaint { 100 } else { 400 },
                    tol: if inpaint { None } else { Some(tol) },
                    warmup: inpaint.then_some(SigmaWarmup {
                        sigma: 50.0,
                        iterations: 10,
                    }),
                    output: GsOutput::Z,
                })
            }
            Algorithm::ProxDrs => {
                let (lambda, factor) = if noise <= 5.0 {
                    (5.0, 2.0)
                } else if noise <= 10.0 {
                    (1.5, 1.0)
                } else {
                    (1.0, 0.75)
                };
                AlgorithmConfig::ProxDrs(ProxConfig {
                    lambda,
                    alpha: 0.5,
                    sigma: factor * noise,
                    max_iter: 1000,
                    tol: Some(1e-8),
                    warmup: None,
                })
            }
            Algorithm::ProxPgd | Algorithm::ProxDrsDiff => {
                let c = ProxConfig {
                    lambda: 0.99,
                    alpha: 1.0,
                    sigma: (0.5 * noise).max(1.9),
                    max_iter: 1000,
                    tol: Some(1e-8),
                    warmup: None,
                };
                if algorithm == Algorithm::ProxPgd {
                    AlgorithmConfig::ProxPgd(c)
                } else {
                    AlgorithmConfig::ProxDrsDiff(c)
                }
            }
            Algorithm::Hqs => AlgorithmConfig::Hqs(HqsConfig {
                lambda: 0.23,
                sigma_start: 49.0,
                sigma_end: noise.max(0.1),
                iterations: 8,
            }),
        }
    }

    /// Sets `λ` (the regularisation weight of GS-PnP, the data step of Prox-PnP, DPIR's `λ`).
    pub fn set_lambda(&mut self, lambda: f64) {
        match self {
            AlgorithmConfig::GsPgd(c) => c.lambda = lambda,
            AlgorithmConfig::ProxPgd(c)
            | AlgorithmConfig::ProxDrs(c)
            | AlgorithmConfig::ProxDrsDiff(c) => c.lambda = lambda,
            AlgorithmConfig::Hqs(c) => c.lambda = lambda,
        }
    }

    /// Sets the denoiser level `σ` (0–255; the last level for HQS).
    pub fn set_sigma(&mut self, sigma: f64) {
        match self {
            AlgorithmConfig::GsPgd(c) => c.sigma = sigma,
            AlgorithmConfig::ProxPgd(c)
            | AlgorithmConfig::ProxDrs(c)
            | AlgorithmConfig::ProxDrsDiff(c) => c.sigma = sigma,
            AlgorithmConfig::Hqs(c) => c.sigma_end = sigma,
        }
    }

    /// Sets what GS-PnP returns (`z` or `x`); the other algorithms return what their official
    /// code returns and accept only that.
    pub fn set_output(&mut self, output: GsOutput) -> Result<()> {
        match self {
            AlgorithmConfig::GsPgd(c) => {
                c.output = output;
                Ok(())
            }
            other => Err(PnpError::Invalid(format!(
                "the output variable can be chosen for gs-pgd only; {} returns {}",
                other.name(),
                other.returned_variable()
            ))),
        }
    }

    /// The config with `o`'s values in place of its own, validated: the one way the command
    /// line (`restore`, `eval`) and the sweeps change a reference or file config. A value that
    /// the algorithm has no use for is an error (`alpha does not apply to gs-pgd`), except the
    /// tolerance for HQS, whose iteration count is fixed (a sweep's shared `settings.tol` may
    /// cover HQS points too).
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Self> {
        if let Some(l) = o.lambda {
            self.set_lambda(l);
        }
        if let Some(s) = o.sigma {
            self.set_sigma(s);
        }
        if let Some(m) = o.max_iter {
            self.set_iterations(m);
        }
        if let Some(out) = o.output {
            self.set_output(out)?;
        }
        let name = self.name();
        let bad = |what: &str| PnpError::Invalid(format!("{what} does not apply to {name}"));
        match &mut self {
            AlgorithmConfig::GsPgd(g) => {
                if o.alpha.is_some() {
                    return Err(bad("alpha"));
                }
                g.tau0 = o.tau0.or(g.tau0);
                g.backtracking = o.backtracking.unwrap_or(g.backtracking);
                g.tol = o.tol.or(g.tol);
            }
            AlgorithmConfig::ProxPgd(x)
            | AlgorithmConfig::ProxDrs(x)
            | AlgorithmConfig::ProxDrsDiff(x) => {
                if o.tau0.is_some() {
                    return Err(bad("tau0"));
                }
                if o.backtracking.is_some() {
                    return Err(bad("backtracking"));
                }
                x.alpha = o.alpha.unwrap_or(x.alpha);
                x.tol = o.tol.or(x.tol);
            }
            AlgorithmConfig::Hqs(_) => {
                if o.tau0.is_some() || o.alpha.is_some() {
                    return Err(bad("tau0 / alpha"));
                }
                if o.backtracking.is_some() {
                    return Err(bad("backtracking"));
                }
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Sets the iteration budget (`max_iter`; HQS's fixed `iterations`).
    pub fn set_iterations(&mut self, iterations: usize) {
        match self {
            AlgorithmConfig::GsPgd(c) => c.max_iter = iterations,
            AlgorithmConfig::ProxPgd(c)
            | AlgorithmConfig::ProxDrs(c)
            | AlgorithmConfig::ProxDrsDiff(c) => c.max_iter = iterations,
            AlgorithmConfig::Hqs(c) => c.iterations = iterations,
        }
    }

    /// The iteration budget and the name of its field.
    fn iterations(&self) -> (&'static str, usize) {
        match self {
            AlgorithmConfig::GsPgd(c) => ("max_iter", c.max_iter),
            AlgorithmConfig::ProxPgd(c)
            | AlgorithmConfig::ProxDrs(c)
            | AlgorithmConfig::ProxDrsDiff(c) => ("max_iter", c.max_iter),
            AlgorithmConfig::Hqs(c) => ("iterations", c.iterations),
        }
    }

    /// Checks that every setting is in range.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(PnpError::Invalid(format!(
                    "{name} must be positive, got {v}"
                )))
            }
        };
        // Denoiser levels: positive and on the 0–255 scale (`1e308` overflowed σ²).
        let level = |name: &str, v: f64| {
            gradstep_model::Sigma::check_level_255(v, false)
                .map_err(|e| PnpError::Invalid(format!("{name} {e}")))
        };
        let warmup = |w: &Option<SigmaWarmup>| match w {
            Some(w) => level("warmup.sigma", w.sigma),
            None => Ok(()),
        };
        let (iterations_name, iterations) = self.iterations();
        // The loop makes at least one step before it tests the budget: 0 cannot be kept.
        if iterations == 0 {
            return Err(PnpError::Invalid(format!(
                "{iterations_name} must be at least 1"
            )));
        }
        match self {
            AlgorithmConfig::GsPgd(c) => {
                pos("lambda", c.lambda)?;
                level("sigma", c.sigma)?;
                warmup(&c.warmup)?;
                pos("tau0", c.tau0.unwrap_or(1.0))?;
                pos("gamma", c.gamma)?;
                if !(c.eta > 0.0 && c.eta < 1.0) {
                    return Err(PnpError::Invalid(format!(
                        "eta must be in (0, 1), got {}",
                        c.eta
                    )));
                }
            }
            AlgorithmConfig::ProxPgd(c)
            | AlgorithmConfig::ProxDrs(c)
            | AlgorithmConfig::ProxDrsDiff(c) => {
                pos("lambda", c.lambda)?;
                level("sigma", c.sigma)?;
                warmup(&c.warmup)?;
                if !(c.alpha > 0.0 && c.alpha <= 1.0) {
                    return Err(PnpError::Invalid(format!(
                        "alpha must be in (0, 1], got {}",
                        c.alpha
                    )));
                }
            }
            AlgorithmConfig::Hqs(c) => {
                pos("lambda", c.lambda)?;
                level("sigma_start", c.sigma_start)?;
                level("sigma_end", c.sigma_end)?;
            }
        }
        Ok(())
    }

    /// The variable returned as the restored image, as the official code returns it:
    /// GS-PnP `z = x_K − τλ∇g_σ(x_K)` (or `x_K` on request); Prox-PnP-PGD `x_K = D^α(·)`;
    /// Prox-PnP-DRS `y = D^α(x_K)`; Prox-PnP-DRSdiff `y = prox_{λf}(x_K)`; HQS (DPIR) `x_K`,
    /// the last denoiser output.
    pub fn returned_variable(&self) -> &'static str {
        match self {
            AlgorithmConfig::GsPgd(c) => c.output.name(),
            AlgorithmConfig::ProxPgd(_) | AlgorithmConfig::Hqs(_) => "x",
            AlgorithmConfig::ProxDrs(_) | AlgorithmConfig::ProxDrsDiff(_) => "y",
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            AlgorithmConfig::GsPgd(_) => Algorithm::GsPgd,
            AlgorithmConfig::ProxPgd(_) => Algorithm::ProxPgd,
            AlgorithmConfig::ProxDrs(_) => Algorithm::ProxDrs,
            AlgorithmConfig::ProxDrsDiff(_) => Algorithm::ProxDrsDiff,
            AlgorithmConfig::Hqs(_) => Algorithm::Hqs,
        }
    }

    /// A short name (`gs-pgd`, …).
    pub fn name(&self) -> &'static str {
        self.algorithm().name()
    }
}
