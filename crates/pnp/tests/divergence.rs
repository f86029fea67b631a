//! A diverged problem stops at once as `StopReason::Diverged` and has no PSNR; problems that
//! merely do not know their objective (HQS, the Prox-PnP starts) are not taken for diverged.
use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser};
use gradstep_pnp::{
    restore, restore_batch, Algorithm, AlgorithmConfig, DegradationSpec, Kernel, KernelSpec,
    RestorationProblem, StopReason, Task,
};
use tch::{Device, Kind, Tensor};

fn denoiser() -> GradientStepDenoiser {
    // One intra-op thread: see tests/algorithms.rs (OpenMP spin-waiting on a loaded machine).
    tch::set_num_threads(1);
    tch::manual_seed(0);
    GradientStepDenoiser::new(
        Drunet::new(&DrunetConfig::tiny(Activation::Elu), Device::Cpu).unwrap(),
    )
}

fn deblur_problem(seed: i64) -> RestorationProblem {
    tch::manual_seed(seed);
    let clean = Tensor::rand([1, 3, 24, 24], (Kind::Float, Device::Cpu));
    RestorationProblem::synthesize(
        &clean,
        &DegradationSpec::Deblur(Kernel::uniform(5).unwrap()),
        7.65,
        seed,
    )
    .unwrap()
}

fn gs(tau0: Option<f64>, backtracking: bool, max_iter: usize) -> AlgorithmConfig {
    let mut c = AlgorithmConfig::reference(
        Algorithm::GsPgd,
        Task::Deblur,
        Some(&KernelSpec::Uniform),
        7.65,
    );
    if let AlgorithmConfig::GsPgd(g) = &mut c {
        g.tau0 = tau0;
        g.backtracking = backtracking;
        g.max_iter = max_iter;
        g.tol = None;
    }
    c
}

#[test]
fn a_non_finite_start_diverges_at_once_and_leaves_its_batch_mates_alone() {
    let den = denoiser();
    let healthy = deblur_problem(1);
    let poisoned = deblur_problem(2);
    let _ = poisoned.init.get(0).get(0).get(3).get(3).fill_(f64::NAN);
    for algo in [Algorithm::GsPgd, Algorithm::ProxPgd, Algorithm::Hqs] {
        let mut c =
            AlgorithmConfig::reference(algo, Task::Deblur, Some(&KernelSpec::Uniform), 7.65);
        c.set_iterations(3);
        let alone = restore(&den, &healthy, &c).unwrap();
        let both = restore_batch(&den, &[&poisoned, &healthy], &[&c, &c]).unwrap();
        let bad = &both[0];
        assert_eq!(bad.stop, StopReason::Diverged, "{algo:?}");
        assert_eq!((bad.iterations, bad.psnr), (0, None), "{algo:?}");
        assert!(bad.records.iter().all(|r| r.psnr.is_none()), "{algo:?}");
        // The healthy problem (whose objective may be unknown: NaN for HQS, and at the start
        // of Prox-PnP) runs its budget and scores as when run alone.
        let good = &both[1];
        assert_eq!(good.stop, StopReason::MaxIterations, "{algo:?}");
        assert_eq!(good.iterations, 3, "{algo:?}");
        let (p1, p2) = (alone.psnr.unwrap(), good.psnr.unwrap());
        assert!(
            (p1 - p2).abs() < 1e-3,
            "{algo:?}: {p1} alone, {p2} in the batch"
        );
    }
}

/// `τ₀` far too large without backtracking blows the GS-PnP iterates up to NaN within a few
/// iterations; with backtracking the same `τ₀` is shrunk and the run stays finite.
#[test]
fn too_large_a_step_without_backtracking_stops_at_once_as_diverged() {
    let den = denoiser();
    let p = deblur_problem(3);
    let max_iter = 30;
    let r = restore(&den, &p, &gs(Some(TAU0_DIVERGING), false, max_iter)).unwrap();
    assert_eq!(r.stop, StopReason::Diverged, "{:?}", r.records);
    assert!(r.iterations < max_iter, "{} iterations", r.iterations);
    assert_eq!(r.psnr, None);
    assert_eq!(r.records.len(), r.iterations + 1);
    // The records hold the accepted (finite) iterations only.
    for k in &r.records {
        assert!(k.objective.is_finite() && k.data.is_finite(), "{k:?}");
        assert!(k.psnr.is_some_and(f64::is_finite), "{k:?}");
    }
    // The result is the last accepted iterate: finite.
    assert!(bool::try_from(r.image.isfinite().all()).unwrap());

    let r = restore(&den, &p, &gs(Some(TAU0_DIVERGING), true, 5)).unwrap();
    assert_ne!(r.stop, StopReason::Diverged);
    assert!(r.psnr.is_some_and(f64::is_finite), "{:?}", r.psnr);
}

/// Found by trying: `F` grows ~10⁵× per iteration and overflows `f32` at iteration 7 on the
/// tiny random model (τ₀ = 100 takes 20 iterations, 10⁶ takes 5).
const TAU0_DIVERGING: f64 = 1e4;
