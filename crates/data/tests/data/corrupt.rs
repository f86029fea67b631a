//! Truncated files are refused with the path and the reason; output formats are checked
//! before any work.
use std::path::Path;

use gradstep_data::image_io::{check_output_format, decode, load_image};
use tch::Device;

use crate::common::rgb_png;

fn assert_corrupt(path: &Path) {
    let err = decode(path, 3).unwrap_err().to_string();
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains("truncated or corrupt image"),
        "{err}"
    );
}

#[test]
fn truncated_png_and_jpeg_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let png_path = rgb_png(&dir.path().join("whole.png"), 48, 40, 3);
    let jpeg_path = dir.path().join("whole.jpg");
    image::open(&png_path).unwrap().save(&jpeg_path).unwrap();
    let png = std::fs::read(&png_path).unwrap();
    let jpeg = std::fs::read(&jpeg_path).unwrap();
    for (name, bytes) in [
        // The `image` crate decodes these two without an error.
        ("cut.jpg", &jpeg[..jpeg.len() / 2]),
        ("no-eoi.jpg", &jpeg[..jpeg.len() - 2]),
        ("no-iend.png", &png[..png.len() - 12]),
        ("cut.png", &png[..png.len() - 40]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_corrupt(&path);
    }
    // Whole files load, also with bytes after the JPEG's end marker (as some cameras write).
    let mut padded = jpeg.clone();
    padded.extend([0u8; 16]);
    let padded_path = dir.path().join("padded.jpg");
    std::fs::write(&padded_path, &padded).unwrap();
    for p in [&png_path, &jpeg_path, &padded_path] {
        assert_eq!(
            load_image(p, 3, Device::Cpu).unwrap().size(),
            [1, 3, 40, 48]
        );
    }
}

#[test]
fn output_formats_are_known_before_writing() {
    for ok in ["a.png", "b.JPG", "c.jpeg", "d.bmp", "e.tif", "f.tiff"] {
        check_output_format(Path::new(ok)).unwrap();
    }
    for bad in ["a.xyz", "b.gif", "c.webp", "noext"] {
        let err = check_output_format(Path::new(bad)).unwrap_err().to_string();
        assert!(
            err.contains(bad) && err.contains("unknown image format"),
            "{err}"
        );
    }
}
