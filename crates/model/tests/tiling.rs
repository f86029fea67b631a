//! Tiled `∇g_σ` against the whole-image pass, with a trained tiny GS-DRUNet
//! (`fixtures/gs-drunet-tiny-elu.safetensors`: `configs/gs-drunet-tiny.json`, 1500 steps;
//! a randomly initialised network is not a denoiser and says nothing about locality).
use std::path::Path;

use gradstep_model::{Checkpoint, GradMethod, GradientStepDenoiser, Graph, Sigma, Tiling};
use tch::{Device, Kind, Tensor};

fn denoiser(method: GradMethod, tiling: Tiling) -> GradientStepDenoiser {
    tch::set_num_threads(1);
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gs-drunet-tiny-elu.safetensors"
    ));
    Checkpoint::read(path)
        .unwrap()
        .denoiser(Device::Cpu, Kind::Double, path)
        .unwrap()
        .with_method(method)
        .with_tiling(tiling)
        .unwrap()
}

/// A piecewise-smooth test image (a smooth random field plus a bright square), in [0, 1].
fn image(h: i64, w: i64) -> Tensor {
    tch::manual_seed(3);
    let opts = (Kind::Double, Device::Cpu);
    let coarse = Tensor::rand([1, 3, h / 16 + 1, w / 16 + 1], opts);
    let smooth = coarse
        .upsample_bilinear2d([h, w], false, None, None)
        .narrow(2, 0, h)
        .narrow(3, 0, w);
    let square = Tensor::zeros([1, 3, h, w], opts);
    let _ = square
        .narrow(2, h / 4, h / 3)
        .narrow(3, w / 3, w / 3)
        .fill_(0.5);
    (smooth * 0.6 + square).clamp(0.0, 1.0)
}

fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let mse = (a - b).square().mean(Kind::Double).double_value(&[]);
    -10.0 * mse.log10()
}

struct Run {
    psnr: f64,
    potential: f64,
    max_diff: f64,
}

/// Denoises a noisy version of a `h × w` image with `tiling` and compares with the whole pass.
fn compare(h: i64, w: i64, tiling: Tiling, method: GradMethod) -> (Run, Run) {
    let clean = image(h, w);
    tch::manual_seed(11);
    let sigma = Sigma::from_255(25.0);
    let noisy = &clean + clean.randn_like() * (25.0 / 255.0);
    let whole = denoiser(method, Tiling::Whole);
    let tiled = denoiser(method, tiling);
    let run = |den: &GradientStepDenoiser, reference: Option<&Tensor>| {
        let (pot, grad) = den
            .potential_and_grad(&noisy, &sigma, Graph::Inference)
            .unwrap();
        let d = &noisy - &grad;
        let max_diff = reference.map_or(0.0, |r| (&d - r).abs().max().double_value(&[]));
        (
            Run {
                psnr: psnr(&d, &clean),
                potential: pot.double_value(&[0]),
                max_diff,
            },
            d,
        )
    };
    let (w_run, d_whole) = run(&whole, None);
    let (t_run, _) = run(&tiled, Some(&d_whole));
    (w_run, t_run)
}

#[test]
fn tiles_with_overlap_stay_within_a_hundredth_of_a_db() {
    let tiling = Tiling::Fixed {
        tile: 48,
        overlap: 32,
    };
    let (whole, tiled) = compare(100, 132, tiling, GradMethod::Adjoint);
    eprintln!(
        "whole {:.4} dB, tiled {:.4} dB, max |ΔD| {:.2e}, g {:.6} vs {:.6}",
        whole.psnr, tiled.psnr, tiled.max_diff, whole.potential, tiled.potential
    );
    assert!((whole.psnr - tiled.psnr).abs() < 0.01);
    assert!(((whole.potential - tiled.potential) / whole.potential).abs() < 1e-3);
}

#[test]
fn more_overlap_means_a_closer_match() {
    let diff = |overlap| {
        compare(
            64,
            96,
            Tiling::Fixed { tile: 32, overlap },
            GradMethod::Adjoint,
        )
        .1
        .max_diff
    };
    let (none, some, more) = (diff(0), diff(16), diff(48));
    eprintln!("max |ΔD| with overlap 0/16/48: {none:.2e} {some:.2e} {more:.2e}");
    assert!(none > 2.0 * some, "{none} vs {some}");
    assert!(some > more, "{some} vs {more}");
    assert!(
        none > 1e-3,
        "cutting tiles without context must show: {none}"
    );
}

#[test]
fn one_tile_covering_the_image_is_the_whole_pass_exactly() {
    for method in [GradMethod::Adjoint, GradMethod::Autograd] {
        let (whole, tiled) = compare(
            40,
            56,
            Tiling::Fixed {
                tile: 64,
                overlap: 8,
            },
            method,
        );
        assert_eq!(tiled.max_diff, 0.0);
        assert_eq!(whole.potential, tiled.potential);
    }
}

#[test]
fn auto_tiling_runs_the_whole_image_when_it_fits() {
    let (_, tiled) = compare(40, 48, Tiling::Auto { overlap: 32 }, GradMethod::Adjoint);
    assert_eq!(tiled.max_diff, 0.0);
    let den = denoiser(GradMethod::Adjoint, Tiling::Auto { overlap: 32 });
    assert_eq!(den.auto_tile(), None);
}

#[test]
fn a_sigma_map_is_cut_with_the_tiles() {
    let clean = image(48, 64);
    let map = Tensor::linspace(5.0 / 255.0, 40.0 / 255.0, 64, (Kind::Double, Device::Cpu))
        .view([1, 1, 1, 64])
        .expand([1, 1, 48, 64], false)
        .contiguous();
    let whole = denoiser(GradMethod::Adjoint, Tiling::Whole);
    let one_tile = denoiser(
        GradMethod::Adjoint,
        Tiling::Fixed {
            tile: 64,
            overlap: 0,
        },
    );
    let tiled = denoiser(
        GradMethod::Adjoint,
        Tiling::Fixed {
            tile: 16,
            overlap: 16,
        },
    );
    let g = |d: &GradientStepDenoiser| {
        d.grad(&clean, &Sigma::Map(map.shallow_clone()), Graph::Inference)
            .unwrap()
    };
    let (gw, g1, gt) = (g(&whole), g(&one_tile), g(&tiled));
    assert_eq!((&gw - &g1).abs().max().double_value(&[]), 0.0);
    let rel = (&gw - &gt).abs().max().double_value(&[]) / gw.abs().max().double_value(&[]);
    assert!(rel < 0.2, "{rel}");
    let bad = whole.grad(&clean, &Sigma::Map(map.narrow(3, 0, 32)), Graph::Inference);
    assert!(bad.is_err());
    let bad = tiled.grad(&clean, &Sigma::Map(map.narrow(3, 0, 32)), Graph::Inference);
    assert!(bad.is_err());
}
