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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// `f(p) = Σ a_i p_i² / 2 + b_i p_i`, gradient `a_i p_i + b_i`.
    fn set_grad(p: &Tensor, a: &[f64], b: &[f64]) {
        let at = Tensor::from_slice(a).to_kind(Kind::Float);
        let bt = Tensor::from_slice(b).to_kind(Kind::Float);
        let loss = (&at * p * p * 0.5 + &bt * p).sum(Kind::Float);
        loss.backward();
    }

    fn adam_on(p0: &[f64], cfg: AdamConfig) -> (Adam, Tensor) {
        let p = Tensor::from_slice(p0)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .set_requires_grad(true);
        let mut params = BTreeMap::new();
        params.insert("w".to_string(), p.shallow_clone());
        (Adam::new(params, cfg).unwrap(), p)
    }

    #[test]
    fn matches_the_update_rule() {
        tch::set_num_threads(1);
        let (a, b) = ([1.0, 3.0, 0.5], [0.2, -1.0, 0.7]);
        let cfg = AdamConfig {
            lr: 0.05,
            ..Default::default()
        };
        let mut p = vec![1.0f64, -2.0, 0.5];
        let (mut adam, t) = adam_on(&p, cfg);
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        for step in 1..=5 {
            adam.zero_grad().unwrap();
            set_grad(&t, &a, &b);
            adam.step().unwrap();
            for i in 0..3 {
                let g = a[i] * p[i] + b[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.9f64.powi(step));
                let vh = v[i] / (1.0 - 0.999f64.powi(step));
                p[i] -= cfg.lr * mh / (vh.sqrt() + cfg.eps);
            }
        }
        let got = Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap();
        for i in 0..3 {
            assert!(
                (got[i] - p[i]).abs() < 1e-5,
                "p[{i}] = {} vs {}",
                got[i],
                p[i]
            );
        }
        assert_eq!(adam.step_count(), 5);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        tch::set_num_threads(1);
        let (mut adam, t) = adam_on(&[3.0, 4.0], AdamConfig::default());
        set_grad(&t, &[1.0, 1.0], &[0.0, 0.0]); // gradient (3, 4), norm 5
        let before = adam.clip_grad_norm(0.01).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        let after = adam.grad_norm().unwrap();
        assert!((after - 0.01).abs() < 1e-6, "clipped norm {after}");
        let g = Vec::<f64>::try_from(&t.grad().to_kind(Kind::Double)).unwrap();
        assert!((g[0] / g[1] - 0.75).abs() < 1e-6, "direction kept");
    }

    #[test]
    fn saved_state_continues_identically() {
        tch::set_num_threads(1);
        let cfg = AdamConfig {
            lr: 0.1,
            ..Default::default()
        };
        let (mut a1, t1) = adam_on(&[1.0, 2.0], cfg);
        for _ in 0..3 {
            a1.zero_grad().unwrap();
            set_grad(&t1, &[2.0, 1.0], &[0.5, -0.5]);
            a1.step().unwrap();
        }
        let (state, step) = a1.state().unwrap();
        let p_mid = Vec::<f64>::try_from(&t1.to_kind(Kind::Double)).unwrap();
        let (mut a2, t2) = adam_on(&p_mid, cfg);
        a2.load_state(&state, step).unwrap();
        for (a, t) in [(&mut a1, &t1), (&mut a2, &t2)] {
            a.zero_grad().unwrap();
            set_grad(t, &[2.0, 1.0], &[0.5, -0.5]);
            a.step().unwrap();
        }
        assert!(t1.equal(&t2), "{t1:?} vs {t2:?}");
        let mut bad: BTreeMap<String, Tensor> = state
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        bad.remove("v.w");
        assert!(a2.load_state(&bad, step).is_err());
    }
}
