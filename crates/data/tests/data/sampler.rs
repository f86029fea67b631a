//! The patch sampler: determinism, resume, augmentations, cache, bad files.
use gradstep_data::{load_image, PatchSampler, PatchSamplerConfig, SamplerPosition};
use tch::{Device, Tensor};

use crate::common::{config, dataset, rgb_png, values};

fn batches(s: &mut PatchSampler, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| values(&s.next_batch(Device::Cpu).unwrap()))
        .collect()
}

#[test]
fn batches_do_not_depend_on_threads_or_cache() {
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("data"), 5);
    let root = dir.path().join("data");
    let one = batches(&mut PatchSampler::new(&config(&root, 1)).unwrap(), 8);
    let three = batches(&mut PatchSampler::new(&config(&root, 3)).unwrap(), 8);
    assert_eq!(one, three);
    let cached_cfg = PatchSamplerConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..config(&root, 2)
    };
    let mut cached = PatchSampler::new(&cached_cfg).unwrap();
    assert_eq!(cached.cache_state(), (true, true));
    assert_eq!(one, batches(&mut cached, 8));
    // another seed gives other batches; consecutive batches differ
    let other = PatchSamplerConfig {
        seed: 43,
        ..config(&root, 1)
    };
    assert_ne!(one, batches(&mut PatchSampler::new(&other).unwrap(), 8));
    assert_ne!(one[0], one[1]);
}

#[test]
fn resume_yields_exactly_the_next_batches_across_epochs() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 3);
    for threads in [1, 2] {
        let cfg = config(dir.path(), threads);
        let mut s = PatchSampler::new(&cfg).unwrap();
        // 3 images × 3 crops = 9 slots, batches of 5: 2 batches per epoch
        assert_eq!(s.batches_per_epoch(), 2);
        batches(&mut s, 3);
        let pos = s.position();
        assert_eq!(
            pos,
            SamplerPosition {
                epoch: 1,
                batch_in_epoch: 1
            }
        );
        let want = batches(&mut s, 5);
        let other = PatchSamplerConfig {
            threads: 3 - threads,
            ..cfg.clone()
        };
        let mut r = PatchSampler::resume(&other, &pos).unwrap();
        assert_eq!(r.position(), pos);
        assert_eq!(batches(&mut r, 5), want, "threads {threads}");
        assert_eq!(r.position(), s.position());
    }
}

/// The crop at the spec's corner of the image as a `[C, P, P]` tensor, reflection-padded.
fn expected_patch(img: &Tensor, y: i64, x: i64, p: i64) -> Tensor {
    let (h, w) = (img.size()[2], img.size()[3]);
    let padded = img.reflection_pad2d([0, (x + p - w).max(0), 0, (y + p - h).max(0)]);
    padded.narrow(2, y, p).narrow(3, x, p).squeeze_dim(0)
}

#[test]
fn each_patch_is_the_recorded_crop_under_the_recorded_transform() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = dataset(dir.path(), 4);
    // smaller than the 16² patch: padded by reflection
    paths.push(rgb_png(&dir.path().join("small.png"), 11, 9, 99));
    let cfg = config(dir.path(), 2);
    let mut s = PatchSampler::new(&cfg).unwrap();
    assert_eq!(s.len_images(), 5);
    let mut seen = std::collections::HashSet::new();
    let mut small_seen = false;
    for _ in 0..12 {
        let pos = s.position();
        let specs = s.batch_specs(&pos);
        let batch = s.next_batch(Device::Cpu).unwrap();
        assert_eq!(batch.size(), [5, 3, 16, 16]);
        for (b, spec) in specs.iter().enumerate() {
            let path = s.image_path(spec.image);
            small_seen |= path.ends_with("small.png");
            let img = load_image(path, 3, Device::Cpu).unwrap();
            let mut want = expected_patch(&img, spec.y as i64, spec.x as i64, 16);
            if spec.transform.mirror {
                want = want.flip([2]);
            }
            want = want.rot90(spec.transform.quarter_turns as i64, [1, 2]);
            let got = batch.get(b as i64);
            let err = (got - want).abs().max().double_value(&[]);
            assert!(
                err < 1e-6,
                "patch {b} at {pos:?}: {spec:?} differs by {err}"
            );
            seen.insert(spec.transform);
        }
    }
    assert!(small_seen, "the small image was never sampled");
    assert_eq!(
        seen.len(),
        8,
        "not all 8 dihedral transforms were drawn: {seen:?}"
    );
}

#[test]
fn switches_restrict_the_transforms() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 3);
    for (flips, rotations, n) in [(false, false, 1), (true, false, 4), (false, true, 4)] {
        let cfg = PatchSamplerConfig {
            flips,
            rotations,
            ..config(dir.path(), 1)
        };
        let s = PatchSampler::new(&cfg).unwrap();
        let mut seen = std::collections::HashSet::new();
        for b in 0..30 {
            let pos = SamplerPosition {
                epoch: b / 2,
                batch_in_epoch: b % 2,
            };
            seen.extend(s.batch_specs(&pos).iter().map(|p| p.transform));
        }
        assert_eq!(
            seen.len(),
            n,
            "flips {flips} rotations {rotations}: {seen:?}"
        );
        if !flips {
            assert!(seen.iter().all(|t| !t.mirror));
        }
        if !rotations {
            assert!(seen.iter().all(|t| t.quarter_turns % 2 == 0));
        }
    }
}

#[test]
fn cache_is_reused_then_rebuilt_when_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let paths = dataset(&root, 3);
    let cfg = PatchSamplerConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..config(&root, 2)
    };
    let first = batches(&mut PatchSampler::new(&cfg).unwrap(), 4);
    let mut again = PatchSampler::new(&cfg).unwrap();
    assert_eq!(again.cache_state(), (true, false));
    assert_eq!(batches(&mut again, 4), first);
    // same name, other size and pixels
    rgb_png(&paths[1], 60, 50, 1234);
    let mut changed = PatchSampler::new(&cfg).unwrap();
    assert_eq!(changed.cache_state(), (true, true));
    let from_cache = batches(&mut changed, 4);
    let from_files = batches(&mut PatchSampler::new(&config(&root, 2)).unwrap(), 4);
    assert_eq!(from_cache, from_files);
    assert_ne!(from_cache, first);
    assert_eq!(
        PatchSampler::new(&cfg).unwrap().cache_state(),
        (true, false)
    );
}

#[test]
fn corrupt_files_are_skipped_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let paths = dataset(dir.path(), 3);
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not a png").unwrap();
    // a readable header, a truncated body: found bad only when decoded
    let truncated = rgb_png(&dir.path().join("truncated.png"), 64, 64, 5);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

    let cached = PatchSamplerConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..config(dir.path(), 2)
    };
    let s = PatchSampler::new(&cached).unwrap();
    assert_eq!(s.len_images(), paths.len());
    let mut bad: Vec<_> = s.skipped().iter().map(|(p, _)| p.clone()).collect();
    bad.sort();
    assert_eq!(bad, [garbage.clone(), truncated.clone()]);
    assert!(s.skipped().iter().all(|(_, why)| !why.is_empty()));

    let mut s = PatchSampler::new(&config(dir.path(), 2)).unwrap();
    assert_eq!(
        s.len_images(),
        paths.len() + 1,
        "the truncated header reads"
    );
    assert_eq!(s.skipped().len(), 1);
    assert_eq!(s.skipped()[0].0, garbage);
    // three epochs: the truncated file comes up, is skipped once, training goes on
    let n = 3 * s.batches_per_epoch() as usize;
    for _ in 0..n {
        let b = s.next_batch(Device::Cpu).unwrap();
        assert_eq!(b.size(), [5, 3, 16, 16]);
    }
    let mentions = s.skipped().iter().filter(|(p, _)| *p == truncated).count();
    assert_eq!(mentions, 1, "{:?}", s.skipped());
}

#[test]
fn missing_root_or_no_usable_image_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let err = PatchSampler::new(&config(&missing, 1))
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    std::fs::write(dir.path().join("bad.jpg"), b"nope").unwrap();
    let err = PatchSampler::new(&config(dir.path(), 1))
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("no usable image"), "{err}");

    let bad_channels = PatchSamplerConfig {
        channels: 2,
        ..config(dir.path(), 1)
    };
    assert!(PatchSampler::new(&bad_channels).is_err());
}

#[test]
fn config_reads_with_defaults_and_rejects_unknown_fields() {
    let cfg: PatchSamplerConfig = serde_json::from_str(r#"{"roots": ["a"], "seed": 3}"#).unwrap();
    assert_eq!(cfg.patch_size, 128);
    assert_eq!(cfg.batch_size, 16);
    assert_eq!(cfg.prefetch, 4);
    assert!(cfg.flips && cfg.rotations);
    assert!(serde_json::from_str::<PatchSamplerConfig>(r#"{"patchsize": 64}"#).is_err());
}

#[test]
fn gray_batches_have_one_channel() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 2);
    let cfg = PatchSamplerConfig {
        channels: 1,
        ..config(dir.path(), 1)
    };
    let b = PatchSampler::new(&cfg)
        .unwrap()
        .next_batch(Device::Cpu)
        .unwrap();
    assert_eq!(b.size(), [5, 1, 16, 16]);
    let (lo, hi) = (b.min().double_value(&[]), b.max().double_value(&[]));
    assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi > lo);
}
