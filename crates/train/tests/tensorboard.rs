//! The event files are read back by the real TensorBoard (`EventAccumulator`): scalar
//! values, steps, and image sizes (square, non-square, gray and colour).
use std::path::PathBuf;
use std::process::Command;

use gradstep_train::tensorboard::EventWriter;
use tch::{Device, Kind, Tensor};

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "images": {}}
for t in tags["scalars"]:
    out["scalars"][t] = [[e.step, e.value] for e in acc.Scalars(t)]
for t in tags["images"]:
    # The PNG's own IHDR size too, not only the proto's fields.
    out["images"][t] = [[e.step, e.width, e.height, int.from_bytes(e.encoded_image_string[16:20], "big"),
                         int.from_bytes(e.encoded_image_string[20:24], "big")] for e in acc.Images(t)]
print(json.dumps(out))
"#;

fn python() -> PathBuf {
    std::env::var_os("GRADSTEP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| option_env!("GRADSTEP_BUILD_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

#[test]
fn tensorboard_reads_scalars_and_images() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    let losses = [0.5, 0.25, 0.125 + 1e-3];
    for (i, l) in losses.iter().enumerate() {
        w.scalar("train/loss", (i as i64 + 1) * 10, *l).unwrap();
    }
    w.scalar("val/psnr_D_sigma25", 30, 31.75).unwrap();
    let colour = Tensor::rand([3, 24, 40], (Kind::Float, Device::Cpu)); // H 24, W 40
    let gray = Tensor::rand([1, 1, 33, 17], (Kind::Float, Device::Cpu));
    w.image("val/colour", 30, &colour).unwrap();
    w.image("val/gray", 30, &gray).unwrap();
    w.flush().unwrap();
    drop(w);

    let out = Command::new(python())
        .args(["-c", READER])
        .arg(dir.path())
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "TensorBoard reader failed (is `tensorboard` installed in the venv? scripts/setup-libtorch.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = v["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 3);
    for (i, e) in loss.iter().enumerate() {
        assert_eq!(e[0].as_i64().unwrap(), (i as i64 + 1) * 10);
        assert!((e[1].as_f64().unwrap() - losses[i]).abs() < 1e-7);
    }
    let psnr = &v["scalars"]["val/psnr_D_sigma25"][0];
    assert_eq!(psnr[0].as_i64(), Some(30));
    assert!((psnr[1].as_f64().unwrap() - 31.75).abs() < 1e-6);
    let c = &v["images"]["val/colour"][0];
    let size =
        |e: &serde_json::Value, i: usize| (e[i].as_i64().unwrap(), e[i + 1].as_i64().unwrap());
    assert_eq!(size(c, 1), (40, 24), "proto width, height");
    assert_eq!(size(c, 3), (40, 24), "PNG width, height");
    let g = &v["images"]["val/gray"][0];
    assert_eq!(size(g, 1), (17, 33));
    assert_eq!(size(g, 3), (17, 33));
}
