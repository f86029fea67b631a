//! Sweeps under hostile conditions, through the binary: a diverging point (NaN iterates),
//! a record torn by a crash, a corrupt line in the middle of a records file.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;

fn gradstep() -> Command {
    let mut c = common::gradstep();
    // One libtorch thread: several test processes share few cores, and OpenMP spin-waiting
    // makes each many times slower.
    c.env("GRADSTEP_FONT", "none").env("OMP_NUM_THREADS", "1");
    c
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// `τ₀` that makes GS-PnP without backtracking blow up to NaN within a few iterations on
/// the tiny checkpoint (the regime `configs/sweeps/deblur-tau0.json` explores).
const TAU0_DIVERGING: f64 = 1e6;

/// A deblurring sweep `sweep.json` in `dir` of GS-PnP without backtracking, one point per
/// `τ₀`, on two 32×32 crops of set3c; returns its path.
fn sweep_config(dir: &Path, shared: &Path, tau0: &[f64]) -> PathBuf {
    let config = serde_json::json!({
        "task": "deblur",
        "axes": {
            "algorithm": ["gs-pgd"],
            "checkpoint": [tiny_checkpoint()],
            "image_set": [{"name": "set3c", "dir": shared.join("data/set3c"), "limit": 2, "crop": 32}],
            "noise": [7.65],
            "kernel": ["uniform"],
            "sigma_den": [{"times_noise": 1.8}],
            "lambda": [0.1],
            "tau0": tau0,
        },
        "settings": {"max_iter": 6, "backtracking": false, "seed": 0},
    });
    let path = dir.join("sweep.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn run(config: &Path, runs: &Path, extra: &[&str]) -> Output {
    gradstep()
        .args([
            "sweep", "run", "--device", "cpu", "--batch", "2", "--config",
        ])
        .arg(config)
        .arg("--runs-dir")
        .arg(runs)
        .args(extra)
        .output()
        .unwrap()
}

fn merge(runs: &Path, extra: &[&str]) -> Output {
    gradstep()
        .args(["sweep", "merge", "sweep", "--runs-dir"])
        .arg(runs)
        .args(extra)
        .output()
        .unwrap()
}

fn records(runs: &Path) -> PathBuf {
    runs.join("sweep/records-0of1.jsonl")
}

#[test]
fn a_diverging_point_is_recorded_as_diverged_and_the_sweep_resumes_and_merges() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = sweep_config(dir.path(), &shared, &[1.0, 2.5, TAU0_DIVERGING]);
    let o = run(&config, &runs, &[]);
    assert_ok(&o);
    let out = text(&o.stdout);
    assert!(
        out.contains(" diverged: 2 of 2 images (no PSNR/SSIM)"),
        "{out}"
    );
    assert!(out.contains("3 done, 0 failed"), "{out}");
    // The record says so explicitly: `null` metrics and the stop reason.
    let lines = std::fs::read_to_string(records(&runs)).unwrap();
    let diverged: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["params"]["tau0"] == TAU0_DIVERGING)
        .collect();
    assert_eq!(diverged.len(), 1, "{lines}");
    for image in diverged[0]["images"].as_array().unwrap() {
        assert!(
            image["psnr"].is_null() && image["ssim"].is_null(),
            "{image}"
        );
        assert_eq!(image["stop"], "diverged", "{image}");
        assert!(image["iterations"].as_u64().unwrap() < 6, "{image}");
    }

    // Regression: the second run and the merge failed on the `null` (`invalid type: null,
    // expected f64`).
    let o = run(&config, &runs, &[]);
    assert_ok(&o);
    assert!(
        text(&o.stdout).contains("3 skipped (finished), 0 done"),
        "{}",
        text(&o.stdout)
    );
    let o = merge(&runs, &[]);
    assert_ok(&o);
    assert!(
        text(&o.stdout).contains("3 points, 3 done (1 diverged), 0 failed, 0 missing"),
        "{}",
        text(&o.stdout)
    );
    let md = std::fs::read_to_string(runs.join("sweep/table.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.contains("| 1000000 |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        row.contains("| diverged | diverged |") && row.ends_with("| diverged (2 of 2 images) |"),
        "{row}"
    );
    assert!(!md.contains("200.00") && !md.contains("NaN"), "{md}");
    assert!(runs.join("sweep/tau0.png").is_file());
    let notes = std::fs::read_to_string(runs.join("sweep/figures.md")).unwrap();
    assert!(notes.contains("PSNR vs τ₀ (1 diverged: ×)"), "{notes}");
    assert!(
        notes.contains("(2 points)"),
        "the two finite τ₀ form the line: {notes}"
    );
}

#[test]
fn a_torn_last_record_is_dropped_and_its_point_runs_again() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = sweep_config(dir.path(), &shared, &[1.0, 2.5]);
    assert_ok(&run(&config, &runs, &[]));
    let path = records(&runs);
    let full = std::fs::read_to_string(&path).unwrap();
    let last = full.lines().last().unwrap();
    let id = serde_json::from_str::<serde_json::Value>(last).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The machine died half-way through writing the last record.
    let cut = full.len() - 1 - last.len() / 2;
    std::fs::write(&path, &full[..cut]).unwrap();

    let o = run(&config, &runs, &[]);
    assert_ok(&o);
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "records-0of1.jsonl:2: dropped a torn last record of point {id} ("
        )) && err.contains("records-0of1.jsonl.torn); its point runs again"),
        "{err}"
    );
    assert!(
        text(&o.stdout).contains("1 skipped (finished), 1 done"),
        "{}",
        text(&o.stdout)
    );
    let now = std::fs::read_to_string(&path).unwrap();
    assert_eq!(now.lines().count(), 2, "{now}");
    assert!(now.lines().last().unwrap().contains(&id));
    let o = merge(&runs, &["--strict"]);
    assert_ok(&o);
    assert!(
        text(&o.stdout)
            .contains("2 points, 2 done (0 diverged), 0 failed, 0 missing, 0 run more than once"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn merge_skip_bad_skips_and_reports_a_corrupt_middle_line() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = sweep_config(dir.path(), &shared, &[1.0, 2.5, 5.0]);
    assert_ok(&run(&config, &runs, &[]));
    let path = records(&runs);
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[1] = "{\"id\": \"0123\", \"params\": [garbage".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    // Without --skip-bad: one line naming file:line and suggesting the flag, exit 1.
    let o = merge(&runs, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    let err_lines: Vec<&str> = err.lines().collect();
    assert_eq!(err_lines.len(), 1, "{err}");
    assert!(
        err_lines[0].contains("records-0of1.jsonl:2: ") && err_lines[0].contains("--skip-bad"),
        "{err}"
    );
    assert!(!runs.join("sweep/table.md").exists());

    let o = merge(&runs, &["--skip-bad"]);
    assert_ok(&o);
    assert!(
        text(&o.stderr).contains("records-0of1.jsonl:2: ")
            && text(&o.stderr).contains("skipping a line that is not a record"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("3 points, 2 done (0 diverged), 0 failed, 1 missing, 0 run more than once, 1 unreadable lines skipped"),
        "{}",
        text(&o.stdout)
    );
    // The run skips the line too and restores the lost point; the merge is then complete.
    let o = run(&config, &runs, &["--skip-bad"]);
    assert_ok(&o);
    assert!(
        text(&o.stdout).contains("2 skipped (finished), 1 done"),
        "{}",
        text(&o.stdout)
    );
    let o = merge(&runs, &["--skip-bad"]);
    assert_ok(&o);
    assert!(text(&o.stdout).contains("3 done"), "{}", text(&o.stdout));
}

#[test]
fn eval_and_restore_show_a_diverged_restoration_and_never_score_it() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Two 32×32 crops of set3c.
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["butterfly", "leaves"] {
        let img = image::open(shared.join(format!("data/set3c/{name}.png"))).unwrap();
        img.crop_imm(100, 100, 32, 32)
            .save(images.join(format!("{name}.png")))
            .unwrap();
    }
    let config = dir.path().join("gs-diverging.json");
    let gs = serde_json::json!({
        "algorithm": "gs-pgd", "lambda": 0.1, "sigma": 13.77, "tau0": TAU0_DIVERGING,
        "gamma": 0.1, "eta": 0.9, "backtracking": false, "max_iter": 10, "tol": null,
        "warmup": null,
    });
    std::fs::write(&config, gs.to_string()).unwrap();
    let out = dir.path().join("eval");
    let o = gradstep()
        .args([
            "eval",
            "--device",
            "cpu",
            "--task",
            "deblur",
            "--kernels",
            "uniform",
        ])
        .args(["--noise", "7.65", "--checkpoint"])
        .arg(tiny_checkpoint())
        .arg("--config")
        .arg(&config)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    let table = text(&o.stdout);
    // Issue 15: the one kernel is named above the table (no kernel / scale columns) and SSIM
    // stands beside PSNR; the diverged group is still shown as such, with no number.
    assert!(table.contains("kernel: uniform\n"), "{table}");
    assert!(
        table.contains("| **mean** | diverged (2) | – | – | – |"),
        "{table}"
    );
    assert!(
        table.contains("2 of 2 restorations diverged and are left out of the means: butterfly (uniform, ×1, ν=7.65), leaves (uniform, ×1, ν=7.65)"),
        "{table}"
    );
    // Regression: the NaN restoration was scored 200 dB.
    assert!(
        !table.contains("200.00") && !table.contains("NaN"),
        "{table}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    for line in csv.lines().skip(1) {
        assert!(
            // Image names are quoted as strings (issue 15).
            line.starts_with("\"butterfly\",uniform,1,7.65,z,,,,,")
                || line.starts_with("\"leaves\",uniform,1,7.65,z,,,,,"),
            "{csv}"
        );
        assert!(line.ends_with(",diverged"), "{csv}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for r in json.as_array().unwrap() {
        assert!(
            r["psnr"].is_null() && r["ssim"].is_null() && r["stop"] == "diverged",
            "{r}"
        );
    }

    let o = gradstep()
        .args([
            "restore", "--device", "cpu", "--task", "deblur", "--kernel", "uniform",
        ])
        .args(["--noise", "7.65", "--checkpoint"])
        .arg(tiny_checkpoint())
        .arg("--config")
        .arg(&config)
        .arg("--clean")
        .arg(images.join("leaves.png"))
        .arg(dir.path().join("restored"))
        .output()
        .unwrap();
    assert_ok(&o);
    let s = text(&o.stdout);
    assert!(s.contains("iterations (stopped: diverged"), "{s}");
    assert!(
        s.contains("restored: diverged (no PSNR/SSIM; restored.png is the last finite iterate)"),
        "{s}"
    );
    let log: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("restored/convergence.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(log["stop"], "diverged");
}
