//! Hostile and careless input at the command line (issue "Reliability and security"): each
//! refused case is one line on stderr naming the flag or the file, exit code 1 (not a panic's
//! 101), nothing written and nothing lost. Accepted edge cases (images under SSIM's window)
//! report what they can.
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn denoise(args: &[&str], files: &[&Path]) -> Output {
    gradstep()
        .args(["denoise", "--device", "cpu", "--checkpoint"])
        .arg(tiny_checkpoint())
        .args(args)
        .args(files)
        .output()
        .unwrap()
}

/// `gradstep restore` on the CPU with a few iterations: `extra` flags, then input and folder.
fn restore(extra: &[&str], input: &Path, outdir: &Path) -> Output {
    gradstep()
        .args([
            "restore",
            "--device",
            "cpu",
            "--max-iter",
            "3",
            "--checkpoint",
        ])
        .arg(tiny_checkpoint())
        .args(extra)
        .arg("--clean")
        .arg(input)
        .arg(outdir)
        .output()
        .unwrap()
}

/// A version-1 `.npy` file of float64 values with the given header shape text.
fn write_npy(path: &Path, shape: &str, values: &[f64]) {
    let header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn noise_levels_out_of_0_255_are_refused_by_flag_or_config_field_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 16, 16);
    let out = dir.path().join("out.png");
    // It used to panic (exit 101) inside the denoiser.
    for sigma in ["1e308", "inf", "NaN", "0", "256"] {
        let o = denoise(&["--sigma", sigma], &[&img, &out]);
        assert_refused(&o, &["--sigma", "(0, 255]", "got"]);
    }
    assert!(!out.exists());

    let outdir = dir.path().join("restored");
    let o = restore(&["--task", "denoise", "--noise", "1e308"], &img, &outdir);
    assert_refused(&o, &["--noise", "[0, 255]", "1e308"]);
    let o = restore(
        &["--task", "denoise", "--sigma-denoiser", "300"],
        &img,
        &outdir,
    );
    assert_refused(&o, &["--sigma-denoiser", "300"]);
    // A PnP config file: the denoiser level and the warm-up level.
    let cfg = dir.path().join("cfg.json");
    let gs = |sigma: &str, warmup: &str| {
        format!(
            r#"{{"algorithm": "gs-pgd", "lambda": 0.1, "sigma": {sigma}, "gamma": 0.1, "eta": 0.9,
            "backtracking": false, "max_iter": 3, "tol": null, "warmup": {warmup}}}"#
        )
    };
    std::fs::write(&cfg, gs("1e308", "null")).unwrap();
    let config = ["--task", "denoise", "--config", cfg.to_str().unwrap()];
    assert_refused(
        &restore(&config, &img, &outdir),
        &["cfg.json", "sigma must be in (0, 255]"],
    );
    std::fs::write(&cfg, gs("10", r#"{"sigma": 1e300, "iterations": 2}"#)).unwrap();
    assert_refused(
        &restore(&config, &img, &outdir),
        &["cfg.json", "warmup.sigma"],
    );
    assert!(!outdir.exists());

    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    write_image(&images.join("a.png"), 16, 16);
    let eval_out = dir.path().join("eval");
    let o = gradstep()
        .args([
            "eval",
            "--device",
            "cpu",
            "--task",
            "inpaint",
            "--checkpoint",
        ])
        .arg(tiny_checkpoint())
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&eval_out)
        .args(["--noise", "7.65,256"])
        .output()
        .unwrap();
    assert_refused(&o, &["--noise", "256"]);
    assert!(!eval_out.exists());

    // A sweep config: noise levels and denoiser levels, also relative ones.
    let sweep = |noise: &str, sigma_den: &str| {
        let path = dir.path().join("sweep.json");
        let text = format!(
            r#"{{"task": "inpaint", "axes": {{"algorithm": ["gs-pgd"], "checkpoint": [{:?}],
            "image_set": [{{"name": "a", "dir": {:?}}}], "noise": [{noise}],
            "sigma_den": [{sigma_den}]}}}}"#,
            tiny_checkpoint(),
            images
        );
        std::fs::write(&path, text).unwrap();
        gradstep()
            .args(["sweep", "run", "--device", "cpu", "--config"])
            .arg(&path)
            .arg("--runs-dir")
            .arg(dir.path().join("sweeps"))
            .output()
            .unwrap()
    };
    assert_refused(
        &sweep("7.65, 1e308", r#"{"absolute": 10}"#),
        &["sweep.json", "axes.noise", "[0, 255]"],
    );
    assert_refused(
        &sweep("7.65", r#"{"absolute": 1000}"#),
        &["sweep.json", "axes.sigma_den", "1000"],
    );
    assert_refused(
        &sweep("7.65", r#"{"times_noise": 100}"#),
        &["sweep.json", "times_noise 100", "765"],
    );
    assert!(!dir.path().join("sweeps").exists());
}

#[test]
fn kernels_with_an_infinite_sum_or_a_nan_entry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 16, 16);
    let outdir = dir.path().join("out");
    // Each entry is finite, their sum is not: normalised, the kernel became all zeros and the
    // "restoration" a black image (PSNR 4.8 dB, exit 0).
    let inf = dir.path().join("inf.json");
    std::fs::write(
        &inf,
        r#"{"kernels": [{"height": 2, "width": 2, "values": [[1e308, 1e308], [1e308, 1e308]]}]}"#,
    )
    .unwrap();
    let kernel = format!("file:{}", inf.display());
    let o = restore(&["--task", "deblur", "--kernel", &kernel], &img, &outdir);
    assert_refused(&o, &["inf.json", "sum to inf"]);
    let inf_npy = dir.path().join("inf.npy");
    write_npy(&inf_npy, "(2, 2)", &[1e308; 4]);
    let kernel = format!("file:{}", inf_npy.display());
    let o = restore(&["--task", "deblur", "--kernel", &kernel], &img, &outdir);
    assert_refused(&o, &["inf.npy", "sum to inf"]);
    let nan = dir.path().join("nan.npy");
    write_npy(&nan, "(2, 2)", &[1.0, f64::NAN, 1.0, 1.0]);
    let kernel = format!("file:{}", nan.display());
    let o = restore(&["--task", "deblur", "--kernel", &kernel], &img, &outdir);
    assert_refused(&o, &["nan.npy", "entry 1 is NaN"]);
    assert!(!outdir.exists());
}

#[test]
fn truncated_jpeg_and_png_inputs_are_refused() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let whole_jpeg = dir.path().join("whole.jpg");
    image::open(shared.join("data/set3c/butterfly.png"))
        .unwrap()
        .save(&whole_jpeg)
        .unwrap();
    let png = std::fs::read(shared.join("data/set3c/butterfly.png")).unwrap();
    let jpeg = std::fs::read(&whole_jpeg).unwrap();
    let cases = [
        // The `image` crate decodes this one without an error, the missing rows grey.
        ("cut.jpg", &jpeg[..jpeg.len() * 2 / 3]),
        ("no-eoi.jpg", &jpeg[..jpeg.len() - 2]),
        ("no-iend.png", &png[..png.len() - 12]),
        ("cut.png", &png[..png.len() / 2]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = denoise(&["--sigma", "15"], &[&path, &out]);
        assert_refused(&o, &[name, "truncated or corrupt image"]);
        assert!(!out.exists(), "{name}: an output was written");
    }
    // The whole files are fine.
    let o = denoise(&["--sigma", "15"], &[&whole_jpeg, &out]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_hostile_npy_header_is_refused_fast_under_a_memory_limit_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 16, 16);
    // 100 000 × 100 000 float64 values: 80 GB that the file does not hold.
    let npy = dir.path().join("huge.npy");
    write_npy(&npy, "(100000, 100000)", &[1.0; 4]);
    let outdir = dir.path().join("out");
    // 8 GiB of address space: libtorch starts, an 80 GB allocation cannot.
    let script = format!(
        "ulimit -v 8388608 && exec {:?} restore --device cpu --task deblur --kernel file:{:?} \
         --checkpoint {:?} --clean {:?} {:?}",
        env!("CARGO_BIN_EXE_gradstep"),
        npy,
        tiny_checkpoint(),
        img,
        outdir
    );
    let t0 = Instant::now();
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_refused(&o, &["huge.npy", "100000×100000", "1024"]);
    assert!(!stderr(&o).contains("frame #"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    // A shape within bounds but larger than the data.
    write_npy(&npy, "(9, 9)", &[1.0; 4]);
    let kernel = format!("file:{}", npy.display());
    let o = restore(&["--task", "deblur", "--kernel", &kernel], &img, &outdir);
    assert_refused(&o, &["huge.npy", "holds 32 bytes", "648"]);
    assert!(!outdir.exists());
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("in.png");
    write_image(&img, 16, 16);
    let before = std::fs::read(&img).unwrap();
    let sym = d.join("sym.png");
    std::os::unix::fs::symlink(&img, &sym).unwrap();
    let hard = d.join("hard.png");
    std::fs::hard_link(&img, &hard).unwrap();
    let dotted = d.join(".").join("in.png");
    for output in [&img, &sym, &hard, &dotted] {
        let o = denoise(&["--sigma", "15"], &[&img, output]);
        assert_refused(&o, &["same file as", "in.png", "refusing to overwrite"]);
    }
    let noisy_is_input = [
        "--sigma",
        "15",
        "--add-noise",
        "--save-noisy",
        img.to_str().unwrap(),
    ];
    let o = denoise(&noisy_is_input, &[&img, &d.join("o.png")]);
    assert_refused(&o, &["in.png", "same file as"]);
    // The reference is an input too.
    let o = denoise(
        &["--sigma", "15", "--reference", sym.to_str().unwrap()],
        &[&d.join("other.png"), &hard],
    );
    assert_refused(&o, &["hard.png", "same file as"]);
    assert!(!d.join("o.png").exists());

    // restore: its input, config or kernel file where it would write one of its files.
    let outdir = d.join("run");
    std::fs::create_dir(&outdir).unwrap();
    let inside = outdir.join("restored.png");
    std::fs::copy(&img, &inside).unwrap();
    let o = restore(&["--task", "denoise"], &inside, &outdir);
    assert_refused(&o, &["restored.png", "same file as"]);
    let cfg = outdir.join("config.json");
    std::fs::write(&cfg, "{}").unwrap();
    let o = restore(
        &["--task", "denoise", "--config", cfg.to_str().unwrap()],
        &img,
        &outdir,
    );
    assert_refused(&o, &["config.json", "same file as"]);
    assert_eq!(std::fs::read(&img).unwrap(), before);
    assert_eq!(std::fs::read(&inside).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "{}");
}

#[test]
fn restore_removes_its_stale_files_from_a_reused_folder_and_keeps_others() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 32, 32);
    let outdir = dir.path().join("run");
    let run = |algorithm: &str| {
        gradstep()
            .args(["restore", "--device", "cpu", "--task", "deblur", "--kernel"])
            .args(["uniform", "--max-iter", "2", "--algorithm", algorithm])
            .arg("--checkpoint")
            .arg(tiny_checkpoint())
            .arg("--clean")
            .arg(&img)
            .arg(&outdir)
            .output()
            .unwrap()
    };
    let o = run("gs-pgd");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(outdir.join("objective.png").is_file() && outdir.join("psnr.png").is_file());
    std::fs::write(outdir.join("notes.txt"), "mine").unwrap();
    // HQS has no objective, so it draws no objective plot: the GS-PnP one must not stay
    // behind as if it were this run's.
    let o = run("hqs");
    assert!(o.status.success(), "{}", stderr(&o));
    // HQS draws PSNR and residual only: no objective and no step size.
    assert!(stdout(&o).contains("2 plot(s)"), "{}", stdout(&o));
    assert!(!outdir.join("objective.png").exists());
    assert!(!outdir.join("tau.png").exists());
    assert!(outdir.join("psnr.png").is_file() && outdir.join("restored.png").is_file());
    let log = std::fs::read_to_string(outdir.join("convergence.json")).unwrap();
    assert!(log.contains("\"algorithm\": \"hqs\""), "{log}");
    assert_eq!(
        std::fs::read_to_string(outdir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn an_unknown_output_extension_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 16, 16);
    // No checkpoint exists: the extension is refused before it would be loaded.
    let missing = dir.path().join("missing.safetensors");
    let run = |extra: &[&str], output: &Path| {
        gradstep()
            .args(["denoise", "--sigma", "15", "--checkpoint"])
            .arg(&missing)
            .args(extra)
            .arg(&img)
            .arg(output)
            .output()
            .unwrap()
    };
    for name in ["out.xyz", "out.gif", "out"] {
        let output = dir.path().join(name);
        assert_refused(&run(&[], &output), &[name, "unknown image format"]);
        assert!(!output.exists());
    }
    let noisy = dir.path().join("noisy.webp");
    let o = run(
        &["--add-noise", "--save-noisy", noisy.to_str().unwrap()],
        &dir.path().join("out.png"),
    );
    assert_refused(&o, &["noisy.webp", "unknown image format"]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only in.png"
    );
}

#[test]
fn save_noisy_without_add_noise_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("in.png");
    write_image(&img, 16, 16);
    let (noisy, out) = (dir.path().join("noisy.png"), dir.path().join("out.png"));
    let o = denoise(
        &["--sigma", "15", "--save-noisy", noisy.to_str().unwrap()],
        &[&img, &out],
    );
    assert_refused(&o, &["--save-noisy", "--add-noise"]);
    assert!(!noisy.exists() && !out.exists());
    let o = denoise(
        &[
            "--sigma",
            "15",
            "--add-noise",
            "--save-noisy",
            noisy.to_str().unwrap(),
        ],
        &[&img, &out],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&noisy).unwrap(), std::fs::read(&img).unwrap());
}

#[test]
fn images_under_the_ssim_window_report_psnr_and_ssim_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let img = images.join("small.png");
    write_image(&img, 8, 8);
    let outdir = dir.path().join("run");
    let o = restore(&["--task", "denoise", "--noise", "15"], &img, &outdir);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let restored = s
        .lines()
        .find(|l| l.starts_with("restored: PSNR "))
        .unwrap();
    assert!(restored.contains("dB  SSIM n/a"), "{s}");
    assert!(
        s.contains("observed: PSNR ") && s.contains("SSIM n/a"),
        "{s}"
    );
    let psnr: f64 = restored.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(psnr > 10.0 && psnr.is_finite(), "{s}");

    let eval_out = dir.path().join("eval");
    let o = gradstep()
        .args([
            "eval",
            "--device",
            "cpu",
            "--task",
            "inpaint",
            "--max-iter",
            "2",
        ])
        .args(["--noise", "7.65", "--checkpoint"])
        .arg(tiny_checkpoint())
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&eval_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(eval_out.join("results.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().contains(",n/a,"), "{csv}");
    let json = std::fs::read_to_string(eval_out.join("results.json")).unwrap();
    assert!(json.contains("\"ssim\": null"), "{json}");
}

#[test]
fn a_cpu_out_of_memory_error_is_one_line_without_the_cpp_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.png");
    // 4096² pixels: the first feature maps alone need gigabytes.
    image::RgbImage::from_pixel(4096, 4096, image::Rgb([90, 120, 150]))
        .save(&img)
        .unwrap();
    let out = dir.path().join("out.png");
    // 4 GiB of address space: enough to load libtorch (about 2.6 GiB mapped), not to denoise.
    let script = format!(
        "ulimit -v 4194304 && exec {:?} denoise --device cpu --sigma 15 --checkpoint {:?} {:?} {:?}",
        env!("CARGO_BIN_EXE_gradstep"),
        tiny_checkpoint(),
        img,
        out
    );
    let o = Command::new("sh")
        .args(["-c", &script])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_refused(&o, &["big.png", "libtorch", "allocate"]);
    let err = stderr(&o);
    assert!(
        !err.contains("Exception raised from") && !err.contains("frame #"),
        "{err}"
    );
    // The libtorch message is printed once, not again as its own source.
    assert_eq!(err.matches("DefaultCPUAllocator").count(), 1, "{err}");
    assert!(!out.exists());
}
