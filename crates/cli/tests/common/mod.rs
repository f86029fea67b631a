//! Helpers shared by the `gradstep` binary's integration tests: the binary, the venv's
//! Python, the shared test data, the tiny trained checkpoint, small images, and the
//! assertions on a refused command.
//!
//! Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `gradstep` binary under test, without `LD_LIBRARY_PATH`: binaries must find libtorch
/// through their rpath.
pub fn gradstep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradstep"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// The Python with torch and safetensors: `$GRADSTEP_PYTHON`, else the one the build used,
/// else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("GRADSTEP_PYTHON")
        .map(PathBuf::from)
        .or(option_env!("GRADSTEP_BUILD_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The shared test data (`$GRADSTEP_SHARED`, else `../shared` beside the checkout) when it
/// holds what these tests read (reference files, test images, the deepinv wheel);
/// otherwise the test is skipped with a message, or fails under `GRADSTEP_REQUIRE_SHARED=1`
/// (CI).
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    if ["reference", "data/set3c", "bench/wheels"]
        .iter()
        .all(|marker| dir.join(marker).is_dir())
    {
        return Some(dir);
    }
    assert!(
        std::env::var("GRADSTEP_REQUIRE_SHARED").as_deref() != Ok("1"),
        "no shared data at {}",
        dir.display()
    );
    eprintln!("skipping: no shared data at {}", dir.display());
    None
}

/// The trained tiny GS-DRUNet of the model crate's tests (a gradstep checkpoint).
pub fn tiny_checkpoint() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/gs-drunet-tiny-elu.safetensors"
    ))
}

/// The tiny training configuration (`configs/gs-drunet-tiny.json`).
pub fn tiny_config() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/gs-drunet-tiny.json"
    )
}

/// Bytes as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command's stderr as text.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The command's stdout as text.
pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

/// The one non-empty line of stderr, which contains every needle.
fn one_line_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks `{n}`: {}", lines[0]);
    }
}

/// A one-line error containing every needle, non-zero exit.
pub fn assert_clear_error(o: &Output, needles: &[&str]) {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(o)
    );
    one_line_with(o, needles);
}

/// Exit code 1 and exactly one line on stderr containing every needle (so no panic message
/// and no C++ backtrace).
pub fn assert_refused(o: &Output, needles: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit code 1; stdout: {}; stderr: {}",
        stdout(o),
        stderr(o)
    );
    one_line_with(o, needles);
}

/// A `w × h` RGB image with some structure, saved at `path` (format from the extension).
pub fn write_image(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) * 3 % 256) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

/// Two smooth `side × side` colour images `img0.png`, `img1.png` in `dir` (created): a
/// training set for the tiny configuration.
pub fn write_training_images(dir: &Path, side: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..2u32 {
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([(x * 5 + k * 40) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        });
        img.save(dir.join(format!("img{k}.png"))).unwrap();
    }
}
