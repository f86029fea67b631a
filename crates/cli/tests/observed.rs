//! `restore --observed`: restoring what the user observed (issue 15). An observation written by
//! `restore --clean` and restored with `--observed` (same kernel, noise level and algorithm)
//! gives the synthetic run's image: exactly through the lossless `observed.npy`, within the
//! 8-bit rounding through `observed.png`. Bad user input is refused before any work, in one
//! line naming the file.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradstep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradstep"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// The trained tiny GS-DRUNet of the model crate's tests (a gradstep checkpoint).
fn tiny() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/gs-drunet-tiny-elu.safetensors"
    ))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Exit code 1 and exactly one line on stderr containing every needle.
fn assert_refused(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks `{n}`: {}", lines[0]);
    }
}

/// A smooth `w × h` RGB image with some edges.
fn write_image(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = |a: f32| (127.0 + 100.0 * a.sin()) as u8;
        image::Rgb([
            v(x as f32 * 0.31),
            v(y as f32 * 0.23 + 1.0),
            if (x / 8 + y / 8) % 2 == 0 { 60 } else { 200 },
        ])
    })
    .save(path)
    .unwrap();
}

/// `restore` on the CPU with 4 iterations of GS-PnP: `args`, then the output folder.
fn restore(args: &[&str], outdir: &Path) -> Output {
    gradstep()
        .args([
            "restore",
            "--device",
            "cpu",
            "--max-iter",
            "4",
            "--checkpoint",
        ])
        .arg(tiny())
        .args(args)
        .arg(outdir)
        .output()
        .unwrap()
}

/// A `[1, C, H, W]` image read exactly (a float `.npy`) or from an image file.
fn read(path: &Path) -> tch::Tensor {
    gradstep_pnp::load_observation(path, 3, tch::Device::Cpu).unwrap()
}

fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// The `restored: PSNR … dB` value printed by `restore`.
fn restored_psnr(o: &Output) -> f64 {
    let out = stdout(o);
    out.lines()
        .find_map(|l| l.strip_prefix("restored: PSNR "))
        .and_then(|t| t.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no restored PSNR in {out}"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn observations_written_by_clean_restore_to_the_same_image_with_observed() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.png");
    write_image(&clean, 40, 32);
    // (task, the flags both modes share, the flags only `--observed` needs)
    let cases: [(&str, Vec<&str>, Vec<String>); 3] = [
        (
            "deblur",
            vec!["--kernel", "uniform", "--noise", "7.65"],
            vec![],
        ),
        (
            "sr",
            vec!["--kernel", "gaussian", "--scale", "2", "--noise", "7.65"],
            vec![],
        ),
        (
            "inpaint",
            vec!["--noise", "2.55"],
            vec![
                "--mask".into(),
                path(&dir.path().join("clean-inpaint/mask.png")).into(),
            ],
        ),
    ];
    for (task, shared, observed_only) in &cases {
        let synthetic = dir.path().join(format!("clean-{task}"));
        let mut args = vec!["--task", task, "--clean", path(&clean)];
        args.extend(shared.iter().copied());
        let o = restore(&args, &synthetic);
        assert_ok(&o);
        for f in ["observed.png", "observed.npy", "restored.npy", "run.json"] {
            assert!(synthetic.join(f).is_file(), "{task}: no {f}");
        }
        assert_eq!(*task == "inpaint", synthetic.join("mask.png").is_file());
        let y = read(&synthetic.join("observed.npy"));
        let x = read(&synthetic.join("restored.npy"));
        if *task == "sr" {
            // The output is `--scale` times the observation.
            assert_eq!(y.size(), [1, 3, 16, 20]);
            assert_eq!(x.size(), [1, 3, 32, 40]);
        }
        // The lossless observation: the same restoration to float precision, and the same
        // PSNR against the reference.
        for (source, tolerance) in [("observed.npy", 1e-6), ("observed.png", f64::INFINITY)] {
            let out = dir.path().join(format!("observed-{task}-{source}"));
            let obs = synthetic.join(source);
            let mut args = vec!["--task", task, "--observed", path(&obs)];
            args.extend(shared.iter().copied());
            args.extend(observed_only.iter().map(String::as_str));
            args.extend(["--reference", path(&clean)]);
            let o2 = restore(&args, &out);
            assert_ok(&o2);
            let restored = read(&out.join("restored.npy"));
            let diff = max_abs_diff(&restored, &x);
            if tolerance.is_finite() {
                assert!(
                    diff <= tolerance,
                    "{task} from {source}: max |Δ| = {diff:e}"
                );
                assert_eq!(restored_psnr(&o2), restored_psnr(&o), "{task}");
            } else {
                // 8 bits: the observation is rounded (by at most 0.5/255) and clipped to
                // [0, 1]; the restoration moves by less (measured: rms 3e-4 to 8e-4, max
                // 1e-3 to 2.7e-3 on a 32 × 40 image after 4 iterations).
                let rms = (&restored - &x).square().mean(tch::Kind::Double).sqrt();
                let rms = rms.double_value(&[]);
                eprintln!("{task} from {source}: max |Δ| = {diff:.2e}, rms {rms:.2e}");
                assert!(rms < 0.5 / 255.0, "{task} from {source}: rms {rms:e}");
                assert!(diff < 2.0 / 255.0, "{task} from {source}: max |Δ| {diff:e}");
                let dpsnr = (restored_psnr(&o2) - restored_psnr(&o)).abs();
                assert!(dpsnr < 0.3, "{task} from {source}: ΔPSNR {dpsnr} dB");
            }
        }
    }
}

#[test]
fn observed_restores_without_a_reference_and_writes_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("blurred.png");
    write_image(&img, 32, 32);
    let out = dir.path().join("out");
    let o = restore(
        &[
            "--task",
            "deblur",
            "--observed",
            path(&img),
            "--kernel",
            "gaussian",
            "--noise",
            "5",
        ],
        &out,
    );
    assert_ok(&o);
    assert!(stdout(&o).contains("no reference"), "{}", stdout(&o));
    for f in [
        "restored.png",
        "restored.npy",
        "convergence.json",
        "config.json",
        "run.json",
        "objective.png",
        "residual.png",
    ] {
        assert!(out.join(f).is_file(), "no {f}");
    }
    assert!(
        !out.join("psnr.png").exists(),
        "a PSNR plot without a reference"
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["mode"], "observed");
    assert_eq!(run["noise"], 5.0);
    assert_eq!(run["kernel"], "gaussian");
    let help = gradstep().args(["restore", "--help"]).output().unwrap();
    let help = stdout(&help);
    assert!(
        help.contains("SYNTHETIC MODE") && help.contains("REAL-DATA MODE"),
        "{help}"
    );
}

#[test]
fn bad_observations_kernels_and_masks_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("y.png");
    write_image(&img, 24, 20);
    let small = dir.path().join("small.png");
    write_image(&small, 8, 8);
    let out = dir.path().join("out");
    let y = path(&img);
    let deblur = ["--task", "deblur", "--observed", y];

    // ν is required: it sets σ and λ.
    let o = restore(&[&deblur[..], &["--kernel", "uniform"]].concat(), &out);
    assert_refused(&o, &["--observed with --task deblur needs --noise"]);
    // So is the kernel.
    let o = restore(&[&deblur[..], &["--noise", "5"]].concat(), &out);
    assert_refused(&o, &["needs the blur kernel: --kernel"]);
    // A kernel larger than the image.
    let big = dir.path().join("big.npy");
    write_npy(&big, &[31, 31], &vec![1.0 / 961.0; 31 * 31]);
    let k = format!("file:{}", big.display());
    let o = restore(
        &[&deblur[..], &["--noise", "5", "--kernel", &k]].concat(),
        &out,
    );
    assert_refused(
        &o,
        &["big.npy", "31×31", "larger than the 20×24 image", "y.png"],
    );
    // A non-finite observation.
    let nan = dir.path().join("nan.npy");
    let mut v = vec![0.5; 6 * 5 * 3];
    v[7] = f64::NAN;
    write_npy(&nan, &[6, 5, 3], &v);
    let o = restore(
        &[
            "--task",
            "denoise",
            "--observed",
            path(&nan),
            "--noise",
            "5",
        ],
        &out,
    );
    assert_refused(&o, &["nan.npy", "1 non-finite value(s)", "flat index 7"]);
    // Masks: the wrong size, or one that keeps nothing.
    let o = restore(
        &["--task", "inpaint", "--observed", y, "--mask", path(&small)],
        &out,
    );
    assert_refused(&o, &["small.png", "the mask is 8×8, the observation 20×24"]);
    let black = dir.path().join("black.png");
    image::GrayImage::new(24, 20).save(&black).unwrap();
    let o = restore(
        &["--task", "inpaint", "--observed", y, "--mask", path(&black)],
        &out,
    );
    assert_refused(&o, &["black.png", "keeps no pixel"]);
    let o = restore(&["--task", "inpaint", "--observed", y], &out);
    assert_refused(&o, &["needs --mask"]);
    // A super-resolution reference that is not `--scale` times the observation.
    let o = restore(
        &[
            "--task",
            "sr",
            "--observed",
            y,
            "--kernel",
            "gaussian",
            "--noise",
            "5",
            "--scale",
            "3",
            "--reference",
            y,
        ],
        &out,
    );
    assert_refused(&o, &["the reference is 20×24", "×3 of it is 60×72"]);
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    // Exactly one mode.
    let o = restore(&["--task", "denoise", "--noise", "5"], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--clean"), "{}", stderr(&o));
    let o = restore(&["--task", "denoise", "--clean", y, "--observed", y], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());

    // A kernel that does not sum to 1 is normalised, with a warning naming it.
    let unnormalised = dir.path().join("k.npy");
    write_npy(&unnormalised, &[3, 3], &[2.0; 9]);
    let k = format!("file:{}", unnormalised.display());
    let o = restore(
        &[&deblur[..], &["--noise", "5", "--kernel", &k]].concat(),
        &out,
    );
    assert_ok(&o);
    assert!(
        stderr(&o).contains("k.npy: the kernel sums to 18, not 1; it is normalised to sum 1"),
        "{}",
        stderr(&o)
    );
}

/// A float64 C-order `.npy` of `shape`.
fn write_npy(path: &Path, shape: &[usize], values: &[f64]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    for v in values {
        b.extend(v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn eval_pairs_observations_by_stem_and_names_a_missing_partner() {
    let dir = tempfile::tempdir().unwrap();
    let (clean_dir, observed_dir) = (dir.path().join("clean"), dir.path().join("observed"));
    std::fs::create_dir_all(&clean_dir).unwrap();
    std::fs::create_dir_all(&observed_dir).unwrap();
    let mut printed = Vec::new();
    for (stem, w) in [("a", 24), ("b", 32)] {
        let clean = clean_dir.join(format!("{stem}.png"));
        write_image(&clean, w, 24);
        let out = dir.path().join(format!("restore-{stem}"));
        let o = restore(
            &[
                "--task",
                "deblur",
                "--kernel",
                "uniform",
                "--noise",
                "7.65",
                "--clean",
                path(&clean),
            ],
            &out,
        );
        assert_ok(&o);
        printed.push(restored_psnr(&o));
        std::fs::copy(
            out.join("observed.npy"),
            observed_dir.join(format!("{stem}.npy")),
        )
        .unwrap();
    }
    let eval = |extra: &[&str], out: &Path| {
        gradstep()
            .args([
                "eval",
                "--device",
                "cpu",
                "--task",
                "deblur",
                "--max-iter",
                "4",
            ])
            .arg("--checkpoint")
            .arg(tiny())
            .args(["--observed-dir", path(&observed_dir)])
            .args(["--clean-dir", path(&clean_dir)])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("eval");
    let o = eval(&["--kernels", "uniform", "--noise", "7.65"], &out);
    assert_ok(&o);
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (stem, psnr)) in rows.iter().zip(["a", "b"].iter().zip(&printed)) {
        assert_eq!(row["image"], *stem);
        let got = row["psnr"].as_f64().unwrap();
        // `restore` prints two decimals.
        assert!(
            (got - psnr).abs() < 0.006,
            "{stem}: eval {got}, restore {psnr}"
        );
    }

    // Inpainting: each observation with its own mask, paired by stem too.
    let (inpainted, masks) = (dir.path().join("inpainted"), dir.path().join("masks"));
    std::fs::create_dir_all(&inpainted).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let mut printed = Vec::new();
    for stem in ["a", "b"] {
        let out = dir.path().join(format!("inpaint-{stem}"));
        let clean = clean_dir.join(format!("{stem}.png"));
        let o = restore(
            &[
                "--task",
                "inpaint",
                "--noise",
                "2.55",
                "--clean",
                path(&clean),
            ],
            &out,
        );
        assert_ok(&o);
        printed.push(restored_psnr(&o));
        std::fs::copy(
            out.join("observed.npy"),
            inpainted.join(format!("{stem}.npy")),
        )
        .unwrap();
        std::fs::copy(out.join("mask.png"), masks.join(format!("{stem}.png"))).unwrap();
    }
    let out = dir.path().join("eval-inpaint");
    let o = gradstep()
        .args([
            "eval",
            "--device",
            "cpu",
            "--task",
            "inpaint",
            "--max-iter",
            "4",
        ])
        .arg("--checkpoint")
        .arg(tiny())
        .args(["--observed-dir", path(&inpainted)])
        .args(["--clean-dir", path(&clean_dir)])
        .args([
            "--mask-dir",
            path(&masks),
            "--noise",
            "2.55",
            "--out",
            path(&out),
        ])
        .output()
        .unwrap();
    assert_ok(&o);
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    for (row, psnr) in rows.as_array().unwrap().iter().zip(&printed) {
        let got = row["psnr"].as_f64().unwrap();
        assert!((got - psnr).abs() < 0.006, "{row}: restore {psnr}");
    }
    std::fs::remove_file(masks.join("b.png")).unwrap();
    let o = gradstep()
        .args([
            "eval",
            "--device",
            "cpu",
            "--task",
            "inpaint",
            "--checkpoint",
        ])
        .arg(tiny())
        .args(["--observed-dir", path(&inpainted)])
        .args(["--clean-dir", path(&clean_dir)])
        .args(["--mask-dir", path(&masks), "--noise", "2.55"])
        .arg("--out")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert_refused(&o, &["b.npy: no mask `b.*` in"]);

    // The flags the observations were made with are required, once.
    let bad = dir.path().join("bad");
    let o = eval(&["--kernels", "uniform"], &bad);
    assert_refused(&o, &["--observed-dir needs one --noise"]);
    let o = eval(&["--kernels", "uniform,gaussian", "--noise", "7.65"], &bad);
    assert_refused(&o, &["needs one kernel in --kernels"]);
    // A missing partner, either way, is named.
    write_image(&clean_dir.join("c.png"), 24, 24);
    let o = eval(&["--kernels", "uniform", "--noise", "7.65"], &bad);
    assert_refused(&o, &["c.png: no observation `c.*` in"]);
    std::fs::remove_file(clean_dir.join("c.png")).unwrap();
    std::fs::remove_file(clean_dir.join("b.png")).unwrap();
    let o = eval(&["--kernels", "uniform", "--noise", "7.65"], &bad);
    assert_refused(&o, &["b.npy: no clean partner `b.*` in"]);
    assert!(!bad.exists());
}
