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

/// Reads back text and HParams summaries with TensorBoard's own protos.
const PLUGIN_READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
import glob
out = {"text": {}, "hparams": {}}
for path in glob.glob(sys.argv[1] + "/events.out.tfevents.*"):
    for event in EventFileLoader(path).Load():
        for v in event.summary.value:
            plugin = v.metadata.plugin_data.plugin_name
            if plugin == "text":
                out["text"][v.tag] = tensor_util.make_ndarray(v.tensor).item().decode()
            elif plugin == "hparams":
                d = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                kind = d.WhichOneof("data")
                if kind == "experiment":
                    out["hparams"]["experiment"] = {
                        "hparams": {h.name: h.type for h in d.experiment.hparam_infos},
                        "metrics": [m.name.tag for m in d.experiment.metric_infos]}
                elif kind == "session_start_info":
                    out["hparams"]["start"] = {k: json.loads(__import__("google.protobuf.json_format", fromlist=["x"]).MessageToJson(val))
                                               for k, val in d.session_start_info.hparams.items()}
                else:
                    out["hparams"]["end"] = d.session_end_info.status
print(json.dumps(out))
"#;

#[test]
fn tensorboard_reads_the_config_as_text_and_as_hparams() {
    use gradstep_train::tensorboard::flatten_hparams;
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    let config = serde_json::json!({
        "name": "demo",
        "optimizer": {"lr": 1e-3},
        "data": {"batch_size": 8, "flips": true, "roots": ["a", "b"]},
    });
    w.text("config", 0, "```json\n{\"name\": \"demo\"}\n```")
        .unwrap();
    w.hparams_start(&flatten_hparams(&config), &["val/psnr_D_mean"])
        .unwrap();
    w.scalar("val/psnr_D_mean", 10, 28.5).unwrap();
    w.hparams_end(true).unwrap();
    drop(w);
    let out = Command::new(python())
        .args(["-c", PLUGIN_READER])
        .arg(dir.path())
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"]["config"], "```json\n{\"name\": \"demo\"}\n```");
    let exp = &v["hparams"]["experiment"];
    assert_eq!(exp["metrics"], serde_json::json!(["val/psnr_D_mean"]));
    // DataType: string 1, bool 2, float64 3.
    assert_eq!(exp["hparams"]["optimizer.lr"], 3);
    assert_eq!(exp["hparams"]["data.flips"], 2);
    assert_eq!(exp["hparams"]["name"], 1);
    let start = &v["hparams"]["start"];
    assert_eq!(start["optimizer.lr"], 1e-3);
    assert_eq!(start["data.batch_size"], 8.0);
    assert_eq!(start["data.flips"], true);
    assert_eq!(start["data.roots"], "[\"a\",\"b\"]");
    assert_eq!(start["name"], "demo");
    assert_eq!(v["hparams"]["end"], 1, "STATUS_SUCCESS");
}
