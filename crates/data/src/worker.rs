//! The sampler's background thread: it produces the planned batches in order, ahead of the
//! consumer (a bounded channel of `prefetch` batches), decoding and cutting in parallel on
//! the sampler's rayon pool.
//!
//! Reading PNGs, it decodes the images of `⌈threads·K / B⌉` batches at once (one image per
//! thread), keeps an image decoded while its `K` crops are being cut, and never decodes an
//! image twice in a row. A file that fails to decode here (its header was readable at start)
//! is reported once, never read again, and its slots are cut from the next image (in index
//! order) that decodes: deterministic, since failing is a property of the file.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::cache::{reason, DecodedCache};
use crate::error::{DataError, Result};
use crate::image_io;
use crate::patch::{cut, PatchSpec};
use crate::plan::{Plan, SamplerPosition};

/// Where the pixels come from.
pub(crate) enum Source {
    /// The decode-once cache.
    Cache(DecodedCache),
    /// The image files, decoded on the fly.
    Files(Vec<PathBuf>),
}

/// One batch: `[B, C, P, P]` float32 on `[0, 1]` (CPU), and the files found bad making it.
pub(crate) struct Produced {
    pub data: Tensor,
    pub skipped: Vec<(PathBuf, String)>,
}

/// The state of the background thread.
pub(crate) struct Worker {
    pub plan: Arc<Plan>,
    pub source: Arc<Source>,
    pub pool: Arc<rayon::ThreadPool>,
    pub channels: usize,
    bad: HashSet<usize>,
    decoded: HashMap<usize, Arc<Vec<u8>>>,
    order: Option<(u64, Vec<usize>)>,
}

impl Worker {
    pub fn new(
        plan: Arc<Plan>,
        source: Arc<Source>,
        pool: Arc<rayon::ThreadPool>,
        channels: usize,
    ) -> Self {
        Worker {
            plan,
            source,
            pool,
            channels,
            bad: HashSet::new(),
            decoded: HashMap::new(),
            order: None,
        }
    }

    /// Sends batches from `pos` on until the receiver hangs up or an error occurs.
    pub fn run(mut self, mut pos: SamplerPosition, tx: SyncSender<Result<Produced>>) {
        let group = match *self.source {
            Source::Cache(_) => 1,
            Source::Files(_) => {
                let k = self.plan.crops_per_image * self.pool.current_num_threads() as u64;
                k.div_ceil(self.plan.batch).max(1)
            }
        };
        loop {
            let mut positions = Vec::with_capacity(group as usize);
            for _ in 0..group {
                positions.push(pos);
                pos = self.plan.advance(pos);
            }
            match self.produce(&positions) {
                Ok(batches) => {
                    for b in batches {
                        if tx.send(Ok(b)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    }

    /// The patches of the batch at `pos` as planned (before any substitution).
    fn planned(&mut self, pos: SamplerPosition) -> Vec<(u64, usize)> {
        if self.order.as_ref().is_none_or(|(e, _)| *e != pos.epoch) {
            self.order = Some((pos.epoch, self.plan.order(pos.epoch)));
        }
        let order = &self.order.as_ref().expect("set above").1;
        self.plan.slots_of(pos, order)
    }

    fn produce(&mut self, positions: &[SamplerPosition]) -> Result<Vec<Produced>> {
        let planned: Vec<_> = positions.iter().map(|&p| self.planned(p)).collect();
        let mut skipped = Vec::new();
        if matches!(*self.source, Source::Files(_)) {
            let needed: BTreeSet<usize> = planned.iter().flatten().map(|&(_, i)| i).collect();
            self.decoded.retain(|i, _| needed.contains(i));
            self.decode(&needed, &mut skipped);
        }
        let mut out = Vec::with_capacity(positions.len());
        for (pos, slots) in positions.iter().zip(planned) {
            let mut specs = Vec::with_capacity(slots.len());
            for (s, image) in slots {
                let image = self.usable(image, &mut skipped)?;
                specs.push(self.plan.patch(pos.epoch, s, image));
            }
            out.push(Produced {
                data: self.cut_all(&specs)?,
                skipped: std::mem::take(&mut skipped),
            });
        }
        Ok(out)
    }

    /// Decodes (in parallel) the images of `wanted` not decoded yet and not known bad.
    fn decode(&mut self, wanted: &BTreeSet<usize>, skipped: &mut Vec<(PathBuf, String)>) {
        let Source::Files(paths) = &*self.source else {
            return;
        };
        let todo: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|i| !self.decoded.contains_key(i) && !self.bad.contains(i))
            .collect();
        let (c, dims) = (self.channels, &self.plan.dims);
        let got: Vec<_> = self.pool.install(|| {
            todo.par_iter()
                .map(|&i| {
                    let (px, h, w) = image_io::decode_u8(&paths[i], c as i64)?;
                    if (h, w) != dims[i] {
                        return Err(DataError::file(&paths[i], "image changed since the scan"));
                    }
                    Ok(px)
                })
                .collect()
        });
        for (i, r) in todo.into_iter().zip(got) {
            match r {
                Ok(px) => {
                    self.decoded.insert(i, Arc::new(px));
                }
                Err(e) => {
                    self.bad.insert(i);
                    eprintln!(
                        "gradstep-data: skipping {}: {}",
                        paths[i].display(),
                        reason(&e)
                    );
                    skipped.push((paths[i].clone(), reason(&e)));
                }
            }
        }
    }

    /// `image` if it can be read, else the next image (in index order) that decodes.
    fn usable(&mut self, image: usize, skipped: &mut Vec<(PathBuf, String)>) -> Result<usize> {
        let n = self.plan.dims.len();
        for step in 0..n {
            let i = (image + step) % n;
            if self.bad.contains(&i) {
                continue;
            }
            if matches!(*self.source, Source::Files(_)) && !self.decoded.contains_key(&i) {
                self.decode(&BTreeSet::from([i]), skipped);
                if self.bad.contains(&i) {
                    continue;
                }
            }
            return Ok(i);
        }
        Err(DataError::Invalid(
            "no image of the dataset could be decoded".into(),
        ))
    }

    /// Cuts `specs` in parallel straight into a new `[B, C, P, P]` float32 CPU tensor.
    ///
    /// Writing into the tensor's memory (rather than `Tensor::from_slice`, which zero-fills
    /// and copies with libtorch's OpenMP threads) leaves no torch work at all per batch:
    /// on few cores, OpenMP's spinning threads otherwise take a third of the sampler's CPU.
    fn cut_all(&self, specs: &[PatchSpec]) -> Result<Tensor> {
        let p = self.plan.patch;
        let c = self.channels;
        let n = specs.len() * c * p * p;
        let shape = [specs.len() as i64, c as i64, p as i64, p as i64];
        let tensor = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
        if !tensor.is_contiguous() || tensor.numel() != n {
            return Err(DataError::Invalid(
                "libtorch returned an unexpected tensor".into(),
            ));
        }
        // SAFETY: `tensor` was just allocated by libtorch as a contiguous buffer of `n` f32
        // (checked above); this is the only handle to it until the slice's last use below.
        let data = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut f32, n) };
        self.pool.install(|| {
            data.par_chunks_mut(c * p * p)
                .zip(specs)
                .for_each(|(out, spec)| {
                    let (h, w) = self.plan.dims[spec.image];
                    match &*self.source {
                        Source::Cache(cache) => {
                            cut(cache.pixels(spec.image), (h, w, c), spec, p, out)
                        }
                        Source::Files(_) => {
                            let px = &self.decoded[&spec.image];
                            cut(px, (h, w, c), spec, p, out)
                        }
                    }
                })
        });
        Ok(tensor)
    }
}
