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
                psnr: Some(psnr),
                ssim: Some(0.9),
                iterations: 3,
                seconds: 0.01,
                stop: Some(crate::StopReason::MaxIterations),
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
    assert_eq!(img.dimensions(), (720, 540));
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
                    let (psnr, ssim) = (im.psnr.unwrap(), im.ssim.unwrap());
                    assert!(psnr.is_finite() && psnr > 5.0 && ssim <= 1.0);
                    assert!((1..=3).contains(&im.iterations));
                    assert_eq!(im.stop, Some(crate::StopReason::MaxIterations));
                }
                let curve = curve.as_ref().unwrap();
                assert_eq!(curve.objective.len(), images[0].iterations + 1);
                assert!((curve.psnr.last().unwrap() - images[0].psnr.unwrap()).abs() < 1e-6);
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

/// A config of 4 points (ν = 2.55, two kernels, σ_den/ν ∈ {1, 2}) that [`FakeRunner`] and
/// [`DivergingRunner`] finish without failures.
fn four_point_config(dir: &Path) -> SweepConfig {
    let text = config_json(dir, "")
        .replace("[2.55, 7.65]", "[2.55]")
        .replace(r#", {"absolute": 10.0}"#, "");
    load(dir, &text).unwrap()
}

/// Like [`FakeRunner`], but the restorations of σ_den/ν = 2 diverge; the curves hold NaN
/// (an unknown objective, as HQS writes).
struct DivergingRunner {
    calls: usize,
}

impl PointRunner for DivergingRunner {
    fn run(&mut self, p: &Point) -> Result<PointResult, String> {
        self.calls += 1;
        let diverged = p.sigma_ratio() == Some(2.0);
        let (psnr, stop) = if diverged {
            (None, crate::StopReason::Diverged)
        } else {
            (Some(28.0 - p.noise / 10.0), crate::StopReason::Converged)
        };
        Ok(PointResult {
            images: vec![ImageScore {
                image: "a.png".into(),
                psnr,
                ssim: psnr.map(|_| 0.8),
                iterations: 2,
                seconds: 0.01,
                stop: Some(stop),
            }],
            curve: Some(Curve {
                image: "a.png".into(),
                objective: vec![f64::NAN, f64::NAN, f64::NAN],
                psnr: vec![20.0, 24.0, psnr.unwrap_or(f64::NAN)],
            }),
        })
    }
}

#[test]
fn diverged_points_are_recorded_read_back_and_shown_as_diverged() {
    let dir = temp_dir("diverged");
    let c = four_point_config(&dir);
    let sweep = SweepDir::new(&dir.join("runs"), "d").unwrap();
    let mut runner = DivergingRunner { calls: 0 };
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!((s.done, s.failed), (4, 0));
    // Regression: NaN was written as `null`, which did not read back as an f64.
    let records = sweep.read_records().unwrap();
    assert_eq!(records.len(), 4);
    for r in &records {
        let Outcome::Done { images, curve } = &r.outcome else {
            panic!("{r:?}")
        };
        let curve = curve.as_ref().unwrap();
        assert!(curve.objective.iter().all(|v| v.is_nan()));
        if r.params.sigma_ratio() == Some(2.0) {
            assert_eq!(r.diverged_images(), 1);
            assert_eq!((images[0].psnr, images[0].ssim), (None, None));
            assert_eq!(images[0].stop, Some(crate::StopReason::Diverged));
            assert_eq!((r.mean_psnr(), r.mean_ssim()), (None, None));
            assert_eq!(r.mean_iterations(), Some(2.0));
            assert!(curve.psnr[2].is_nan());
        } else {
            assert_eq!(r.diverged_images(), 0);
            assert_eq!(r.mean_psnr(), Some(28.0 - 0.255));
        }
    }
    // Diverged points are finished: a second run runs nothing.
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!((s.skipped, runner.calls), (4, 4));
    let report = merge(&sweep).unwrap();
    assert_eq!((report.done, report.diverged, report.failed), (4, 2, 0));
    let md = std::fs::read_to_string(sweep.path().join("table.md")).unwrap();
    let diverged_rows: Vec<&str> = md.lines().filter(|l| l.contains("2.000 |")).collect();
    assert_eq!(diverged_rows.len(), 2, "{md}");
    for row in diverged_rows {
        assert!(
            row.contains("| diverged | diverged | 2.0 |")
                && row.ends_with("| diverged (1 of 1 images) |"),
            "{row}"
        );
    }
    assert!(!md.contains("NaN") && !md.contains("200.00"), "{md}");
    let csv = std::fs::read_to_string(sweep.path().join("table.csv")).unwrap();
    let status = |l: &str| l.split(',').nth(1).unwrap_or_default().to_owned();
    let statuses: Vec<String> = csv.lines().skip(1).map(status).collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "diverged").count(),
        2,
        "{csv}"
    );
    // The figure leaves them out of the lines and marks them.
    let notes = std::fs::read_to_string(sweep.path().join("figures.md")).unwrap();
    assert!(
        notes.contains("PSNR vs σ_den/ν (2 diverged: ×)")
            && notes.contains(
                "black ×: 2 diverged points, not drawn as lines (no PSNR), at x = 2.000, 2.000"
            ),
        "{notes}"
    );
}

#[test]
fn old_records_with_null_metrics_read_back_as_diverged_not_as_errors() {
    let dir = temp_dir("old");
    let c = four_point_config(&dir);
    let sweep = SweepDir::new(&dir.join("runs"), "o").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    // Rewrite the first record as the old code wrote a diverged one: PSNR 200 (the NaN MSE
    // floored), SSIM NaN → `null`, no stop reason, and `null` in the curve.
    let path = sweep.records_path(Shard::ALL);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut old: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let image = &mut old["images"][0];
    image["psnr"] = 200.0.into();
    image["ssim"] = serde_json::Value::Null;
    image.as_object_mut().unwrap().remove("stop");
    old["curve"]["objective"][1] = serde_json::Value::Null;
    lines[0] = old.to_string();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let records = sweep.read_records().unwrap();
    let r = &records[0];
    assert_eq!(r.diverged_images(), 1, "{r:?}");
    assert_eq!(
        r.mean_psnr(),
        None,
        "the 200 dB of a diverged image is not averaged"
    );
    let Outcome::Done { images, curve } = &r.outcome else {
        panic!()
    };
    assert_eq!((images[0].stop, images[0].ssim), (None, None));
    assert!(curve.as_ref().unwrap().objective[1].is_nan());
    let report = merge(&sweep).unwrap();
    assert_eq!((report.done, report.diverged), (4, 1));
}

#[test]
fn a_torn_last_record_is_moved_aside_and_its_point_runs_again() {
    let dir = temp_dir("torn");
    let c = four_point_config(&dir);
    let sweep = SweepDir::new(&dir.join("runs"), "t").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    let path = sweep.records_path(Shard::ALL);
    let full = std::fs::read_to_string(&path).unwrap();
    let last = full.lines().last().unwrap().to_owned();
    let torn_id: String = serde_json::from_str::<Record>(&last).unwrap().id;
    // A crash in the middle of writing the last record: half of it, no newline.
    let cut = full.len() - 1 - last.len() / 2;
    std::fs::write(&path, &full[..cut]).unwrap();

    let mut runner = FakeRunner { calls: 0 };
    let s = run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!((s.skipped, s.done, runner.calls), (3, 1, 1));
    // Regression: the new record was appended to the torn line, which no reader could parse.
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(now.ends_with('\n') && now.lines().count() == 4, "{now}");
    let records = sweep.read_records().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[3].id, torn_id);
    let aside = std::fs::read_to_string(path.with_extension("jsonl.torn")).unwrap();
    assert_eq!(
        aside,
        format!("{}\n", &full[full.len() - 1 - last.len()..cut])
    );
    let report = merge(&sweep).unwrap();
    assert_eq!(
        (report.done, report.missing.len(), report.duplicated.len()),
        (4, 0, 0)
    );
    // A clean file is left alone.
    sweep.drop_torn_tail(Shard::ALL).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), now);
}

#[test]
fn a_record_appended_to_a_torn_one_by_an_older_run_is_recovered() {
    let dir = temp_dir("glued");
    let c = four_point_config(&dir);
    let sweep = SweepDir::new(&dir.join("runs"), "g").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    let path = sweep.records_path(Shard::ALL);
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // What the old code left: line 2 torn, and line 3 appended right after it.
    let glued = format!("{}{}", &lines[1][..lines[1].len() / 2], lines[2]);
    std::fs::write(&path, format!("{}\n{glued}\n{}\n", lines[0], lines[3])).unwrap();
    let ids: Vec<String> = sweep
        .read_records()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let id = |l: &str| serde_json::from_str::<Record>(l).unwrap().id;
    assert_eq!(ids, [id(&lines[0]), id(&lines[2]), id(&lines[3])]);
    // The point of the torn line is missing and runs again.
    let mut runner = FakeRunner { calls: 0 };
    run_shard(&c, &sweep, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!(runner.calls, 1);
    assert_eq!(merge(&sweep).unwrap().done, 4);
}

#[test]
fn a_bad_middle_line_stops_merge_with_file_and_line_unless_skipped() {
    let dir = temp_dir("bad-line");
    let c = four_point_config(&dir);
    let sweep = SweepDir::new(&dir.join("runs"), "b").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    let path = sweep.records_path(Shard::ALL);
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let lost = serde_json::from_str::<Record>(&lines[1]).unwrap().id;
    lines[1] = "{\"id\": 12, garbage".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let e = merge(&sweep).unwrap_err().to_string();
    assert!(
        e.contains("records-0of1.jsonl:2: ") && e.contains("--skip-bad"),
        "{e}"
    );
    let e = run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("records-0of1.jsonl:2: "), "{e}");

    let skipping = sweep.clone().skip_bad_lines(true);
    let report = merge(&skipping).unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(
        (report.skipped[0].line, report.skipped[0].path.clone()),
        (2, path.clone())
    );
    assert_eq!(
        (report.done, report.missing.clone()),
        (3, vec![lost.clone()])
    );
    // Skipping, a run runs the lost point again; the merge is then complete.
    let mut runner = FakeRunner { calls: 0 };
    run_shard(&c, &skipping, Shard::ALL, &mut runner, &mut |_| {}).unwrap();
    assert_eq!(runner.calls, 1);
    let report = merge(&skipping).unwrap();
    assert_eq!(
        (report.done, report.missing.len(), report.skipped.len()),
        (4, 0, 1)
    );
}

#[test]
fn merged_tables_follow_the_grid_order_and_the_report_holds_table_and_figures() {
    let dir = temp_dir("order");
    // Kernels listed gaussian-last on purpose: named values keep the config's order.
    let c = load(&dir, &config_json(&dir, "")).unwrap();
    let sweep = SweepDir::new(&dir.join("runs"), "o").unwrap();
    run_shard(
        &c,
        &sweep,
        Shard::ALL,
        &mut FakeRunner { calls: 0 },
        &mut |_| {},
    )
    .unwrap();
    let report = merge(&sweep).unwrap();
    let csv = std::fs::read_to_string(sweep.path().join("table.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (noise, kernel, sigma) = (col("noise"), col("kernel"), col("sigma_den"));
    let keys: Vec<(String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[noise].into(), r[kernel].into(), r[sigma].into())
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("2.55", "uniform", "2.55"),
        ("2.55", "uniform", "5.1"),
        ("2.55", "uniform", "10.0"),
        ("2.55", "gaussian", "2.55"),
        ("2.55", "gaussian", "5.1"),
        ("2.55", "gaussian", "10.0"),
        ("7.65", "uniform", "7.65"),
        ("7.65", "uniform", "10.0"),
        ("7.65", "uniform", "15.3"),
        ("7.65", "gaussian", "7.65"),
        ("7.65", "gaussian", "10.0"),
        ("7.65", "gaussian", "15.3"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(keys, expected, "{csv}");
    // table.md lists the same rows in the same order (ν and σ_den columns).
    let md = std::fs::read_to_string(sweep.path().join("table.md")).unwrap();
    let md_rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
    assert_eq!(md_rows.len(), 12);
    for (line, (_, k, _)) in md_rows.iter().zip(&expected) {
        assert!(line.contains(&format!("| {k} |")), "{md}");
    }
    // report.html: valid HTML, the 12 rows, and every figure embedded as a decodable PNG.
    let path = sweep.path().join(crate::report::REPORT_FILE);
    assert!(report.files.contains(&path));
    let html = scraper::Html::parse_document(&std::fs::read_to_string(&path).unwrap());
    assert!(html.errors.is_empty(), "{:?}", html.errors);
    let tr = scraper::Selector::parse("tbody tr").unwrap();
    assert_eq!(html.select(&tr).count(), 12);
    let img = scraper::Selector::parse("img").unwrap();
    let pngs: Vec<_> = html
        .select(&img)
        .map(|e| {
            let src = e.value().attr("src").unwrap();
            let b64 = src.strip_prefix("data:image/png;base64,").unwrap();
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            image::load_from_memory(&bytes).unwrap()
        })
        .collect();
    let figures = report
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
        .count();
    assert!(figures >= 2, "{:?}", report.files);
    assert_eq!(pngs.len(), figures);
}
