//! End-to-end tests of the `gradstep` binary: linking, import, denoise, bad input.
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

#[test]
fn binary_keeps_libtorch_and_its_cuda_backend_in_the_dynamic_section() {
    let bin = env!("CARGO_BIN_EXE_gradstep");
    let out = Command::new("readelf")
        .args(["-d", bin])
        .output()
        .expect("readelf (binutils) is needed");
    let text = stdout(&out);
    let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(needed.iter().any(|l| l.contains("[libtorch.so]")), "{text}");
    let runpath = text
        .lines()
        .find(|l| l.contains("RUNPATH") || l.contains("RPATH"))
        .expect("an rpath");
    let dir = runpath
        .split('[')
        .nth(1)
        .unwrap()
        .trim_end_matches(']')
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        Path::new(&dir).join("libtorch.so").exists(),
        "rpath {dir} has no libtorch.so"
    );
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        assert!(
            needed.iter().any(|l| l.contains("[libtorch_cuda.so]")),
            "CUDA backend dropped: {text}"
        );
        let info = gradstep().arg("info").output().unwrap();
        assert!(info.status.success(), "{}", stderr(&info));
        assert!(
            stdout(&info).contains("libtorch_cuda loaded: yes"),
            "{}",
            stdout(&info)
        );
    }
}

#[test]
fn info_reports_the_libtorch_version_and_the_device() {
    let o = gradstep().arg("info").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("libtorch 2.11.0"), "{s}");
    assert!(
        s.contains("cuda: available") || s.contains("CPU only"),
        "{s}"
    );
}

/// Writes a PyTorch checkpoint with the full-size key list (random values) using the venv's
/// torch; `hostile` adds an object whose unpickling would run `touch marker`.
fn write_pytorch_checkpoint(
    dir: &Path,
    keys: &Path,
    variant: &str,
    lightning: bool,
    marker: &Path,
) -> PathBuf {
    let out = dir.join(format!(
        "{variant}-{}.ckpt",
        if lightning { "lightning" } else { "plain" }
    ));
    let script = format!(
        r#"
import json, os, torch
class Hostile:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
keys = json.load(open("{keys}"))["{variant}"]
g = torch.Generator().manual_seed(0)
sd = {{k: torch.randn(*s, generator=g) * 0.01 for k, s in keys.items()}}
if {lightning}:
    obj = {{"state_dict": sd, "hyper_parameters": {{"act_mode": "E", "payload": Hostile()}}, "epoch": 3}}
else:
    sd = {{k[len("student_grad.model."):]: v for k, v in sd.items()}}
    obj = sd
torch.save(obj, "{out}")
"#,
        marker = marker.display(),
        keys = keys.display(),
        lightning = if lightning { "True" } else { "False" },
        out = out.display()
    );
    let o = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "making the test checkpoint: {}",
        stderr(&o)
    );
    out
}

#[test]
fn import_converts_full_size_checkpoints_without_running_their_code() {
    let Some(shared) = shared() else { return };
    let keys = shared.join("reference/gsdrunet_full_state_dict_keys.json");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    for (variant, channels) in [("color", 3), ("gray", 1)] {
        for lightning in [true, false] {
            let src = write_pytorch_checkpoint(dir.path(), &keys, variant, lightning, &marker);
            let dst = dir
                .path()
                .join(format!("{variant}-{lightning}.safetensors"));
            let o = gradstep()
                .arg("import")
                .arg(&src)
                .arg(&dst)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let s = stdout(&o);
            assert!(
                s.contains(&format!(
                    "{channels} channel(s), widths [64, 128, 256, 512], 2 blocks"
                )),
                "{s}"
            );
            assert!(s.contains("17010624") || channels == 1, "{s}");
            assert!(!marker.exists(), "importing ran code from the checkpoint");
            // The result is self-describing: denoise needs no architecture flags.
            let img = dir.path().join("in.png");
            let raw: Vec<u8> = (0..13 * 9 * 3).map(|i| (i * 7 % 251) as u8).collect();
            image::RgbImage::from_raw(13, 9, raw)
                .unwrap()
                .save(&img)
                .unwrap();
            let out_img = dir.path().join("out.png");
            let o = gradstep()
                .args([
                    "denoise",
                    "--device",
                    "cpu",
                    "--sigma",
                    "15",
                    "--checkpoint",
                ])
                .arg(&dst)
                .arg(&img)
                .arg(&out_img)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let back = image::open(&out_img).unwrap();
            assert_eq!((back.width(), back.height()), (13, 9));
            assert_eq!(back.color().has_color(), channels == 3);
        }
    }
    // A Prox import with a non-Softplus activation is refused.
    let src = write_pytorch_checkpoint(dir.path(), &keys, "color", true, &marker);
    let dst = dir.path().join("prox.safetensors");
    let o = gradstep()
        .args(["import", "--kind", "prox"])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert_clear_error(&o, &["Softplus"]);
    assert!(!dst.exists());
}

#[test]
fn import_rejects_bad_files_with_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let py = |script: &str| {
        let o = Command::new(python())
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    // Missing file.
    let dst = dir.path().join("out.safetensors");
    let o = gradstep()
        .args(["import", "/nonexistent/model.ckpt"])
        .arg(&dst)
        .output()
        .unwrap();
    assert_clear_error(&o, &["/nonexistent/model.ckpt"]);
    // Truncated file.
    let good = dir.path().join("good.pth");
    py(&format!(
        "import torch; torch.save({{'m_head.weight': torch.zeros(8,4,3,3)}}, '{}')",
        good.display()
    ));
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = gradstep()
        .arg("import")
        .arg(&cut)
        .arg(&dst)
        .output()
        .unwrap();
    assert_clear_error(&o, &["cut.pth"]);
    // Wrong key set: a tiny model without its tail.
    let Some(shared) = shared() else { return };
    let weights = shared.join("reference/gsdrunet_tiny_elu_weights.safetensors");
    let no_tail = dir.path().join("no_tail.pth");
    py(&format!(
        "import torch; from safetensors.torch import load_file; sd = load_file('{}'); del sd['student_grad.model.m_tail.weight']; torch.save(sd, '{}')",
        weights.display(),
        no_tail.display()
    ));
    let o = gradstep()
        .arg("import")
        .arg(&no_tail)
        .arg(&dst)
        .output()
        .unwrap();
    assert_clear_error(&o, &["no_tail.pth", "m_tail.weight", "missing"]);
    // Shape mismatch.
    let bad_shape = dir.path().join("bad_shape.pth");
    py(&format!(
        "import torch; from safetensors.torch import load_file; sd = load_file('{}'); sd['student_grad.model.m_up2.1.res.0.weight'] = torch.zeros(16,16,1,1); torch.save(sd, '{}')",
        weights.display(),
        bad_shape.display()
    ));
    let o = gradstep()
        .arg("import")
        .arg(&bad_shape)
        .arg(&dst)
        .output()
        .unwrap();
    assert_clear_error(&o, &["bad_shape.pth", "m_up2.1.res.0.weight", "shape"]);
    assert!(!dst.exists(), "nothing may be half-written");
}

#[test]
fn denoise_reports_psnr_and_rejects_bad_input() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny.safetensors");
    let o = gradstep()
        .arg("import")
        .arg(shared.join("reference/gsdrunet_tiny_elu_weights.safetensors"))
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let img = shared.join("data/set3c/butterfly.png");
    let out = dir.path().join("den.png");
    let o = gradstep()
        .args([
            "denoise",
            "--device",
            "cpu",
            "--sigma",
            "25",
            "--add-noise",
            "--seed",
            "1",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .arg(&img)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let psnr_in: f64 = s
        .split("PSNR input ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // σ = 25 on [0, 255]: the noisy input's PSNR is about 20.2 dB.
    assert!((psnr_in - 20.2).abs() < 0.5, "{s}");
    // The same command with one thing wrong each time: one clear line, non-zero exit.
    let denoise = |device: &str, checkpoint: &Path, input: &Path| {
        gradstep()
            .args([
                "denoise",
                "--sigma",
                "25",
                "--device",
                device,
                "--checkpoint",
            ])
            .arg(checkpoint)
            .arg(input)
            .arg(&out)
            .output()
            .unwrap()
    };
    // A corrupt image.
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    assert_clear_error(&denoise("cpu", &ckpt, &bad), &["bad.png"]);
    // A PyTorch / foreign file given as checkpoint.
    let foreign = shared.join("reference/gsdrunet_tiny_elu_weights.safetensors");
    assert_clear_error(
        &denoise("cpu", &foreign, &img),
        &["gsdrunet_tiny_elu_weights.safetensors", "gradstep import"],
    );
    // An unknown device.
    assert_clear_error(&denoise("tpu", &ckpt, &img), &["tpu"]);
}

fn denoised_psnr(s: &str) -> f64 {
    s.split("denoised ")
        .last()
        .and_then(|t| t.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no denoised PSNR in {s}"))
}

#[test]
fn denoise_in_tiles_matches_the_whole_image_and_checks_the_tile_size() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = shared.join("data/set3c/butterfly.png");
    let run = |tiling: &str| {
        gradstep()
            .args(["denoise", "--device", "cpu", "--sigma", "25", "--add-noise"])
            .args(["--tiling", tiling, "--checkpoint"])
            .arg(tiny_checkpoint())
            .arg(&img)
            .arg(dir.path().join(format!("{}.png", tiling.replace(':', "-"))))
            .output()
            .unwrap()
    };
    let whole = run("whole");
    assert!(whole.status.success(), "{}", stderr(&whole));
    let tiled = run("64:32");
    assert!(tiled.status.success(), "{}", stderr(&tiled));
    let (pw, pt) = (
        denoised_psnr(&stdout(&whole)),
        denoised_psnr(&stdout(&tiled)),
    );
    assert!(
        pw > 24.0,
        "the trained fixture denoises (input ≈ 20.5 dB): {pw}"
    );
    assert!((pw - pt).abs() <= 0.01, "whole {pw} dB vs tiles {pt} dB");
    let bad = run("60:32");
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("--tiling") && err.contains("multiple of 8") && err.contains("got 60"),
        "{err}"
    );
}

#[test]
fn bench_memory_runs_its_searches_and_the_tile_check_on_the_cpu() {
    let o = gradstep()
        .args(["bench", "memory", "--device", "cpu", "--tiny"])
        .args(["--max-batch", "2", "--max-side", "64", "--checkpoint"])
        .arg(tiny_checkpoint())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("largest GS training batch of 128² colour patches (fp32): ≥ 2"),
        "{s}"
    );
    assert!(
        s.contains("largest colour image for ∇g at once: ≥ 64²"),
        "{s}"
    );
    let dpsnr: f64 = s
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("bench-memory tiles-vs-whole-dpsnr "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no last line in {s}"));
    assert!(dpsnr < 0.01, "{s}");
}

#[test]
fn bench_model_headlines_the_training_configs_performance_settings() {
    let config = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/gs-drunet.json"
    ));
    let o = gradstep()
        .args([
            "bench", "model", "--device", "cpu", "--tiny", "--reps", "1", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    // The paper config trains in bf16, which needs CUDA: on the CPU the headline falls back.
    assert!(s.contains("headline: adjoint fp32 ("), "{s}");
    assert!(
        s.contains("ours (autograd double-backward fp32): grad_256_ms"),
        "{s}"
    );
    assert!(
        s.contains("ours (adjoint bf16-autocast): skipped (needs CUDA)"),
        "{s}"
    );
    let err_line = s
        .lines()
        .find(|l| l.starts_with("adjoint vs autograd"))
        .unwrap();
    let rel: f64 = err_line
        .split("∇g rel err ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rel < 1e-5, "{err_line}");
}

#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let mut child = gradstep()
        .arg("info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe before the command writes (loading libtorch alone takes longer), as
    // `gradstep info | true` would.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn train_stopped_by_sigterm_checkpoints_and_exits_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_training_images(&images, 48);
    let config = tiny_config();
    let runs = dir.path().join("runs");
    let mut child = gradstep()
        .args(["train", "--quiet", "--device", "cpu", "--config", config])
        .args(["--set", "name=sigterm", "--set", "steps=1000000"])
        .args(["--set", "data.patch_size=32", "--set", "data.batch_size=2"])
        .args([
            "--set",
            "data.cache_dir=null",
            "--set",
            "data.crops_per_image=1",
        ])
        .args(["--set", "validation.every=0", "--set", "checkpoint.every=2"])
        .arg("--set")
        .arg(format!("runs_dir={}", runs.display()))
        .arg("--set")
        .arg(format!("data.roots=[\"{}\"]", images.display()))
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ckpts = runs.join("sigterm/checkpoints");
    let t0 = std::time::Instant::now();
    let has_step_checkpoint = || {
        std::fs::read_dir(&ckpts)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
            })
            .unwrap_or(false)
    };
    while !has_step_checkpoint() {
        if t0.elapsed() > std::time::Duration::from_secs(120) || child.try_wait().unwrap().is_some()
        {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("no checkpoint within 120 s: {}{}", stdout(&o), stderr(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let s = stdout(&o);
    // 128 + SIGTERM: a checkpoint is on disk, but the run did not finish.
    assert_eq!(o.status.code(), Some(143), "{s}{}", stderr(&o));
    assert!(s.contains("interrupted: continue with --resume"), "{s}");
    assert!(has_step_checkpoint());
}

#[test]
fn bench_pnp_runs_batched_one_at_a_time_and_the_backtracking_check_on_the_cpu() {
    let Some(shared) = shared() else { return };
    let o = gradstep()
        .args([
            "bench", "pnp", "--device", "cpu", "--tiny", "--count", "2", "--iters", "4",
        ])
        .arg("--images")
        .arg(shared.join("data/CBSD10"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    // The CPU default layout is NCHW; the headline runs it.
    assert!(s.contains("default Fp32 Contiguous"), "{s}");
    let gap: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("batched vs one at a time: max |ΔPSNR| = "))
        .and_then(|v| v.trim_end_matches(" dB").parse().ok())
        .unwrap_or_else(|| panic!("no batched-vs-single line in {s}"));
    assert!(gap < 1e-3, "{s}");
    // Backtracking accepts a step only if F went down: no accepted increase.
    let bt = s
        .lines()
        .find(|l| l.starts_with("with backtracking, Fp32 Contiguous:"))
        .unwrap_or_else(|| panic!("no backtracking line in {s}"));
    assert!(bt.contains(" 0 accepted increases of F"), "{bt}");
    assert!(
        s.lines().last().unwrap().starts_with("bench-pnp speedup "),
        "{s}"
    );
}

/// `scripts/bench-gpu.sh` with a stand-in binary that prints fixed speedups (prox fails
/// when `STUB_PROX_FAILS` is set), in `out`; returns the script's stdout.
fn bench_gpu_with_stub(out: &Path, benches: Option<&str>, prox_fails: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stub = out.join("gradstep-stub");
    std::fs::write(
        &stub,
        "#!/usr/bin/env bash\n\
         case $2 in\n\
           model) echo 'bench-model speedup 4.130' ;;\n\
           prox) [ -n \"${STUB_PROX_FAILS:-}\" ] && { echo 'out of memory' >&2; exit 1; }\n\
                 echo 'bench-prox speedup 11.660' ;;\n\
           pnp) echo 'bench-pnp speedup 3.980' ;;\n\
           memory) echo 'largest training batch: 312' ;;\n\
         esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = out.join("shared");
    std::fs::create_dir_all(shared.join("bench")).unwrap();
    std::fs::write(shared.join("bench/anchor_deepinv.py"), "").unwrap();
    let mut c = Command::new("bash");
    c.arg(root.join("scripts/bench-gpu.sh"))
        .env("GRADSTEP_BIN", &stub)
        .env("GRADSTEP_SHARED", &shared)
        .env("OUT_DIR", out.join("logs"))
        .env_remove("BENCHES")
        .env_remove("BENCH_TIMEOUT");
    if let Some(b) = benches {
        c.env("BENCHES", b);
    }
    if prox_fails {
        c.env("STUB_PROX_FAILS", "1");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn bench_gpu_reports_the_smallest_speedup_and_never_an_earlier_runs_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let last = |s: &str| s.lines().last().unwrap_or_default().to_string();

    let all = bench_gpu_with_stub(dir.path(), None, false);
    assert_eq!(last(&all), "bench-gpu min-speedup 3.980", "{all}");
    assert!(all.contains("| prox | 11.660 | 3× |"), "{all}");
    assert!(all.contains("largest training batch: 312"), "{all}");

    // Same log folder, prox now fails: its earlier log must not stand in for it.
    let failed = bench_gpu_with_stub(dir.path(), None, true);
    assert!(failed.contains("| prox | failed | 3× |"), "{failed}");
    assert_eq!(last(&failed), "bench-gpu min-speedup 0", "{failed}");

    // A subset says what it left out and whose minimum it prints.
    let subset = bench_gpu_with_stub(dir.path(), Some("model prox"), false);
    assert!(
        subset.contains("| pnp | not run (BENCHES) | 4× |"),
        "{subset}"
    );
    assert_eq!(
        last(&subset),
        "bench-gpu min-speedup 4.130 (of model prox only)",
        "{subset}"
    );
}

#[test]
fn restore_writes_its_results_and_refuses_bad_settings_before_writing() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = shared.join("data/set3c/butterfly.png");
    let restore = |out: &Path, extra: &[&str]| {
        gradstep()
            .args(["restore", "--device", "cpu", "--task", "deblur"])
            .args(["--kernel", "uniform", "--noise", "7.65"])
            .arg("--checkpoint")
            .arg(tiny_checkpoint())
            .args(extra)
            .arg("--clean")
            .arg(&img)
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("ok");
    let o = restore(&out, &["--max-iter", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("gs-pgd (deblur): 3 iterations"), "{s}");
    let psnr = |prefix: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` line in {s}"))
    };
    // Three GS-PnP steps of a trained denoiser already sharpen a 9×9 uniform blur.
    assert!(
        psnr("restored: PSNR ") > psnr("observed: PSNR ") + 0.5,
        "{s}"
    );
    for f in [
        "observed.png",
        "restored.png",
        "convergence.json",
        "config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // GS-PnP returns the official z; the last iterate x is recorded beside it.
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("convergence.json")).unwrap()).unwrap();
    assert_eq!(log["returned"], "z", "{log}");
    let logged = log["psnr"]["returned"].as_f64().unwrap_or(f64::NAN);
    assert!((logged - psnr("restored: PSNR ")).abs() < 0.01, "{log}");
    assert!(log["psnr"]["last_iterate"].as_f64().is_some(), "{log}");
    assert!(s.contains("last iterate x: PSNR "), "{s}");
    assert!(
        log["records"][1]["relative_value_change"]
            .as_f64()
            .is_some(),
        "{log}"
    );
    assert!(log["stop_label"].as_str().is_some(), "{log}");

    // Bad settings stop the run before the output folder exists.
    let bad = dir.path().join("bad");
    let o = restore(&bad, &["--max-iter", "0"]);
    assert_clear_error(&o, &["max_iter", "at least 1"]);
    let o = gradstep()
        .args([
            "restore",
            "--task",
            "inpaint",
            "--keep",
            "1.5",
            "--checkpoint",
            "c",
        ])
        .arg("--clean")
        .arg(&img)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--keep") && stderr(&o).contains("[0, 1]"),
        "{}",
        stderr(&o)
    );
    assert!(!bad.exists());
}

#[test]
fn eval_tabulates_every_noise_level_and_checks_its_arguments_first() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let eval = |out: &Path, extra: &[&str]| {
        gradstep()
            .args([
                "eval",
                "--device",
                "cpu",
                "--task",
                "deblur",
                "--max-iter",
                "2",
            ])
            .arg("--checkpoint")
            .arg(tiny_checkpoint())
            .arg("--images")
            .arg(shared.join("data/set3c"))
            .arg("--kernel-dir")
            .arg(shared.join("data/kernels"))
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = dir.path().join("ok");
    let o = eval(&out, &["--noise", "2.55,7.65", "--kernels", "uniform"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    // 3 images × 1 kernel × 2 noise levels, after the header.
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    // The table is of GS-PnP's returned z, with the last iterate x beside it.
    assert!(
        csv.starts_with("image,kernel,scale,noise,returned,psnr,ssim,psnr_last_iterate,"),
        "{csv}"
    );
    assert!(csv.lines().skip(1).all(|l| l.contains(",z,")), "{csv}");
    assert!(csv.lines().any(|l| l.contains(",uniform,1,7.65,")), "{csv}");
    assert!(stdout(&o).contains("| **mean** |"), "{}", stdout(&o));

    // Wrong arguments fail before any image is restored or any folder is made.
    let bad = dir.path().join("bad");
    let o = eval(&bad, &["--kernels", "levin:12"]);
    assert_clear_error(&o, &["levin09.json", "index 12"]);
    let o = eval(&bad, &["--noise=2.55,-1", "--kernels", "uniform"]);
    assert_clear_error(&o, &["--noise", "-1"]);
    let o = eval(&bad, &["--noise", "2.55,x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!bad.exists());
}
