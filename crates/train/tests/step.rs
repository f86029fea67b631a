//! The shared training step ([`gradstep_train::step`]): the gradient-sync hook sees every
//! gradient once per step, between backward and the update, and what it writes is what Adam
//! uses; the GS and Prox steps of a config are the ones the trainer runs.
//! On the CPU with libtorch on one thread (see `training.rs`).
use std::sync::{Mutex, MutexGuard};

use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser};
use gradstep_train::prox::ProxPenaltyConfig;
use gradstep_train::step::{GradientSync, GsStep, LocalOnly, NoisyBatch, ProxStep, TrainingStep};
use gradstep_train::{Adam, AdamConfig, TrainConfig, TrainError};
use tch::{Device, Kind, Tensor};

/// torch's global RNG (weight init) is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    guard
}

/// A tiny denoiser (widths 8…64, one block) with weights from `seed`, and Adam over it.
fn model(activation: Activation, seed: i64) -> (GradientStepDenoiser, Adam) {
    tch::manual_seed(seed);
    let arch = DrunetConfig {
        blocks: 1,
        ..DrunetConfig::tiny(activation)
    };
    let den = GradientStepDenoiser::new(Drunet::new(&arch, Device::Cpu).unwrap());
    let params = den.network().var_store().variables().into_iter().collect();
    let adam = Adam::new(params, AdamConfig::default()).unwrap();
    (den, adam)
}

/// A batch of 2 colour 16² patches with per-image `σ`, the noise drawn from `seed`.
fn batch(seed: i64) -> NoisyBatch {
    tch::manual_seed(seed);
    let clean = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let xi = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    NoisyBatch::from_noise(&clean, &xi, vec![15.0 / 255.0, 40.0 / 255.0]).unwrap()
}

/// Every parameter, flattened and concatenated in name order.
fn weights(den: &GradientStepDenoiser) -> Tensor {
    let vars = den.network().var_store().variables();
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    let parts: Vec<Tensor> = names
        .iter()
        .map(|n| vars[n].detach().reshape([-1]))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Counts its calls and the gradients it got, and writes zeros into them.
#[derive(Default)]
struct ZeroingSync {
    calls: usize,
    tensors: usize,
    nonzero_seen: bool,
}

impl GradientSync for ZeroingSync {
    fn average(&mut self, grads: &[Tensor]) -> Result<(), TrainError> {
        self.calls += 1;
        self.tensors += grads.len();
        for g in grads {
            self.nonzero_seen |= g.abs().sum(Kind::Double).double_value(&[]) > 0.0;
            let _ = g.shallow_clone().zero_();
        }
        Ok(())
    }
}

/// The hook runs once per step after backward (it sees non-zero gradients, one per
/// parameter) and before clipping and Adam: zeroed gradients give a zero norm and no
/// update, where [`LocalOnly`] trains.
#[test]
fn the_sync_hook_sees_every_gradient_after_backward_and_adam_uses_what_it_wrote() {
    let _serial = serial();
    let gs = GsStep {
        precision: Default::default(),
        clip_grad_norm: Some(1e-2),
    };
    let prox = ProxStep {
        penalty: ProxPenaltyConfig {
            max_products: 3,
            ..Default::default()
        },
        precision: Default::default(),
        clip_grad_norm: Some(1e-2),
        seed: 5,
    };
    for (activation, use_prox) in [(Activation::Elu, false), (Activation::Softplus, true)] {
        let run = |den: &GradientStepDenoiser, adam: &mut Adam, sync: &mut dyn GradientSync| {
            if use_prox {
                prox.run(den, adam, &batch(3), 0, 1e-3, sync).unwrap()
            } else {
                gs.run(den, adam, &batch(3), 1e-3, sync).unwrap()
            }
        };
        let (den, mut adam) = model(activation, 1);
        let n_params = den.network().var_store().variables().len();
        let before = weights(&den);
        let mut zeroing = ZeroingSync::default();
        let scalars = run(&den, &mut adam, &mut zeroing);
        assert_eq!(zeroing.calls, 1, "prox {use_prox}");
        assert_eq!(zeroing.tensors, n_params, "prox {use_prox}");
        assert!(
            zeroing.nonzero_seen,
            "prox {use_prox}: hook ran before backward"
        );
        assert_eq!(
            scalars.grad_norm, 0.0,
            "prox {use_prox}: clipping before the hook"
        );
        assert!(scalars.loss.is_finite() && scalars.loss > 0.0);
        assert_eq!(
            weights(&den)
                .f_sub(&before)
                .unwrap()
                .abs()
                .max()
                .double_value(&[]),
            0.0,
            "prox {use_prox}: Adam did not use the hook's gradients"
        );
        assert_eq!(adam.step_count(), 1);

        let (den, mut adam) = model(activation, 1);
        let scalars = run(&den, &mut adam, &mut LocalOnly);
        assert!(scalars.grad_norm > 0.0);
        assert_eq!(scalars.prox.is_some(), use_prox);
        assert!(
            weights(&den)
                .f_sub(&before)
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                > 0.0
        );
    }
}

/// [`TrainingStep::from_config`] is the GS step for `objective = gs` and the Prox step with
/// the config's penalty, precision, clipping and seed for `objective = prox`.
#[test]
fn the_config_chooses_the_step() {
    let path = |name: &str| format!("{}/../../configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let gs = TrainConfig::load(path("gs-drunet.json").as_ref(), &[]).unwrap();
    let TrainingStep::Gs(step) = TrainingStep::from_config(&gs) else {
        panic!("gs-drunet.json trains with the GS step");
    };
    assert_eq!(step.precision, gs.performance.precision);
    assert_eq!(step.clip_grad_norm, gs.clip_grad_norm);
    let prox = TrainConfig::load(path("prox-drunet.json").as_ref(), &["seed=9".into()]).unwrap();
    let TrainingStep::Prox(step) = TrainingStep::from_config(&prox) else {
        panic!("prox-drunet.json trains with the Prox step");
    };
    let gradstep_train::Objective::Prox(penalty) = &prox.objective else {
        unreachable!()
    };
    assert_eq!(&step.penalty, penalty);
    assert_eq!((step.seed, step.clip_grad_norm), (9, Some(0.01)));
}
