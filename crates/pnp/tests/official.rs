//! What the official GS-PnP / Prox-PnP code returns and observes, on a tiny GS-DRUNet:
//! GS-PnP returns `z = x_K − τ_K λ ∇g_σ(x_K)`, observation noise is independent of the
//! inpainting mask, the SR start is OpenCV's bicubic plus `shift_pixel`, and a tolerance stop is
//! called converged only when the tested value never increased.
use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser, Graph, Sigma};
use gradstep_pnp::{
    bicubic_upsample, restore, AlgorithmConfig, DegradationSpec, GsOutput, GsPgdConfig, Kernel,
    ProxConfig, RestorationProblem, StopReason,
};
use tch::{Device, Kind, Tensor};

fn denoiser() -> GradientStepDenoiser {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg = DrunetConfig {
        channels: 3,
        ..DrunetConfig::tiny(Activation::Elu)
    };
    GradientStepDenoiser::new(Drunet::new(&cfg, Device::Cpu).unwrap())
}

fn image(n: i64) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let i = Tensor::arange(n, opts).view([n, 1]);
    let j = Tensor::arange(n, opts).view([1, n]);
    ((&i * 0.3).sin() * (&j * 0.2).cos() * 0.35 + 0.5)
        .view([1, 1, n, n])
        .repeat([1, 3, 1, 1])
}

fn gs(output: GsOutput, max_iter: usize) -> GsPgdConfig {
    GsPgdConfig {
        lambda: 0.1,
        sigma: 1.8 * 7.65,
        tau0: None,
        gamma: 0.1,
        eta: 0.9,
        backtracking: true,
        max_iter,
        tol: None,
        warmup: None,
        output,
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn gs_pnp_returns_the_official_z_and_records_x() {
    let den = denoiser();
    let p = RestorationProblem::synthesize(
        &image(32),
        &DegradationSpec::Deblur(Kernel::uniform(5).unwrap()),
        7.65,
        0,
    )
    .unwrap();
    let rz = restore(&den, &p, &AlgorithmConfig::GsPgd(gs(GsOutput::Z, 4))).unwrap();
    let rx = restore(&den, &p, &AlgorithmConfig::GsPgd(gs(GsOutput::X, 4))).unwrap();
    // The output choice does not change the iterates.
    assert_eq!(rz.iterations, rx.iterations);
    assert!(max_abs(&rz.last_iterate, &rx.image) == 0.0);
    assert!(max_abs(&rx.last_iterate, &rx.image) == 0.0);
    // z computed independently from x_K, τ_K and ∇g_σ(x_K).
    let c = gs(GsOutput::Z, 4);
    let tau = rz.records.last().unwrap().tau;
    let x = &rx.image;
    let grad = den
        .grad(x, &Sigma::Scalar(c.sigma / 255.0), Graph::Inference)
        .unwrap();
    let z = x - grad * (tau * c.lambda);
    let err = max_abs(&rz.image, &z);
    assert!(
        err < 1e-6,
        "returned image differs from x_K − τλ∇g(x_K) by {err}"
    );
    // Both PSNRs are known and differ (z is not x).
    let (pz, px) = (rz.psnr.unwrap(), rz.last_iterate_psnr.unwrap());
    assert!((px - rx.psnr.unwrap()).abs() < 1e-12);
    assert!((pz - px).abs() > 1e-6, "z and x have the same PSNR {pz}");
}

#[test]
fn inpainting_noise_is_independent_of_the_mask() {
    let (n, nu) = (128, 7.65);
    let clean = Tensor::full([1, 3, n, n], 0.5, (Kind::Double, Device::Cpu));
    let task = DegradationSpec::Inpaint {
        keep: 0.5,
        mask_seed: 0,
        hole: None,
    };
    let p = RestorationProblem::synthesize(&clean, &task, nu, 0).unwrap();
    let gradstep_pnp::Degradation::Inpainting(op) = &p.degradation else {
        panic!("not inpainting")
    };
    let kept = op.mask().view([-1]).gt(0.5);
    let count = kept.sum(Kind::Int64).int64_value(&[]) as f64;
    for ch in 0..3 {
        let noise = (p.observation.select(1, ch) - 0.5).view([-1]) * 255.0;
        let at_kept = noise.masked_select(&kept);
        let mean = at_kept.mean(Kind::Double).double_value(&[]);
        let std = at_kept.std(true).double_value(&[]);
        let se = nu / count.sqrt();
        assert!(
            mean.abs() < 3.0 * se,
            "channel {ch}: noise mean {mean} (SE {se})"
        );
        assert!(
            (std / nu - 1.0).abs() < 0.02,
            "channel {ch}: noise std {std} for ν = {nu}"
        );
    }
}

#[test]
fn observation_noise_is_numpys_for_the_seed() {
    // np.random.seed(0); np.random.normal(0, 7.65 / 255, (2, 2, 3))[0, 0] = 7.65/255 · [1.7641, 0.4002, 0.9787]
    let clean = Tensor::zeros([1, 3, 2, 2], (Kind::Double, Device::Cpu));
    let p = RestorationProblem::synthesize(&clean, &DegradationSpec::Denoise, 7.65, 0).unwrap();
    let want = [
        1.764_052_345_967_664,
        0.400_157_208_367_223_3,
        0.978_737_984_105_739_2,
    ];
    for (c, w) in want.iter().enumerate() {
        let got = p.observation.double_value(&[0, c as i64, 0, 0]);
        assert!((got - w * 7.65 / 255.0).abs() < 1e-12, "channel {c}: {got}");
    }
}

#[test]
fn sr_start_is_bicubic_then_shifted_as_shift_pixel() {
    let y = Tensor::rand([1, 3, 7, 9], (Kind::Double, Device::Cpu));
    // ×3: the shift is exactly one pixel, so the start is the bicubic image moved by one,
    // with the last row / column repeated (evaluation points clipped to the grid).
    let up = y.upsample_bicubic2d([21, 27], false, 3.0, 3.0);
    let start = bicubic_upsample(&y, 3).unwrap();
    let moved = up.narrow(2, 1, 20).narrow(3, 1, 26);
    assert!(max_abs(&start.narrow(2, 0, 20).narrow(3, 0, 26), &moved) < 1e-12);
    assert!(max_abs(&start.narrow(2, 20, 1), &start.narrow(2, 19, 1)) < 1e-12);
    // ×2: half a pixel, the mean of two neighbours along each axis in the interior.
    let up = y.upsample_bicubic2d([14, 18], false, 2.0, 2.0);
    let start = bicubic_upsample(&y, 2).unwrap();
    let want = (up.narrow(2, 0, 13).narrow(3, 0, 17)
        + up.narrow(2, 1, 13).narrow(3, 0, 17)
        + up.narrow(2, 0, 13).narrow(3, 1, 17)
        + up.narrow(2, 1, 13).narrow(3, 1, 17))
        * 0.25;
    assert!(max_abs(&start.narrow(2, 0, 13).narrow(3, 0, 17), &want) < 1e-12);
}

#[test]
fn a_tolerance_stop_with_increases_is_not_called_converged() {
    let den = denoiser();
    let p =
        RestorationProblem::synthesize(&image(32), &DegradationSpec::Denoise, 12.75, 1).unwrap();
    // A random (untrained, non-proximal) denoiser with a large DRS step: Ψ is not monotone.
    let cfg = AlgorithmConfig::ProxDrs(ProxConfig {
        lambda: 5.0,
        alpha: 1.0,
        sigma: 12.75,
        max_iter: 30,
        tol: Some(1e-3),
        warmup: None,
    });
    let r = restore(&den, &p, &cfg).unwrap();
    let m = r.monotonicity;
    assert_eq!(m.quantity, "lyapunov");
    // The first step has no earlier Ψ (the start knows only f).
    assert_eq!(m.tested + 1, r.iterations);
    let psi: Vec<f64> = r.records[1..].iter().map(|r| r.lyapunov).collect();
    let rises = psi
        .windows(2)
        .filter(|w| w[1] - w[0] > 1e-7 * w[0].abs())
        .count();
    assert_eq!(m.increases, rises, "Ψ = {psi:?}");
    assert!(m.increases > 0, "Ψ never rose: {psi:?}");
    assert_ne!(r.stop, StopReason::Converged);
    assert!(m.max_relative_increase > 1e-7);
    // GS-PnP with backtracking decreases F: a tolerance stop there is converged.
    let mut c = gs(GsOutput::Z, 200);
    c.tol = Some(1e-4);
    let r = restore(&den, &p, &AlgorithmConfig::GsPgd(c)).unwrap();
    assert_eq!(r.monotonicity.increases, 0);
    assert_eq!(r.monotonicity.tested, r.iterations);
    assert!(matches!(
        r.stop,
        StopReason::Converged | StopReason::MaxIterations
    ));
}
