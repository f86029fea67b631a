//! Grid expansion, point identities and sharding.
//!
//! A point's id is the first 16 hex digits of `SHA-256(canonical JSON of its parameters)`:
//! the same parameters give the same id on every machine and in every run, so records can be
//! matched to points after a crash, a re-run or a change of the shard count. Points are
//! sorted by id and point `i` of that order goes to shard `i mod N`: the `N` shards cover the
//! grid exactly once whatever the order of the axes in the file.
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sweep::config::{
    Algorithm, ImageSet, KernelName, Settings, SigmaDen, SweepConfig, Task,
};
use crate::sweep::error::{SweepError, SweepResult};

/// One grid point: every parameter of one restoration run over one image set.
/// `None` means "the algorithm's reference default".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// The task.
    pub task: Task,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The denoiser checkpoint.
    pub checkpoint: PathBuf,
    /// The images.
    pub image_set: ImageSet,
    /// Observation noise level `ν` (0–255).
    pub noise: f64,
    /// Blur kernel (deblur, sr).
    pub kernel: Option<KernelName>,
    /// Super-resolution factor.
    pub scale: Option<u32>,
    /// Denoiser level `σ_den`.
    pub sigma_den: Option<SigmaDen>,
    /// Regularisation weight `λ`.
    pub lambda: Option<f64>,
    /// Initial step size `τ₀`.
    pub tau0: Option<f64>,
    /// Relaxation `α`.
    pub alpha: Option<f64>,
    /// Settings shared by the sweep.
    pub settings: Settings,
}

impl Point {
    /// The deterministic id: 16 hex digits of the SHA-256 of the canonical JSON.
    pub fn id(&self) -> String {
        // serde_json writes struct fields in declaration order and floats in their shortest
        // round-trip form, so this text is canonical for a given `Point`.
        let text = serde_json::to_string(self).expect("a Point always serialises");
        let digest = Sha256::digest(text.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `σ_den` on the 0–255 scale, when set.
    pub fn sigma_den_255(&self) -> Option<f64> {
        self.sigma_den.map(|s| s.on_255(self.noise))
    }

    /// `σ_den / ν`, when set and `ν > 0`.
    pub fn sigma_ratio(&self) -> Option<f64> {
        self.sigma_den.and_then(|s| s.ratio(self.noise))
    }
}

/// A point with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    /// [`Point::id`].
    pub id: String,
    /// The parameters.
    pub params: Point,
}

/// Every point of the grid, sorted by id (duplicates, from repeated axis values, removed).
pub fn expand(config: &SweepConfig) -> Vec<GridPoint> {
    let a = &config.axes;
    let opt = |v: &Option<Vec<f64>>| -> Vec<Option<f64>> {
        v.as_ref()
            .map_or(vec![None], |v| v.iter().copied().map(Some).collect())
    };
    let kernels: Vec<Option<KernelName>> = a
        .kernel
        .as_ref()
        .map_or(vec![None], |v| v.iter().cloned().map(Some).collect());
    let scales: Vec<Option<u32>> = a
        .scale
        .as_ref()
        .map_or(vec![None], |v| v.iter().copied().map(Some).collect());
    let sigmas: Vec<Option<SigmaDen>> = a
        .sigma_den
        .as_ref()
        .map_or(vec![None], |v| v.iter().copied().map(Some).collect());
    let (lambdas, taus, alphas) = (opt(&a.lambda), opt(&a.tau0), opt(&a.alpha));
    let mut points = Vec::new();
    for &algorithm in &a.algorithm {
        for checkpoint in &a.checkpoint {
            for image_set in &a.image_set {
                for &noise in &a.noise {
                    for kernel in &kernels {
                        for &scale in &scales {
                            for &sigma_den in &sigmas {
                                for &lambda in &lambdas {
                                    for &tau0 in &taus {
                                        for &alpha in &alphas {
                                            points.push(Point {
                                                task: config.task,
                                                algorithm,
                                                checkpoint: checkpoint.clone(),
                                                image_set: image_set.clone(),
                                                noise,
                                                kernel: kernel.clone(),
                                                scale,
                                                sigma_den,
                                                lambda,
                                                tau0,
                                                alpha,
                                                settings: config.settings.clone(),
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let mut grid: Vec<GridPoint> = points
        .into_iter()
        .map(|params| GridPoint {
            id: params.id(),
            params,
        })
        .collect();
    grid.sort_by(|a, b| a.id.cmp(&b.id));
    grid.dedup_by(|a, b| a.id == b.id);
    grid
}

/// `--shard I/N`: this process runs the points `i` with `i mod N = I` of the sorted grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// `I`, from 0.
    pub index: usize,
    /// `N`, at least 1.
    pub count: usize,
}

impl Shard {
    /// The whole grid.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The points of this shard, in id order.
    pub fn select<'a>(&self, grid: &'a [GridPoint]) -> Vec<&'a GridPoint> {
        grid.iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, p)| p)
            .collect()
    }
}

impl FromStr for Shard {
    type Err = SweepError;
    fn from_str(s: &str) -> SweepResult<Self> {
        let bad = || SweepError::Invalid(format!("bad shard `{s}` (expected I/N with 0 ≤ I < N)"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
