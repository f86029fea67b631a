//! The sweep configs of the experiment recipes (`configs/experiments/*.json`, run by
//! `scripts/experiments.sh`) parse, expand to the intended grids and, with `../shared`
//! present, validate: a smoke test of `make experiments` that needs no trained model.
use std::path::{Path, PathBuf};

use gradstep_pnp::sweep::{expand, SweepConfig};

#[test]
fn experiment_sweep_configs_parse_expand_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let dir = std::env::temp_dir().join(format!(
        "gradstep-experiment-configs-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("gs.safetensors");
    std::fs::write(&ckpt, b"x").unwrap();
    let expected = [
        ("u-curve-cpu", 6 * 3),
        ("u-curve-full", 11 * 10 * 3 * 2),
        ("tau0-backtracking-cpu", 8),
        ("tau0-fixed-cpu", 8),
        ("tau0-backtracking-full", 9 * 8),
        ("tau0-fixed-full", 9 * 8),
    ];
    let shipped = std::fs::read_dir(root.join("configs/experiments"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(
        shipped,
        expected.len(),
        "a config without an expected grid size"
    );
    for (name, points) in expected {
        let path = root.join(format!("configs/experiments/{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut c: SweepConfig =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(expand(&c).len(), points, "{name}");
        let backtracking = c.settings.backtracking;
        if name.starts_with("tau0-") {
            assert_eq!(backtracking, Some(name.contains("backtracking")), "{name}");
        }
        if !shared.join("data").is_dir() {
            eprintln!(
                "skipping the validation of {name}: no shared data at {}",
                shared.display()
            );
            continue;
        }
        let rebase = |p: &Path| shared.join(p.strip_prefix("../shared").unwrap());
        c.axes.checkpoint = vec![ckpt.clone()];
        for s in &mut c.axes.image_set {
            s.dir = rebase(&s.dir);
        }
        c.settings.kernel_dir = c.settings.kernel_dir.as_deref().map(rebase);
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    std::fs::remove_dir_all(&dir).ok();
}
