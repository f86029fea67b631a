//! Each cause printed once (issue 16): failing commands of every kind end with one line
//! `gradstep: error: …` naming the file or the problem, exit 1, and no `: `-separated segment
//! of that line appears twice (it read `denoiser: libtorch: X: libtorch: X: X` when an error
//! type both printed its source and chained it).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradstep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradstep"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn tiny() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/gs-drunet-tiny-elu.safetensors"
    ))
}

fn tiny_config() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/gs-drunet-tiny.json"
    ))
}

fn write_image(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]))
        .save(path)
        .unwrap();
}

/// The segments of `line` (after `gradstep: error: `) that occur more than once.
fn repeated_segments(line: &str) -> Vec<String> {
    let message = line.strip_prefix("gradstep: error: ").unwrap_or(line);
    let segments: Vec<&str> = message.split(": ").map(str::trim).collect();
    let mut repeated: Vec<String> = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if segments[..i].contains(s) && !repeated.iter().any(|r| r == s) {
            repeated.push(s.to_string());
        }
    }
    repeated
}

/// Exit 1, one stderr line holding every needle, no segment printed twice.
fn assert_one_line_each_cause_once(what: &str, o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line, got: {err}");
    let line = lines[0];
    assert!(line.starts_with("gradstep: error: "), "{what}: {line}");
    for n in needles {
        assert!(line.contains(n), "{what}: the line lacks `{n}`: {line}");
    }
    assert_eq!(
        repeated_segments(line),
        Vec::<String>::new(),
        "{what}: a cause is printed twice: {line}"
    );
}

#[test]
fn the_segment_check_catches_a_cause_printed_twice() {
    assert_eq!(
        repeated_segments("gradstep: error: denoiser: libtorch: X: libtorch: X: X"),
        vec!["libtorch".to_string(), "X".to_string()]
    );
    assert!(repeated_segments("gradstep: error: a.png: libtorch: out of memory").is_empty());
}

#[test]
fn failing_commands_print_one_line_with_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = d.join("image.png");
    write_image(&image, 40, 32);
    let out = |name: &str| d.join(name);

    // A corrupt checkpoint: the first 300 bytes of a good one.
    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &std::fs::read(tiny()).unwrap()[..300]).unwrap();
    let o = gradstep()
        .args([
            "denoise",
            "--device",
            "cpu",
            "--sigma",
            "15",
            "--checkpoint",
        ])
        .arg(&truncated)
        .arg(&image)
        .arg(out("a.png"))
        .output()
        .unwrap();
    assert_one_line_each_cause_once("corrupt checkpoint", &o, &["truncated.safetensors"]);

    // A bad image: PNG magic, then garbage.
    let bad_png = d.join("bad.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    std::fs::write(&bad_png, bytes).unwrap();
    let o = gradstep()
        .args([
            "denoise",
            "--device",
            "cpu",
            "--sigma",
            "15",
            "--checkpoint",
        ])
        .arg(tiny())
        .arg(&bad_png)
        .arg(out("b.png"))
        .output()
        .unwrap();
    assert_one_line_each_cause_once("bad image", &o, &["bad.png"]);

    // A bad kernel file.
    let bad_npy = d.join("kernel.npy");
    std::fs::write(&bad_npy, b"not a numpy file at all").unwrap();
    let o = gradstep()
        .args([
            "restore",
            "--device",
            "cpu",
            "--task",
            "deblur",
            "--checkpoint",
        ])
        .arg(tiny())
        .arg("--kernel")
        .arg(format!("file:{}", bad_npy.display()))
        .arg("--clean")
        .arg(&image)
        .arg(out("restore-kernel"))
        .output()
        .unwrap();
    assert_one_line_each_cause_once("bad kernel file", &o, &["kernel.npy"]);

    // An invalid training config value.
    let o = gradstep()
        .args(["train", "--device", "cpu", "--config"])
        .arg(tiny_config())
        .arg("--set")
        .arg(format!("runs_dir={}", out("runs").display()))
        .args(["--set", "noise.sigma_max_255=1e308"])
        .output()
        .unwrap();
    assert_one_line_each_cause_once(
        "invalid config value",
        &o,
        &["gs-drunet-tiny.json", "noise.sigma_max_255"],
    );

    // An invalid PnP config value.
    let pnp_config = d.join("pnp.json");
    std::fs::write(&pnp_config, r#"{"lambda": -1}"#).unwrap();
    let o = gradstep()
        .args([
            "restore", "--device", "cpu", "--task", "denoise", "--noise", "10",
        ])
        .arg("--checkpoint")
        .arg(tiny())
        .arg("--config")
        .arg(&pnp_config)
        .arg("--clean")
        .arg(&image)
        .arg(out("restore-config"))
        .output()
        .unwrap();
    assert_one_line_each_cause_once("invalid PnP config value", &o, &["pnp.json"]);

    // A missing file.
    let o = gradstep()
        .args([
            "denoise",
            "--device",
            "cpu",
            "--sigma",
            "15",
            "--checkpoint",
        ])
        .arg(tiny())
        .arg(d.join("missing.png"))
        .arg(out("c.png"))
        .output()
        .unwrap();
    assert_one_line_each_cause_once("missing file", &o, &["missing.png"]);

    // A libtorch error: under a 4 GiB address-space limit (libtorch maps about 2.6 GiB),
    // the first feature maps of a 4096² image cannot be allocated.
    let big = d.join("big.png");
    image::RgbImage::from_pixel(4096, 4096, image::Rgb([90, 120, 150]))
        .save(&big)
        .unwrap();
    let script = format!(
        "ulimit -v 4194304 && exec {:?} denoise --device cpu --sigma 15 --checkpoint {:?} {:?} {:?}",
        env!("CARGO_BIN_EXE_gradstep"),
        tiny(),
        big,
        out("d.png")
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_one_line_each_cause_once("libtorch error", &o, &["big.png", "libtorch: "]);

    // Nothing was written by any of them.
    for name in ["a.png", "b.png", "c.png", "d.png", "runs"] {
        assert!(!out(name).exists(), "{name} was written");
    }
}
