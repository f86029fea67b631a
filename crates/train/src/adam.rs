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

/// Adam with its moments `m`, `v` and the step count.
///
/// The moments of all parameters live in two flat buffers and the update is made on the
/// concatenated gradient: a dozen kernels per step instead of a dozen per parameter (DRUNet
/// has 66), and one host read for the gradient norm instead of one per parameter. On a GPU
/// the optimizer otherwise launches ~900 tiny kernels per step while the device waits.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    params: Vec<(String, Tensor)>,
    /// `(offset, numel)` of each parameter in the flat buffers.
    spans: Vec<(i64, i64)>,
    m: Tensor,
    v: Tensor,
    /// Factor the next [`Adam::step`] applies to the gradients (set by clipping).
    grad_scale: f64,
    /// The same factor as a device tensor, set by [`Adam::clip_grad_norm_on_device`].
    device_scale: Option<Tensor>,
    step: i64,
}

impl Adam {
    /// Adam over `params` (names must be unique; the order is made canonical by name). All
    /// parameters must share one precision and device.
    pub fn new(params: BTreeMap<String, Tensor>, config: AdamConfig) -> Result<Self> {
        let params: Vec<(String, Tensor)> = params.into_iter().collect();
        let mut spans = Vec::with_capacity(params.len());
        let mut total = 0;
        for (_, p) in &params {
            let n = p.numel() as i64;
            spans.push((total, n));
            total += n;
        }
        let (kind, device) = match params.first() {
            Some((_, p)) => (p.f_kind()?, p.device()),
            None => (Kind::Float, tch::Device::Cpu),
        };
        if let Some((name, _)) = params
            .iter()
            .find(|(_, p)| p.kind() != kind || p.device() != device)
        {
            return Err(TrainError::Config(format!(
                "parameter `{name}` differs in precision or device from the others"
            )));
        }
        let m = Tensor::f_zeros([total], (kind, device))?;
        let v = Tensor::f_zeros([total], (kind, device))?;
        Ok(Adam {
            config,
            params,
            spans,
            m,
            v,
            grad_scale: 1.0,
            device_scale: None,
            step: 0,
        })
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate (the schedule's milestones).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Zeroes the gradients (in place, so that backward accumulates into the same tensors).
    pub fn zero_grad(&mut self) -> Result<()> {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_detach_()?;
                let _ = g.f_zero_()?;
            }
        }
        self.grad_scale = 1.0;
        self.device_scale = None;
        Ok(())
    }

    /// The parameters' `.grad()` tensors (sharing storage with them: writing into one
    /// changes what the next step uses), in the canonical order (by name); parameters
    /// without a gradient are left out.
    pub fn gradients(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// Parameter `i`'s slice of a flat buffer, shaped like the parameter.
    fn view(&self, flat: &Tensor, i: usize) -> Result<Tensor> {
        let (off, n) = self.spans[i];
        Ok(flat
            .f_narrow(0, off, n)?
            .f_view(self.params[i].1.size().as_slice())?)
    }

    /// All gradients concatenated in the flat layout (zeros where a parameter has none),
    /// and whether every parameter has one.
    fn flat_grad(&self) -> Result<(Tensor, bool)> {
        let mut parts = Vec::with_capacity(self.params.len());
        let mut all = true;
        for (_, p) in &self.params {
            let g = p.grad();
            if g.defined() {
                parts.push(g.f_detach()?.f_reshape([-1])?);
            } else {
                all = false;
                parts.push(p.f_detach()?.f_zeros_like()?.f_reshape([-1])?);
            }
        }
        if parts.is_empty() {
            return Ok((self.m.f_zeros_like()?, true));
        }
        Ok((Tensor::f_cat(&parts, 0)?, all))
    }

    /// `θ ← θ − update` for an update in the flat layout.
    fn subtract(&self, update: &Tensor) -> Result<()> {
        for (i, (_, p)) in self.params.iter().enumerate() {
            let _ = p.shallow_clone().f_sub_(&self.view(update, i)?)?;
        }
        Ok(())
    }

    /// The concatenated gradient times the pending clipping factor (host or device), which is
    /// used up; and whether every parameter has a gradient.
    fn take_scaled_grad(&mut self) -> Result<(Tensor, bool)> {
        let scale = std::mem::replace(&mut self.grad_scale, 1.0);
        let device_scale = self.device_scale.take();
        let (mut g, all) = self.flat_grad()?;
        if scale != 1.0 {
            g = g.f_mul_scalar(scale)?;
        }
        if let Some(c) = device_scale {
            g = g.f_mul(&c.f_to_kind(g.kind())?)?;
        }
        Ok((g, all))
    }

    /// `‖∇θ‖₂` over all parameters as a one-element float32 tensor, left on the device.
    pub fn grad_norm_on_device(&self) -> Result<Tensor> {
        let (g, _) = self.flat_grad()?;
        Ok(g.f_square()?.f_sum(Kind::Float)?.f_sqrt()?.f_reshape([1])?)
    }

    /// `‖∇θ‖₂` over all parameters, as the next step will use it (after any clipping).
    pub fn grad_norm(&self) -> Result<f64> {
        let (g, _) = self.flat_grad()?;
        let norm = g
            .f_square()?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?
            .sqrt();
        Ok(norm * self.grad_scale)
    }

    /// Scales the gradients so that their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`, with its `1e-6`); returns the norm before clipping. The factor is
    /// applied by the next [`Adam::step`] to the concatenated gradient (and is reflected by
    /// [`Adam::grad_norm`]), not written back into each parameter's `.grad`.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm()?;
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        self.grad_scale *= coef;
        Ok(norm)
    }

    /// One Adam step with the current gradients (scaled by a pending clipping factor, from
    /// [`Adam::clip_grad_norm`] or [`Adam::clip_grad_norm_on_device`]).
    pub fn step(&mut self) -> Result<()> {
        self.step += 1;
        let AdamConfig { beta1, beta2, .. } = self.config;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| -> Result<()> {
            let (g, all) = self.take_scaled_grad()?;
            if all {
                let update = adam_update(&mut self.m, &mut self.v, &g, self.config, bc1, bc2)?;
                self.subtract(&update)?;
            } else {
                // Parameters without a gradient keep their moments (as PyTorch skips them).
                for (i, (_, p)) in self.params.iter().enumerate() {
                    if !p.grad().defined() {
                        continue;
                    }
                    let (mut m, mut v) = (self.view(&self.m, i)?, self.view(&self.v, i)?);
                    let gi = self.view(&g, i)?;
                    let update = adam_update(&mut m, &mut v, &gi, self.config, bc1, bc2)?;
                    let mut p = p.shallow_clone();
                    let _ = p.f_sub_(&update)?;
                }
            }
            Ok(())
        })
    }

    /// The step count and learning rate as one-element float32 tensors on the parameters'
    /// device, from the current host values: what [`Adam::step_on_device`] reads. A step
    /// captured in a CUDA graph replays its kernels with the numbers baked in at capture, so
    /// whatever changes between steps must live in device memory.
    pub fn device_hyper(&self) -> Result<DeviceHyper> {
        let device = self.m.device();
        let one = |v: f64| Tensor::f_full([1], v, (Kind::Float, device));
        Ok(DeviceHyper {
            step: one(self.step as f64)?,
            lr: one(self.config.lr)?,
        })
    }

    /// Counts a step made by [`Adam::step_on_device`] (or a replay of one) on the host, so
    /// that [`Adam::step_count`] and checkpoints stay right.
    pub fn count_device_step(&mut self) {
        self.step += 1;
    }

    /// [`Adam::clip_grad_norm`] without reading anything back: the norm (returned, a
    /// one-element tensor) and the factor `min(1, max_norm / (‖∇θ‖ + 10⁻⁶))` stay on the
    /// device, and the next [`Adam::step`] or [`Adam::step_on_device`] applies the factor.
    pub fn clip_grad_norm_on_device(&mut self, max_norm: f64) -> Result<Tensor> {
        let norm = self.grad_norm_on_device()?;
        let coef = norm
            .f_add_scalar(1e-6)?
            .f_reciprocal()?
            .f_mul_scalar(max_norm)?
            .f_clamp_max(1.0)?;
        self.device_scale = Some(coef);
        Ok(norm)
    }

    /// One Adam step that reads its step count and learning rate from `h` and increments
    /// `h.step` on the device: no host number enters the kernels, so the step can be
    /// captured once and replayed. The host counter [`Adam::step_count`] is not advanced
    /// (replays would not advance it either); `h.step` counts. Every parameter must have a
    /// gradient.
    pub fn step_on_device(&mut self, h: &mut DeviceHyper) -> Result<()> {
        let AdamConfig {
            beta1, beta2, eps, ..
        } = self.config;
        tch::no_grad(|| -> Result<()> {
            let _ = h.step.f_add_scalar_(1.0)?;
            let (g, all) = self.take_scaled_grad()?;
            if !all {
                return Err(TrainError::Config(
                    "a device step needs a gradient for every parameter".into(),
                ));
            }
            // 1 − βᵗ = 1 − exp(t ln β), computed on the device.
            let bias = |beta: f64| -> Result<Tensor> {
                Ok(h.step
                    .f_mul_scalar(beta.ln())?
                    .f_exp()?
                    .f_neg()?
                    .f_add_scalar(1.0)?)
            };
            let (bc1, bc2) = (bias(beta1)?, bias(beta2)?);
            update_moments(&mut self.m, &mut self.v, &g, self.config)?;
            let denom = self
                .v
                .f_sqrt()?
                .f_div(&bc2.f_sqrt()?.f_to_kind(g.kind())?)?
                .f_add_scalar(eps)?;
            let factor = h.lr.f_div(&bc1)?.f_to_kind(g.kind())?;
            let update = self.m.f_div(&denom)?.f_mul(&factor)?;
            self.subtract(&update)?;
            Ok(())
        })
    }

    /// The state to checkpoint: `m.<name>` and `v.<name>` tensors, and the step count.
    pub fn state(&self) -> Result<(BTreeMap<String, Tensor>, i64)> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.view(&self.m, i)?.f_detach_copy()?);
            out.insert(format!("v.{name}"), self.view(&self.v, i)?.f_detach_copy()?);
        }
        Ok((out, self.step))
    }

    /// Restores a state saved by [`Adam::state`]; every moment must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, step: i64) -> Result<()> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for kind in ["m", "v"] {
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
                let flat = if kind == "m" { &self.m } else { &self.v };
                let mut dst = self.view(flat, i)?;
                tch::no_grad(|| dst.f_copy_(src))?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Adam's step count and learning rate in device memory (see [`Adam::device_hyper`]).
#[derive(Debug)]
pub struct DeviceHyper {
    /// Steps taken (float32, one element); [`Adam::step_on_device`] adds one.
    pub step: Tensor,
    /// Learning rate (float32, one element); change it with `fill_` between steps.
    pub lr: Tensor,
}

/// `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²` in place.
fn update_moments(m: &mut Tensor, v: &mut Tensor, g: &Tensor, c: AdamConfig) -> Result<()> {
    let _ = m
        .f_mul_scalar_(c.beta1)?
        .f_add_(&g.f_mul_scalar(1.0 - c.beta1)?)?;
    let _ = v
        .f_mul_scalar_(c.beta2)?
        .f_add_(&g.f_square()?.f_mul_scalar(1.0 - c.beta2)?)?;
    Ok(())
}

/// [`update_moments`], then the step
/// `(lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)` to subtract from the parameters.
fn adam_update(
    m: &mut Tensor,
    v: &mut Tensor,
    g: &Tensor,
    c: AdamConfig,
    bc1: f64,
    bc2: f64,
) -> Result<Tensor> {
    update_moments(m, v, g, c)?;
    let denom = v.f_sqrt()?.f_div_scalar(bc2.sqrt())?.f_add_scalar(c.eps)?;
    Ok(m.f_div(&denom)?.f_mul_scalar(c.lr / bc1)?)
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

    /// Two parameters of different shapes, one of which gets a zero gradient at one step:
    /// the flat update must equal the per-parameter rule for both.
    #[test]
    fn flat_update_matches_per_parameter_updates() {
        tch::set_num_threads(1);
        let cfg = AdamConfig {
            lr: 0.01,
            ..Default::default()
        };
        let a = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25])
            .view([2, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[1.5f32, -0.5, 0.75]).set_requires_grad(true);
        let mut params = BTreeMap::new();
        params.insert("a".to_string(), a.shallow_clone());
        params.insert("b".to_string(), b.shallow_clone());
        let mut adam = Adam::new(params, cfg).unwrap();
        // Reference moments, per parameter, in f64.
        let mut pa: Vec<f64> = Vec::try_from(&a.reshape([-1]).to_kind(Kind::Double)).unwrap();
        let mut pb: Vec<f64> = Vec::try_from(&b.to_kind(Kind::Double)).unwrap();
        let (mut ma, mut va, mut mb, mut vb) =
            (vec![0.0; 4], vec![0.0; 4], vec![0.0; 3], vec![0.0; 3]);
        let mut ta = 0;
        let rule = |p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32| {
            for i in 0..p.len() {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let (mh, vh) = (
                    m[i] / (1.0 - 0.9f64.powi(t)),
                    v[i] / (1.0 - 0.999f64.powi(t)),
                );
                p[i] -= 0.01 * mh / (vh.sqrt() + 1e-8);
            }
        };
        for step in 1..=4 {
            adam.zero_grad().unwrap();
            let with_b = step != 3;
            let loss = if with_b {
                (&a * &a).sum(Kind::Float) + (&b * &b * &b).sum(Kind::Float)
            } else {
                (&a * &a).sum(Kind::Float)
            };
            loss.backward();
            adam.step().unwrap();
            let ga: Vec<f64> = pa.iter().map(|x| 2.0 * x).collect();
            ta += 1;
            rule(&mut pa, &mut ma, &mut va, &ga, ta);
            if with_b {
                let gb: Vec<f64> = pb.iter().map(|x| 3.0 * x * x).collect();
                rule(&mut pb, &mut mb, &mut vb, &gb, step);
            } else {
                // A zero gradient (defined) is still a step for Adam: moments decay.
                rule(&mut pb, &mut mb, &mut vb, &[0.0; 3], step);
            }
        }
        let got_a: Vec<f64> = Vec::try_from(&a.reshape([-1]).to_kind(Kind::Double)).unwrap();
        let got_b: Vec<f64> = Vec::try_from(&b.to_kind(Kind::Double)).unwrap();
        for (g, r) in got_a.iter().zip(&pa).chain(got_b.iter().zip(&pb)) {
            assert!((g - r).abs() < 1e-5, "{g} vs {r}");
        }
    }

    #[test]
    fn a_parameter_without_gradient_is_left_alone() {
        tch::set_num_threads(1);
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let unused = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let mut params = BTreeMap::new();
        params.insert("a".to_string(), a.shallow_clone());
        params.insert("unused".to_string(), unused.shallow_clone());
        let mut adam = Adam::new(params, AdamConfig::default()).unwrap();
        (&a * &a).sum(Kind::Float).backward();
        adam.step().unwrap();
        assert_eq!(unused.double_value(&[0]), 3.0);
        let (state, _) = adam.state().unwrap();
        assert_eq!(state["m.unused"].double_value(&[0]), 0.0);
        assert!(state["m.a"].abs().sum(Kind::Double).double_value(&[]) > 0.0);
        assert!(a.double_value(&[0]) < 1.0);
    }

    #[test]
    fn clipping_is_applied_by_the_step() {
        tch::set_num_threads(1);
        let cfg = AdamConfig {
            lr: 0.1,
            ..Default::default()
        };
        // With Adam, a uniformly scaled gradient changes the update only through ε: compare
        // the moments instead, which scale exactly.
        let (mut clipped, t1) = adam_on(&[3.0, 4.0], cfg);
        set_grad(&t1, &[1.0, 1.0], &[0.0, 0.0]);
        clipped.clip_grad_norm(0.5).unwrap();
        clipped.step().unwrap();
        let (m, _) = clipped.state().unwrap();
        let m: Vec<f64> = Vec::try_from(&m["m.w"].to_kind(Kind::Double)).unwrap();
        // g = (3, 4) · 0.5 / (5 + 1e-6), m = 0.1 g.
        let c = 0.5 / (5.0 + 1e-6);
        assert!(
            (m[0] - 0.1 * 3.0 * c).abs() < 1e-7 && (m[1] - 0.1 * 4.0 * c).abs() < 1e-7,
            "{m:?}"
        );
        assert_eq!(
            clipped.grad_norm().unwrap(),
            5.0,
            "the scale is used once, by that step"
        );
    }

    /// Asserts that two parameters hold the same values to `tol`; returns the first's.
    fn assert_same_values(a: &Tensor, b: &Tensor, tol: f64) -> Vec<f64> {
        let (x, y): (Vec<f64>, Vec<f64>) = (
            Vec::try_from(&a.to_kind(Kind::Double)).unwrap(),
            Vec::try_from(&b.to_kind(Kind::Double)).unwrap(),
        );
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < tol, "{x:?} vs {y:?}");
        }
        x
    }

    /// Two optimizers of the same parameter `[1, −2, 0.5]` (lr 0.05), to compare two ways of
    /// stepping.
    fn twins() -> ((Adam, Tensor), (Adam, Tensor)) {
        tch::set_num_threads(1);
        let cfg = AdamConfig {
            lr: 0.05,
            ..Default::default()
        };
        (
            adam_on(&[1.0, -2.0, 0.5], cfg),
            adam_on(&[1.0, -2.0, 0.5], cfg),
        )
    }

    /// Zeroes both twins' gradients and gives them the same new one.
    fn same_gradient(twins: [(&mut Adam, &Tensor); 2]) {
        for (a, t) in twins {
            a.zero_grad().unwrap();
            set_grad(t, &[1.0, 3.0, 0.5], &[0.2, -1.0, 0.7]);
        }
    }

    /// The device step (what a CUDA graph replays) makes the same updates as the host step,
    /// clipping included, and counts its steps on the device.
    #[test]
    fn device_step_matches_the_host_step() {
        let ((mut host, th), (mut dev, td)) = twins();
        let mut hyper = dev.device_hyper().unwrap();
        for _ in 0..4 {
            same_gradient([(&mut host, &th), (&mut dev, &td)]);
            let n_host = host.clip_grad_norm(0.5).unwrap();
            let n_dev = dev
                .clip_grad_norm_on_device(0.5)
                .unwrap()
                .double_value(&[0]);
            assert!((n_host - n_dev).abs() < 1e-5 * n_host);
            host.step().unwrap();
            dev.step_on_device(&mut hyper).unwrap();
        }
        assert_eq!(hyper.step.double_value(&[0]), 4.0);
        assert_eq!(dev.step_count(), 0, "the host counter is not advanced");
        let a = assert_same_values(&th, &td, 1e-6);
        assert!(
            a.iter().zip([1.0, -2.0, 0.5]).all(|(x, x0)| *x != x0),
            "it moved"
        );
    }

    /// The trainer clips on the device and steps on the host: same result as clipping on
    /// the host.
    #[test]
    fn device_clipping_with_the_host_step_matches_host_clipping() {
        let ((mut a, ta), (mut b, tb)) = twins();
        for _ in 0..3 {
            same_gradient([(&mut a, &ta), (&mut b, &tb)]);
            a.clip_grad_norm(0.3).unwrap();
            let _ = b.clip_grad_norm_on_device(0.3).unwrap();
            a.step().unwrap();
            b.step().unwrap();
        }
        assert_same_values(&ta, &tb, 1e-6);
        let (ma, _) = a.state().unwrap();
        let (mb, _) = b.state().unwrap();
        assert!(ma["m.w"].allclose(&mb["m.w"], 1e-6, 1e-7, false));
    }
}
