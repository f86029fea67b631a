//! The sampling plan: which patch is the `t`-th of batch `b` of epoch `e`, as a pure function
//! of `(seed, e, b, t)`, so that the batches do not depend on threads, timing or where a run
//! was resumed.
//!
//! **Epoch**: a pass over the `N` images in an order shuffled by `(seed, e)`, taking `K`
//! crops (`crops_per_image`, default 8) from each image in turn: `N·K` patch slots,
//! `⌈N·K / B⌉` batches of `B`. Slot `s = b·B + t` uses image `order_e[(s mod N·K) / K]`
//! (the last batch wraps to the epoch's start when `B ∤ N·K`), and its corner and transform
//! are drawn from a ChaCha8 generator seeded by `(seed, e, s)`. Taking the `K` crops of an
//! image in consecutive slots lets the sampler decode each image once per epoch when it
//! reads PNGs.
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::patch::{draw, rng_for, Dihedral, PatchSpec};

/// Where a sampler is: the next batch it returns is batch `batch_in_epoch` of `epoch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerPosition {
    /// The epoch (0-based).
    pub epoch: u64,
    /// The batch within the epoch (0-based).
    pub batch_in_epoch: u64,
}

/// The fixed parameters of a sampling plan.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub seed: u64,
    pub dims: Vec<(usize, usize)>,
    pub crops_per_image: u64,
    pub batch: u64,
    pub patch: usize,
    pub allowed: Vec<Dihedral>,
}

impl Plan {
    /// Patch slots per epoch, `N·K`.
    pub fn slots(&self) -> u64 {
        self.dims.len() as u64 * self.crops_per_image
    }

    /// Batches per epoch, `⌈N·K / B⌉`.
    pub fn batches_per_epoch(&self) -> u64 {
        self.slots().div_ceil(self.batch).max(1)
    }

    /// The position after `pos`.
    pub fn advance(&self, pos: SamplerPosition) -> SamplerPosition {
        if pos.batch_in_epoch + 1 >= self.batches_per_epoch() {
            SamplerPosition {
                epoch: pos.epoch + 1,
                batch_in_epoch: 0,
            }
        } else {
            SamplerPosition {
                epoch: pos.epoch,
                batch_in_epoch: pos.batch_in_epoch + 1,
            }
        }
    }

    /// The image order of `epoch`: a permutation of `0..N` drawn from `(seed, epoch)`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dims.len()).collect();
        order.shuffle(&mut rng_for(&[self.seed, epoch, u64::MAX]));
        order
    }

    /// The slot indices `s` of the batch at `pos` and the image each one uses by plan.
    pub fn slots_of(&self, pos: SamplerPosition, order: &[usize]) -> Vec<(u64, usize)> {
        let first = pos.batch_in_epoch * self.batch;
        (first..first + self.batch)
            .map(|s| {
                let within = s % self.slots();
                (s, order[(within / self.crops_per_image) as usize])
            })
            .collect()
    }

    /// The patch of slot `s` of `epoch` cut from `image` (the planned image, or the
    /// substitute of one that failed to decode).
    pub fn patch(&self, epoch: u64, s: u64, image: usize) -> PatchSpec {
        let mut rng = rng_for(&[self.seed, epoch, s]);
        draw(&mut rng, image, self.dims[image], self.patch, &self.allowed)
    }
}
