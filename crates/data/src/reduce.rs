//! Reductions of per-image numbers (PSNR, SSIM, iterations, seconds, Lipschitz estimates)
//! to the one number a table shows: the one place means, medians and maxima over images
//! are computed (`eval`, `lipschitz`, sweep records and figures, experiment tables,
//! benchmarks).
//!
//! An empty list has no mean, median or maximum (`None`): a table shows it as missing, never
//! as 0. Values are taken as given: a NaN is kept, so a diverged image that was not left
//! out makes the mean NaN rather than a number.

/// `(1/n) Σ vᵢ`, or `None` for no values.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The middle value (the upper one of the two middle values for an even count, as the
/// benchmarks have always reported), or `None` for no values. NaNs sort last.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// The largest value, or `None` for no values; NaNs are ignored unless all are NaN.
pub fn max(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values.into_iter().reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_of_known_lists() {
        assert_eq!(mean([1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(std::iter::empty()), None);
        assert!(mean([1.0, f64::NAN]).unwrap().is_nan());
        assert_eq!(median([5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(max([0.5, 2.5, -1.0]), Some(2.5));
        assert_eq!(max([f64::NAN, 1.0]), Some(1.0));
        assert_eq!(max(std::iter::empty()), None);
    }
}
