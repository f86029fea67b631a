//! PSNR of a diverged (NaN) image is NaN, never a number.
use gradstep_data::metrics::{psnr, psnr_of_mse};
use tch::{Device, Kind, Tensor};

#[test]
fn psnr_of_a_nan_mse_is_nan_not_200_db() {
    // Regression: `mse.max(1e-20)` took the floor for a NaN MSE and scored it 200 dB.
    assert!(psnr_of_mse(f64::NAN).is_nan());
    // A perfect match is still floored, and ordinary values are unchanged.
    assert_eq!(psnr_of_mse(0.0), 200.0);
    assert!((psnr_of_mse(1e-3) - 30.0).abs() < 1e-12);
}

#[test]
fn psnr_of_an_image_holding_nan_is_nan() {
    let reference = Tensor::full([2, 3, 12, 12], 0.5, (Kind::Float, Device::Cpu));
    let x = reference.copy();
    // Image 0 has one NaN pixel (clipping keeps NaN); image 1 is off by 0.1 everywhere.
    let _ = x.get(0).get(1).get(4).get(7).fill_(f64::NAN);
    let _ = x.get(1).fill_(0.6);
    let p = psnr(&x.clamp(0.0, 1.0), &reference).unwrap();
    assert!(p[0].is_nan(), "{p:?}");
    assert!((p[1] - 20.0).abs() < 1e-4, "{p:?}");
}
