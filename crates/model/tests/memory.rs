//! Inference mode keeps no graph: memory stays flat over 1000 calls.
use gradstep_model::{
    Activation, Drunet, DrunetConfig, GradMethod, GradientStepDenoiser, Graph, Sigma,
};
use tch::{Device, Kind, Tensor};

fn rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn inference_memory_is_flat_over_1000_calls() {
    for method in [GradMethod::Adjoint, GradMethod::Autograd] {
        tch::manual_seed(0);
        let den = GradientStepDenoiser::new(
            Drunet::new(&DrunetConfig::tiny(Activation::Softplus), Device::Cpu).unwrap(),
        )
        .with_method(method);
        let x = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let sigma = Sigma::Scalar(0.1);
        let v = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let mut keep = Vec::new();
        let mut call = |i: usize| {
            let g = den.grad(&x, &sigma, Graph::Inference).unwrap();
            let h = den
                .hessian_vector_product(&x, &sigma, &v, Graph::Inference)
                .unwrap();
            assert!(!g.requires_grad() && !h.requires_grad());
            if i.is_multiple_of(100) {
                // Results that are kept must not pin a graph either.
                keep.push(g);
            }
        };
        for i in 0..50 {
            call(i);
        }
        let before = rss_kib();
        for i in 0..1000 {
            call(i);
        }
        let grown = rss_kib() - before;
        // A leaked graph of this model costs ~100 KiB per call: 1000 calls would add ~100 MiB.
        assert!(
            grown < 16 * 1024,
            "{method:?}: RSS grew by {grown} KiB over 1000 calls"
        );
    }
}
