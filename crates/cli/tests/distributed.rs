//! Data-parallel training through the binary (`gradstep train --nproc 2`: two local worker
//! processes, Gloo on the CPU, tiny widths): the same weights as one process with the
//! doubled batch, an exact resume on the same ranks, a SIGTERM'd run resumed on 1 and on 2
//! ranks, and a killed rank named by the survivor within the timeout with the last
//! checkpoint intact.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gradstep_model::Checkpoint;

/// Each test runs two workers on a 2-core machine: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..4u32 {
        let img = image::RgbImage::from_fn(40, 48, |x, y| {
            let f = |c: u32| {
                let (x, y, kc) = (x as f64, y as f64, (k * 3 + c) as f64);
                (127.5 + 100.0 * ((x * 0.13 + kc).sin() * (y * 0.09 - kc).cos())) as u8
            };
            image::Rgb([f(0), f(1), f(2)])
        });
        img.save(dir.join(format!("img{k}.png"))).unwrap();
    }
}

/// A tiny config (per-rank batch 2, per-image σ, clipping on, no validation) in `root`.
fn config(root: &Path) -> PathBuf {
    let images = root.join("images");
    write_images(&images);
    let json = serde_json::json!({
        "name": "dp",
        "runs_dir": root.join("runs"),
        "model": {"channels": 3, "widths": [8, 16, 32, 64], "blocks": 1, "activation": "elu"},
        "data": {"roots": [images], "patch_size": 16, "channels": 3, "batch_size": 2,
                 "seed": 3, "prefetch": 2, "crops_per_image": 2, "threads": 1},
        "noise": {"sigma_min_255": 5.0, "sigma_max_255": 50.0, "per_image": true},
        "clip_grad_norm": 0.01,
        "steps": 4,
        "seed": 11,
        "validation": {"dirs": [], "every": 0, "sigmas_255": [25.0], "crop": 16,
                       "limit": null, "seed": 0, "batch_size": 1},
        "checkpoint": {"every": 2, "keep_last": 3},
        "log": {"every": 1, "images": false}
    });
    let path = root.join("dp.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn gradstep(cfg: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gradstep"));
    cmd.args(["train", "--config"])
        .arg(cfg)
        .args(["--device", "cpu", "--quiet", "--dist-timeout", "60"])
        .args(args)
        // One libtorch thread per rank: two ranks share two cores.
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("MASTER_PORT")
        .env_remove("SLURM_PROCID");
    cmd
}

fn run(cfg: &Path, args: &[&str]) -> Output {
    let out = gradstep(cfg, args).output().unwrap();
    assert!(
        out.status.success(),
        "gradstep train {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn checkpoint(root: &Path, name: &str, step: u64) -> Checkpoint {
    Checkpoint::read(
        &root
            .join("runs")
            .join(name)
            .join(format!("checkpoints/step-{step:08}.safetensors")),
    )
    .unwrap()
}

/// max over tensors of ‖a − b‖∞ / ‖a‖∞.
fn max_relative_diff(a: &Checkpoint, b: &Checkpoint) -> f64 {
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    a.tensors
        .iter()
        .map(|(k, t)| {
            let scale = t.abs().max().double_value(&[]).max(1e-12);
            (t - &b.tensors[k]).abs().max().double_value(&[]) / scale
        })
        .fold(0.0, f64::max)
}

fn step_files(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root.join("runs").join(name).join("checkpoints"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
    });
    files.sort();
    files
}

/// Waits for `child` at most `limit`; its status and the time it took.
fn wait_at_most(
    child: &mut Child,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return (Some(status), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (None, start.elapsed())
}

/// Waits until the run has a step checkpoint (at most 2 minutes).
fn wait_for_checkpoint(root: &Path, child: &mut Child) {
    let start = Instant::now();
    while step_files(root, "dp").is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PID of the worker of `parent` whose environment has `RANK=rank`.
fn worker_pid(parent: u32, rank: usize) -> u32 {
    let want = format!("RANK={rank}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // ppid is the 4th field, after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no worker with {want} under {parent}");
}

#[test]
fn two_ranks_equal_one_process_with_twice_the_batch_and_resume_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root);

    let out = run(&cfg, &["--nproc", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Rank 0 alone reports; the communication time closes the run.
    assert_eq!(stdout.matches("checkpoint: ").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("training dp (").count(), 1, "{stdout}");
    assert!(
        stdout.contains("communication: ") && stdout.contains("(2 ranks, gloo)"),
        "{stdout}"
    );
    run(
        &cfg,
        &["--set", "name=single", "--set", "data.batch_size=4"],
    );
    let two = checkpoint(root, "dp", 4);
    let single = checkpoint(root, "single", 4);
    let diff = max_relative_diff(&two, &single);
    assert!(
        diff < 1e-5,
        "2 ranks × 2 vs 1 × 4: relative difference {diff}"
    );

    // 2 + 2 steps with a resume in between, on 2 ranks: bitwise the straight run.
    run(
        &cfg,
        &["--nproc", "2", "--set", "name=split", "--set", "steps=2"],
    );
    run(&cfg, &["--nproc", "2", "--set", "name=split", "--resume"]);
    let split = checkpoint(root, "split", 4);
    assert_eq!(
        max_relative_diff(&two, &split),
        0.0,
        "resume on the same ranks is exact"
    );
}

#[test]
fn a_sigterm_stops_both_ranks_and_the_run_resumes_on_one_and_on_two() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root);

    let mut child = gradstep(&cfg, &["--nproc", "2", "--set", "steps=100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(root, &mut child);
    // SAFETY: signals the child started above, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let (status, _) = wait_at_most(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(143),
        "exit as SIGTERM'd"
    );
    let last = step_files(root, "dp").pop().unwrap();
    let stopped = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("step-"))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap();
    assert!(stopped >= 2, "stopped at {stopped}");
    Checkpoint::read(&last).unwrap();

    // On 1 rank, then on 2 again.
    let one = format!("steps={}", stopped + 2);
    let out = run(&cfg, &["--resume", "--set", &one]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "(step {stopped}); written by 2 rank(s), continuing on 1"
        )),
        "{said}"
    );
    checkpoint(root, "dp", stopped + 2);
    let two = format!("steps={}", stopped + 4);
    let out = run(&cfg, &["--nproc", "2", "--resume", "--set", &two]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "(step {}); written by 1 rank(s), continuing on 2",
            stopped + 2
        )),
        "{said}"
    );
    checkpoint(root, "dp", stopped + 4);
}

#[test]
fn a_killed_rank_is_named_by_the_other_within_a_minute() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = config(root);

    let mut child = gradstep(&cfg, &["--nproc", "2", "--set", "steps=100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(root, &mut child);
    let victim = worker_pid(child.id(), 1);
    // SAFETY: kills a process this test started (a worker of its child).
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let (status, took) = wait_at_most(&mut child, Duration::from_secs(60));
    let status = status.expect("the surviving rank still runs a minute after the kill");
    assert!(!status.success());
    assert!(took < Duration::from_secs(60), "{took:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("on rank 0: rank(s) [1] stopped answering"),
        "{stderr}"
    );
    for path in step_files(root, "dp") {
        Checkpoint::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
