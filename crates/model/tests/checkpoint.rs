//! Checkpoints: round trip, atomic writes, and clear errors on bad files.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use gradstep_model::{
    Activation, Checkpoint, DenoiserKind, Drunet, DrunetConfig, GradientStepDenoiser, Graph, Sigma,
};
use tch::{Device, Kind, Tensor};

fn tiny_checkpoint(dir: &Path, channels: i64) -> (GradientStepDenoiser, std::path::PathBuf) {
    tch::manual_seed(3);
    let cfg = DrunetConfig {
        channels,
        ..DrunetConfig::tiny(Activation::Softplus)
    };
    let den = GradientStepDenoiser::new(Drunet::new(&cfg, Device::Cpu).unwrap());
    let path = dir.join("model.safetensors");
    let ckpt =
        Checkpoint::from_denoiser(&den, DenoiserKind::Prox, serde_json::json!({"test": true}))
            .unwrap();
    ckpt.write(&path).unwrap();
    (den, path)
}

#[test]
fn round_trip_rebuilds_the_same_denoiser_without_flags() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [3, 1] {
        let (den, path) = tiny_checkpoint(dir.path(), channels);
        let back = Checkpoint::read(&path).unwrap();
        assert_eq!(back.model.kind, DenoiserKind::Prox);
        assert_eq!(back.model.architecture.channels, channels);
        assert_eq!(back.model.architecture.activation, Activation::Softplus);
        assert_eq!(back.provenance["test"], true);
        let loaded = back.denoiser(Device::Cpu, Kind::Float, &path).unwrap();
        let x = Tensor::rand([1, channels, 12, 12], (Kind::Float, Device::Cpu));
        let s = Sigma::Scalar(0.1);
        let a = den.denoise(&x, &s, Graph::Inference).unwrap();
        let b = loaded.denoise(&x, &s, Graph::Inference).unwrap();
        assert_eq!(common::rel_err(&a, &b), 0.0);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

#[test]
fn extra_sections_and_tensors_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (den, path) = tiny_checkpoint(dir.path(), 3);
    let mut ckpt =
        Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({})).unwrap();
    ckpt.sections
        .insert("training".into(), serde_json::json!({"step": 12}));
    ckpt.tensors
        .insert("adam.m.x".into(), Tensor::from_slice(&[1.0f64, 2.0]));
    ckpt.write(&path).unwrap();
    let back = Checkpoint::read(&path).unwrap();
    assert_eq!(back.sections["training"]["step"], 12);
    assert_eq!(
        Vec::<f64>::try_from(&back.tensors["adam.m.x"]).unwrap(),
        vec![1.0, 2.0]
    );
    back.denoiser(Device::Cpu, Kind::Float, &path).unwrap();
}

#[test]
fn truncated_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = tiny_checkpoint(dir.path(), 3);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpoint::read(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    // A gradstep checkpoint cut short is called that, not sent to `gradstep import`.
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert!(!err.contains("gradstep import"), "{err}");
    // Files `torch.save` writes (zip, or a pickle for the legacy format) get the hint.
    for (name, head) in [
        ("zip.pth", &b"PK\x03\x04rest"[..]),
        ("pickle.pth", b"\x80\x02}q\x00"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, head).unwrap();
        let err = Checkpoint::read(&p).unwrap_err().to_string();
        assert!(err.contains("gradstep import"), "{err}");
    }
}

#[test]
fn missing_file_names_the_file() {
    let err = Checkpoint::read(Path::new("/nonexistent/x.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.safetensors"), "{err}");
}

#[test]
fn missing_unexpected_and_misshaped_weights_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (den, path) = tiny_checkpoint(dir.path(), 3);
    // The error of loading the checkpoint after `edit` changed its tensors.
    let error_after = |edit: &dyn Fn(&mut BTreeMap<String, Tensor>)| -> String {
        let mut ckpt =
            Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({})).unwrap();
        edit(&mut ckpt.tensors);
        ckpt.write(&path).unwrap();
        Checkpoint::read(&path)
            .unwrap()
            .denoiser(Device::Cpu, Kind::Float, &path)
            .unwrap_err()
            .to_string()
    };
    let key = "model.m_down2.1.res.2.weight";
    let err = error_after(&|t| {
        t.remove(key);
    });
    assert!(
        err.contains("m_down2.1.res.2.weight") && err.contains("missing"),
        "{err}"
    );
    let err = error_after(&|t| {
        t.insert(
            key.into(),
            Tensor::zeros([16, 16, 1, 1], (Kind::Float, Device::Cpu)),
        );
    });
    assert!(
        err.contains("m_down2.1.res.2.weight") && err.contains("shape"),
        "{err}"
    );
    let err = error_after(&|t| {
        t.insert(
            "model.m_extra.weight".into(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        );
    });
    assert!(err.contains("m_extra.weight"), "{err}");
}

#[test]
fn foreign_safetensors_is_refused_with_a_hint() {
    let Some(dir) = common::shared_dir() else {
        return;
    };
    let p = dir.join("reference/gsdrunet_tiny_elu_weights.safetensors");
    let err = Checkpoint::read(&p).unwrap_err().to_string();
    assert!(err.contains("gradstep import"), "{err}");
}

#[test]
fn failed_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (den, path) = tiny_checkpoint(dir.path(), 3);
    let before = std::fs::read(&path).unwrap();
    // Writing into a directory that does not exist fails and touches nothing else.
    let bad = dir.path().join("no/such/dir/model.safetensors");
    let ckpt = Checkpoint::from_denoiser(&den, DenoiserKind::Gs, serde_json::json!({})).unwrap();
    assert!(ckpt.write(&bad).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
