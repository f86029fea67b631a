//! `report.html` of `restore`, `eval` and `sweep merge` (issue 15): the page is valid HTML,
//! every image it shows decodes, every name is escaped; and, where Chromium is installed, a
//! real headless browser renders it (non-blank, with the pictures drawn).
//!
//! The inputs are generated here (small synthetic images, the generated `uniform` kernel),
//! so these tests need no shared data.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;

fn gradstep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradstep"))
}

fn tiny() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/gs-drunet-tiny-elu.safetensors"
    ))
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A smooth colourful `side × side` test picture, different for each `seed`.
fn write_picture(path: &Path, side: u32, seed: u32) {
    image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([
            (x * 255 / side) as u8,
            (y * 255 / side) as u8,
            ((x * y + 40 * seed) % 256) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

/// A name that breaks HTML if it is not escaped.
const HOSTILE: &str = "a<i>&b\"'";

/// Parses `report.html` in `dir`: no HTML parse error, no element that a name could have
/// injected, and every `<img>` a base64 PNG data URI that decodes (or a relative file that
/// exists and decodes). Returns the page and its decoded images.
fn check_report(dir: &Path) -> (scraper::Html, Vec<image::DynamicImage>) {
    let path = dir.join("report.html");
    let text = std::fs::read_to_string(&path).unwrap();
    let html = scraper::Html::parse_document(&text);
    assert!(
        html.errors.is_empty(),
        "{}: {:?}",
        path.display(),
        html.errors
    );
    let select = |s: &str| scraper::Selector::parse(s).unwrap();
    assert_eq!(html.select(&select("i, script")).count(), 0, "{text}");
    let images = html
        .select(&select("img"))
        .map(|img| {
            let src = img.value().attr("src").expect("an img without src");
            let bytes = match src.strip_prefix("data:image/png;base64,") {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
                None => {
                    let file = dir.join(src);
                    assert!(file.is_file(), "{src}: linked but missing");
                    std::fs::read(file).unwrap()
                }
            };
            image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{src:.60}: {e}"))
        })
        .collect();
    (html, images)
}

fn page_text(html: &scraper::Html) -> String {
    html.root_element().text().collect()
}

#[test]
fn restore_report_shows_observed_restored_reference_and_every_plot() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("clean.png");
    write_picture(&input, 40, 0);
    // The checkpoint's path is printed in the report: a hostile one must come out as text.
    let ckpt = dir.path().join(format!("{HOSTILE}.safetensors"));
    std::fs::copy(tiny(), &ckpt).unwrap();
    let out = dir.path().join("out");
    let o = gradstep()
        .args(["restore", "--device", "cpu", "--task", "deblur", "--kernel"])
        .args(["uniform", "--max-iter", "3", "--checkpoint"])
        .arg(&ckpt)
        .arg("--clean")
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    let (html, images) = check_report(&out);
    // observed | restored | reference at full size (40 px), then the four plots.
    let sizes: Vec<(u32, u32)> = images.iter().map(|i| (i.width(), i.height())).collect();
    assert_eq!(sizes[..3], [(40, 40); 3], "{sizes:?}");
    assert_eq!(images.len(), 3 + 4, "{sizes:?}");
    let text = page_text(&html);
    assert!(text.contains(&format!("{HOSTILE}.safetensors")), "{text}");
    assert!(text.contains("restored") && text.contains("PSNR"), "{text}");
    // The restored thumbnail is the saved restored.png.
    let restored = image::open(out.join("restored.png")).unwrap();
    assert_eq!(images[1].to_rgb8(), restored.to_rgb8());
}

/// `eval` of two 40 px images, one named like a number, one with a hostile name.
fn eval_output(dir: &Path) -> (PathBuf, Output) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    write_picture(&images.join("0001.png"), 40, 1);
    write_picture(&images.join(format!("{HOSTILE}.png")), 40, 2);
    let out = dir.join("eval");
    let o = gradstep()
        .args(["eval", "--device", "cpu", "--task", "deblur", "--kernels"])
        .args([
            "uniform",
            "--noise",
            "7.65",
            "--max-iter",
            "2",
            "--checkpoint",
        ])
        .arg(tiny())
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    (out, o)
}

#[test]
fn eval_writes_a_report_a_quoted_csv_and_a_table_without_constant_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (out, o) = eval_output(dir.path());
    let (html, images) = check_report(&out);
    // Two restorations, three thumbnails each.
    assert_eq!(images.len(), 6);
    let text = page_text(&html);
    assert!(
        text.contains(&format!("{HOSTILE} (uniform, ×1, ν=7.65)")),
        "{text}"
    );
    // The CSV: image names quoted as strings (0001 is a name, not the number 1).
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("\"0001\",uniform,1,7.65,z,"), "{csv}");
    assert!(
        lines[2].starts_with("\"a<i>&b\"\"'\",uniform,1,7.65,z,"),
        "{csv}"
    );
    // stdout: SSIM beside PSNR; no scale column (deblurring), the one kernel named above.
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("kernel: uniform\n"), "{table}");
    assert!(
        table.contains("|  | ν=7.65 PSNR | SSIM | it | s/image |"),
        "{table}"
    );
    assert!(!table.contains("scale"), "{table}");
    assert!(table.contains("| **mean** | "), "{table}");
    // Progress without a terminal: plain lines with the ETA, no bar escapes.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2/2 restorations, ") && err.contains("ETA"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err}");
}

#[test]
fn sweep_merge_report_holds_the_sorted_table_and_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    write_picture(&images.join("0001.png"), 32, 3);
    let config = serde_json::json!({
        "description": "report test",
        "task": "deblur",
        "axes": {
            "algorithm": ["gs-pgd"],
            "checkpoint": [tiny()],
            "image_set": [{"name": HOSTILE, "dir": images}],
            "noise": [7.65],
            "kernel": ["uniform"],
            "sigma_den": [{"times_noise": 2.0}, {"times_noise": 1.0}],
        },
        "settings": {"max_iter": 2, "seed": 0},
    });
    let path = dir.path().join("sweep.json");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let runs = dir.path().join("runs");
    let o = gradstep()
        .args(["sweep", "run", "--device", "cpu", "--name", "s", "--config"])
        .arg(&path)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    assert_ok(&o);
    let o = gradstep()
        .args(["sweep", "merge", "s", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert_ok(&o);
    let sweep = runs.join("s");
    assert!(String::from_utf8_lossy(&o.stdout).contains("report.html"));
    let (html, images) = check_report(&sweep);
    let figures = ["u-curve.png", "convergence.png"]
        .iter()
        .filter(|f| sweep.join(f).exists())
        .count();
    assert!(figures >= 1);
    assert_eq!(images.len(), figures);
    // One row per point, σ_den/ν ascending (the config lists 2 before 1).
    let rows: Vec<String> = html
        .select(&scraper::Selector::parse("tbody tr").unwrap())
        .map(|r| r.text().collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].contains("|1.000|") && rows[1].contains("|2.000|"),
        "{rows:?}"
    );
    assert!(rows[0].contains(HOSTILE), "{rows:?}");
}

/// The first Chromium-like browser on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
    .find(|p| p.is_file())
}

#[test]
fn a_headless_chromium_renders_the_eval_report_with_its_pictures() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("GRADSTEP_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "GRADSTEP_REQUIRE_CHROMIUM=1 but no chromium on PATH"
        );
        eprintln!("skipping: no chromium on PATH (apt-get install -y chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = eval_output(dir.path());
    let shot = dir.path().join("shot.png");
    let page = std::path::absolute(out.join("report.html")).unwrap();
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1024,1200",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("{} did not finish in 120 s", browser.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1024, 1200));
    let non_white = img
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 240))
        .count();
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    // Text alone gives a few hundred grays; the six thumbnails give thousands of colours.
    assert!(
        non_white > img.len() / 3 / 50 && colours.len() > 1000,
        "{non_white} non-white pixels, {} colours",
        colours.len()
    );
}
