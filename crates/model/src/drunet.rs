//! DRUNet "light", the network `N_σ` inside the gradient-step denoiser.
//!
//! ```text
//! x₀ = [x, σ]                       (C + 1 channels; σ on the [0, 1] scale)
//! x₁ = head(x₀)                     3×3 conv, C + 1 → w₁
//! x₂ = down₁(x₁), x₃ = down₂(x₂), x₄ = down₃(x₃)     blocks, then 2×2 stride-2 conv
//! b  = body(x₄)                     blocks at w₄
//! u₃ = up₃(b + x₄), u₂ = up₂(u₃ + x₃), u₁ = up₁(u₂ + x₂)   2×2 stride-2 transposed conv, then blocks
//! N  = tail(u₁ + x₁)                3×3 conv, w₁ → C
//! ```
//! No bias anywhere. Weight names follow deepinv / DPIR (`m_head`, `m_down1.0.res.0`, …,
//! `m_up3.0`, `m_tail`) so that published checkpoints load by name.
//!
//! Sizes that are not multiples of 8 are padded at the bottom and right by replicating
//! the last row / column (as DPIR's `test_pad`), and the output is cropped back:
//! `N'(x) = crop(N(pad(x)))`. The padding is part of the network, so `∇g_σ` stays the exact
//! gradient of `g_σ(x) = ½‖x − N'(x)‖²` and `D_σ` has the input's size.
//!
//! [`Drunet::adjoint`] applies `J_N(x)ᵀ` explicitly (transposed convolutions with the same
//! weights, times `φ'` of the cached pre-activations), so that `∇g_σ` is an ordinary forward
//! graph: training through `D_σ` then needs first-order autograd only.
//!
//! [`Drunet::set_memory_format`] can lay weights and activations out as NHWC
//! (`channels_last`); inputs and outputs stay ordinary NCHW tensors.
use tch::{nn, Device, Kind, Tensor};

use crate::config::{DrunetConfig, MemoryFormat};
use crate::error::{ModelError, Result};
use crate::res_block::{
    conv2x2, conv3x3, conv3x3_adjoint, conv_transpose2x2, pytorch_default_init, ResBlock,
};
use crate::sigma::Sigma;

/// Inputs are padded to a multiple of this (three stride-2 levels).
const MULTIPLE: i64 = 8;

/// One encoder stage (blocks, then a 2×2 stride-2 conv) or decoder stage (a 2×2 stride-2
/// transposed conv, then blocks).
#[derive(Debug)]
struct Stage {
    blocks: Vec<ResBlock>,
    resample: Tensor,
}

/// The DRUNet network with its weights (held in a `tch` [`nn::VarStore`]).
#[derive(Debug)]
pub struct Drunet {
    config: DrunetConfig,
    vs: nn::VarStore,
    head: Tensor,
    down: Vec<Stage>,
    body: Vec<ResBlock>,
    up: Vec<Stage>,
    tail: Tensor,
    memory_format: MemoryFormat,
}

/// `t` (4-d) with NHWC strides and the same shape: PyTorch's `channels_last`, which tch
/// does not expose (a permuted copy permuted back has exactly those strides).
fn channels_last(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

/// What the forward pass keeps for [`Drunet::adjoint`]: the blocks' pre-activations in
/// forward order, and the input's size before padding.
#[derive(Debug)]
pub struct ForwardCache {
    preactivations: Vec<Tensor>,
    height: i64,
    width: i64,
}

fn blocks(
    p: &nn::Path,
    first: usize,
    count: usize,
    width: i64,
    cfg: &DrunetConfig,
) -> Result<Vec<ResBlock>> {
    (first..first + count)
        .map(|i| ResBlock::new(&(p / i), width, cfg.activation))
        .collect()
}

impl Drunet {
    /// A network with fresh weights (PyTorch's default Kaiming-uniform convolution init),
    /// in float32 on `device`. Call [`tch::manual_seed`] first for reproducible weights.
    pub fn new(config: &DrunetConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let [w1, w2, w3, w4] = config.widths;
        let widths = [w1, w2, w3, w4];
        let nb = config.blocks;
        let head = (&root / "m_head").f_var(
            "weight",
            &[w1, config.channels + 1, 3, 3],
            pytorch_default_init((config.channels + 1) * 9),
        )?;
        let mut down = Vec::new();
        for level in 0..3 {
            let p = &root / format!("m_down{}", level + 1);
            let (w, next) = (widths[level], widths[level + 1]);
            down.push(Stage {
                blocks: blocks(&p, 0, nb, w, config)?,
                resample: (&p / nb).f_var(
                    "weight",
                    &[next, w, 2, 2],
                    pytorch_default_init(w * 4),
                )?,
            });
        }
        let body = blocks(&(&root / "m_body"), 0, nb, w4, config)?;
        let mut up = Vec::new();
        for level in (0..3).rev() {
            let p = &root / format!("m_up{}", level + 1);
            let (w, coarser) = (widths[level], widths[level + 1]);
            up.push(Stage {
                resample: (&p / 0).f_var(
                    "weight",
                    &[coarser, w, 2, 2],
                    pytorch_default_init(w * 4),
                )?,
                blocks: blocks(&p, 1, nb, w, config)?,
            });
        }
        let tail = (&root / "m_tail").f_var(
            "weight",
            &[config.channels, w1, 3, 3],
            pytorch_default_init(w1 * 9),
        )?;
        Ok(Drunet {
            config: config.clone(),
            vs,
            head,
            down,
            body,
            up,
            tail,
            memory_format: MemoryFormat::Contiguous,
        })
    }

    /// Lays the weights out in `format` (in place: the variables keep their identity, so
    /// optimisers and checkpoints see the same tensors) and makes later passes use it.
    ///
    /// Gradients already accumulated move with their weights: autograd accumulates into an
    /// existing `.grad` in that tensor's layout, and a gradient left NCHW under an NHWC
    /// weight breaks libtorch's gradient layout contract (its warning, and a copy per step).
    pub fn set_memory_format(&mut self, format: MemoryFormat) -> Result<()> {
        let lay_out = |t: &Tensor| match format {
            MemoryFormat::ChannelsLast => channels_last(t),
            MemoryFormat::Contiguous => Ok(t.f_contiguous()?),
        };
        for (_, mut v) in self.vs.variables() {
            let laid_out = lay_out(&v)?;
            tch::no_grad(|| v.f_set_data(&laid_out))?;
            let mut grad = v.grad();
            if grad.defined() {
                let laid_out = lay_out(&grad)?;
                tch::no_grad(|| grad.f_set_data(&laid_out))?;
            }
        }
        self.memory_format = format;
        Ok(())
    }

    /// The layout in use.
    pub fn memory_format(&self) -> MemoryFormat {
        self.memory_format
    }

    /// `t` in the network's layout.
    fn laid_out(&self, t: Tensor) -> Result<Tensor> {
        match self.memory_format {
            MemoryFormat::Contiguous => Ok(t),
            MemoryFormat::ChannelsLast => channels_last(&t),
        }
    }

    /// `t` back in NCHW for the caller.
    fn returned(&self, t: Tensor) -> Result<Tensor> {
        match self.memory_format {
            MemoryFormat::Contiguous => Ok(t),
            MemoryFormat::ChannelsLast => Ok(t.f_contiguous()?),
        }
    }

    /// The architecture.
    pub fn config(&self) -> &DrunetConfig {
        &self.config
    }

    /// The weights, by deepinv name (e.g. `m_down1.0.res.0.weight`).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable access to the weights (loading, changing precision or device).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The weights' precision.
    pub fn kind(&self) -> Kind {
        self.head.kind()
    }

    fn check_input(&self, x: &Tensor) -> Result<Vec<i64>> {
        let s = x.size();
        if s.len() != 4 || s[1] != self.config.channels {
            return Err(ModelError::Invalid(format!(
                "input has shape {s:?}, expected [batch, {}, height, width]",
                self.config.channels
            )));
        }
        Ok(s)
    }

    /// `N_σ(x)` for `x` of shape `[B, C, H, W]` (any `H`, `W`).
    pub fn forward(&self, x: &Tensor, sigma: &Sigma) -> Result<Tensor> {
        self.forward_impl(x, sigma, None)
    }

    /// `N_σ(x)` and what [`Drunet::adjoint`] needs.
    pub fn forward_cached(&self, x: &Tensor, sigma: &Sigma) -> Result<(Tensor, ForwardCache)> {
        let s = self.check_input(x)?;
        let mut pre = Vec::with_capacity(7 * self.config.blocks);
        let n = self.forward_impl(x, sigma, Some(&mut pre))?;
        Ok((
            n,
            ForwardCache {
                preactivations: pre,
                height: s[2],
                width: s[3],
            },
        ))
    }

    fn forward_impl(
        &self,
        x: &Tensor,
        sigma: &Sigma,
        mut cache: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let s = self.check_input(x)?;
        let (h, w) = (s[2], s[3]);
        let (ph, pw) = (pad_to(h), pad_to(w));
        let x0 = Tensor::f_cat(&[x.shallow_clone(), sigma.channel(&s, x)?], 1)?;
        let x0 = if ph > 0 || pw > 0 {
            x0.f_replication_pad2d([0, pw, 0, ph])?
        } else {
            x0
        };
        let x0 = self.laid_out(x0)?;
        let x1 = conv3x3(&x0, &self.head)?;
        let mut skips = vec![x1.shallow_clone()];
        let mut t = x1;
        for stage in &self.down {
            for b in &stage.blocks {
                t = b.forward(&t, cache.as_deref_mut())?;
            }
            t = conv2x2(&t, &stage.resample)?;
            skips.push(t.shallow_clone());
        }
        for b in &self.body {
            t = b.forward(&t, cache.as_deref_mut())?;
        }
        for stage in &self.up {
            let skip = skips.pop().expect("one skip per level");
            t = conv_transpose2x2(&t.f_add(&skip)?, &stage.resample)?;
            for b in &stage.blocks {
                t = b.forward(&t, cache.as_deref_mut())?;
            }
        }
        let skip = skips.pop().expect("head skip");
        // N_σ(x) ≈ x, so r = x − N_σ(x) is a difference of nearly equal numbers: rounded to
        // 16 bits, N would cost r its last digits (bf16: ±2e-3 at 0.5, against r ≈ σ). Under
        // autocast the tail convolution therefore takes its 16-bit input to the weights'
        // precision and runs outside autocast, as a float32 (TF32) convolution does: N keeps
        // a float32 output, and only the features carry 16-bit rounding.
        let tail_in = t.f_add(&skip)?;
        let n = crate::autocast::without_autocast(|| {
            conv3x3(&tail_in.f_to_kind(self.kind())?, &self.tail)
        })?;
        let n = if ph > 0 || pw > 0 {
            n.f_narrow(2, 0, h)?.f_narrow(3, 0, w)?
        } else {
            n
        };
        self.returned(n)
    }

    /// `J_N(x)ᵀ r`: the vector-Jacobian product of `N_σ` with respect to the image `x`
    /// (not σ), using the pre-activations kept by [`Drunet::forward_cached`]. Consumes the
    /// cache (it walks the pre-activations backwards).
    ///
    /// Per layer: a convolution `W *` becomes the transposed convolution `Wᵀ *` with the same
    /// weight (and vice versa for the stride-2 resampling); a residual block becomes
    /// `r + W₁ᵀ * (φ'(a) ⊙ (W₂ᵀ * r))`; an additive skip sends `r` down both branches;
    /// the replicate padding sends the padded rows' sum back to the last row.
    pub fn adjoint(&self, cache: ForwardCache, r: &Tensor) -> Result<Tensor> {
        let ForwardCache {
            mut preactivations,
            height,
            width,
        } = cache;
        let mut pre = || {
            preactivations.pop().ok_or_else(|| {
                ModelError::Invalid("adjoint cache does not match the network".into())
            })
        };
        let (ph, pw) = (pad_to(height), pad_to(width));
        let r = if ph > 0 || pw > 0 {
            r.f_constant_pad_nd([0, pw, 0, ph])?
        } else {
            r.shallow_clone()
        };
        let r = self.laid_out(r)?;
        // Gradient with respect to (u₁ + x₁): it flows into both the decoder and the head skip.
        let mut t = conv3x3_adjoint(&r, &self.tail)?;
        let mut skip_grads = vec![t.shallow_clone()];
        for stage in self.up.iter().rev() {
            for b in stage.blocks.iter().rev() {
                t = b.adjoint(&t, &pre()?)?;
            }
            t = conv2x2(&t, &stage.resample)?;
            skip_grads.push(t.shallow_clone());
        }
        // `t` is now the gradient with respect to (b + x₄): through the body, plus the skip.
        let skip4 = skip_grads.pop().expect("one skip per level");
        for b in self.body.iter().rev() {
            t = b.adjoint(&t, &pre()?)?;
        }
        t = t.f_add(&skip4)?;
        for stage in self.down.iter().rev() {
            t = conv_transpose2x2(&t, &stage.resample)?;
            for b in stage.blocks.iter().rev() {
                t = b.adjoint(&t, &pre()?)?;
            }
            t = t.f_add(&skip_grads.pop().expect("one skip per level"))?;
        }
        let g = conv3x3_adjoint(&t, &self.head)?.f_narrow(1, 0, self.config.channels)?;
        let g = replicate_pad_adjoint(&g, 2, height)?;
        self.returned(replicate_pad_adjoint(&g, 3, width)?)
    }
}

/// Rows (or columns) to add so that `n` becomes a multiple of 8.
fn pad_to(n: i64) -> i64 {
    (MULTIPLE - n % MULTIPLE) % MULTIPLE
}

/// Adjoint of replicate-padding dimension `dim` from `n` to `g.size()[dim]` at the end:
/// the padded entries copied entry `n − 1`, so their gradients add onto it.
fn replicate_pad_adjoint(g: &Tensor, dim: i64, n: i64) -> Result<Tensor> {
    let extra = g.size()[dim as usize] - n;
    if extra == 0 {
        return Ok(g.shallow_clone());
    }
    let main = g.f_narrow(dim, 0, n - 1)?;
    let last = g.f_narrow(dim, n - 1, extra + 1)?.f_sum_dim_intlist(
        [dim].as_slice(),
        true,
        None::<Kind>,
    )?;
    Ok(Tensor::f_cat(&[main, last], dim)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Activation;

    /// The layout must reach the activations (convolutions follow their inputs' and
    /// weights' layout), not only the weights: that is where the speed is.
    #[test]
    fn channels_last_reaches_every_cached_activation() {
        let mut net = Drunet::new(&DrunetConfig::tiny(Activation::Elu), Device::Cpu).unwrap();
        net.set_memory_format(MemoryFormat::ChannelsLast).unwrap();
        let x = Tensor::rand([2, 3, 20, 20], (Kind::Float, Device::Cpu));
        let (n, cache) = net.forward_cached(&x, &Sigma::Scalar(0.1)).unwrap();
        assert!(n.is_contiguous());
        assert_eq!(cache.preactivations.len(), 14);
        for (i, a) in cache.preactivations.iter().enumerate() {
            assert_eq!(
                a.stride()[1],
                1,
                "pre-activation {i}: strides {:?}",
                a.stride()
            );
        }
        net.set_memory_format(MemoryFormat::Contiguous).unwrap();
        let (_, cache) = net.forward_cached(&x, &Sigma::Scalar(0.1)).unwrap();
        assert!(cache.preactivations.iter().all(Tensor::is_contiguous));
    }
}
