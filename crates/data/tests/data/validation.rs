//! The validation set is reproducible and its noise has the requested level.
use gradstep_data::validation_set;

use crate::common::{rgb_png, values};

#[test]
fn validation_set_is_reproducible_with_the_right_noise() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        rgb_png(&dir.path().join(format!("{i}.png")), 50 + i, 40, i);
    }
    let sig = [15.0, 25.0];
    let a = validation_set(dir.path(), 32, 3, &sig, 7, None).unwrap();
    let b = validation_set(dir.path(), 32, 3, &sig, 7, None).unwrap();
    assert_eq!(a.clean.size(), [3, 3, 32, 32]);
    assert_eq!(values(&a.clean), values(&b.clean));
    for ((sa, na), (sb, nb)) in a.noisy.iter().zip(&b.noisy) {
        assert_eq!(sa, sb);
        assert_eq!(values(na), values(nb));
        let noise: Vec<f32> = values(&(na - &a.clean));
        let n = noise.len() as f64;
        let mean = noise.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (noise
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(
            (std * 255.0 / sa - 1.0).abs() < 0.05,
            "σ {sa}: std {}",
            std * 255.0
        );
        assert!(mean.abs() * 255.0 < 0.2, "mean {mean}");
    }
    // centre crop: the first image is 50×40, crop at (4, 9)
    let img = gradstep_data::load_image(&dir.path().join("0.png"), 3, tch::Device::Cpu).unwrap();
    let want = img.narrow(2, 4, 32).narrow(3, 9, 32).squeeze_dim(0);
    assert_eq!(values(&a.clean.get(0)), values(&want));
    // another seed, other noise; a limit takes the first images
    let c = validation_set(dir.path(), 32, 3, &sig, 8, Some(2)).unwrap();
    assert_eq!(c.clean.size()[0], 2);
    assert_ne!(values(&c.noisy[0].1), values(&a.noisy[0].1.narrow(0, 0, 2)));
    let err = validation_set(dir.path(), 45, 3, &sig, 7, None).unwrap_err();
    assert!(
        err.to_string().contains("0.png") && err.to_string().contains("smaller"),
        "{err}"
    );
}

#[test]
fn cbsd68_validation_crops_are_stable() {
    let Some(shared) = crate::common::shared_dir() else {
        return;
    };
    let dir = shared.join("data/CBSD68");
    let a = validation_set(&dir, 256, 3, &[25.0], 0, Some(3)).unwrap();
    assert_eq!(a.clean.size(), [3, 3, 256, 256]);
    let b = validation_set(&dir, 256, 3, &[25.0], 0, Some(3)).unwrap();
    assert_eq!(values(&a.noisy[0].1), values(&b.noisy[0].1));
    // the noisy images' PSNR is the one of σ = 25 noise: 20·log10(255/25) ≈ 20.17 dB
    let psnr = gradstep_data::psnr(&a.noisy[0].1, &a.clean).unwrap();
    for p in psnr {
        assert!((p - 20.17).abs() < 0.1, "PSNR {p}");
    }
}
