//! The shared training step ([`gradstep_train::step`]): the gradient-sync hook sees every
//! gradient once per step, between backward and the update, and what it writes is what Adam
//! uses; the GS and Prox steps of a config are the ones the trainer runs, and the
//! benchmarks' steps (`gradstep_bench::train_step`) give the trainer's weights bitwise.
//! On the CPU with libtorch on one thread (see `training.rs`).
use std::sync::{Mutex, MutexGuard};

use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser, Precision};
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

/// The denoiser and Adam of `cfg`, as the trainer builds them (weights from `cfg.seed`).
fn model_of(cfg: &TrainConfig) -> (GradientStepDenoiser, Adam) {
    tch::manual_seed(cfg.seed as i64);
    let net = Drunet::new(&cfg.model, Device::Cpu).unwrap();
    let den = GradientStepDenoiser::new(net).with_method(cfg.performance.grad_method);
    let params = den.network().var_store().variables().into_iter().collect();
    let adam = Adam::new(params, cfg.optimizer).unwrap();
    (den, adam)
}

/// Adam's moments, flattened and concatenated in name order.
fn moments(adam: &Adam) -> Tensor {
    let (state, _) = adam.state().unwrap();
    let parts: Vec<Tensor> = state.values().map(|t| t.reshape([-1])).collect();
    Tensor::cat(&parts, 0)
}

/// Issue 16: a benchmark that times something other than what training runs measures
/// nothing. From the same state (weights, Adam, batch, noise), one step of the benchmarks'
/// GS step and Prox step gives bitwise the weights and moments of one step of the trainer's
/// step for the shipped configs (tiny widths, so that it runs on the CPU).
#[test]
fn the_benchmark_steps_give_the_trainer_steps_weights_bitwise() {
    let _serial = serial();
    let path = |name: &str| format!("{}/../../configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let tiny = [
        "model.widths=[8,16,32,64]".to_string(),
        "model.blocks=1".into(),
    ];
    let gs = TrainConfig::load(path("gs-drunet.json").as_ref(), &tiny).unwrap();
    let prox = TrainConfig::load(path("prox-drunet.json").as_ref(), &tiny).unwrap();
    tch::manual_seed(21);
    let clean = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let xi = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let sigma = gradstep_bench::train_step::SIGMA;
    for cfg in [&gs, &prox] {
        let (den_trainer, mut adam_trainer) = model_of(cfg);
        let (den_bench, mut adam_bench) = model_of(cfg);
        assert!(weights(&den_trainer).equal(&weights(&den_bench)));
        let batch = NoisyBatch::from_noise(&clean, &xi, vec![sigma]).unwrap();
        let lr = cfg.schedule.lr(cfg.optimizer.lr, 0);
        let trained = TrainingStep::from_config(cfg)
            .run(
                &den_trainer,
                &mut adam_trainer,
                &batch,
                0,
                lr,
                &mut LocalOnly,
            )
            .unwrap();
        let benched = match &cfg.objective {
            gradstep_train::Objective::Gs => gradstep_bench::train_step::gs_step(
                &den_bench,
                &mut adam_bench,
                &clean,
                &xi,
                sigma,
                Precision::Fp32,
            ),
            gradstep_train::Objective::Prox(penalty) => gradstep_bench::train_step::prox_step(
                &den_bench,
                &mut adam_bench,
                &clean,
                &xi,
                sigma,
                penalty,
                0,
            ),
        }
        .unwrap();
        let name = &cfg.name;
        assert_eq!(trained.loss.to_bits(), benched.loss.to_bits(), "{name}");
        assert_eq!(
            trained.grad_norm.to_bits(),
            benched.grad_norm.to_bits(),
            "{name}"
        );
        assert_eq!(trained.prox.is_some(), name == "prox-drunet");
        assert!(
            weights(&den_trainer).equal(&weights(&den_bench)),
            "{name}: the weights differ"
        );
        assert!(
            moments(&adam_trainer).equal(&moments(&adam_bench)),
            "{name}: Adam's moments differ"
        );
        // And the step did train.
        let (fresh, _) = model_of(cfg);
        assert!(!weights(&fresh).equal(&weights(&den_trainer)), "{name}");
    }
}
