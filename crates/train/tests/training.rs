//! End-to-end training on a tiny model and tiny images, on the CPU:
//! exact resume (2N straight = N + resume + N, bitwise), refusal of an architecture change,
//! refusal to overwrite a run, divergence stop keeping the last good checkpoint, the
//! loss going down, and `performance.grad_method` / `precision` not changing the result.
//! Each test runs libtorch on one thread: with tests in parallel on few cores, OpenMP's
//! spin-waiting makes multi-threaded libtorch many times slower.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use gradstep_model::Checkpoint;
use gradstep_train::checkpoints::{training_state, CheckpointStore};
use gradstep_train::{train, TrainConfig, TrainError, TrainOptions};

/// torch's global RNG (weight init, per-step noise) is process-wide: one run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Smooth random colour images (`n` of `h × w`) written as PNG into `dir`.
fn write_images(dir: &Path, n: usize, h: u32, w: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let f = |c: u32| {
                let (x, y, kc) = (x as f64, y as f64, (k * 3 + c as usize) as f64);
                (127.5 + 100.0 * ((x * 0.13 + kc).sin() * (y * 0.09 - kc).cos())) as u8
            };
            image::Rgb([f(0), f(1), f(2)])
        });
        img.save(dir.join(format!("img{k}.png"))).unwrap();
    }
}

/// The set-up of every test here: the lock (one run at a time), libtorch on one thread, and
/// a temporary folder with `n` images of `h × w` under `images/`.
fn sandbox(n: usize, h: u32, w: u32) -> (MutexGuard<'static, ()>, tempfile::TempDir) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"), n, h, w);
    (serial, dir)
}

fn config(root: &Path, name: &str, extra: &[&str]) -> TrainConfig {
    let images = root.join("images");
    let json = serde_json::json!({
        "name": name,
        "runs_dir": root.join("runs"),
        "model": {"channels": 3, "widths": [8, 16, 32, 64], "blocks": 1, "activation": "elu"},
        "data": {"roots": [images], "patch_size": 16, "channels": 3, "batch_size": 2,
                 "seed": 3, "prefetch": 2, "crops_per_image": 2, "threads": 2},
        "noise": {"sigma_min_255": 5.0, "sigma_max_255": 50.0, "per_image": true},
        "optimizer": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        "schedule": {"milestones": [2, 4], "gamma": 0.5},
        "steps": 6,
        "seed": 11,
        "validation": {"dirs": [images], "every": 3, "sigmas_255": [25.0], "crop": 32,
                       "limit": 2, "seed": 0, "batch_size": 2},
        "checkpoint": {"every": 3, "keep_last": 2},
        "log": {"every": 1, "images": true}
    });
    let path = root.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(&path, &sets).unwrap()
}

fn opts(resume: bool) -> TrainOptions {
    TrainOptions {
        device: tch::Device::Cpu,
        resume,
        quiet: true,
    }
}

fn max_abs_diff(a: &Checkpoint, b: &Checkpoint) -> f64 {
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    a.tensors
        .iter()
        .map(|(k, t)| (t - &b.tensors[k]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn resume_is_exact_and_guarded() {
    let (_serial, dir) = sandbox(4, 40, 48);
    let root = dir.path();

    let straight = train(&config(root, "straight", &[]), &opts(false)).unwrap();
    assert_eq!(straight.step, 6);
    assert!(!straight.interrupted());

    let half = train(&config(root, "split", &["steps=3"]), &opts(false)).unwrap();
    assert_eq!(half.step, 3);
    let resumed = train(&config(root, "split", &[]), &opts(true)).unwrap();
    assert_eq!(resumed.step, 6);

    let a = Checkpoint::read(&straight.checkpoint).unwrap();
    let b = Checkpoint::read(&resumed.checkpoint).unwrap();
    let diff = max_abs_diff(&a, &b);
    // Bitwise: same noise (seeded per step), same batches (sampler position), same Adam
    // state, one libtorch thread.
    assert!(
        diff == 0.0,
        "weights and moments differ by {diff} after resume"
    );
    let (sa, _) = training_state(&a, &straight.checkpoint).unwrap();
    let (sb, _) = training_state(&b, &resumed.checkpoint).unwrap();
    assert_eq!(
        (sa.step, sa.adam_step, sa.sampler),
        (sb.step, sb.adam_step, sb.sampler)
    );
    assert_eq!(sa.schedule_position, 2);
    assert!((sa.lr - 2.5e-4).abs() < 1e-12, "lr halved twice: {}", sa.lr);
    // Both validations ran and gave the same numbers.
    let (va, vb) = (straight.validation.unwrap(), resumed.validation.unwrap());
    assert_eq!(va.levels, vb.levels);
    assert!(va.levels[0].denoiser.is_finite());
    // keep_last = 2 plus best: steps 3 and 6.
    let store = CheckpointStore::new(&root.join("runs/straight"), 2);
    let steps: Vec<u64> = store.steps().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, [3, 6]);
    assert!(store.best_path().is_file());
    // TensorBoard events were written.
    let events = std::fs::read_dir(root.join("runs/straight"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with("events.out.tfevents.")
        })
        .count();
    assert_eq!(events, 1);

    // A changed architecture is refused on resume, with both architectures named.
    let err = train(
        &config(root, "split", &["model.blocks=2", "steps=8"]),
        &opts(true),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Resume(_)), "{err}");
    assert!(err.to_string().contains("architecture"), "{err}");
    // Starting over an existing run without --resume is refused.
    let err = train(&config(root, "split", &[]), &opts(false)).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[test]
fn a_config_built_in_code_is_validated_by_train() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    let mut cfg = config(root, "fp16", &[]);
    cfg.performance.precision = gradstep_train::performance::Precision::Fp16;
    let err = train(&cfg, &opts(false)).unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    assert!(err.to_string().contains("fp16"), "{err}");
    assert!(
        !cfg.run_dir().exists(),
        "nothing is written for a refused config"
    );
}

#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    // Adam moves every weight by ≈ lr per step: lr = 1 (the largest allowed) makes the
    // activations and the loss overflow float32 within a few steps.
    let cfg = config(
        root,
        "diverge",
        &[
            "optimizer.lr=1",
            "steps=20",
            "checkpoint.every=1",
            "validation.every=0",
        ],
    );
    let err = train(&cfg, &opts(false)).unwrap_err();
    assert!(matches!(err, TrainError::Diverged(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("last good checkpoint"), "{msg}");
    let store = CheckpointStore::new(&cfg.run_dir(), 2);
    let (last_step, last): (u64, PathBuf) = store.steps().unwrap().pop().unwrap();
    assert!(last_step < 20);
    assert!(msg.contains(&last.display().to_string()), "{msg}");
    let ckpt = Checkpoint::read(&last).unwrap();
    let (state, _) = training_state(&ckpt, &last).unwrap();
    assert_eq!(state.step, last_step);
}

#[test]
fn loss_decreases_on_a_tiny_problem() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    let cfg = config(
        root,
        "learn",
        &[
            "steps=40",
            "validation.every=40",
            "schedule.milestones=[]",
            "optimizer.lr=3e-3",
            "clip_grad_norm=null",
        ],
    );
    // The untrained network: one step at a negligible learning rate.
    let init = config(
        root,
        "init",
        &["steps=1", "validation.every=1", "optimizer.lr=1e-20"],
    );
    let v0 = train(&init, &opts(false)).unwrap().validation.unwrap();
    let v = train(&cfg, &opts(false)).unwrap().validation.unwrap();
    let (l0, l) = (&v0.levels[0], &v.levels[0]);
    assert!(
        l.denoiser > l0.denoiser + 1.0 && l.denoiser > l.noisy,
        "40 steps should improve D_σ by 1 dB and beat the noisy input: {l0:?} → {l:?}"
    );
}

#[test]
fn prox_objective_fine_tunes_from_a_gs_checkpoint() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    let softplus = "model.activation=softplus";
    let gs = train(
        &config(root, "gs", &[softplus, "steps=1", "validation.every=0"]),
        &opts(false),
    )
    .unwrap();
    let init = format!("init_from={}", gs.checkpoint.display());
    let prox = r#"objective={"prox": {"mu": 1e-3, "epsilon": 0.1, "clip_max": 1e3,
        "estimator": {"kind": "power_iteration"}, "max_products": 5, "tolerance": 1e-2}}"#;
    let cfg = config(
        root,
        "prox",
        &[softplus, "steps=2", "validation.every=0", prox, &init],
    );
    let out = train(&cfg, &opts(false)).unwrap();
    assert_eq!(out.step, 2);
    let ckpt = Checkpoint::read(&out.checkpoint).unwrap();
    assert_eq!(ckpt.model.kind, gradstep_model::DenoiserKind::Prox);
    // Fine-tuning needs the same architecture: an ELU model cannot start from it.
    let elu = config(root, "prox-elu", &["steps=1", "validation.every=0", &init]);
    let err = train(&elu, &opts(false)).unwrap_err();
    assert!(err.to_string().contains("architecture"), "{err}");
}

/// `‖a − b‖ / ‖b‖` over all the tensors whose name starts with `prefix`, as one vector.
fn relative_diff(a: &Checkpoint, b: &Checkpoint, prefix: &str) -> f64 {
    let (mut num, mut den, mut count) = (0.0, 0.0, 0);
    for (k, t) in a.tensors.iter().filter(|(k, _)| k.starts_with(prefix)) {
        let r = &b.tensors[k];
        num += (t - r).square().sum(tch::Kind::Double).double_value(&[]);
        den += r.square().sum(tch::Kind::Double).double_value(&[]);
        count += 1;
    }
    assert!(count > 0 && den > 0.0, "no nonzero tensor named {prefix}*");
    (num / den).sqrt()
}

#[test]
fn grad_method_precision_and_layout_do_not_change_the_weights_on_cpu() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    let base = ["steps=2", "validation.every=0", "clip_grad_norm=null"];
    let run = |name: &str, extra: &[&str]| {
        let mut sets = base.to_vec();
        sets.extend_from_slice(extra);
        let out = train(&config(root, name, &sets), &opts(false)).unwrap();
        Checkpoint::read(&out.checkpoint).unwrap()
    };
    let adjoint = run("adjoint", &[]);
    let autograd = run("autograd", &["performance.grad_method=autograd"]);
    let bf16 = run("bf16", &["performance.precision=bf16"]);
    let nhwc = run("nhwc", &["performance.memory_format=channels_last"]);
    let init = run("init", &["optimizer.lr=1e-30"]);

    // The training moved the weights, so equal weights are not trivially equal.
    let moved = relative_diff(&adjoint, &init, "model.");
    assert!(moved > 1e-4, "2 steps changed the weights by only {moved}");
    let weights = relative_diff(&autograd, &adjoint, "model.");
    assert!(weights <= 1e-4, "weights differ by {weights} (relative)");
    // Adam's first moments are (1 − β₁)-weighted gradients: the gradients agree as well.
    let grads = relative_diff(&autograd, &adjoint, "adam.m.");
    assert!(
        grads <= 1e-3,
        "gradient moments differ by {grads} (relative)"
    );
    // bf16 autocast is a no-op on the CPU: bitwise the float32 run.
    assert_eq!(max_abs_diff(&bf16, &adjoint), 0.0);
    // Channels-last (the GPU default of configs/gs-drunet.json) is a layout: the same
    // training up to the summation order of the convolutions, and the checkpoint (written
    // NCHW) holds the same weights.
    let layout = relative_diff(&nhwc, &adjoint, "model.");
    assert!(
        layout <= 1e-5,
        "channels-last weights differ by {layout} (relative)"
    );
    let moments = relative_diff(&nhwc, &adjoint, "adam.v.");
    assert!(moments <= 1e-4, "channels-last moments differ by {moments}");
}

#[test]
fn prox_objective_gives_the_same_weights_with_both_grad_methods() {
    let (_serial, dir) = sandbox(2, 32, 32);
    let root = dir.path();
    // Tolerance 0: a fixed number of products, so both runs take the same estimator steps.
    let prox = r#"objective={"prox": {"mu": 1.0, "epsilon": 0.1, "clip_max": 1e3,
        "estimator": {"kind": "power_iteration"}, "max_products": 4, "tolerance": 0}}"#;
    let run = |name: &str, method: &str| {
        let sets = [
            "steps=2",
            "validation.every=0",
            "clip_grad_norm=null",
            "model.activation=softplus",
            prox,
            method,
        ];
        let out = train(&config(root, name, &sets), &opts(false)).unwrap();
        Checkpoint::read(&out.checkpoint).unwrap()
    };
    let adjoint = run("adjoint", "performance.grad_method=adjoint");
    let autograd = run("autograd", "performance.grad_method=autograd");
    let weights = relative_diff(&autograd, &adjoint, "model.");
    assert!(weights <= 1e-4, "weights differ by {weights} (relative)");
    let grads = relative_diff(&autograd, &adjoint, "adam.m.");
    assert!(
        grads <= 1e-3,
        "gradient moments differ by {grads} (relative)"
    );
}

/// `performance.cuda_graph`: on the CPU the device-resident step runs eagerly. It must train
/// like the ordinary step (same noise, same batches, clipping and the schedule on the
/// device), resume exactly, and count Adam's steps on the host for the checkpoints.
#[test]
fn the_device_resident_step_trains_like_the_ordinary_one_and_resumes_exactly() {
    let (_serial, dir) = sandbox(4, 40, 48);
    let root = dir.path();
    let graph = ["performance.cuda_graph=true", "clip_grad_norm=0.05"];
    let ordinary = train(
        &config(root, "ordinary", &["clip_grad_norm=0.05"]),
        &opts(false),
    )
    .unwrap();
    let straight = train(&config(root, "graph", &graph), &opts(false)).unwrap();
    let mut half_sets = graph.to_vec();
    half_sets.push("steps=3");
    train(&config(root, "graph-split", &half_sets), &opts(false)).unwrap();
    let resumed = train(&config(root, "graph-split", &graph), &opts(true)).unwrap();

    let a = Checkpoint::read(&ordinary.checkpoint).unwrap();
    let b = Checkpoint::read(&straight.checkpoint).unwrap();
    let c = Checkpoint::read(&resumed.checkpoint).unwrap();
    // Same updates up to float32 rounding of the bias corrections and the norm.
    let weights = relative_diff(&b, &a, "model.");
    assert!(weights <= 1e-4, "weights differ by {weights} (relative)");
    let moments = relative_diff(&b, &a, "adam.v.");
    assert!(moments <= 1e-3, "second moments differ by {moments}");
    // Exact resume of the device-resident run, including Adam's step count.
    assert_eq!(max_abs_diff(&b, &c), 0.0);
    let (sb, _) = training_state(&b, &straight.checkpoint).unwrap();
    let (sc, _) = training_state(&c, &resumed.checkpoint).unwrap();
    assert_eq!((sb.step, sb.adam_step), (6, 6));
    assert_eq!(
        (sc.step, sc.adam_step, sc.lr),
        (sb.step, sb.adam_step, sb.lr)
    );
    // The Prox objective is refused, with the setting named.
    let prox = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/prox-drunet.json"
    ));
    let err = TrainConfig::load(prox, &["performance.cuda_graph=true".to_string()]).unwrap_err();
    assert!(err.to_string().contains("performance.cuda_graph"), "{err}");
}
