//! `channels_last` changes the layout, not the numbers: `∇g_σ`, Hessian-vector products and
//! the parameter gradients of a loss on `D_σ` match the NCHW network in float64, whole and in
//! tiles.
use gradstep_model::{
    Activation, Checkpoint, DenoiserKind, Drunet, DrunetConfig, GradientStepDenoiser, Graph,
    MemoryFormat, Sigma, Tiling,
};
use tch::{Device, Kind, Tensor};

fn pair(activation: Activation) -> (GradientStepDenoiser, GradientStepDenoiser) {
    tch::set_num_threads(1);
    tch::manual_seed(21);
    let cfg = DrunetConfig::tiny(activation);
    let mut a = Drunet::new(&cfg, Device::Cpu).unwrap();
    a.var_store_mut().double();
    let mut b = Drunet::new(&cfg, Device::Cpu).unwrap();
    b.var_store_mut().double();
    b.var_store_mut().copy(a.var_store()).unwrap();
    b.set_memory_format(MemoryFormat::ChannelsLast).unwrap();
    (GradientStepDenoiser::new(a), GradientStepDenoiser::new(b))
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-30)
}

/// `(g_σ, ∇g_σ)` of the NCHW and the NHWC denoiser at `x` agree to 1e-12 and come back NCHW;
/// returns the NCHW `∇g_σ`.
fn assert_same_potential_and_grad(
    nchw: &GradientStepDenoiser,
    nhwc: &GradientStepDenoiser,
    x: &Tensor,
    sigma: &Sigma,
    what: &str,
) -> Tensor {
    let (pa, ga) = nchw.potential_and_grad(x, sigma, Graph::Inference).unwrap();
    let (pb, gb) = nhwc.potential_and_grad(x, sigma, Graph::Inference).unwrap();
    assert!(gb.is_contiguous(), "{what}: results come back NCHW");
    assert!(rel(&gb, &ga) < 1e-12, "{what} ∇g: {}", rel(&gb, &ga));
    assert!(rel(&pb, &pa) < 1e-12, "{what} g: {}", rel(&pb, &pa));
    ga
}

#[test]
fn weights_get_nhwc_strides_in_place() {
    let (_, cl) = pair(Activation::Elu);
    assert_eq!(cl.network().memory_format(), MemoryFormat::ChannelsLast);
    for (name, v) in cl.network().var_store().variables() {
        let s = v.size();
        if s[1] > 1 && s[2] * s[3] > 1 {
            assert_eq!(v.stride()[1], 1, "{name}: {:?}", v.stride());
        }
        assert!(v.requires_grad(), "{name} is still a trainable variable");
    }
}

#[test]
fn gradients_follow_their_weights_to_a_new_layout() {
    // A benchmark (or a user) switches the layout of a network that has trained: the
    // gradients autograd accumulates into must keep matching their weights' strides.
    tch::manual_seed(5);
    let mut net = Drunet::new(&DrunetConfig::tiny(Activation::Elu), Device::Cpu).unwrap();
    net.var_store_mut().double();
    let x = Tensor::rand([1, 3, 16, 16], (Kind::Double, Device::Cpu));
    let backward = |net: &Drunet| {
        net.forward(&x, &Sigma::Scalar(0.1))
            .unwrap()
            .square()
            .sum(Kind::Double)
            .backward()
    };
    backward(&net);
    for format in [MemoryFormat::ChannelsLast, MemoryFormat::Contiguous] {
        let before: Vec<(String, Tensor)> = net
            .var_store()
            .variables()
            .into_iter()
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
        net.set_memory_format(format).unwrap();
        let vars = net.var_store().variables();
        for (name, old) in &before {
            let (v, g) = (&vars[name], vars[name].grad());
            assert_eq!(g.stride(), v.stride(), "{name} after {format:?}");
            assert_eq!(rel(&g, old), 0.0, "{name}: the gradient's values moved");
        }
        backward(&net);
    }
}

#[test]
fn gradient_and_hessian_products_match_nchw() {
    for act in [Activation::Elu, Activation::Softplus] {
        let (nchw, nhwc) = pair(act);
        let x = Tensor::rand([2, 3, 20, 28], (Kind::Double, Device::Cpu));
        let v = x.randn_like();
        let sigma = Sigma::PerImage(vec![0.1, 0.05]);
        let _ = assert_same_potential_and_grad(&nchw, &nhwc, &x, &sigma, &format!("{act:?}"));
        let ha = nchw
            .hessian_vector_product(&x, &sigma, &v, Graph::Inference)
            .unwrap();
        let hb = nhwc
            .hessian_vector_product(&x, &sigma, &v, Graph::Inference)
            .unwrap();
        assert!(rel(&hb, &ha) < 1e-12, "{act:?} ∇²g·v: {}", rel(&hb, &ha));
    }
}

#[test]
fn training_gradients_match_nchw_and_checkpoints_are_plain() {
    let (nchw, nhwc) = pair(Activation::Elu);
    let clean = Tensor::rand([2, 3, 16, 24], (Kind::Double, Device::Cpu));
    let noisy = &clean + clean.randn_like() * 0.1;
    let sigma = Sigma::Scalar(0.1);
    let grads = |den: &GradientStepDenoiser| {
        let loss = (den.denoise(&noisy, &sigma, Graph::Training).unwrap() - &clean)
            .square()
            .mean(Kind::Double);
        let vars = den.network().var_store().variables();
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        let params: Vec<&Tensor> = names.iter().map(|n| &vars[n]).collect();
        Tensor::run_backward(&[loss], &params, false, false)
    };
    let (ga, gb) = (grads(&nchw), grads(&nhwc));
    for (a, b) in ga.iter().zip(&gb) {
        assert!(rel(b, a) < 1e-10, "{}", rel(b, a));
    }
    // A checkpoint of the NHWC network reloads (as NCHW) to the same function.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cl.safetensors");
    Checkpoint::from_denoiser(&nhwc, DenoiserKind::Gs, serde_json::json!({"test": true}))
        .unwrap()
        .write(&path)
        .unwrap();
    let back = Checkpoint::read(&path)
        .unwrap()
        .denoiser(Device::Cpu, Kind::Double, &path)
        .unwrap();
    let x = Tensor::rand([1, 3, 16, 16], (Kind::Double, Device::Cpu));
    let g0 = nchw.grad(&x, &sigma, Graph::Inference).unwrap();
    let g1 = back.grad(&x, &sigma, Graph::Inference).unwrap();
    assert!(rel(&g1, &g0) < 1e-12);
}

#[test]
fn tiles_in_channels_last_match_tiles_in_nchw() {
    // Inference defaults to channels-last on CUDA, and `--tiling` cuts windows out of the
    // image (strided views): the layout must not change what the tiles compute.
    let (nchw, nhwc) = pair(Activation::Elu);
    let tiling = Tiling::Fixed {
        tile: 16,
        overlap: 8,
    };
    let nchw = nchw.with_tiling(tiling).unwrap();
    let nhwc = nhwc.with_tiling(tiling).unwrap();
    let x = Tensor::rand([1, 3, 40, 48], (Kind::Double, Device::Cpu));
    let sigma = Sigma::Scalar(0.1);
    let ga = assert_same_potential_and_grad(&nchw, &nhwc, &x, &sigma, "tiled");
    // And the tiles really are tiles: the whole-image pass differs at the seams.
    let whole = nchw.with_tiling(Tiling::Whole).unwrap();
    let gw = whole.grad(&x, &sigma, Graph::Inference).unwrap();
    assert!(rel(&gw, &ga) > 1e-9, "tiling had no effect");
}
