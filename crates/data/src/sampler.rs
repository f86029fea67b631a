//! Training patches: random `P×P` crops with dihedral augmentations, in batches
//! `[B, C, P, P]` of float32 on `[0, 1]`, deterministic for `(seed, epoch)` whatever the number
//! of threads, resumable from a [`SamplerPosition`].
//!
//! What is sampled is fixed by [`crate::plan`] (epoch = shuffled pass over the images, `K`
//! crops each) and [`crate::patch`] (corner, transform, reflection padding of small images).
//! A background thread (see `worker`) prepares up to `prefetch` batches ahead while the
//! caller trains; decoding and cutting run on a rayon pool of `threads` threads.
//!
//! With `cache_dir`, images are decoded once into a memory-mapped cache (see `cache` for its
//! layout and cost) and patches are cut from it; without it, the PNGs are decoded on the
//! fly, once per image per epoch. Both give the same batches: pixels are 8-bit in both
//! (16-bit images are rounded to 8 bits).
//!
//! Bad files: those whose header cannot be read (without cache) or that fail to decode
//! (building the cache) are skipped at start; a file that fails later is skipped when met.
//! Each is printed once on stderr and listed by [`PatchSampler::skipped`].
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::cache::{reason, DecodedCache};
use crate::dataset::scan;
use crate::error::{DataError, Result};
use crate::image_io;
use crate::patch::{Dihedral, PatchSpec};
use crate::plan::{Plan, SamplerPosition};
use crate::worker::{Produced, Source, Worker};

/// How training patches are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchSamplerConfig {
    /// Directories walked recursively for PNG, JPEG, BMP and TIFF images.
    pub roots: Vec<PathBuf>,
    /// Side `P` of the square patches (default 128).
    pub patch_size: i64,
    /// 3 (colour) or 1 (gray): every image is converted to this.
    pub channels: i64,
    /// Patches per batch `B` (default 16).
    pub batch_size: i64,
    /// Random left–right / up–down flips (default true).
    pub flips: bool,
    /// Random quarter turns (default true).
    pub rotations: bool,
    /// Seed of the whole sequence of batches.
    pub seed: u64,
    /// Where to keep the decode-once cache; `None`: decode the files on the fly.
    pub cache_dir: Option<PathBuf>,
    /// Batches prepared ahead by the background thread (default 4).
    pub prefetch: usize,
    /// Crops `K` taken from each image per epoch (default 8).
    pub crops_per_image: usize,
    /// Threads decoding and cutting; 0 = one per core (default 0).
    pub threads: usize,
}

impl Default for PatchSamplerConfig {
    fn default() -> Self {
        PatchSamplerConfig {
            roots: Vec::new(),
            patch_size: 128,
            channels: 3,
            batch_size: 16,
            flips: true,
            rotations: true,
            seed: 0,
            cache_dir: None,
            prefetch: 4,
            crops_per_image: 8,
            threads: 0,
        }
    }
}

/// The training patch sampler (see the module doc).
pub struct PatchSampler {
    plan: Arc<Plan>,
    paths: Vec<PathBuf>,
    pos: SamplerPosition,
    skipped: Vec<(PathBuf, String)>,
    from_cache: bool,
    cache_rebuilt: bool,
    rx: Option<Receiver<Result<Produced>>>,
    thread: Option<JoinHandle<()>>,
}

impl PatchSampler {
    /// Checks `cfg`, scans the roots, opens (or builds) the cache, and starts at epoch 0.
    pub fn new(cfg: &PatchSamplerConfig) -> Result<Self> {
        Self::resume(cfg, &SamplerPosition::default())
    }

    /// As [`PatchSampler::new`], but the first batch returned is the one at `pos`: exactly
    /// the batch a sampler of the same `cfg` would have returned there.
    pub fn resume(cfg: &PatchSamplerConfig, pos: &SamplerPosition) -> Result<Self> {
        Self::resume_unless_stopped(cfg, pos, &AtomicBool::new(false))
    }

    /// As [`PatchSampler::resume`], but a decode-cache build (minutes for a large dataset)
    /// stops once `stop` is set (checked between groups of images), removes its partial
    /// file and returns [`DataError::Interrupted`]. The trainer's SIGINT / SIGTERM handler
    /// sets `stop`.
    pub fn resume_unless_stopped(
        cfg: &PatchSamplerConfig,
        pos: &SamplerPosition,
        stop: &AtomicBool,
    ) -> Result<Self> {
        cfg.validate().map_err(DataError::Invalid)?;
        let (files, mut skipped) = scan(&cfg.roots)?;
        for (p, why) in &skipped {
            eprintln!("gradstep-data: skipping {}: {why}", p.display());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("gradstep-data-{i}"))
            .build()
            .map_err(|e| DataError::Invalid(format!("cannot start the sampler threads: {e}")))?;
        let (source, paths, dims, bad, rebuilt) = match &cfg.cache_dir {
            Some(dir) => {
                let cache = DecodedCache::open_or_build(
                    dir,
                    &cfg.roots,
                    &files,
                    cfg.channels,
                    &pool,
                    stop,
                )?;
                let paths: Vec<PathBuf> =
                    cache.entries.iter().map(|e| e.file.path.clone()).collect();
                let dims: Vec<(usize, usize)> = cache.entries.iter().map(|e| (e.h, e.w)).collect();
                let bad = cache.failed.clone();
                let rebuilt = cache.rebuilt;
                (Source::Cache(cache), paths, dims, bad, rebuilt)
            }
            None => {
                let heads: Vec<_> = pool.install(|| {
                    files
                        .par_iter()
                        .map(|f| image_io::dimensions(&f.path))
                        .collect()
                });
                let (mut paths, mut dims, mut bad) = (Vec::new(), Vec::new(), Vec::new());
                for (f, r) in files.iter().zip(heads) {
                    match r {
                        Ok((w, h)) => {
                            paths.push(f.path.clone());
                            dims.push((h, w));
                        }
                        Err(e) => bad.push((f.path.clone(), reason(&e))),
                    }
                }
                (Source::Files(paths.clone()), paths, dims, bad, false)
            }
        };
        for (p, why) in &bad {
            eprintln!("gradstep-data: skipping {}: {why}", p.display());
        }
        skipped.extend(bad);
        if paths.is_empty() {
            return Err(DataError::Invalid(format!(
                "no usable image under {} ({} image files found, {} skipped)",
                cfg.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                files.len(),
                skipped.len()
            )));
        }
        let plan = Arc::new(Plan {
            seed: cfg.seed,
            dims,
            crops_per_image: cfg.crops_per_image as u64,
            batch: cfg.batch_size as u64,
            patch: cfg.patch_size as usize,
            allowed: Dihedral::allowed(cfg.flips, cfg.rotations),
        });
        let from_cache = matches!(source, Source::Cache(_));
        let worker = Worker::new(
            plan.clone(),
            Arc::new(source),
            Arc::new(pool),
            cfg.channels as usize,
        );
        let (tx, rx) = sync_channel(cfg.prefetch);
        let start = *pos;
        let thread = std::thread::Builder::new()
            .name("gradstep-sampler".into())
            .spawn(move || worker.run(start, tx))
            .map_err(|e| DataError::Invalid(format!("cannot start the sampler thread: {e}")))?;
        Ok(PatchSampler {
            plan,
            paths,
            pos: *pos,
            skipped,
            from_cache,
            cache_rebuilt: rebuilt,
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// The next batch, `[B, C, P, P]` float32 on `[0, 1]` on `device`.
    pub fn next_batch(&mut self, device: Device) -> Result<Tensor> {
        let rx = self.rx.as_ref().expect("present until drop");
        let got = rx
            .recv()
            .map_err(|_| DataError::Invalid("the sampler thread stopped".into()))??;
        self.skipped.extend(got.skipped);
        self.pos = self.plan.advance(self.pos);
        Ok(got.data.f_to_device(device)?)
    }

    /// The position of the next batch [`PatchSampler::next_batch`] returns.
    pub fn position(&self) -> SamplerPosition {
        self.pos
    }

    /// The number of usable images.
    pub fn len_images(&self) -> usize {
        self.paths.len()
    }

    /// The path of usable image `i` (the index of [`PatchSpec::image`]).
    pub fn image_path(&self, i: usize) -> &Path {
        &self.paths[i]
    }

    /// Batches per epoch, `⌈N·K / B⌉`.
    pub fn batches_per_epoch(&self) -> u64 {
        self.plan.batches_per_epoch()
    }

    /// The patches of the batch at `pos`, as planned: the batch equals these crops under
    /// these transforms, except where a file fails to decode mid-run and is replaced.
    pub fn batch_specs(&self, pos: &SamplerPosition) -> Vec<PatchSpec> {
        let order = self.plan.order(pos.epoch);
        self.plan
            .slots_of(*pos, &order)
            .into_iter()
            .map(|(s, image)| self.plan.patch(pos.epoch, s, image))
            .collect()
    }

    /// The files skipped so far (path, reason), each once; each was also printed on stderr.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Whether patches are cut from the decode-once cache, and whether this sampler (re)built it.
    pub fn cache_state(&self) -> (bool, bool) {
        (self.from_cache, self.cache_rebuilt)
    }
}

impl Drop for PatchSampler {
    fn drop(&mut self) {
        drop(self.rx.take()); // the worker's next send fails and it returns
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PatchSamplerConfig {
    /// Most batches prepared ahead ([`PatchSamplerConfig::prefetch`]).
    pub const MAX_PREFETCH: usize = 256;
    /// Most crops per image and epoch ([`PatchSamplerConfig::crops_per_image`]).
    pub const MAX_CROPS_PER_IMAGE: usize = 1 << 20;
    /// Most decoding threads ([`PatchSamplerConfig::threads`]).
    pub const MAX_THREADS: usize = 1024;

    /// Checks the values: `channels` 1 or 3, `patch_size` in `1..=4096`, `batch_size` in
    /// `1..=65536`, `prefetch` ≤ [`Self::MAX_PREFETCH`], `crops_per_image` in
    /// `1..=`[`Self::MAX_CROPS_PER_IMAGE`], `threads` ≤ [`Self::MAX_THREADS`]. The message
    /// starts with the field's name.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("channels must be 1 or 3, got {}", self.channels));
        }
        if !(1..=4096).contains(&self.patch_size) {
            return Err(format!(
                "patch_size must be in 1..=4096, got {}",
                self.patch_size
            ));
        }
        if !(1..=65536).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be in 1..=65536, got {}",
                self.batch_size
            ));
        }
        if self.prefetch > Self::MAX_PREFETCH {
            return Err(format!(
                "prefetch must be at most {}, got {}",
                Self::MAX_PREFETCH,
                self.prefetch
            ));
        }
        if !(1..=Self::MAX_CROPS_PER_IMAGE).contains(&self.crops_per_image) {
            return Err(format!(
                "crops_per_image must be in 1..={}, got {}",
                Self::MAX_CROPS_PER_IMAGE,
                self.crops_per_image
            ));
        }
        if self.threads > Self::MAX_THREADS {
            return Err(format!(
                "threads must be at most {} (0: one per core), got {}",
                Self::MAX_THREADS,
                self.threads
            ));
        }
        Ok(())
    }
}
