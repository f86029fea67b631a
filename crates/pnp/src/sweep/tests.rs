//! Tests of the sweep engine: grid, ids, shards, records, resume, failures, merge, figures,
//! and one real run of [`PnpRunner`] on a tiny random model.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A fresh empty folder under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gradstep-sweep-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config JSON over existing (dummy) paths in `dir`.
fn config_json(dir: &Path, axes_extra: &str) -> String {
    let ckpt = dir.join("model.safetensors");
    std::fs::write(&ckpt, b"not read by the fake runner").unwrap();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("a.png"), b"not decoded by the fake runner").unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    format!(
        r#"{{
  "description": "test grid",
  "task": "deblur",
  "axes": {{
    "algorithm": ["gs-pgd"],
    "checkpoint": ["{}"],
    "image_set": [{{"name": "tiny", "dir": "{}"}}],
    "noise": [2.55, 7.65],
    "kernel": ["uniform", "gaussian"],
    "sigma_den": [{{"times_noise": 1.0}}, {{"times_noise": 2.0}}, {{"absolute": 10.0}}]{axes_extra}
  }},
  "settings": {{"max_iter": 3}}
}}"#,
        ckpt.display(),
        images.display()
    )
}

fn load(dir: &Path, text: &str) -> SweepResult<SweepConfig> {
    let path = dir.join("sweep.json");
    std::fs::write(&path, text).unwrap();
    SweepConfig::load(&path)
}

/// Scores a point by a closed formula; fails on `σ_den = 10`, panics on `ν = 7.65, ratio 2`.
struct FakeRunner {
    calls: usize,
}

impl PointRunner for FakeRunner {
    fn run(&mut self, p: &Point) -> Result<PointResult, String> {
        self.calls += 1;
        if p.sigma_den == Some(SigmaDen::Absolute(10.0)) {
            return Err("kernel larger than the image".into());
        }
        if p.noise == 7.65 && p.sigma_den == Some(SigmaDen::TimesNoise(2.0)) {
            panic!("simulated crash");
        }
        let r = p.sigma_ratio().unwrap();
        let psnr = 30.0 - (r - 1.5).powi(2) - p.noise / 10.0;
        Ok(PointResult {
            images: vec![ImageScore {
                image: "a.png".into(),
                psnr,
                ssim: 0.9,
                iterations: 3,
                seconds: 0.01,
            }],
            curve: Some(Curve {
                image: "a.png".into(),
                objective: vec![3.0, 2.0, 1.5, 1.4],
                psnr: vec![20.0, 25.0, psnr - 0.1, psnr],
            }),
        })
    }
}

#[test]
fn grid_has_one_point_per_combination_with_stable_unique_ids() {
    let dir = temp_dir("grid");
    let c = load(&dir, &config_json(&dir, "")).unwrap();
    let grid = expand(&c);
    assert_eq!(grid.len(), 2 * 2 * 3);
    let ids: BTreeSet<_> = grid.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), grid.len());
    assert!(grid.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
    assert!(grid
        .iter()
        .all(|p| p.id.len() == 16 && p.params.id() == p.id));
    // The same parameters in another axis order give the same ids.
    let mut c2 = c.clone();
    c2.axes.noise.reverse();
    c2.axes.sigma_den.as_mut().unwrap().reverse();
    let ids2: BTreeSet<_> = expand(&c2).into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ids2);
    // Changing a shared setting changes every id.
    c2.settings.max_iter = Some(4);
    let ids3: BTreeSet<_> = expand(&c2).into_iter().map(|p| p.id).collect();
    assert!(ids.is_disjoint(&ids3));
}

#[test]
fn shards_partition_the_grid() {
    let dir = temp_dir("shards");
    let grid = expand(&load(&dir, &config_json(&dir, "")).unwrap());
    for n in 1..=5 {
        let mut seen = Vec::new();
        for i in 0..n {
            let part = Shard { index: i, count: n }.select(&grid);
            assert!(part.len() >= grid.len() / n && part.len() <= grid.len().div_ceil(n));
            seen.extend(part.into_iter().map(|p| p.id.clone()));
        }
        seen.sort();
        let all: Vec<_> = grid.iter().map(|p| p.id.clone()).collect();
        assert_eq!(seen, all, "{n} shards cover the grid exactly once");
    }
    assert_eq!(
        "2/4".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 4 }
    );
    for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
}

#[test]
fn bad_configs_fail_with_the_file_and_the_reason() {
    let dir = temp_dir("bad");
    let good = config_json(&dir, "");
    let cases = [
        (
            good.replace("\"noise\"", "\"nosie\""),
            "unknown field `nosie`",
        ),
        (good.replace("[2.55, 7.65]", "[]"), "axes.noise is empty"),
        (
            good.replace("model.safetensors", "missing.safetensors"),
            "does not exist",
        ),
        (
            good.replace("/images\"", "/no-such-dir\""),
            "does not exist",
        ),
        (good.replace("/images\"", "/empty\""), "holds no image"),
        (
            good.replace("\"uniform\"", "\"levin:0\""),
            "needs settings.kernel_dir",
        ),
        (good.replace("\"uniform\"", "\"blurry\""), "unknown kernel"),
        (
            config_json(&dir, r#", "alpha": [0.5]"#),
            "alpha applies to prox",
        ),
        (config_json(&dir, r#", "tau0": []"#), "axes.tau0 is empty"),
        (
            good.replace("[2.55, 7.65]", "[2.55, 1e308]"),
            "axes.noise must be in [0, 255]",
        ),
        (
            good.replace("{\"absolute\": 10.0}", "{\"absolute\": 1000}"),
            "axes.sigma_den must be in (0, 255]",
        ),
        // 2 × 200 = 400 for the second relative level.
        (
            good.replace("[2.55, 7.65]", "[2.55, 200]"),
            "times_noise 2 × noise 200) must be in (0, 255]",
        ),
        (
            good.replace("\"max_iter\": 3", "\"max_iter\": 3, \"sneaky\": 1"),
            "unknown field `sneaky`",
        ),
    ];
    for (text, want) in cases {
        let e = load(&dir, &text).unwrap_err().to_string();
        assert!(
            e.contains("sweep.json") && e.contains(want),
            "{e} should mention {want}"
        );
    }
}

#[test]
fn failures_are_recorded_and_reruns_skip_finished_points() {
    let dir = temp_dir("run");
    let c = load(&dir, &config_json(&dir, "")).unwrap();
    let sweep = SweepDir::new(&dir.join("runs"), "t").unwrap();
    let mut runner = FakeRunner { calls: 0 };
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    // 4 points of σ_den = 10 fail, 2 points (ν = 7.65, σ_den/ν = 2, two kernels) panic.
    assert_eq!((s.grid, s.done, s.failed, s.skipped), (12, 6, 6, 0));
    let records = sweep.read_records().unwrap();
    assert_eq!(records.len(), 12);
    let panicked = records.iter().filter(|r| matches!(&r.outcome, Outcome::Failed { error } if error.contains("simulated crash"))).count();
    assert_eq!(panicked, 2);
    // A re-run runs only the failed points again.
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!((s.skipped, s.failed, runner.calls), (6, 6, 18));
    let report = merge(&sweep).unwrap();
    assert_eq!((report.grid, report.done, report.failed), (12, 6, 6));
    assert!(report.missing.is_empty() && report.duplicated.is_empty());
}

#[test]
fn four_shards_then_merge_cover_every_point_once_with_tables_and_figures() {
    let dir = temp_dir("merge");
    let text =
        config_json(&dir, "").replace(r#", {"absolute": 10.0}"#, r#", {"times_noise": 3.0}"#);
    let c = load(&dir, &text).unwrap();
    let sweep = SweepDir::new(&dir.join("runs"), "m").unwrap();
    for i in 0..4 {
        let mut runner = FakeRunner { calls: 0 };
        run_shard(
            &c,
            &sweep,
            Shard { index: i, count: 4 },
            &mut runner,
            &mut |_| {},
        )
        .unwrap();
    }
    // A crash in the middle of a write leaves a truncated last line: skipped by readers.
    let path = sweep.records_path(Shard { index: 0, count: 4 });
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"id\": \"trunc");
    std::fs::write(&path, bytes).unwrap();
    let report = merge(&sweep).unwrap();
    assert_eq!((report.grid, report.done + report.failed), (12, 12));
    assert!(report.missing.is_empty() && report.duplicated.is_empty() && report.foreign == 0);
    let csv = std::fs::read_to_string(sweep.path().join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 12);
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("id,status,algorithm"));
    let md = std::fs::read_to_string(sweep.path().join("table.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 1 + 12);
    // The U-curve: one series per noise level (ν is the only other varying parameter), the
    // PSNR averaged over the two kernels, peaked at σ_den/ν = 1.5 by construction.
    let img = image::open(sweep.path().join("u-curve.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (720, 520));
    let coloured = img
        .pixels()
        .filter(|p| p[0].abs_diff(p[1]) > 40 || p[1].abs_diff(p[2]) > 40)
        .count();
    assert!(
        coloured > 200,
        "the lines are drawn ({coloured} coloured pixels)"
    );
    assert!(sweep.path().join("convergence.png").is_file());
    let notes = std::fs::read_to_string(sweep.path().join("figures.md")).unwrap();
    assert!(
        notes.contains("ν=2.55 (3 points)") && notes.contains("(4 points)"),
        "{notes}"
    );
}

#[test]
fn u_curve_series_average_kernels_per_noise_level() {
    let dir = temp_dir("series");
    let c = load(
        &dir,
        &config_json(&dir, "").replace(r#", {"absolute": 10.0}"#, ""),
    )
    .unwrap();
    let sweep = SweepDir::new(&dir.join("runs"), "s").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    merge(&sweep).unwrap();
    let notes = std::fs::read_to_string(sweep.path().join("figures.md")).unwrap();
    // ν = 2.55: ratios 1 and 2 → PSNR 30 − 0.25 − 0.255 for both (symmetric about 1.5).
    assert!(
        notes.contains("- panel **PSNR vs σ_den/ν**: x = σ_den/ν [0.950, 2.050]"),
        "{notes}"
    );
    assert!(notes.contains("ν=2.55 (2 points)"));
}

/// A tiny random GS denoiser checkpoint and two 24×24 images: a real sweep of 3 points
/// (σ_den/ν ∈ {1, 2} plus a 25×25 kernel that does not fit the image → failed).
#[test]
fn pnp_runner_restores_real_points_and_records_kernel_errors() {
    use gradstep_model::{
        Activation, Checkpoint, DenoiserKind, Drunet, DrunetConfig, GradientStepDenoiser,
    };
    let dir = temp_dir("real");
    tch::manual_seed(0);
    let net = Drunet::new(&DrunetConfig::tiny(Activation::Elu), tch::Device::Cpu).unwrap();
    let den = GradientStepDenoiser::new(net);
    let ckpt = dir.join("tiny.safetensors");
    Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({"test": true}))
        .unwrap()
        .write(&ckpt)
        .unwrap();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..2 {
        let t = tch::Tensor::rand([1, 3, 24, 24], (tch::Kind::Float, tch::Device::Cpu));
        gradstep_data::save_image(&images.join(format!("{i}.png")), &t).unwrap();
    }
    let text = format!(
        r#"{{"task": "deblur", "axes": {{"algorithm": ["gs-pgd"], "checkpoint": ["{}"],
            "image_set": [{{"name": "rand", "dir": "{}"}}], "noise": [7.65],
            "kernel": ["uniform", "gaussian"], "sigma_den": [{{"times_noise": 1.0}}, {{"times_noise": 2.0}}]}},
            "settings": {{"max_iter": 3}}}}"#,
        ckpt.display(),
        images.display()
    );
    let c = load(&dir, &text).unwrap();
    let sweep = SweepDir::new(&dir.join("runs"), "real").unwrap();
    let mut runner = PnpRunner::new(tch::Device::Cpu, 2);
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!((s.grid, s.done, s.failed), (4, 2, 2));
    for r in sweep.read_records().unwrap() {
        let gaussian = r.params.kernel.as_ref().unwrap().0 == crate::KernelSpec::Gaussian;
        match &r.outcome {
            Outcome::Done { images, curve } => {
                assert!(!gaussian);
                assert_eq!(images.len(), 2);
                for im in images {
                    assert!(im.psnr.is_finite() && im.psnr > 5.0 && im.ssim <= 1.0);
                    assert!((1..=3).contains(&im.iterations));
                }
                let curve = curve.as_ref().unwrap();
                assert_eq!(curve.objective.len(), images[0].iterations + 1);
                assert!((curve.psnr.last().unwrap() - images[0].psnr).abs() < 1e-6);
            }
            Outcome::Failed { error } => {
                assert!(gaussian, "{error}");
                assert!(!error.is_empty());
            }
        }
    }
}

/// The shipped `configs/sweeps/*.json` parse (no unknown key) and expand to the intended
/// grids; with `../shared` present they validate once the checkpoint exists.
#[test]
fn shipped_configs_parse_expand_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let dir = temp_dir("shipped");
    let ckpt = dir.join("gs.safetensors");
    std::fs::write(&ckpt, b"x").unwrap();
    let expected = [
        ("deblur-sigma", 11 * 10 * 3 * 2),
        ("deblur-tau0", 8 * 8),
        ("sr-lambda", 8 * 8 * 3 * 2),
        ("inpaint-sigma", 8 * 2),
    ];
    for (name, points) in expected {
        let path = root.join(format!("configs/sweeps/{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut c: SweepConfig =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(expand(&c).len(), points, "{name}");
        if !shared.join("data").is_dir() {
            eprintln!(
                "skipping the validation of {name}: no shared data at {}",
                shared.display()
            );
            continue;
        }
        let rebase = |p: &Path| shared.join(p.strip_prefix("../shared").unwrap());
        c.axes.checkpoint = vec![ckpt.clone()];
        for s in &mut c.axes.image_set {
            s.dir = rebase(&s.dir);
        }
        c.settings.kernel_dir = c.settings.kernel_dir.as_deref().map(rebase);
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
