//! Spectral norm `‖A‖₂ = max_i |λ_i(A)|` of a symmetric operator known only through its
//! products `v ↦ A v`, for a batch of independent problems at once.
//!
//! The operator of a batch `[B, C, H, W]` is block diagonal, `A = diag(A_1, …, A_B)` (the
//! Hessian `∇²g_σ` of a batch couples no two images), so one product serves all images and
//! every norm and inner product below is taken per image: `⟨u, v⟩_b = Σ_{c,h,w} u_b v_b`.
//!
//! Two estimators, both returning unit vectors `v_b` whose Rayleigh quotient
//! `|⟨v_b, A_b v_b⟩| / ‖v_b‖²` is the estimate (the caller takes that last product itself,
//! with a graph when the estimate is trained on):
//! - [`SpectralEstimator::PowerIteration`], as the Prox-DRUNet reference code:
//!   `v ← A v / ‖A v‖`, stopped when the batch-wide `‖v_{k+1} − v_k‖ < tol`;
//! - [`SpectralEstimator::Lanczos`]: `k` steps of the symmetric Lanczos recurrence
//!   `β_j q_{j+1} = A q_j − α_j q_j − β_{j−1} q_{j−1}` (with full re-orthogonalisation, cheap
//!   for the few vectors kept), the tridiagonal `T_k = tridiag(β, α, β)` diagonalised on the
//!   host in float64, and the Ritz pair `(θ, Q_k s)` of largest `|θ|`. Lanczos finds both ends
//!   of the spectrum at once, so it needs far fewer products than the power iteration
//!   (whose rate is `|λ₂/λ₁|`), and it handles a dominant negative eigenvalue, where the power
//!   iteration's vector flips sign at every step.
//!
//! Written by hand because no maintained Rust crate runs Lanczos on tch tensors; the small
//! tridiagonal eigenproblem itself goes to libtorch's `linalg_eigh`.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};

/// How the spectral norm is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpectralEstimator {
    /// Normalised power iteration, stopped when `‖v_{k+1} − v_k‖ < tolerance` or after
    /// `max_products` products (the reference code: 50 products, `tolerance = 10⁻²`).
    #[default]
    PowerIteration,
    /// Lanczos with at most `steps` products (and at most `max_products`); stops earlier
    /// when every image's Ritz residual `‖A y − θ y‖ = β_k |s_k|` is below
    /// `tolerance · |θ|`.
    Lanczos {
        /// Krylov dimension `k`, i.e. the number of products.
        steps: usize,
    },
}

/// The outcome of an estimator (no graph attached).
#[derive(Debug)]
pub struct SpectralEstimate {
    /// Unit vectors `v_b` (per image) approximating the dominant eigenvectors.
    pub vectors: Tensor,
    /// The estimator's own `|λ_max|` per image: `‖A v_b‖` of the last power step, or the
    /// largest `|θ|` of Lanczos.
    pub values: Vec<f64>,
    /// Products `A v` taken.
    pub products: usize,
}

/// Runs `estimator` on the block-diagonal operator `apply` (detached products of a
/// `[B, …]` tensor), from `start` (not necessarily normalised; the reference code uses a
/// uniform random vector).
pub fn estimate(
    apply: impl FnMut(&Tensor) -> Result<Tensor>,
    start: &Tensor,
    estimator: SpectralEstimator,
    max_products: usize,
    tolerance: f64,
) -> Result<SpectralEstimate> {
    if max_products == 0 {
        return Err(TrainError::Config("max_products must be at least 1".into()));
    }
    match estimator {
        SpectralEstimator::PowerIteration => power_iteration(apply, start, max_products, tolerance),
        SpectralEstimator::Lanczos { steps } => {
            if steps == 0 {
                return Err(TrainError::Config("Lanczos needs at least 1 step".into()));
            }
            lanczos(apply, start, steps.min(max_products), tolerance)
        }
    }
}

/// `⟨u_b, v_b⟩` per image, shape `[B]`.
pub fn batch_dot(u: &Tensor, v: &Tensor) -> Result<Tensor> {
    Ok(u.f_mul(v)?
        .f_flatten(1, -1)?
        .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)
}

/// `‖v_b‖` per image, shape `[B]`.
pub fn batch_norm(v: &Tensor) -> Result<Tensor> {
    Ok(batch_dot(v, v)?.f_sqrt()?)
}

/// A `[B]` tensor viewed as `[B, 1, …, 1]` to scale images of `like`'s rank.
fn per_image(s: &Tensor, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    Ok(s.f_view(shape.as_slice())?)
}

/// `v_b / ‖v_b‖` (a zero image stays zero) and `‖v_b‖`.
fn normalise(v: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = batch_norm(v)?;
    let safe = n.f_clamp_min(1e-30)?;
    Ok((v.f_div(&per_image(&safe, v)?)?, n))
}

/// A `[B]` tensor as host `f64`s.
fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        &t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?,
    )?)
}

fn power_iteration(
    mut apply: impl FnMut(&Tensor) -> Result<Tensor>,
    start: &Tensor,
    max_products: usize,
    tolerance: f64,
) -> Result<SpectralEstimate> {
    let (mut v, _) = normalise(start)?;
    let mut values = Tensor::f_zeros([v.size()[0]], (Kind::Double, v.device()))?;
    let mut products = 0;
    while products < max_products {
        let hv = apply(&v)?;
        products += 1;
        let (next, norm) = normalise(&hv)?;
        values = norm;
        // The reference stops on the whole batch's change, not per image.
        let change = next.f_sub(&v)?.f_norm()?.f_double_value(&[])?;
        v = next;
        if change < tolerance {
            break;
        }
    }
    Ok(SpectralEstimate {
        vectors: v,
        values: host(&values)?,
        products,
    })
}

/// Eigen-decomposition of the `m × m` symmetric tridiagonal matrix with diagonal `alpha` and
/// off-diagonal `beta`: the eigenvalue of largest modulus and its unit eigenvector.
fn extreme_ritz_pair(alpha: &[f64], beta: &[f64]) -> Result<(f64, Vec<f64>)> {
    let m = alpha.len();
    let mut t = vec![0.0; m * m];
    for i in 0..m {
        t[i * m + i] = alpha[i];
        if i + 1 < m {
            t[i * m + i + 1] = beta[i];
            t[(i + 1) * m + i] = beta[i];
        }
    }
    let t = Tensor::f_from_slice(&t)?.f_view([m as i64, m as i64])?;
    let (theta, s) = t.f_linalg_eigh("L")?;
    let theta = Vec::<f64>::try_from(&theta)?;
    let best = (0..m)
        .max_by(|&i, &j| theta[i].abs().total_cmp(&theta[j].abs()))
        .expect("m ≥ 1");
    let s = Vec::<f64>::try_from(&s.f_select(1, best as i64)?.f_contiguous()?)?;
    Ok((theta[best], s))
}

fn lanczos(
    mut apply: impl FnMut(&Tensor) -> Result<Tensor>,
    start: &Tensor,
    steps: usize,
    tolerance: f64,
) -> Result<SpectralEstimate> {
    let (q0, _) = normalise(start)?;
    let batch = q0.size()[0] as usize;
    let (kind, device) = (q0.kind(), q0.device());
    // Krylov basis, α's and β's per image; `len[b]` is image b's Krylov dimension, frozen
    // once its recurrence breaks down (an invariant subspace: its Ritz values are exact).
    let mut basis = vec![q0];
    let mut alpha: Vec<Vec<f64>> = vec![Vec::new(); batch];
    let mut beta: Vec<Vec<f64>> = vec![Vec::new(); batch];
    let mut len = vec![0usize; batch];
    let mut broken = vec![false; batch];
    let mut ritz: Vec<(f64, Vec<f64>)> = vec![(0.0, vec![1.0]); batch];
    let mut products = 0;
    while products < steps {
        let q = basis.last().expect("non-empty basis").shallow_clone();
        let mut w = apply(&q)?;
        products += 1;
        let a = batch_dot(&q, &w)?;
        let a_host = host(&a)?;
        // Full re-orthogonalisation against the whole basis (twice: "twice is enough"),
        // which subsumes the three-term recurrence's `− α_j q_j − β_{j−1} q_{j−1}`.
        for _ in 0..2 {
            for qi in &basis {
                let c = batch_dot(qi, &w)?;
                w = w.f_sub(&qi.f_mul(&per_image(&c, &w)?)?)?;
            }
        }
        let (next, b) = normalise(&w)?;
        let b_host = host(&b)?;
        let mut converged = true;
        for i in 0..batch {
            if broken[i] {
                continue;
            }
            alpha[i].push(a_host[i]);
            len[i] += 1;
            ritz[i] = extreme_ritz_pair(&alpha[i], &beta[i])?;
            let (theta, s) = &ritz[i];
            let scale = alpha[i]
                .iter()
                .chain(&beta[i])
                .fold(0.0f64, |m, x| m.max(x.abs()));
            if b_host[i] <= 1e-10 * scale.max(1e-300) {
                broken[i] = true;
                continue;
            }
            beta[i].push(b_host[i]);
            let residual = b_host[i] * s.last().expect("m ≥ 1").abs();
            if residual >= tolerance * theta.abs() {
                converged = false;
            }
        }
        if converged || products == steps {
            break;
        }
        // Broken images continue with a zero vector, which adds nothing to their basis.
        let keep: Vec<f64> = broken.iter().map(|&x| if x { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::f_from_slice(&keep)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        basis.push(next.f_mul(&per_image(&keep, &next)?)?);
    }
    // Ritz vectors y_b = Σ_i s_b[i] q_i[b], normalised.
    let mut y = basis[0].f_zeros_like()?;
    for (i, qi) in basis.iter().enumerate() {
        let c: Vec<f64> = (0..batch)
            .map(|b| {
                ritz[b]
                    .1
                    .get(i)
                    .copied()
                    .filter(|_| i < len[b])
                    .unwrap_or(0.0)
            })
            .collect();
        let c = Tensor::f_from_slice(&c)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        y = y.f_add(&qi.f_mul(&per_image(&c, qi)?)?)?;
    }
    let (vectors, _) = normalise(&y)?;
    Ok(SpectralEstimate {
        vectors,
        values: ritz.iter().map(|(t, _)| t.abs()).collect(),
        products,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded `U[0, 1)` values in float64, drawn on the host: tests run in parallel threads
    /// that share torch's global generator, so `tch::manual_seed` would not make them
    /// reproducible.
    fn uniform(shape: &[i64], seed: u64) -> Tensor {
        crate::prox::start_vector(shape, seed, Device::Cpu)
            .unwrap()
            .to_kind(Kind::Double)
    }

    /// A batch of two symmetric 6×6 matrices with known spectra, as a block-diagonal operator
    /// on `[2, 6]` tensors.
    fn operator(eigs: [[f64; 6]; 2]) -> (Tensor, impl FnMut(&Tensor) -> Result<Tensor>) {
        let mats: Vec<Tensor> = eigs
            .iter()
            .zip(3u64..)
            .map(|(e, seed)| {
                let (q, _) = Tensor::linalg_qr(&(uniform(&[6, 6], seed) * 2.0 - 1.0), "reduced");
                let d = Tensor::from_slice(e).diag(0);
                q.matmul(&d).matmul(&q.transpose(0, 1))
            })
            .collect();
        let a = Tensor::stack(&mats, 0);
        let a2 = a.shallow_clone();
        (a, move |v: &Tensor| {
            Ok(a2.matmul(&v.unsqueeze(-1)).squeeze_dim(-1))
        })
    }

    #[test]
    fn lanczos_finds_a_dominant_negative_eigenvalue_exactly_in_n_steps() {
        tch::set_num_threads(1);
        let (_, apply) = operator([
            [-3.0, 2.9, 1.0, 0.5, -0.2, 0.1],
            [0.4, 0.3, 2.0, -1.0, 0.0, 1.5],
        ]);
        let start = uniform(&[2, 6], 10);
        let e = estimate(
            apply,
            &start,
            SpectralEstimator::Lanczos { steps: 6 },
            50,
            0.0,
        )
        .unwrap();
        assert!((e.values[0] - 3.0).abs() < 1e-9, "{:?}", e.values);
        assert!((e.values[1] - 2.0).abs() < 1e-9, "{:?}", e.values);
        assert!(e.products <= 6);
    }

    #[test]
    fn lanczos_vectors_give_the_ritz_value_as_rayleigh_quotient() {
        tch::set_num_threads(1);
        let (_, mut apply) = operator([
            [5.0, 1.0, 0.5, 0.2, 0.1, 0.0],
            [-4.0, 3.0, 1.0, 0.1, 0.0, 0.2],
        ]);
        let start = uniform(&[2, 6], 10);
        let e = estimate(
            &mut apply,
            &start,
            SpectralEstimator::Lanczos { steps: 4 },
            50,
            0.0,
        )
        .unwrap();
        let av = apply(&e.vectors).unwrap();
        let rq = host(&batch_dot(&e.vectors, &av).unwrap().abs()).unwrap();
        for b in 0..2 {
            assert!(
                (rq[b] - e.values[b]).abs() < 1e-9,
                "{rq:?} vs {:?}",
                e.values
            );
        }
        assert!(
            (e.values[0] - 5.0).abs() < 1e-3 && (e.values[1] - 4.0).abs() < 2e-2,
            "{:?}",
            e.values
        );
    }

    #[test]
    fn power_iteration_converges_to_the_dominant_modulus_per_image() {
        tch::set_num_threads(1);
        let (_, apply) = operator([
            [2.0, 1.0, 0.5, 0.2, 0.1, 0.0],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ]);
        let start = uniform(&[2, 6], 10);
        let e = estimate(apply, &start, SpectralEstimator::PowerIteration, 500, 1e-8).unwrap();
        assert!((e.values[0] - 2.0).abs() < 1e-8, "{:?}", e.values);
        assert!((e.values[1] - 0.6).abs() < 1e-6, "{:?}", e.values);
        assert!(e.products < 500, "did not stop on the tolerance");
    }
}
