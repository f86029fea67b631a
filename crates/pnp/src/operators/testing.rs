//! Checks shared by the operator tests (float64, CPU).
use tch::{Device, Kind, Tensor};

use super::LinearOperator;

/// `|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|` for random `x`, `y`.
pub fn adjointness_gap(op: &impl LinearOperator, shape: &[i64]) -> f64 {
    tch::manual_seed(11);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn(shape, opts);
    let y = Tensor::randn(op.observation_shape(shape).as_slice(), opts);
    let lhs = (op.forward(&x).unwrap() * &y)
        .sum(Kind::Double)
        .double_value(&[]);
    let rhs = (&x * op.adjoint(&y).unwrap())
        .sum(Kind::Double)
        .double_value(&[]);
    (lhs - rhs).abs() / lhs.abs().max(1e-300)
}

/// `max |z − v + τ Aᵀ(Az − y)|` with `z = prox_{τf}(v)`, one `τ` per image.
pub fn prox_residual(op: &impl LinearOperator, shape: &[i64], taus: &[f64]) -> f64 {
    tch::manual_seed(12);
    let opts = (Kind::Double, Device::Cpu);
    let v = Tensor::randn(shape, opts);
    let y = Tensor::randn(op.observation_shape(shape).as_slice(), opts);
    let tau = Tensor::from_slice(taus);
    let z = op.prox_data(&v, &y, &tau).unwrap();
    let grad = op.data_gradient(&z, &y).unwrap();
    let r = &z - &v + grad * tau.view([-1, 1, 1, 1]);
    r.abs().max().double_value(&[])
}
