//! Helpers shared by the model tests.
#![allow(dead_code)]
use std::path::PathBuf;

use tch::Tensor;

/// `../shared` beside the checkout, or `$GRADSTEP_SHARED`. `None` (and a message) when
/// absent, unless `GRADSTEP_REQUIRE_SHARED=1` (CI), where its absence fails the test.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if dir.join("reference").is_dir() {
        return Some(dir);
    }
    if std::env::var("GRADSTEP_REQUIRE_SHARED").as_deref() == Ok("1") {
        panic!(
            "GRADSTEP_REQUIRE_SHARED=1 but {} has no reference/",
            dir.display()
        );
    }
    eprintln!(
        "skipping: no shared data at {} (set GRADSTEP_SHARED)",
        dir.display()
    );
    None
}

/// `max|a − b| / max|b|`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let num = (a - b).abs().max().double_value(&[]);
    let den = b.abs().max().double_value(&[]).max(1e-30);
    num / den
}
