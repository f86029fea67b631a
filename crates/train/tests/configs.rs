//! The shipped configs load, and `configs/README.md` documents every field they have.
use std::path::PathBuf;

use gradstep_train::performance::{MemoryFormat, Precision};
use gradstep_train::{Objective, TrainConfig};

fn configs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"))
}

/// Dotted paths of every leaf of a JSON object (`data.roots`, `optimizer.lr`, …).
fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, child, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn shipped_configs_load_and_are_documented() {
    let readme = std::fs::read_to_string(configs_dir().join("README.md")).unwrap();
    for name in ["gs-drunet.json", "gs-drunet-tiny.json"] {
        let path = configs_dir().join(name);
        let cfg = TrainConfig::load(&path, &[]).unwrap();
        assert!(matches!(cfg.objective, Objective::Gs));
        let mut keys = Vec::new();
        leaves("", &serde_json::to_value(&cfg).unwrap(), &mut keys);
        for key in keys {
            // Documented as `key` or, for grouped rows, by its last component.
            let last = key.rsplit('.').next().unwrap();
            assert!(
                readme.contains(&format!("`{key}`")) || readme.contains(&format!("`{last}`")),
                "configs/README.md does not document `{key}` ({name})"
            );
        }
    }
    let paper = TrainConfig::load(&configs_dir().join("gs-drunet.json"), &[]).unwrap();
    assert_eq!(paper.model.widths, [64, 128, 256, 512]);
    assert_eq!((paper.data.patch_size, paper.data.batch_size), (128, 16));
    assert_eq!(
        (paper.noise.sigma_min_255, paper.noise.sigma_max_255),
        (0.0, 50.0)
    );
    assert_eq!((paper.optimizer.lr, paper.schedule.gamma), (1e-4, 0.5));
    assert_eq!(paper.clip_grad_norm, Some(1e-2));
    assert_eq!(paper.validation.sigmas_255, [5.0, 15.0, 25.0, 50.0]);
    // The official schedule in epochs of ⌊8,794 / 16⌋ = 549 steps (configs/README.md): one
    // crop per image per epoch, flips only, milestones at epochs 300..1200 of 1500.
    let epoch = 8794 / 16;
    assert_eq!(epoch, 549);
    assert_eq!(
        paper.schedule.milestones,
        [300, 600, 900, 1200].map(|e| e * epoch)
    );
    assert_eq!(paper.steps, 1500 * epoch);
    assert_eq!(
        (
            paper.data.crops_per_image,
            paper.data.flips,
            paper.data.rotations
        ),
        (1, true, false)
    );
    // The GPU speed settings that passed issue 8's 300-step check (validation PSNR within
    // 0.05 dB of fp32 double backward) and gave the fastest step: docs/performance.md.
    assert_eq!(
        (paper.performance.precision, paper.performance.memory_format),
        (Precision::Bf16, MemoryFormat::ChannelsLast)
    );
    // Prox: 15 epochs after epoch 1200, at the learning rate of that point.
    let prox = TrainConfig::load(&configs_dir().join("prox-drunet.json"), &[]).unwrap();
    assert_eq!(prox.steps, 15 * epoch);
    assert_eq!(prox.optimizer.lr, paper.optimizer.lr * 0.5f64.powi(4));
    assert!(prox.schedule.milestones.is_empty());
    assert_eq!((prox.data.crops_per_image, prox.data.rotations), (1, false));
}

#[test]
fn overrides_reach_nested_fields_and_unknown_keys_fail() {
    let path = configs_dir().join("gs-drunet-tiny.json");
    let sets = [
        "optimizer.lr=5e-5",
        "noise.per_image=true",
        "name=other",
        "validation.sigmas_255=[10]",
    ];
    let cfg = TrainConfig::load(&path, &sets.map(String::from)).unwrap();
    assert_eq!(cfg.optimizer.lr, 5e-5);
    assert!(cfg.noise.per_image);
    assert_eq!(cfg.name, "other");
    assert_eq!(cfg.validation.sigmas_255, [10.0]);
    for bad in [
        "optimizer.learning_rate=1",
        "nosuch=1",
        "model.widths=[1,2]",
        "data.channels=1",
    ] {
        let err = TrainConfig::load(&path, &[bad.to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gs-drunet-tiny.json"), "{bad}: {err}");
    }
    // fp16 is an inference precision: training in it is refused up front, by name.
    let err = TrainConfig::load(&path, &["performance.precision=fp16".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gs-drunet-tiny.json") && err.contains("fp16") && err.contains("bf16"),
        "{err}"
    );
}
