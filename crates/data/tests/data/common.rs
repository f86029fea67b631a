//! Small images generated in a temporary directory.
use std::path::{Path, PathBuf};

use gradstep_data::PatchSamplerConfig;
use tch::{Device, Tensor};

/// A byte that looks random in `(y, x, c, salt)`: no symmetry, so every dihedral
/// transform of a crop differs from the others.
pub fn value(y: u32, x: u32, c: u32, salt: u32) -> u8 {
    let mut z = (y as u64) << 40 ^ (x as u64) << 16 ^ (c as u64) << 8 ^ salt as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u8
}

/// Writes an 8-bit RGB PNG of `w × h` at `path` and returns the path.
pub fn rgb_png(path: &Path, w: u32, h: u32, salt: u32) -> PathBuf {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([0, 1, 2].map(|c| value(y, x, c, salt)))
    })
    .save(path)
    .unwrap();
    path.to_path_buf()
}

/// A dataset of `n` RGB images of varied sizes under `dir` (one in a subdirectory).
pub fn dataset(dir: &Path, n: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let sub = if i % 2 == 0 { "" } else { "nested/deeper" };
            rgb_png(
                &dir.join(sub).join(format!("img{i}.png")),
                40 + 7 * i,
                36 + 5 * i,
                i,
            )
        })
        .collect()
}

/// A small sampler config over `root`.
pub fn config(root: &Path, threads: usize) -> PatchSamplerConfig {
    PatchSamplerConfig {
        roots: vec![root.to_path_buf()],
        patch_size: 16,
        batch_size: 5,
        crops_per_image: 3,
        threads,
        seed: 42,
        prefetch: 2,
        ..Default::default()
    }
}

/// The values of a tensor, flattened.
pub fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1).to_device(Device::Cpu)).unwrap()
}

/// `../shared` beside the checkout, or `$GRADSTEP_SHARED`, when it holds `data/CBSD68`.
/// `None` (and a message) when absent, unless `GRADSTEP_REQUIRE_SHARED=1`, where it panics.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if dir.join("data/CBSD68").is_dir() {
        return Some(dir);
    }
    if std::env::var("GRADSTEP_REQUIRE_SHARED").as_deref() == Ok("1") {
        panic!(
            "GRADSTEP_REQUIRE_SHARED=1 but {} has no data/CBSD68",
            dir.display()
        );
    }
    eprintln!(
        "skipping: no shared data at {} (set GRADSTEP_SHARED)",
        dir.display()
    );
    None
}
