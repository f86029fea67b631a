//! Algorithm tests on a tiny GS-DRUNet and small images: monotone objectives, backtracking,
//! the DRS Lyapunov function, batched = one-at-a-time, and bad inputs.
use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser};
use gradstep_pnp::{
    restore, restore_batch, Algorithm, AlgorithmConfig, DegradationSpec, GsOutput, GsPgdConfig,
    Kernel, KernelSpec, ProxConfig, RestorationProblem, StopReason, Task,
};
use tch::{Device, Kind, Tensor};

fn denoiser(channels: i64) -> GradientStepDenoiser {
    // One intra-op thread: on a loaded 2-core machine OpenMP spin-waiting makes the tiny
    // model ~500× slower with 2 threads (2.6 s vs 5 ms per ∇g on 32²).
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg = DrunetConfig {
        channels,
        ..DrunetConfig::tiny(Activation::Elu)
    };
    GradientStepDenoiser::new(Drunet::new(&cfg, Device::Cpu).unwrap())
}

/// A smooth test image with some edges, `[1, C, n, n]` on `[0, 1]`.
fn image(channels: i64, n: i64, phase: f64) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let i = Tensor::arange(n, opts).view([n, 1]);
    let j = Tensor::arange(n, opts).view([1, n]);
    let base = (&i * 0.3 + phase).sin() * (&j * 0.2).cos() * 0.35 + 0.5;
    let step = j.ge(n / 2).to_kind(Kind::Float) * 0.1;
    (base + step)
        .view([1, 1, n, n])
        .repeat([1, channels, 1, 1])
        .clamp(0.0, 1.0)
}

fn gs_config(lambda: f64, sigma: f64, max_iter: usize) -> GsPgdConfig {
    GsPgdConfig {
        lambda,
        sigma,
        tau0: None,
        gamma: 0.1,
        eta: 0.9,
        backtracking: true,
        max_iter,
        tol: Some(1e-9),
        warmup: None,
        output: GsOutput::Z,
    }
}

fn objectives(r: &gradstep_pnp::Restoration) -> Vec<f64> {
    r.records.iter().map(|r| r.objective).collect()
}

#[test]
fn gs_pnp_objective_never_increases() {
    let den = denoiser(3);
    let p = RestorationProblem::synthesize(
        &image(3, 32, 0.0),
        &DegradationSpec::Deblur(Kernel::uniform(5).unwrap()),
        7.65,
        1,
    )
    .unwrap();
    let cfg = AlgorithmConfig::GsPgd(gs_config(0.1, 1.8 * 7.65, 25));
    // (tol 1e-9 in gs_config: the run goes on until F stalls at float32 precision.)
    let t0 = std::time::Instant::now();
    let r = restore(&den, &p, &cfg).unwrap();
    let backtracks: usize = r.records.iter().map(|r| r.backtracks).sum();
    eprintln!(
        "{} iterations, {backtracks} backtracks, {:.1} s",
        r.iterations,
        t0.elapsed().as_secs_f64()
    );
    let f = objectives(&r);
    assert!(r.iterations >= 5, "only {} iterations", r.iterations);
    for w in f.windows(2) {
        assert!(
            w[1] <= w[0] + 1e-9 * w[0].abs(),
            "F increased: {} → {}",
            w[0],
            w[1]
        );
    }
    assert!(
        f.last().unwrap() < &f[0],
        "F did not decrease at all: {f:?}"
    );
}

#[test]
fn backtracking_triggers_when_tau0_is_too_large_and_then_f_decreases() {
    let den = denoiser(3);
    let p = RestorationProblem::synthesize(&image(3, 32, 0.5), &DegradationSpec::Denoise, 12.75, 2)
        .unwrap();
    let mut c = gs_config(0.1, 25.0, 15);
    c.tau0 = Some(500.0);
    let r = restore(&den, &p, &AlgorithmConfig::GsPgd(c)).unwrap();
    let backtracks: usize = r.records.iter().map(|r| r.backtracks).sum();
    assert!(backtracks > 0, "no backtracking with τ₀ = 500");
    let last_tau = r.records.last().unwrap().tau;
    assert!(last_tau < 500.0, "τ was not reduced: {last_tau}");
    let f = objectives(&r);
    for w in f[1..].windows(2) {
        assert!(
            w[1] <= w[0] + 1e-9 * w[0].abs(),
            "F increased after backtracking: {f:?}"
        );
    }
    // The sufficient-decrease condition holds at every accepted step.
    for (a, b) in r.records.iter().zip(&r.records[1..]) {
        assert!(a.objective - b.objective >= -1e-9 * a.objective.abs());
    }
    assert_ne!(r.stop, StopReason::StepCollapsed);
}

#[test]
fn drs_lyapunov_decreases_when_its_conditions_hold() {
    // Denoising (L_f = 1) with a small step λ and α = 0.5: the DRS conditions of Prox-PnP.
    let den = denoiser(3);
    let p = RestorationProblem::synthesize(&image(3, 32, 1.0), &DegradationSpec::Denoise, 12.75, 3)
        .unwrap();
    let cfg = AlgorithmConfig::ProxDrs(ProxConfig {
        lambda: 0.5,
        alpha: 0.5,
        sigma: 12.75,
        max_iter: 20,
        tol: None,
        warmup: None,
    });
    let r = restore(&den, &p, &cfg).unwrap();
    assert_eq!(r.iterations, 20);
    let psi: Vec<f64> = r.records[1..].iter().map(|r| r.lyapunov).collect();
    for w in psi.windows(2) {
        assert!(
            w[1] <= w[0] + 1e-7 * w[0].abs(),
            "Ψ increased: {} → {}",
            w[0],
            w[1]
        );
    }
    // The recorded Ψ is the Lyapunov function of the DRS iterates, recomputed independently.
    let again = lyapunov_values(&den, &p, &cfg);
    for (k, (a, b)) in psi.iter().zip(&again).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "iteration {}: recorded Ψ {a}, recomputed {b}",
            k + 1
        );
    }
}

/// `Ψ(x_k)` along the DRS iterates `y = D^α(x)`, `z = prox_{λf}(2y − x)`, `x⁺ = x + z − y`,
/// computed from the public API only.
fn lyapunov_values(
    den: &GradientStepDenoiser,
    p: &RestorationProblem,
    cfg: &AlgorithmConfig,
) -> Vec<f64> {
    use gradstep_model::{Graph, Sigma};
    use gradstep_pnp::LinearOperator;
    let AlgorithmConfig::ProxDrs(c) = cfg else {
        unreachable!()
    };
    let lam = Tensor::from_slice(&[c.lambda]);
    let sigma = Sigma::Scalar(c.sigma / 255.0);
    let y_obs = &p.observation;
    let mut x = p.init.shallow_clone();
    let mut out = Vec::new();
    for _ in 0..c.max_iter {
        let (g, grad) = den
            .potential_and_grad(&x, &sigma, Graph::Inference)
            .unwrap();
        let y = &x - &grad * c.alpha;
        let z = p
            .degradation
            .prox_data(&(&y * 2.0 - &x), y_obs, &lam)
            .unwrap();
        let half = |t: &Tensor| 0.5 * t.square().sum(Kind::Double).double_value(&[]);
        let phi = g.double_value(&[0]) - half(&(&x - &y));
        let f_z = p
            .degradation
            .data_fidelity(&z, y_obs)
            .unwrap()
            .double_value(&[0]);
        let inner = ((&y - &x) * (&y - &z)).sum(Kind::Double).double_value(&[]);
        out.push(phi / c.lambda + f_z + (inner + half(&(&y - &z))) / c.lambda);
        x = &x + &z - &y;
    }
    out
}

#[test]
fn batched_results_equal_one_at_a_time() {
    let den = denoiser(3);
    let problems = [
        RestorationProblem::synthesize(
            &image(3, 32, 0.0),
            &DegradationSpec::Deblur(Kernel::uniform(5).unwrap()),
            2.55,
            4,
        )
        .unwrap(),
        RestorationProblem::synthesize(
            &image(3, 32, 0.7),
            &DegradationSpec::Deblur(Kernel::gaussian(7, 1.6).unwrap()),
            7.65,
            5,
        )
        .unwrap(),
        RestorationProblem::synthesize(
            &image(3, 32, 1.3),
            &DegradationSpec::Deblur(Kernel::uniform(3).unwrap()),
            12.75,
            6,
        )
        .unwrap(),
    ];
    let configs: Vec<AlgorithmConfig> = [(0.1, 4.0, 1e-3), (0.075, 13.0, 1e-4), (0.2, 22.0, 1e-3)]
        .iter()
        .map(|&(l, s, tol)| {
            let mut c = gs_config(l, s, 12);
            c.tol = Some(tol);
            c.tau0 = Some(3.0 / l); // large enough that some problems backtrack
            AlgorithmConfig::GsPgd(c)
        })
        .collect();
    let batch = restore_batch(
        &den,
        &problems.iter().collect::<Vec<_>>(),
        &configs.iter().collect::<Vec<_>>(),
    )
    .unwrap();
    let backtracks: usize = batch
        .iter()
        .flat_map(|r| &r.records)
        .map(|r| r.backtracks)
        .sum();
    let iterations: Vec<usize> = batch.iter().map(|r| r.iterations).collect();
    eprintln!("batched: iterations {iterations:?}, {backtracks} backtracks");
    assert!(backtracks > 0, "the batch did not exercise backtracking");
    assert!(
        iterations.iter().any(|&i| i != iterations[0]),
        "all problems stopped together: {iterations:?}"
    );
    for ((p, c), b) in problems.iter().zip(&configs).zip(&batch) {
        let single = restore(&den, p, c).unwrap();
        assert_eq!(single.iterations, b.iterations, "iteration counts differ");
        let (ps, pb) = (single.psnr.unwrap(), b.psnr.unwrap());
        assert!(
            (ps - pb).abs() < 1e-4,
            "PSNR one-at-a-time {ps} vs batched {pb}"
        );
    }
}

#[test]
fn every_algorithm_runs_on_every_task() {
    let den = denoiser(3);
    let clean = image(3, 24, 0.2);
    let tasks = [
        (DegradationSpec::Denoise, None),
        (
            DegradationSpec::Deblur(Kernel::uniform(5).unwrap()),
            Some(KernelSpec::Uniform),
        ),
        (
            DegradationSpec::SuperResolution {
                kernel: Kernel::gaussian(7, 1.0).unwrap(),
                scale: 2,
            },
            None,
        ),
        (
            DegradationSpec::Inpaint {
                keep: 0.5,
                mask_seed: 0,
                hole: None,
            },
            None,
        ),
        (
            DegradationSpec::Inpaint {
                keep: 0.5,
                mask_seed: 0,
                hole: Some("4,6,12,8".parse().unwrap()),
            },
            None,
        ),
    ];
    for (task, kernel) in tasks {
        let p = RestorationProblem::synthesize(&clean, &task, 7.65, 0).unwrap();
        for algo in [
            Algorithm::GsPgd,
            Algorithm::ProxPgd,
            Algorithm::ProxDrs,
            Algorithm::ProxDrsDiff,
            Algorithm::Hqs,
        ] {
            let mut c = AlgorithmConfig::reference(algo, task.task(), kernel.as_ref(), 7.65);
            c.set_iterations(3);
            let r = restore(&den, &p, &c).unwrap();
            assert!(
                r.iterations <= 3 && r.iterations >= 1,
                "{algo:?}: {} iterations",
                r.iterations
            );
            assert_eq!(r.image.size(), clean.size());
            assert!(
                r.psnr.unwrap().is_finite(),
                "{algo:?} on {:?}: PSNR {:?}",
                task.task(),
                r.psnr
            );
        }
    }
}

#[test]
fn channel_mismatch_is_an_error() {
    let den = denoiser(3);
    let p = RestorationProblem::synthesize(&image(1, 16, 0.0), &DegradationSpec::Denoise, 5.0, 0)
        .unwrap();
    let c = AlgorithmConfig::reference(Algorithm::GsPgd, Task::Denoise, None, 5.0);
    let err = restore(&den, &p, &c).unwrap_err().to_string();
    assert!(err.contains("channels"), "{err}");
}

#[test]
fn kernel_larger_than_image_is_an_error() {
    let err = RestorationProblem::synthesize(
        &image(3, 16, 0.0),
        &DegradationSpec::Deblur(Kernel::gaussian(25, 1.6).unwrap()),
        5.0,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn bicubic_init_keeps_the_observed_pixels_at_odd_scales() {
    // The official start (bicubic with half-pixel centres, then a shift by (s − 1)/2) samples
    // the observed pixels exactly when s is odd; at s = 2 it averages neighbours (see
    // tests/official.rs for what it is there).
    let y = Tensor::rand([1, 3, 8, 10], (Kind::Double, Device::Cpu));
    for s in [3i64, 5] {
        let up = gradstep_pnp::bicubic_upsample(&y, s).unwrap();
        assert_eq!(up.size(), vec![1, 3, 8 * s, 10 * s]);
        let kept = up.slice(2, 0, 8 * s, s).slice(3, 0, 10 * s, s);
        let err = (kept - &y).abs().max().double_value(&[]);
        assert!(err < 1e-6, "×{s}: kept pixels moved by {err}");
    }
}
