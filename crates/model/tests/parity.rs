//! Parity with deepinv 0.5.0's GSDRUNet: the reference vectors in `../shared/reference`.
mod common;

use std::path::Path;

use gradstep_model::{import, Activation, GradMethod, GradientStepDenoiser, Graph, Sigma};
use tch::{Device, Kind, Tensor};

fn load(
    dir: &Path,
    tag: &str,
    method: GradMethod,
) -> (
    GradientStepDenoiser,
    std::collections::BTreeMap<String, Tensor>,
) {
    let wpath = dir.join(format!("reference/gsdrunet_tiny_{tag}_weights.safetensors"));
    let (weights, meta) = import::read_safetensors(&wpath).unwrap();
    let activation: Activation = meta["act"].parse().unwrap();
    let den =
        import::denoiser_from_state_dict(weights, activation, Device::Cpu, Kind::Float, &wpath)
            .unwrap()
            .with_method(method);
    assert_eq!(den.network().config().widths, [8, 16, 32, 64]);
    assert_eq!(den.network().config().blocks, 2);
    let (io, _) = import::read_safetensors(
        &dir.join(format!("reference/gsdrunet_tiny_{tag}_io.safetensors")),
    )
    .unwrap();
    (den, io)
}

fn check(tag: &str, method: GradMethod) {
    let Some(dir) = common::shared_dir() else {
        return;
    };
    let (den, io) = load(&dir, tag, method);
    let x = &io["x"];
    let sigma = Sigma::PerImage(Vec::<f64>::try_from(&io["sigma"].to_kind(Kind::Double)).unwrap());
    let n = den.network_output(x, &sigma, Graph::Inference).unwrap();
    let (g, grad) = den.potential_and_grad(x, &sigma, Graph::Inference).unwrap();
    let d = den.denoise(x, &sigma, Graph::Inference).unwrap();
    let hv = den
        .hessian_vector_product(x, &sigma, &io["v"], Graph::Inference)
        .unwrap();
    for (name, ours) in [
        ("N", &n),
        ("g", &g),
        ("grad_g", &grad),
        ("D", &d),
        ("hess_g_v", &hv),
    ] {
        let e = common::rel_err(ours, &io[name]);
        println!("{tag} {method:?} {name}: relative error {e:.2e}");
        assert!(e < 1e-4, "{tag} {method:?}: {name} relative error {e:.3e}");
    }
    // The reference must carry signal, or the comparison would be vacuous.
    assert!(io["hess_g_v"].abs().max().double_value(&[]) > 1e-2);
    assert!((&io["N"] - x).abs().max().double_value(&[]) > 1e-2);
}

#[test]
fn elu_matches_deepinv_with_explicit_adjoint() {
    check("elu", GradMethod::Adjoint);
}

#[test]
fn elu_matches_deepinv_with_autograd() {
    check("elu", GradMethod::Autograd);
}

#[test]
fn softplus_matches_deepinv_with_explicit_adjoint() {
    check("softplus", GradMethod::Adjoint);
}

#[test]
fn softplus_matches_deepinv_with_autograd() {
    check("softplus", GradMethod::Autograd);
}

#[test]
fn full_size_key_list_matches_our_names_and_shapes() {
    let Some(dir) = common::shared_dir() else {
        return;
    };
    let text =
        std::fs::read_to_string(dir.join("reference/gsdrunet_full_state_dict_keys.json")).unwrap();
    let keys: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (variant, channels) in [("color", 3), ("gray", 1)] {
        let cfg = gradstep_model::DrunetConfig {
            channels,
            ..Default::default()
        };
        let net = gradstep_model::Drunet::new(&cfg, Device::Cpu).unwrap();
        let ours: std::collections::BTreeMap<String, Vec<i64>> = net
            .var_store()
            .variables()
            .into_iter()
            .map(|(k, t)| (format!("student_grad.model.{k}"), t.size()))
            .collect();
        let theirs: std::collections::BTreeMap<String, Vec<i64>> =
            serde_json::from_value(keys[variant].clone()).unwrap();
        assert_eq!(ours, theirs, "{variant}");
        let total: i64 = theirs.values().map(|s| s.iter().product::<i64>()).sum();
        assert_eq!(cfg.parameter_count(), total);
    }
}
