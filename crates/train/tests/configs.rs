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

#[test]
fn out_of_bounds_numbers_are_refused_naming_the_file_and_the_field() {
    let path = configs_dir().join("gs-drunet-tiny.json");
    let prox = |field: &str, value: &str| {
        let mut p = serde_json::json!({"mu": 1e-3, "epsilon": 0.1, "clip_max": 1e3,
            "estimator": {"kind": "power_iteration"}, "max_products": 50, "tolerance": 1e-2});
        p[field] = serde_json::from_str(value).unwrap();
        format!("objective={}", serde_json::json!({ "prox": p }))
    };
    let model = "model.activation=softplus";
    let cases = [
        (
            vec!["noise.sigma_max_255=1e308".to_string()],
            "noise.sigma_max_255",
        ),
        (
            vec!["noise.sigma_max_255=255.5".into()],
            "noise.sigma_max_255",
        ),
        (vec!["noise.sigma_min_255=-1".into()], "noise.sigma_min_255"),
        (vec!["noise.sigma_min_255=60".into()], "noise.sigma_min_255"),
        (vec!["optimizer.lr=1e308".into()], "optimizer.lr"),
        (vec!["optimizer.lr=0".into()], "optimizer.lr"),
        (vec!["optimizer.beta1=1".into()], "optimizer.beta1"),
        (vec!["optimizer.beta2=-0.1".into()], "optimizer.beta2"),
        (vec!["optimizer.eps=0".into()], "optimizer.eps"),
        (vec!["optimizer.eps=1e308".into()], "optimizer.eps"),
        (vec!["schedule.gamma=1e308".into()], "schedule.gamma"),
        (vec!["clip_grad_norm=1e308".into()], "clip_grad_norm"),
        (vec!["clip_grad_norm=0".into()], "clip_grad_norm"),
        (vec!["steps=0".into()], "steps"),
        (vec!["steps=18446744073709551615".into()], "steps"),
        (vec!["data.patch_size=100000".into()], "data.patch_size"),
        (vec!["data.batch_size=0".into()], "data.batch_size"),
        (vec!["data.prefetch=1000000000".into()], "data.prefetch"),
        (
            vec!["data.crops_per_image=0".into()],
            "data.crops_per_image",
        ),
        (vec!["data.threads=100000".into()], "data.threads"),
        (vec!["model.widths=[8,16,32,100000]".into()], "model.widths"),
        (vec!["model.blocks=1000".into()], "model.blocks"),
        (
            vec!["validation.sigmas_255=[25, 1e308]".into()],
            "validation.sigmas_255",
        ),
        (vec!["validation.crop=0".into()], "validation.crop"),
        (
            vec!["validation.batch_size=0".into()],
            "validation.batch_size",
        ),
        (vec![model.into(), prox("mu", "1e308")], "mu"),
        (vec![model.into(), prox("clip_max", "1e308")], "clip_max"),
        (
            vec![model.into(), prox("max_products", "1000000000")],
            "max_products",
        ),
        (vec![model.into(), prox("tolerance", "1e308")], "tolerance"),
    ];
    for (sets, field) in cases {
        let err = TrainConfig::load(&path, &sets).unwrap_err().to_string();
        assert!(
            err.contains("gs-drunet-tiny.json") && err.contains(field) && !err.contains('\n'),
            "{sets:?}: {err}"
        );
        // Shown as written, not as 309 digits.
        assert!(err.len() < 300, "{sets:?}: {err}");
    }
    // The bounds themselves are allowed.
    let edges = [
        "noise.sigma_min_255=255",
        "noise.sigma_max_255=255",
        "optimizer.lr=1",
        "schedule.gamma=1",
        "clip_grad_norm=1e6",
    ];
    TrainConfig::load(&path, &edges.map(String::from)).unwrap();
}
