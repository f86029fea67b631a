//! The Gradient-Step denoiser `D_σ = I − ∇g_σ` (Hurault, Leclaire, Papadakis, ICLR 2022).
//!
//! With `N_σ` the DRUNet of [`crate::Drunet`]:
//! - potential: `g_σ(x) = ½‖x − N_σ(x)‖²` (per image);
//! - gradient: `∇g_σ(x) = x − N_σ(x) − J_N(x)ᵀ(x − N_σ(x))`;
//! - denoiser: `D_σ(x) = x − ∇g_σ(x) = N_σ(x) + J_N(x)ᵀ(x − N_σ(x))`;
//! - Hessian-vector product: `∇²g_σ(x)·v`, by differentiating `⟨∇g_σ(x), v⟩` in `x`
//!   (the Hessian is symmetric, so this is also `vᵀ∇²g_σ(x)`).
//!
//! `J_Nᵀ r` is computed by default with the explicit adjoint pass ([`GradMethod::Adjoint`]),
//! which makes `∇g_σ` an ordinary forward graph; [`GradMethod::Autograd`] computes it with
//! autograd (double backward when training) and is kept as the reference.
//!
//! Inference-time `∇g_σ` can cover large images tile by tile ([`Tiling`], see
//! [`crate::tiling`]); training graphs always use the whole input.
use std::sync::atomic::{AtomicI64, Ordering};

use tch::{Kind, Tensor};

use crate::autocast::AutocastGuard;
use crate::config::{MemoryFormat, Precision};
use crate::drunet::Drunet;
use crate::error::{ModelError, Result};
use crate::sigma::Sigma;
use crate::tiling::{halve_until_fits, is_too_large, spans, Tiling, MIN_AUTO_TILE};

/// Whether a computation keeps a graph for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graph {
    /// No graph is kept: results are detached and memory does not grow over calls.
    Inference,
    /// The result is differentiable with respect to the network parameters (and `x`):
    /// what training through `D_σ` needs.
    Training,
}

/// How `J_N(x)ᵀ r` in `∇g_σ(x) = x − N_σ(x) − J_N(x)ᵀ(x − N_σ(x))` is computed (and so how
/// a training loss through `D_σ` is differentiated); `performance.grad_method` of a
/// training config (`"adjoint"` | `"autograd"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradMethod {
    /// Explicit adjoint pass: training needs first-order autograd only.
    #[default]
    Adjoint,
    /// Autograd's vector-Jacobian product, differentiated again by the loss (double
    /// backward): the reference, slower and larger.
    Autograd,
}

/// `∇g_σ` at a point, kept with its graph so that many Hessian-vector products can be
/// taken at the same `x` (power iteration, Lanczos).
#[derive(Debug)]
pub struct GradientAt {
    x: Tensor,
    grad: Tensor,
}

impl GradientAt {
    /// `∇g_σ(x)` (still attached to the graph).
    pub fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// `∇²g_σ(x)·v` for `v` of `x`'s shape. With [`Graph::Training`] the product is itself
    /// differentiable (the final, penalised product of the Prox training); with
    /// [`Graph::Inference`] it is detached. The graph of `∇g_σ` is kept for further products.
    pub fn hessian_vector_product(&self, v: &Tensor, graph: Graph) -> Result<Tensor> {
        let inner = self.grad.f_mul(v)?.f_sum(self.grad.kind())?;
        let train = graph == Graph::Training;
        let mut hv = Tensor::f_run_backward(&[inner], &[&self.x], true, train)?;
        let hv = hv
            .pop()
            .ok_or_else(|| ModelError::Invalid("empty backward".into()))?;
        Ok(if train { hv } else { hv.f_detach()? })
    }
}

/// How a denoiser runs at inference time: speed and memory, not results (which agree up to
/// rounding, and for tiles up to the truncated context, see [`crate::tiling`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceOptions {
    /// How `∇g_σ` covers an image.
    #[serde(default)]
    pub tiling: Tiling,
    /// Precision of the convolutions.
    #[serde(default)]
    pub precision: Precision,
    /// Layout of weights and activations.
    #[serde(default)]
    pub memory_format: MemoryFormat,
}

/// The gradient-step denoiser over a DRUNet.
#[derive(Debug)]
pub struct GradientStepDenoiser {
    net: Drunet,
    method: GradMethod,
    tiling: Tiling,
    precision: Precision,
    /// The core size [`Tiling::Auto`] found to fit (0: the whole image has fitted so far).
    auto_tile: AtomicI64,
}

impl GradientStepDenoiser {
    /// Wraps a network; `∇g_σ` uses the explicit adjoint.
    pub fn new(net: Drunet) -> Self {
        GradientStepDenoiser {
            net,
            method: GradMethod::default(),
            tiling: Tiling::Whole,
            precision: Precision::Fp32,
            auto_tile: AtomicI64::new(0),
        }
    }

    /// The precision of `∇g_σ`, `D_σ` and [`Self::gradient_at`] in training and inference
    /// alike (PnP, denoising, evaluation, and training's `performance.precision`): each
    /// pass runs inside its own [`AutocastGuard::cuda`] region, on CUDA only.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Applies all of `options`.
    pub fn with_options(mut self, options: &InferenceOptions) -> Result<Self> {
        self.net.set_memory_format(options.memory_format)?;
        self.with_precision(options.precision)
            .with_tiling(options.tiling)
    }

    /// The precision in use.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Chooses how inference-time `∇g_σ` covers an image (whole, fixed tiles, or tiles
    /// only when the whole image runs out of memory).
    pub fn with_tiling(mut self, tiling: Tiling) -> Result<Self> {
        tiling.validate()?;
        self.tiling = tiling;
        self.auto_tile = AtomicI64::new(0);
        Ok(self)
    }

    /// The tiling in use.
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    /// The core size [`Tiling::Auto`] has fallen back to, if it had to.
    pub fn auto_tile(&self) -> Option<i64> {
        Some(self.auto_tile.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Chooses how `J_Nᵀ r` is computed.
    pub fn with_method(mut self, method: GradMethod) -> Self {
        self.method = method;
        self
    }

    /// The method in use.
    pub fn method(&self) -> GradMethod {
        self.method
    }

    /// The network `N_σ`.
    pub fn network(&self) -> &Drunet {
        &self.net
    }

    /// Mutable access to the network (loading weights, changing device or precision).
    pub fn network_mut(&mut self) -> &mut Drunet {
        &mut self.net
    }

    /// `N_σ(x)` alone (what the paper compares `D_σ` against).
    pub fn network_output(&self, x: &Tensor, sigma: &Sigma, graph: Graph) -> Result<Tensor> {
        match graph {
            Graph::Inference => tch::no_grad(|| self.net.forward(x, sigma)),
            Graph::Training => self.net.forward(x, sigma),
        }
    }

    /// `g_σ(x) = ½‖x − N_σ(x)‖²`, one value per image (shape `[B]`).
    pub fn potential(&self, x: &Tensor, sigma: &Sigma, graph: Graph) -> Result<Tensor> {
        let n = self.network_output(x, sigma, graph)?;
        half_squared_norm(&x.f_sub(&n)?)
    }

    /// `∇g_σ(x)`.
    pub fn grad(&self, x: &Tensor, sigma: &Sigma, graph: Graph) -> Result<Tensor> {
        Ok(self.potential_and_grad(x, sigma, graph)?.1)
    }

    /// `D_σ(x) = x − ∇g_σ(x)`.
    pub fn denoise(&self, x: &Tensor, sigma: &Sigma, graph: Graph) -> Result<Tensor> {
        let g = self.grad(x, sigma, graph)?;
        Ok(x.f_sub(&g)?)
    }

    /// `(g_σ(x), ∇g_σ(x))` from one forward pass: what GS-PnP needs at every iteration.
    /// With [`Graph::Inference`] the denoiser's [`Tiling`] applies.
    pub fn potential_and_grad(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        graph: Graph,
    ) -> Result<(Tensor, Tensor)> {
        let _precision = AutocastGuard::cuda(self.precision);
        match graph {
            Graph::Inference => self.inference(x, sigma),
            Graph::Training => self.whole(x, sigma, Graph::Training),
        }
    }

    /// `(r, ∇g_σ(x))` with `r = x − N_σ(x)`, over the whole input.
    fn residual_and_grad(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        graph: Graph,
    ) -> Result<(Tensor, Tensor)> {
        match (self.method, graph) {
            (GradMethod::Adjoint, Graph::Inference) => tch::no_grad(|| self.adjoint_grad(x, sigma)),
            (GradMethod::Adjoint, Graph::Training) => self.adjoint_grad(x, sigma),
            (GradMethod::Autograd, _) => {
                let xg = leaf_requiring_grad(x, graph)?;
                let (r, grad) = self.autograd_grad(&xg, sigma, graph == Graph::Training)?;
                Ok(match graph {
                    Graph::Inference => (r.f_detach()?, grad.f_detach()?),
                    Graph::Training => (r, grad),
                })
            }
        }
    }

    /// Inference-time `(g_σ, ∇g_σ)` under the denoiser's [`Tiling`].
    fn inference(&self, x: &Tensor, sigma: &Sigma) -> Result<(Tensor, Tensor)> {
        match self.tiling {
            Tiling::Whole => self.whole(x, sigma, Graph::Inference),
            Tiling::Fixed { tile, overlap } => self.tiled(x, sigma, tile, overlap),
            Tiling::Auto { overlap } => {
                let known = self.auto_tile.load(Ordering::Relaxed);
                let first = if known > 0 {
                    self.tiled(x, sigma, known, overlap)
                } else {
                    self.whole(x, sigma, Graph::Inference)
                };
                match first {
                    Err(e) if is_too_large(&e) => {
                        let s = x.size();
                        let start = if known > 0 {
                            known / 2
                        } else {
                            s[2].max(s[3]) / 2
                        };
                        let (tile, out) = halve_until_fits(start, MIN_AUTO_TILE, |t| {
                            self.tiled(x, sigma, t, overlap)
                        })?;
                        self.auto_tile.store(tile, Ordering::Relaxed);
                        Ok(out)
                    }
                    other => other,
                }
            }
        }
    }

    /// `(g_σ, ∇g_σ)` over the whole input.
    fn whole(&self, x: &Tensor, sigma: &Sigma, graph: Graph) -> Result<(Tensor, Tensor)> {
        let (r, grad) = self.residual_and_grad(x, sigma, graph)?;
        Ok((half_squared_norm(&r)?, grad))
    }

    /// `(g_σ, ∇g_σ)` tile by tile: each core of `tile` pixels is cut from `∇g_σ` of a window
    /// extended by `overlap`; `g_σ` sums `½‖r‖²` over the cores.
    fn tiled(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        tile: i64,
        overlap: i64,
    ) -> Result<(Tensor, Tensor)> {
        let s = x.size();
        if s.len() != 4 {
            return Err(ModelError::Invalid(format!(
                "input has shape {s:?}, expected [batch, channels, height, width]"
            )));
        }
        let grad = x.f_zeros_like()?;
        let mut pot = Tensor::f_zeros([s[0]], (x.f_kind()?, x.device()))?;
        for sy in spans(s[2], tile, overlap) {
            for sx in spans(s[3], tile, overlap) {
                let window = x.f_narrow(2, sy.window_start, sy.window_len)?.f_narrow(
                    3,
                    sx.window_start,
                    sx.window_len,
                )?;
                let sig = sigma.window(
                    sy.window_start,
                    sx.window_start,
                    sy.window_len,
                    sx.window_len,
                )?;
                let (r, g) = self.residual_and_grad(&window, &sig, Graph::Inference)?;
                let core = |t: &Tensor| -> Result<Tensor> {
                    Ok(t.f_narrow(2, sy.start - sy.window_start, sy.len)?
                        .f_narrow(3, sx.start - sx.window_start, sx.len)?)
                };
                grad.f_narrow(2, sy.start, sy.len)?
                    .f_narrow(3, sx.start, sx.len)?
                    .f_copy_(&core(&g)?)?;
                pot = pot.f_add(&half_squared_norm(&core(&r)?)?)?;
            }
        }
        Ok((pot, grad))
    }

    /// `∇²g_σ(x)·v`.
    pub fn hessian_vector_product(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        v: &Tensor,
        graph: Graph,
    ) -> Result<Tensor> {
        self.gradient_at(x, sigma)?.hessian_vector_product(v, graph)
    }

    /// `∇g_σ(x)` with the graph needed for Hessian-vector products at `x`. If `x` already
    /// requires grad it is used as is (so products can reach earlier parts of a graph);
    /// otherwise a leaf copy is made.
    pub fn gradient_at(&self, x: &Tensor, sigma: &Sigma) -> Result<GradientAt> {
        let x = leaf_requiring_grad(x, Graph::Training)?;
        let _precision = AutocastGuard::cuda(self.precision);
        let grad = match self.method {
            GradMethod::Adjoint => self.adjoint_grad(&x, sigma)?.1,
            GradMethod::Autograd => self.autograd_grad(&x, sigma, true)?.1,
        };
        Ok(GradientAt { x, grad })
    }

    /// `r = x − N(x)`, `∇g = r − J_Nᵀ r` with the explicit adjoint.
    fn adjoint_grad(&self, x: &Tensor, sigma: &Sigma) -> Result<(Tensor, Tensor)> {
        let (n, cache) = self.net.forward_cached(x, sigma)?;
        let r = x.f_sub(&n)?;
        let jt_r = self.net.adjoint(cache, &r)?;
        let grad = r.f_sub(&jt_r)?;
        Ok((r, grad))
    }

    /// `(r, ∇g)`, `∇g` as the autograd gradient of `Σ_b g_σ(x_b)` with respect to `x` (which
    /// must require grad); `create_graph` keeps it differentiable (double backward).
    fn autograd_grad(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        create_graph: bool,
    ) -> Result<(Tensor, Tensor)> {
        let n = self.net.forward(x, sigma)?;
        let r = x.f_sub(&n)?;
        let total = half_squared_norm(&r)?.f_sum(r.kind())?;
        let mut g = Tensor::f_run_backward(&[total], &[x], create_graph, create_graph)?;
        let g = g
            .pop()
            .ok_or_else(|| ModelError::Invalid("empty backward".into()))?;
        Ok((r, g))
    }
}

/// `½‖r_b‖²` for each image `b` of a `[B, C, H, W]` tensor.
fn half_squared_norm(r: &Tensor) -> Result<Tensor> {
    Ok(r.f_square()?
        .f_sum_dim_intlist([1i64, 2, 3].as_slice(), false, None::<Kind>)?
        .f_mul_scalar(0.5)?)
}

/// `x` itself if it already requires grad and a graph is wanted; otherwise a detached
/// leaf that requires grad.
fn leaf_requiring_grad(x: &Tensor, graph: Graph) -> Result<Tensor> {
    if graph == Graph::Training && x.requires_grad() {
        Ok(x.shallow_clone())
    } else {
        Ok(x.f_detach()?.set_requires_grad(true))
    }
}
