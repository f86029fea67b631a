//! ∇g_σ and ∇²g_σ·v against central finite differences, and the explicit adjoint against
//! autograd, in float64 on tiny models (sizes not multiples of 8, so the padding is checked too).
mod common;

use gradstep_model::{
    Activation, Drunet, DrunetConfig, GradMethod, GradientStepDenoiser, Graph, Sigma,
};
use tch::{Device, Kind, Tensor};

fn tiny(activation: Activation, channels: i64, method: GradMethod) -> GradientStepDenoiser {
    tch::manual_seed(7);
    let cfg = DrunetConfig {
        channels,
        ..DrunetConfig::tiny(activation)
    };
    let mut net = Drunet::new(&cfg, Device::Cpu).unwrap();
    net.var_store_mut().double();
    GradientStepDenoiser::new(net).with_method(method)
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a * b).sum(Kind::Double).double_value(&[])
}

/// `(g(x + εd) − g(x − εd)) / 2ε` must match `⟨∇g(x), d⟩`.
fn check_gradient(activation: Activation, channels: i64, method: GradMethod) {
    let den = tiny(activation, channels, method);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::rand([2, channels, 13, 10], opts);
    let sigma = Sigma::PerImage(vec![15.0 / 255.0, 40.0 / 255.0]);
    let grad = den.grad(&x, &sigma, Graph::Inference).unwrap();
    assert_eq!(grad.size(), x.size());
    for trial in 0..3 {
        let d = Tensor::randn(x.size(), opts);
        let eps = 1e-5;
        let gp = den
            .potential(&(&x + &d * eps), &sigma, Graph::Inference)
            .unwrap()
            .sum(Kind::Double)
            .double_value(&[]);
        let gm = den
            .potential(&(&x - &d * eps), &sigma, Graph::Inference)
            .unwrap()
            .sum(Kind::Double)
            .double_value(&[]);
        let fd = (gp - gm) / (2.0 * eps);
        let an = dot(&grad, &d);
        let rel = (fd - an).abs() / an.abs().max(1e-12);
        assert!(
            rel < 1e-6,
            "{activation:?} {method:?} trial {trial}: fd {fd} vs ∇g·d {an} (rel {rel:.2e})"
        );
    }
}

/// `(∇g(x + εv) − ∇g(x − εv)) / 2ε` must match `∇²g(x)·v`.
fn check_hessian(activation: Activation, method: GradMethod) {
    let den = tiny(activation, 3, method);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::rand([2, 3, 11, 12], opts);
    let v = Tensor::randn(x.size(), opts);
    let sigma = Sigma::Scalar(25.0 / 255.0);
    let hv = den
        .hessian_vector_product(&x, &sigma, &v, Graph::Inference)
        .unwrap();
    let eps = 1e-5;
    let gp = den
        .grad(&(&x + &v * eps), &sigma, Graph::Inference)
        .unwrap();
    let gm = den
        .grad(&(&x - &v * eps), &sigma, Graph::Inference)
        .unwrap();
    let fd = (gp - gm) / (2.0 * eps);
    let e = common::rel_err(&hv, &fd);
    assert!(
        e < 1e-6,
        "{activation:?} {method:?}: Hessian-vector product vs finite differences: {e:.2e}"
    );
    assert!(hv.abs().max().double_value(&[]) > 1e-3, "vacuous Hessian");
}

#[test]
fn gradient_matches_finite_differences() {
    for method in [GradMethod::Adjoint, GradMethod::Autograd] {
        check_gradient(Activation::Elu, 3, method);
        check_gradient(Activation::Softplus, 1, method);
    }
}

#[test]
fn hessian_vector_product_matches_finite_differences() {
    for method in [GradMethod::Adjoint, GradMethod::Autograd] {
        check_hessian(Activation::Elu, method);
        check_hessian(Activation::Softplus, method);
    }
}

/// The explicit adjoint and autograd must agree on ∇g and on the parameter gradients of a
/// training loss on `D_σ` (the quantity GS training differentiates).
#[test]
fn explicit_adjoint_matches_autograd_including_parameter_gradients() {
    for activation in [Activation::Elu, Activation::Softplus, Activation::Relu] {
        let a = tiny(activation, 3, GradMethod::Adjoint);
        // Tests run in parallel threads sharing torch's global RNG: copy the weights rather
        // than relying on the same seed.
        let mut b = tiny(activation, 3, GradMethod::Autograd);
        b.network_mut()
            .var_store_mut()
            .copy(a.network().var_store())
            .unwrap();
        let opts = (Kind::Double, Device::Cpu);
        let clean = Tensor::rand([2, 3, 16, 20], opts);
        let noisy = &clean + Tensor::randn(clean.size(), opts) * 0.1;
        let sigma = Sigma::Scalar(0.1);
        let ga = a.grad(&noisy, &sigma, Graph::Inference).unwrap();
        let gb = b.grad(&noisy, &sigma, Graph::Inference).unwrap();
        let e = common::rel_err(&ga, &gb);
        assert!(e < 1e-10, "{activation:?}: ∇g adjoint vs autograd {e:.2e}");
        let mut grads = Vec::new();
        for den in [&a, &b] {
            let d = den.denoise(&noisy, &sigma, Graph::Training).unwrap();
            let loss = (d - &clean).square().mean(Kind::Double);
            let vars = den.network().var_store().variables();
            let mut names: Vec<_> = vars.keys().cloned().collect();
            names.sort();
            let params: Vec<&Tensor> = names.iter().map(|n| &vars[n]).collect();
            let g = Tensor::run_backward(&[loss], &params, false, false);
            grads.push(g);
        }
        for (ga, gb) in grads[0].iter().zip(&grads[1]) {
            let e = common::rel_err(ga, gb);
            assert!(
                e < 1e-8,
                "{activation:?}: parameter gradient adjoint vs autograd {e:.2e}"
            );
        }
    }
}

#[test]
fn any_size_is_padded_and_cropped_back() {
    let den = tiny(Activation::Elu, 3, GradMethod::Adjoint);
    for (h, w) in [(8, 8), (9, 17), (5, 3), (31, 24)] {
        let x = Tensor::rand([1, 3, h, w], (Kind::Double, Device::Cpu));
        let d = den
            .denoise(&x, &Sigma::Scalar(0.1), Graph::Inference)
            .unwrap();
        assert_eq!(d.size(), vec![1, 3, h, w]);
        assert!(d.isfinite().all().int64_value(&[]) == 1);
    }
}

#[test]
fn sigma_forms_agree() {
    let den = tiny(Activation::Elu, 3, GradMethod::Adjoint);
    let x = Tensor::rand([2, 3, 8, 8], (Kind::Double, Device::Cpu));
    let scalar = den.grad(&x, &Sigma::Scalar(0.2), Graph::Inference).unwrap();
    let per_image = den
        .grad(&x, &Sigma::PerImage(vec![0.2, 0.2]), Graph::Inference)
        .unwrap();
    let map = den
        .grad(
            &x,
            &Sigma::Map(Tensor::full([1, 1, 8, 8], 0.2, (Kind::Double, Device::Cpu))),
            Graph::Inference,
        )
        .unwrap();
    assert!(common::rel_err(&scalar, &per_image) < 1e-12);
    assert!(common::rel_err(&scalar, &map) < 1e-12);
    let other = den.grad(&x, &Sigma::Scalar(0.4), Graph::Inference).unwrap();
    assert!(
        common::rel_err(&scalar, &other) > 1e-4,
        "σ must change the output"
    );
    assert!(den
        .grad(&x, &Sigma::PerImage(vec![0.2]), Graph::Inference)
        .is_err());
}

#[test]
fn wrong_channel_count_is_an_error_not_a_panic() {
    let den = tiny(Activation::Elu, 3, GradMethod::Adjoint);
    let x = Tensor::rand([1, 1, 8, 8], (Kind::Double, Device::Cpu));
    let err = den
        .grad(&x, &Sigma::Scalar(0.1), Graph::Inference)
        .unwrap_err();
    assert!(err.to_string().contains("expected [batch, 3"), "{err}");
}

#[test]
fn a_level_outside_0_255_is_an_error_not_a_panic() {
    // σ = 1e308/255 overflowed float32 inside tch, which panics in a `Drop`.
    let net = Drunet::new(&DrunetConfig::tiny(Activation::Elu), Device::Cpu).unwrap();
    let den = GradientStepDenoiser::new(net);
    let x = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
    for bad in [
        Sigma::from_255(1e308),
        Sigma::Scalar(f64::NAN),
        Sigma::PerImage(vec![-0.1]),
    ] {
        let err = den.denoise(&x, &bad, Graph::Inference).unwrap_err();
        assert!(err.to_string().contains("outside [0, 1]"), "{err}");
    }
    let d = den
        .denoise(&x, &Sigma::from_255(255.0), Graph::Inference)
        .unwrap();
    assert_eq!(d.size(), [1, 3, 8, 8]);
}
