//! Gray, RGBA, 16-bit and palette images become 1 or 3 channels on [0, 1].
use gradstep_data::image_io::{decode_u8, load_image};
use image::{GrayImage, ImageBuffer, Luma, RgbaImage};
use tch::Device;

use crate::common::values;

#[test]
fn gray_to_colour_replicates_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.png");
    GrayImage::from_fn(5, 4, |x, y| Luma([(10 * x + 40 * y) as u8]))
        .save(&p)
        .unwrap();
    let t = load_image(&p, 3, Device::Cpu).unwrap();
    assert_eq!(t.size(), [1, 3, 4, 5]);
    let v = values(&t);
    for i in 0..20 {
        let want = (10 * (i % 5) + 40 * (i / 5)) as f32 / 255.0;
        for c in 0..3 {
            assert!((v[c * 20 + i] - want).abs() < 1e-6, "pixel {i} channel {c}");
        }
    }
}

#[test]
fn rgba_drops_alpha_and_colour_to_gray_is_luma() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.png");
    RgbaImage::from_fn(3, 2, |x, _| image::Rgba([200, 100, 50, (x * 100) as u8]))
        .save(&p)
        .unwrap();
    let (px, h, w) = decode_u8(&p, 3).unwrap();
    assert_eq!((h, w), (2, 3));
    assert_eq!(px, [200u8, 100, 50].repeat(6));
    let (gray, _, _) = decode_u8(&p, 1).unwrap();
    // BT.709 luma of (200, 100, 50): 0.2126·200 + 0.7152·100 + 0.0722·50 = 117.65
    for g in gray {
        assert!((g as f64 - 117.65).abs() <= 1.0, "luma {g}");
    }
}

#[test]
fn sixteen_bit_keeps_precision_as_float_and_rounds_to_eight_bits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g16.png");
    let vals = [0u16, 257 * 128, 32896 + 100, 65535];
    ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(4, 1, |x, _| Luma([vals[x as usize]]))
        .save(&p)
        .unwrap();
    let v = values(&load_image(&p, 1, Device::Cpu).unwrap());
    for (got, want) in v.iter().zip(vals) {
        assert!(
            (got - want as f32 / 65535.0).abs() < 1e-6,
            "{got} vs {want}"
        );
    }
    let (px, _, _) = decode_u8(&p, 3).unwrap();
    let want: Vec<u8> = [0u8, 128, 128, 255].iter().flat_map(|&b| [b; 3]).collect();
    assert_eq!(px, want);
}

#[test]
fn palette_png_is_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pal.png");
    let f = std::fs::File::create(&p).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), 2, 1);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(vec![255u8, 0, 0, 0, 0, 255]);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(&[1, 0]).unwrap();
    wr.finish().unwrap();
    let (px, h, w) = decode_u8(&p, 3).unwrap();
    assert_eq!((h, w), (1, 2));
    assert_eq!(px, [0, 0, 255, 255, 0, 0]);
}
