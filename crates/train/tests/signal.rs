//! SIGTERM (what Slurm sends before preemption) stops a run with a checkpoint of the step
//! reached, and `--resume` continues from it. Its own test binary: the signal handlers are
//! process-wide.
use std::path::Path;
use std::time::{Duration, Instant};

use gradstep_model::Checkpoint;
use gradstep_train::checkpoints::{training_state, CheckpointStore};
use gradstep_train::{train, TrainConfig, TrainOptions};

fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..2u32 {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 7 + k * 50) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        });
        img.save(dir.join(format!("img{k}.png"))).unwrap();
    }
}

#[test]
fn sigterm_writes_a_checkpoint_and_resume_continues() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_images(&root.join("images"));
    let json = serde_json::json!({
        "name": "sig",
        "runs_dir": root.join("runs"),
        "model": {"channels": 3, "widths": [8, 16, 32, 64], "blocks": 1, "activation": "elu"},
        "data": {"roots": [root.join("images")], "patch_size": 16, "channels": 3,
                 "batch_size": 2, "prefetch": 1, "crops_per_image": 2, "threads": 1},
        "steps": 100000,
        "validation": {"dirs": [], "every": 0, "sigmas_255": [25.0], "crop": 16,
                       "limit": null, "seed": 0, "batch_size": 1},
        "checkpoint": {"every": 2, "keep_last": 2},
    });
    let path = root.join("sig.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let cfg = TrainConfig::load(&path, &[]).unwrap();
    let store = CheckpointStore::new(&cfg.run_dir(), 2);

    // Once a checkpoint exists the handlers are installed: send SIGTERM to ourselves.
    let steps_dir = store.dir().to_path_buf();
    let killer = std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if std::fs::read_dir(&steps_dir)
                .map(|d| d.count() > 0)
                .unwrap_or(false)
            {
                signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let opts = |resume| TrainOptions {
        device: tch::Device::Cpu,
        resume,
        quiet: true,
    };
    let out = train(&cfg, &opts(false)).unwrap();
    assert!(killer.join().unwrap(), "no checkpoint appeared");
    assert!(out.interrupted());
    assert_eq!(out.signal, Some(signal_hook::consts::SIGTERM));
    assert!(
        out.step >= 2 && out.step < 100000,
        "stopped at {}",
        out.step
    );
    let ckpt = Checkpoint::read(&out.checkpoint).unwrap();
    let (state, _) = training_state(&ckpt, &out.checkpoint).unwrap();
    assert_eq!(
        state.step, out.step,
        "the checkpoint holds the step reached"
    );

    let target = out.step + 3;
    let more = TrainConfig::load(&path, &[format!("steps={target}")]).unwrap();
    let done = train(&more, &opts(true)).unwrap();
    assert!(!done.interrupted());
    assert_eq!(done.signal, None);
    assert_eq!(done.step, target);
}
