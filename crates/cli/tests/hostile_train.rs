//! `gradstep train` under hostile conditions (issue "Reliability and security"): two
//! trainers on one run, temporary files of a killed run, a signal during the decode-cache
//! build, a damaged newest checkpoint, absurd config values, a second SIGTERM, and a closed
//! stdout. Each starts the binary on a tiny model and a few small images.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn gradstep() -> Command {
    let mut c = common::gradstep();
    // One libtorch thread: fast on a busy machine, and bitwise reproducible runs.
    c.env("OMP_NUM_THREADS", "1");
    c
}

/// A scratch folder with `images/` and `runs/`.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_training_images(&dir.path().join("images"), 48);
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run_dir(&self, name: &str) -> PathBuf {
        self.path().join("runs").join(name)
    }

    /// `gradstep train` of run `name` on the tiny config (32² patches, batch 2, a
    /// checkpoint every 2 steps, no validation, no cache); `sets` are further overrides.
    fn train(&self, name: &str, sets: &[&str]) -> Command {
        let mut c = gradstep();
        c.args(["train", "--device", "cpu", "--config", tiny_config()]);
        let mut all = vec![
            format!("name={name}"),
            format!("runs_dir={}", self.path().join("runs").display()),
            format!("data.roots=[\"{}\"]", self.path().join("images").display()),
            "data.cache_dir=null".into(),
            "data.patch_size=32".into(),
            "data.batch_size=2".into(),
            "data.crops_per_image=1".into(),
            "data.threads=1".into(),
            "data.prefetch=1".into(),
            "validation.every=0".into(),
            "checkpoint.every=2".into(),
            "checkpoint.keep_last=3".into(),
        ];
        all.extend(sets.iter().map(|s| s.to_string()));
        for s in all {
            c.arg("--set").arg(s);
        }
        c
    }

    /// The step checkpoints of run `name`, oldest first.
    fn steps(&self, name: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.run_dir(name).join("checkpoints"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy().into_owned();
                        n.starts_with("step-") && n.ends_with(".safetensors")
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn spawn(c: &mut Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most 120 s) until `ready()`, failing with the child's output if it exits first.
fn wait_until(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        if t0.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let o = child_output(child);
            panic!(
                "no {what} within 120 s: {}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn child_output(child: &mut Child) -> Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut stderr).unwrap();
    }
    let status = child.wait().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The non-empty lines of stderr: exactly one is expected of a refusal.
fn one_error_line(o: &Output) -> String {
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err}");
    lines[0].to_string()
}

/// A PID no process has: that of a child that has exited.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn a_second_trainer_on_a_run_is_refused_naming_the_pid_and_the_first_goes_on() {
    let sb = Sandbox::new();
    let mut first = spawn(sb.train("shared", &["steps=1000000"]).arg("--quiet"));
    wait_until(&mut first, "checkpoint of the first trainer", || {
        !sb.steps("shared").is_empty()
    });
    let config = sb.run_dir("shared").join("config.json");
    let config_before = std::fs::read(&config).unwrap();

    // Requeued by mistake while the first still runs: refused, one line, nothing touched.
    let second = sb.train("shared", &[]).arg("--resume").output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stdout));
    let line = one_error_line(&second);
    let pid = format!("PID {}", first.id());
    assert!(line.contains(&pid), "{line}");
    assert!(
        line.contains(&sb.run_dir("shared").display().to_string()),
        "{line}"
    );
    assert!(text(&second.stdout).is_empty(), "{}", text(&second.stdout));
    assert_eq!(std::fs::read(&config).unwrap(), config_before);
    let lock = std::fs::read_to_string(sb.run_dir("shared").join(".lock")).unwrap();
    assert!(lock.starts_with(&format!("pid {} ", first.id())), "{lock}");

    // The first one was not disturbed: it stops on SIGTERM with its checkpoint as usual.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first trainer died"
    );
    kill(first.id(), "-TERM");
    let o = child_output(&mut first);
    assert_eq!(o.status.code(), Some(143), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("interrupted: continue with --resume"));
    let reached = sb.steps("shared").len();
    assert!(reached > 0);

    // Its process is gone, so its lock is too: a requeued job resumes and finishes.
    let last = sb.steps("shared").pop().unwrap();
    let step: u64 = last.file_name().unwrap().to_string_lossy()[5..13]
        .parse()
        .unwrap();
    let target = format!("steps={}", step + 2);
    let again = sb
        .train("shared", &[&target])
        .args(["--resume", "--quiet"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains(&format!("(step {step})")),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn temporary_files_of_a_killed_run_are_removed_at_start() {
    let sb = Sandbox::new();
    let run = sb.run_dir("stale");
    let cache = sb.path().join("cache");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    let pid = dead_pid();
    let stale = [
        run.join(format!(".config.json.tmp-{pid}")),
        run.join(format!("checkpoints/.step-00000002.safetensors.tmp-{pid}")),
        cache.join(format!("decoded-c3-0123456789abcdef.tmp-{pid}")),
    ];
    let foreign = [run.join("notes.tmp-1"), cache.join("mine.tmp-1")];
    for p in stale.iter().chain(&foreign) {
        std::fs::write(p, b"partial").unwrap();
    }
    let cache_dir = format!("data.cache_dir={}", cache.display());
    let o = sb
        .train("stale", &["steps=2", &cache_dir])
        .arg("--resume")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for p in &stale {
        assert!(!p.exists(), "{} was left", p.display());
    }
    for p in &foreign {
        assert!(p.exists(), "{} is not ours but was removed", p.display());
    }
    let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(said.contains(&format!(".config.json.tmp-{pid}")), "{said}");
    assert_eq!(sb.steps("stale").len(), 1);
}

#[test]
fn sigterm_during_the_cache_build_removes_its_temporary_file_and_exits_143() {
    let sb = Sandbox::new();
    // Enough noise images that decoding them on one thread takes seconds: one file, linked
    // under many names (the cache reads each name).
    let big = sb.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut seed = 12345u32;
    let noise = image::RgbImage::from_fn(512, 512, |_, _| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = seed.to_le_bytes();
        image::Rgb([b[1], b[2], b[3]])
    });
    noise.save(big.join("img000.png")).unwrap();
    for k in 1..400 {
        std::fs::hard_link(big.join("img000.png"), big.join(format!("img{k:03}.png"))).unwrap();
    }
    let cache = sb.path().join("cache");
    let mut child = spawn(&mut sb.train(
        "cache",
        &[
            &format!("data.roots=[\"{}\"]", big.display()),
            &format!("data.cache_dir={}", cache.display()),
        ],
    ));
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until(&mut child, "cache temporary file", || {
        !temporaries().is_empty()
    });
    kill(child.id(), "-TERM");
    let o = child_output(&mut child);
    assert_eq!(o.status.code(), Some(143), "{}", text(&o.stderr));
    let line = one_error_line(&o);
    assert!(
        line.contains("decode cache") && line.contains("SIGTERM"),
        "{line}"
    );
    assert!(temporaries().is_empty(), "left: {:?}", temporaries());
    assert!(sb.steps("cache").is_empty());
}

#[test]
fn resume_skips_a_truncated_newest_checkpoint_and_continues_exactly() {
    let sb = Sandbox::new();
    let o = sb
        .train("cut", &["steps=4"])
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let steps = sb.steps("cut");
    assert_eq!(steps.len(), 2, "{steps:?}");
    let newest = steps[1].clone();
    let reference = sb.path().join("step-4-reference.safetensors");
    std::fs::copy(&newest, &reference).unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();

    let o = sb
        .train("cut", &["steps=4"])
        .args(["--resume", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let skipped = out
        .lines()
        .find(|l| l.contains("skipped"))
        .unwrap_or_else(|| panic!("no line about the skipped checkpoint: {out}"));
    assert!(skipped.contains(&newest.display().to_string()), "{skipped}");
    assert!(skipped.contains("truncated or corrupt"), "{skipped}");
    assert!(!out.contains("gradstep import"), "{out}");
    assert!(
        out.contains(&format!("resuming from {} (step 2)", steps[0].display())),
        "{out}"
    );
    // The damaged file is kept aside, and steps 3–4 were trained again from step 2 to the
    // same weights and moments, bit for bit.
    assert!(PathBuf::from(format!("{}.corrupt", newest.display())).is_file());
    let again = gradstep_model::Checkpoint::read(&newest).unwrap();
    let want = gradstep_model::Checkpoint::read(&reference).unwrap();
    assert_eq!(
        again.tensors.keys().collect::<Vec<_>>(),
        want.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &want.tensors {
        assert!(t.equal(&again.tensors[name]), "{name} differs after resume");
    }

    // None intact: one line listing them, exit 1, nothing renamed.
    for p in sb.steps("cut") {
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..100]).unwrap();
    }
    let o = sb.train("cut", &[]).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let line = one_error_line(&o);
    assert!(line.contains("no intact checkpoint"), "{line}");
    for p in sb.steps("cut") {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(line.contains(&name), "{line} lacks {name}");
    }
    assert_eq!(
        sb.steps("cut").len(),
        2,
        "nothing is renamed when none is intact"
    );
}

#[test]
fn absurd_config_values_are_refused_naming_the_file_and_the_field() {
    let sb = Sandbox::new();
    for (set, field) in [
        ("noise.sigma_max_255=1e308", "noise.sigma_max_255"),
        ("optimizer.lr=1e308", "optimizer.lr"),
        ("data.batch_size=100000000", "data.batch_size"),
    ] {
        let o = sb.train("absurd", &[set]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{set}");
        let line = one_error_line(&o);
        assert!(
            line.contains("gs-drunet-tiny.json") && line.contains(field),
            "{set}: {line}"
        );
        assert!(
            !sb.run_dir("absurd").exists(),
            "{set}: the run folder was created"
        );
    }
}

#[test]
fn a_second_sigterm_still_exits_143() {
    let sb = Sandbox::new();
    write_training_images(&sb.path().join("images"), 160);
    // Slow steps (128² patches, batch 8), so that the second signal lands before the
    // checkpoint the first one asked for is written.
    let mut child = spawn(
        sb.train(
            "twice",
            &[
                "steps=1000000",
                "data.patch_size=128",
                "data.batch_size=8",
                "checkpoint.every=1",
            ],
        )
        .arg("--quiet"),
    );
    wait_until(&mut child, "checkpoint", || !sb.steps("twice").is_empty());
    kill(child.id(), "-TERM");
    std::thread::sleep(Duration::from_millis(30));
    kill(child.id(), "-TERM");
    let o = child_output(&mut child);
    assert_eq!(o.status.code(), Some(143), "{}", text(&o.stderr));
    assert!(
        !text(&o.stdout).contains("interrupted: continue"),
        "the run ended before the second SIGTERM: the test needs slower steps"
    );
}

#[test]
fn train_piped_into_head_still_checkpoints_and_exits_as_usual() {
    let sb = Sandbox::new();
    let mut child = spawn(&mut sb.train("head", &["steps=6", "log.every=1"]));
    // `| head -n 1`: read one line, then close the pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(!first.is_empty());
    drop(stdout);
    let o = child_output(&mut child);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
    let last = sb.steps("head").pop().expect("a checkpoint");
    assert!(
        last.ends_with("step-00000006.safetensors"),
        "{}",
        last.display()
    );
}
