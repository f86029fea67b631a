//! Data-parallel training: one process per device, each with its own slice of the batch,
//! the gradients averaged over the processes between backward and clipping
//! ([`crate::step::GradientSync`]), so that every rank applies the same update to the same
//! weights. The collectives are c10d's ([`gradstep_dist::ProcessGroup`]: NCCL on CUDA,
//! Gloo on the CPU).
//!
//! With `W` ranks of per-rank batch `b`, step `t`'s global batch is the one a single process
//! with batch `W·b` would draw (patches from the sampler, noise `ξ` from `(seed, t)`), and rank
//! `r` trains on its rows `r·b … (r+1)·b − 1`: its patches and noise are a pure function of
//! `(seed, t, r)`, and `W` ranks compute `∇θ (1/W) Σ_r L_r = ∇θ L` of the global batch
//! (the loss is a mean over equal slices), which the tests check against one process.
//!
//! Besides the gradients, each step all-reduces one small flag (a SIGINT / SIGTERM on any
//! rank stops all of them before the same step), and every `checkpoint.every` steps a
//! checksum of the weights (any difference between ranks stops the run).
use std::time::{Duration, Instant};

use gradstep_data::SamplerPosition;
use gradstep_dist::{DistError, ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::step::GradientSync;

/// Largest bucket of flattened gradients in one all-reduce (PyTorch DDP's default cap).
const BUCKET_BYTES: i64 = 25 << 20;

/// One rank of a data-parallel run: the process group and the communication counters.
pub struct DataParallel {
    group: ProcessGroup,
    /// Time spent in collectives (gradient buckets and flags), and the steps they served.
    comm: Duration,
    comm_bytes: u64,
    synced_steps: u64,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.group.rank())
            .field("world_size", &self.group.world_size())
            .field("backend", &self.group.backend())
            .finish()
    }
}

impl From<DistError> for TrainError {
    fn from(e: DistError) -> Self {
        TrainError::Distributed(e.to_string())
    }
}

impl DataParallel {
    /// Trains over `group`'s ranks.
    pub fn new(group: ProcessGroup) -> Self {
        DataParallel {
            group,
            comm: Duration::ZERO,
            comm_bytes: 0,
            synced_steps: 0,
        }
    }

    /// This process's rank (0 writes checkpoints, TensorBoard and progress).
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// The collective backend's name (`gloo`, `nccl`).
    pub fn backend_name(&self) -> &'static str {
        self.group.backend().name()
    }

    /// Waits until every rank gets here.
    pub fn barrier(&mut self) -> Result<()> {
        self.group.barrier()?;
        Ok(())
    }

    /// Copies rank 0's `tensors` to every rank (the weights at the start of a run).
    pub fn broadcast_from_rank0(&mut self, tensors: &[Tensor]) -> Result<()> {
        tch::no_grad(|| self.group.broadcast(tensors, 0))?;
        Ok(())
    }

    /// The largest `flag` over the ranks (0 = none): e.g. a stop signal seen by any rank.
    pub fn max_flag(&mut self, flag: i64) -> Result<i64> {
        let start = Instant::now();
        let t = Tensor::from_slice(&[flag]);
        self.group.all_reduce(&[t.shallow_clone()], ReduceOp::Max)?;
        self.comm += start.elapsed();
        Ok(t.int64_value(&[0]))
    }

    /// `values` reduced over the ranks by `op` (float64 on the CPU: a few scalars to log).
    pub fn reduce_scalars(&mut self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        let start = Instant::now();
        let t = Tensor::from_slice(values);
        self.group.all_reduce(&[t.shallow_clone()], op)?;
        self.comm += start.elapsed();
        Ok(Vec::<f64>::try_from(&t)?)
    }

    /// Stops with an error unless `params` (in the same order on every rank) are identical
    /// on all ranks: their float64 sum and sum of squares, min and max over the ranks.
    pub fn check_identical(&mut self, params: &[Tensor], step: u64) -> Result<()> {
        let (mut sum, mut squares) = (0.0, 0.0);
        for p in params {
            let p = p.f_detach()?.f_to_kind(Kind::Double)?;
            sum += p.f_sum(Kind::Double)?.f_double_value(&[])?;
            squares += p.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        let max = self.reduce_scalars(&[sum, squares, -sum, -squares], ReduceOp::Max)?;
        if max[0] != -max[2] || max[1] != -max[3] {
            return Err(TrainError::Distributed(format!(
                "the weights differ between ranks at step {step} (checksum Σθ from {} to {}): \
                 the ranks no longer train one model",
                -max[2], max[0]
            )));
        }
        Ok(())
    }

    /// The communication of the run so far, for the end-of-run line: seconds per step in
    /// collectives, and megabytes of gradients all-reduced per step.
    pub fn comm_per_step(&self) -> Option<(f64, f64)> {
        (self.synced_steps > 0).then(|| {
            let n = self.synced_steps as f64;
            (
                self.comm.as_secs_f64() / n,
                self.comm_bytes as f64 / n / 1e6,
            )
        })
    }
}

impl GradientSync for DataParallel {
    /// Averages `grads` in buckets of at most [`BUCKET_BYTES`]: same dtype and device,
    /// flattened and concatenated, all-reduced together, then copied back.
    fn average(&mut self, grads: &[Tensor]) -> Result<()> {
        let start = Instant::now();
        let buckets = buckets(grads);
        let flat = buckets
            .iter()
            .map(|b| {
                let parts: Vec<Tensor> = b
                    .iter()
                    .map(|&i| grads[i].f_reshape([-1]))
                    .collect::<std::result::Result<_, _>>()?;
                Tensor::f_cat(&parts, 0)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.group.all_reduce(&flat, ReduceOp::Average)?;
        for (bucket, flat) in buckets.iter().zip(&flat) {
            let mut offset = 0;
            for &i in bucket {
                let mut g = grads[i].shallow_clone();
                let n = g.numel() as i64;
                let part = flat.f_narrow(0, offset, n)?.f_view(g.size().as_slice())?;
                tch::no_grad(|| g.f_copy_(&part))?;
                offset += n;
            }
            self.comm_bytes += (flat.numel() * flat.kind().elt_size_in_bytes()) as u64;
        }
        self.comm += start.elapsed();
        self.synced_steps += 1;
        Ok(())
    }
}

/// Indices of `grads` grouped into buckets: consecutive tensors of one dtype and device, at
/// most [`BUCKET_BYTES`] each (a larger tensor is a bucket of its own).
fn buckets(grads: &[Tensor]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0i64;
    let mut key = None;
    for (i, g) in grads.iter().enumerate() {
        let size = (g.numel() * g.kind().elt_size_in_bytes()) as i64;
        let k = (g.kind(), g.device());
        match out.last_mut() {
            Some(last) if key == Some(k) && bytes + size <= BUCKET_BYTES => {
                last.push(i);
                bytes += size;
            }
            _ => {
                out.push(vec![i]);
                bytes = size;
                key = Some(k);
            }
        }
    }
    out
}

/// The sampler position at which `new_world` ranks continue a run that `old_world` ranks
/// left at `pos` (with `batch` patches per rank): the first global batch boundary at or after
/// the patches already drawn in the epoch. The same position when the world is unchanged
/// (exact resume).
pub fn sampler_position_for(
    pos: SamplerPosition,
    old_world: u64,
    new_world: u64,
    batch: u64,
) -> SamplerPosition {
    if old_world == new_world || old_world == 0 || new_world == 0 {
        return pos;
    }
    let drawn = pos.batch_in_epoch * old_world * batch;
    SamplerPosition {
        epoch: pos.epoch,
        batch_in_epoch: drawn.div_ceil(new_world * batch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_by_size_and_dtype() {
        let f = |n: i64, kind| Tensor::zeros([n], (kind, tch::Device::Cpu));
        // 16 + (B − 20) bytes fit in one bucket of B; 16 more do not.
        let big = BUCKET_BYTES / 4 - 5;
        let grads = [
            f(4, Kind::Float),
            f(big, Kind::Float),
            f(4, Kind::Float),
            f(8, Kind::Float),
            f(2, Kind::BFloat16),
            f(BUCKET_BYTES, Kind::Float),
        ];
        assert_eq!(
            buckets(&grads),
            vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]
        );
    }

    #[test]
    fn resuming_on_another_world_keeps_the_patches_drawn() {
        let at = |epoch, batch_in_epoch| SamplerPosition {
            epoch,
            batch_in_epoch,
        };
        // 2 ranks × 4 drew 3 global batches (24 patches): 1 rank × 4 goes on at patch 24.
        assert_eq!(sampler_position_for(at(1, 3), 2, 1, 4), at(1, 6));
        // 1 rank × 4 drew 5 batches (20 patches): 2 ranks × 4 go on at patch 24.
        assert_eq!(sampler_position_for(at(0, 5), 1, 2, 4), at(0, 3));
        assert_eq!(sampler_position_for(at(2, 7), 2, 2, 4), at(2, 7));
    }
}
