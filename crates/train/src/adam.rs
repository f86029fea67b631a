//! Adam over named parameters, with state that can be saved and restored exactly.
//!
//! Written by hand because tch's `nn::Optimizer` does not expose Adam's moments, and exact
//! resume needs them. The update is PyTorch's `torch.optim.Adam` (no weight decay, no
//! amsgrad), step `t` counted from 1:
//! ```text
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};

/// Adam's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (changed by the schedule).
    pub lr: f64,
    /// `β₁`.
    pub beta1: f64,
    /// `β₂`.
    pub beta2: f64,
    /// `ε`.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam with its moments `m`, `v` per parameter and the step count.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i64,
}

impl Adam {
    /// Adam over `params` (names must be unique; the order is made canonical by name).
    pub fn new(params: BTreeMap<String, Tensor>, config: AdamConfig) -> Result<Self> {
        let params: Vec<(String, Tensor)> = params.into_iter().collect();
        let m = params
            .iter()
            .map(|(_, p)| p.f_zeros_like())
            .collect::<std::result::Result<_, _>>()?;
        let v = params
            .iter()
            .map(|(_, p)| p.f_zeros_like())
            .collect::<std::result::Result<_, _>>()?;
        Ok(Adam {
            config,
            params,
            m,
            v,
            step: 0,
        })
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate (the schedule does this).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Number of updates done.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Clears the parameters' gradients.
    pub fn zero_grad(&mut self) -> Result<()> {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_detach_()?;
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }

    /// `‖∇θ‖₂` over all parameters (those without gradient count as zero).
    pub fn grad_norm(&self) -> Result<f64> {
        let mut total = 0.0;
        for (_, p) in &self.params {
            let g = p.grad();
            if g.defined() {
                total += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
        }
        Ok(total.sqrt())
    }

    /// Scales the gradients so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: factor `min(1, max_norm / (‖∇θ‖ + 10⁻⁶))`). Returns the norm
    /// before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm()?;
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            for (_, p) in &self.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.f_mul_scalar_(coef)?;
                }
            }
        }
        Ok(norm)
    }

    /// One Adam update with the current gradients.
    pub fn step(&mut self) -> Result<()> {
        self.step += 1;
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
        } = self.config;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| -> Result<()> {
            for (i, (_, p)) in self.params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let m = &mut self.m[i];
                let v = &mut self.v[i];
                let _ = m
                    .f_mul_scalar_(beta1)?
                    .f_add_(&g.f_mul_scalar(1.0 - beta1)?)?;
                let _ = v
                    .f_mul_scalar_(beta2)?
                    .f_add_(&g.f_square()?.f_mul_scalar(1.0 - beta2)?)?;
                let denom = v.f_sqrt()?.f_div_scalar(bc2.sqrt())?.f_add_scalar(eps)?;
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(lr / bc1)?)?;
            }
            Ok(())
        })
    }

    /// The state to checkpoint: `m.<name>` and `v.<name>` tensors, and the step count.
    pub fn state(&self) -> Result<(BTreeMap<String, Tensor>, i64)> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].f_detach_copy()?);
            out.insert(format!("v.{name}"), self.v[i].f_detach_copy()?);
        }
        Ok((out, self.step))
    }

    /// Restores a state saved by [`Adam::state`]; every moment must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, step: i64) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (kind, dst) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{kind}.{name}");
                let src = state.get(&key).ok_or_else(|| {
                    TrainError::Resume(format!("optimizer state `{key}` missing"))
                })?;
                if src.size() != p.size() {
                    return Err(TrainError::Resume(format!(
                        "optimizer state `{key}` has shape {:?}, parameter has {:?}",
                        src.size(),
                        p.size()
                    )));
                }
                *dst = src.f_to_kind(p.kind())?.f_to_device(p.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}
