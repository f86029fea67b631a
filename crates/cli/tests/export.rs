//! `gradstep export` round trip: a checkpoint exported for PyTorch loads into deepinv 0.5.0's
//! own `GSDRUNet` / `DRUNet` classes with `strict=True` (deepinv's state dict, the official
//! Lightning checkpoint, a plain DRUNet state dict), and deepinv's `D_σ` equals gradstep's.
//!
//! deepinv comes from `../shared/bench/wheels` (installed with `--no-deps` into a temporary
//! folder); its package `__init__` pulls in torchvision and more, so the test imports only
//! `deepinv.models.{GSPnP, drunet}` (torch and numpy), with `deepinv.utils.io` replaced by
//! the one name they take from it (`DownloadError`; the real module needs `requests`).
use std::path::Path;
use std::process::{Command, Output};

use gradstep_model::{
    Activation, Checkpoint, DenoiserKind, Drunet, DrunetConfig, GradientStepDenoiser, Graph, Sigma,
};
use tch::{Device, Kind, Tensor};

mod common;
use common::*;

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "failed: {err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Installs deepinv's wheel (no dependencies, no network) into `dir`.
fn install_deepinv(shared: &Path, dir: &Path) {
    let wheel = std::fs::read_dir(shared.join("bench/wheels"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("deepinv-")
        })
        .expect("a deepinv wheel");
    ok(Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
        ])
        .arg(dir)
        .arg(wheel)
        .output()
        .unwrap());
}

/// Loads the export into deepinv and writes `D_σ(x)` (deepinv's) to `out`.
const DEEPINV_DENOISE: &str = r#"
import importlib, json, sys, types
import torch
from safetensors.torch import load_file, save_file
site, export, fmt, kwargs, image, sigma, out = sys.argv[1:8]
kwargs, sigma = json.loads(kwargs), float(sigma)
for name, sub in (("deepinv", "deepinv"), ("deepinv.models", "deepinv/models"), ("deepinv.utils", "deepinv/utils")):
    m = types.ModuleType(name); m.__path__ = [f"{site}/{sub}"]; sys.modules[name] = m
io = types.ModuleType("deepinv.utils.io")  # only its DownloadError is imported (io needs requests)
io.DownloadError = type("DownloadError", (Exception,), {})
sys.modules["deepinv.utils.io"] = io
gspnp = importlib.import_module("deepinv.models.GSPnP")
drunet = importlib.import_module("deepinv.models.drunet")
read = load_file if export.endswith(".safetensors") else torch.load
if fmt == "lightning":
    model = gspnp.GSDRUNet(**kwargs, pretrained=export)   # loads ckpt["state_dict"], strict
elif fmt == "state-dict":
    net = drunet.DRUNet(**kwargs, pretrained=None)
    net.load_state_dict(read(export), strict=True)
    model = gspnp.GSPnP(net)
else:
    model = gspnp.GSDRUNet(**kwargs, pretrained=None)
    model.load_state_dict(read(export), strict=True)
x = load_file(image)["x"]
save_file({"d": model(x, sigma).detach().contiguous()}, out)
"#;

#[test]
fn exports_load_into_deepinv_strictly_and_denoise_alike() {
    let Some(shared) = shared() else { return };
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    install_deepinv(&shared, &site);
    let cases = [
        (3, 2, Activation::Elu, "deepinv", "pth"),
        (1, 1, Activation::Elu, "lightning", "ckpt"),
        (3, 1, Activation::Softplus, "state-dict", "safetensors"),
        (1, 4, Activation::Softplus, "deepinv", "safetensors"),
    ];
    for (i, (channels, blocks, activation, format, ext)) in cases.into_iter().enumerate() {
        tch::manual_seed(i as i64);
        let cfg = DrunetConfig {
            channels,
            widths: [4, 8, 8, 16],
            blocks,
            activation,
        };
        let den = GradientStepDenoiser::new(Drunet::new(&cfg, Device::Cpu).unwrap());
        let ckpt_path = dir.path().join(format!("c{i}.safetensors"));
        Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({}))
            .unwrap()
            .write(&ckpt_path)
            .unwrap();
        let export = dir.path().join(format!("e{i}.{ext}"));
        ok(Command::new(env!("CARGO_BIN_EXE_gradstep"))
            .args(["export", "--format", format])
            .arg(&ckpt_path)
            .arg(&export)
            .output()
            .unwrap());
        // deepinv pads sides that are not multiples of 8 above 31 (`test_pad`): 32 × 40 is used as is.
        let x = Tensor::rand([1, channels, 32, 40], (Kind::Float, Device::Cpu));
        let image = dir.path().join(format!("x{i}.safetensors"));
        Tensor::write_safetensors(&[("x", &x)], &image).unwrap();
        let kwargs = gradstep_model::export::deepinv_arguments(&cfg).to_string();
        let out = dir.path().join(format!("d{i}.safetensors"));
        let sigma = 25.0 / 255.0;
        ok(Command::new(python())
            .arg("-c")
            .arg(DEEPINV_DENOISE)
            .arg(&site)
            .arg(&export)
            .arg(format)
            .arg(&kwargs)
            .arg(&image)
            .arg(sigma.to_string())
            .arg(&out)
            .output()
            .unwrap());
        let theirs = Tensor::read_safetensors(&out).unwrap().remove(0).1;
        let ours = den
            .denoise(&x, &Sigma::Scalar(sigma), Graph::Inference)
            .unwrap();
        let err = (&theirs - &ours).abs().max().double_value(&[]);
        assert!(
            err < 1e-5,
            "{format} {ext} (C = {channels}, nb = {blocks}): D_σ differs by {err}"
        );
    }
}

#[test]
fn export_refuses_an_unknown_extension_and_overwriting_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("c.safetensors");
    tch::manual_seed(0);
    let den = GradientStepDenoiser::new(
        Drunet::new(&DrunetConfig::tiny(Activation::Elu), Device::Cpu).unwrap(),
    );
    Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({}))
        .unwrap()
        .write(&ckpt)
        .unwrap();
    let before = std::fs::read(&ckpt).unwrap();
    for out in [dir.path().join("x.onnx"), ckpt.clone()] {
        let o = Command::new(env!("CARGO_BIN_EXE_gradstep"))
            .arg("export")
            .arg(&ckpt)
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&*out.display().to_string()), "{err}");
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);
    assert!(!dir.path().join("x.onnx").exists());
}
