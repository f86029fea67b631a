//! The tools of the experiment recipes (`gradstep experiment`), `restore --hole / --crop`, and
//! `scripts/experiments.sh`'s argument checks: none needs a trained model.
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn lines_draws_csv_and_json_tables_and_describes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Two sweep-like tables (a quoted cell, an empty PSNR) and a convergence.json.
    let a = dir.join("a.csv");
    std::fs::write(
        &a,
        "id,kernel,tau0,psnr,iterations\n1,\"levin:0\",1,20,10\n2,levin:1,1,22,12\n3,levin:0,10,25,30\n4,levin:0,100,,100\n",
    )
    .unwrap();
    let b = dir.join("b.csv");
    std::fs::write(&b, "tau0,psnr,iterations\n1,19,40\n10,24,35\n100,24.5,20\n").unwrap();
    let out = dir.join("fig.png");
    let o = gradstep()
        .args([
            "experiment",
            "lines",
            "--x",
            "tau0",
            "--log-x",
            "--y",
            "psnr",
        ])
        .args(["--y", "iterations", "--points", "--out"])
        .arg(&out)
        .arg(format!("fixed={}", a.display()))
        .arg(format!("backtracking={}", b.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(png_size(&out), (1440, 540), "two panels side by side");
    let s = text(&o.stdout);
    // The PSNR of τ₀ = 1 is the mean over the two kernels; the empty cell is left out.
    assert!(
        s.contains("fixed: 2 points, y 21.0000 at x = 0.0000"),
        "{s}"
    );
    assert!(s.contains("1 row(s) left out"), "{s}");
    assert!(s.contains("| 100.0000 | – | 24.5000 |"), "{s}");

    let conv = dir.join("convergence.json");
    std::fs::write(
        &conv,
        r#"{"algorithm": "gs-pgd", "warnings": ["w"], "records": [
            {"iteration": 0, "objective": 9.0, "psnr": 20.0},
            {"iteration": 1, "objective": 5.0, "psnr": 21.0},
            {"iteration": 2, "objective": 3.0, "psnr": null}]}"#,
    )
    .unwrap();
    let o = gradstep()
        .args([
            "experiment",
            "lines",
            "--x",
            "iteration",
            "--y",
            "objective:gap-log",
        ])
        .args(["--y", "psnr", "--out"])
        .arg(dir.join("conv.png"))
        .arg(format!("run={}", conv.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    // log10(9 − 3) at 0, log10(5 − 3) at 1; the final point (0) is not drawn.
    assert!(
        s.contains("run: 2 points, y 0.7782 at x = 0.0000 … 0.3010 at x = 1.0000"),
        "{s}"
    );

    // Bad input: one line naming the file and the problem.
    let o = gradstep()
        .args(["experiment", "lines", "--x", "tau0", "--y", "ssim", "--out"])
        .arg(dir.join("x.png"))
        .arg(format!("fixed={}", a.display()))
        .output()
        .unwrap();
    assert_refused(&o, &["a.csv", "no column `ssim`", "psnr"]);
    assert!(!dir.join("x.png").exists());
    let o = gradstep()
        .args(["experiment", "lines", "--x", "tau0", "--y", "psnr", "--out"])
        .arg(dir.join("x.png"))
        .arg(a.display().to_string())
        .output()
        .unwrap();
    assert_refused(&o, &["expected LABEL=PATH"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn runs_tabulates_restore_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let run = dir.join("r1");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("convergence.json"),
        r#"{"algorithm": "prox-drs", "iterations": 3, "stop": "max-iterations",
            "stop_label": "stopped: max-iterations, lyapunov not monotone (1 increases in 3 iterations, max 2.0e-3 rel.)",
            "monotonicity": {"quantity": "lyapunov", "tested": 3, "increases": 1, "max_relative_increase": 0.002},
            "psnr": {"returned": 25.4321, "last_iterate": null},
            "warnings": ["a", "b"],
            "records": [{"backtracks": 0}, {"backtracks": 2}, {"backtracks": 1}]}"#,
    )
    .unwrap();
    let o = gradstep()
        .args(["experiment", "runs"])
        .arg(format!("softplus={}", run.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    assert!(
        s.contains("| softplus | prox-drs | 3 | stopped: max-iterations, lyapunov not monotone (1 increases in 3 iterations, max 2.0e-3 rel.) | 1 Ψ (3) | 2.0e-3 | 3 | 25.43 | – | 2 |"),
        "{s}"
    );
    let o = gradstep()
        .args(["experiment", "runs"])
        .arg(format!("missing={}", dir.join("nope").display()))
        .output()
        .unwrap();
    assert_refused(&o, &["cannot read", "nope"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn montage_puts_crops_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let img = |name: &str, w: u32, h: u32| {
        let p = dir.join(name);
        image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10]))
            .save(&p)
            .unwrap();
        p
    };
    let (a, b, c) = (
        img("a.png", 30, 20),
        img("b.png", 10, 10),
        img("c.png", 12, 12),
    );
    let out = dir.join("m.png");
    let o = gradstep()
        .args([
            "experiment",
            "montage",
            "--crop",
            "10",
            "--zoom",
            "2",
            "--out",
        ])
        .arg(&out)
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Two 10×10 crops magnified ×2 and a white gap of 4×2 pixels.
    assert_eq!(png_size(&out), (20 + 8 + 20, 20));
    let o = gradstep()
        .args(["experiment", "montage", "--out"])
        .arg(dir.join("n.png"))
        .args([&b, &c])
        .output()
        .unwrap();
    assert_refused(&o, &["c.png", "12 pixels high", "equal heights"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn restore_refuses_a_hole_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Checked before the checkpoint is read: no checkpoint is needed.
    let o = gradstep()
        .args([
            "restore",
            "--checkpoint",
            "none.safetensors",
            "--task",
            "denoise",
        ])
        .args(["--hole", "1,2,3,4"])
        .arg("--clean")
        .arg(dir.join("in.png"))
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_refused(&o, &["--hole applies to --task inpaint only"]);
    let o = gradstep()
        .args([
            "restore",
            "--checkpoint",
            "none.safetensors",
            "--task",
            "inpaint",
        ])
        .args(["--hole", "1,2,3"])
        .arg("--clean")
        .arg(dir.join("in.png"))
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("bad inpainting hole `1,2,3`: not four integers"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.join("out").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn experiments_script_names_its_recipes_and_refuses_unknown_ones() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/experiments.sh");
    let o = Command::new("bash")
        .arg(&script)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = text(&o.stdout);
    for name in [
        "u-curve",
        "tau0",
        "sr-monotone",
        "activation",
        "lipschitz",
        "inpaint-holes",
        "--full",
    ] {
        assert!(help.contains(name), "help lacks {name}: {help}");
    }
    let o = Command::new("bash")
        .arg(&script)
        .arg("u-curves")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown recipe `u-curves`"),
        "{}",
        text(&o.stderr)
    );
}
