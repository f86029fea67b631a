//! The typed training configuration (one JSON file, every field documented in
//! `configs/README.md`; unknown fields are errors at every level).
//!
//! [`TrainConfig`] composes the settings each part owns: the noise (`crate::noise`), the
//! Prox penalty (`crate::prox`), Adam (`crate::adam`), the performance switches
//! (`crate::performance`), the patches (`gradstep_data`) and the architecture
//! (`gradstep_model`); the schedule, validation, checkpoint and log settings are here. The
//! objective's loss is in `crate::loss` and `crate::step`.
use std::path::{Path, PathBuf};

use gradstep_data::PatchSamplerConfig;
use gradstep_model::{DenoiserKind, DrunetConfig};
use serde::{Deserialize, Serialize};

use crate::adam::AdamConfig;
use crate::bounds::{in_range, in_range_open};
use crate::error::{Result, TrainError};
pub use crate::noise::{NoiseConfig, MAX_SIGMA_255};
use crate::overrides;
use crate::performance::{PerformanceConfig, Precision};
use crate::prox::ProxPenaltyConfig;

/// Largest `optimizer.lr`: Adam moves every weight by about `lr` per step, so a larger one
/// cannot train anything.
pub const MAX_LR: f64 = 1.0;
/// Largest `clip_grad_norm` (`null` turns clipping off).
pub const MAX_CLIP_GRAD_NORM: f64 = 1e6;
/// Largest `steps`.
pub const MAX_STEPS: u64 = 1_000_000_000_000;
/// Largest entry of `model.widths` (the paper's largest is 512).
pub const MAX_WIDTH: i64 = 4096;
/// Largest `model.blocks` (the paper: 2).
pub const MAX_BLOCKS: usize = 64;
/// Largest `validation.crop`.
pub const MAX_VALIDATION_CROP: i64 = 16384;
/// Largest `validation.batch_size`.
pub const MAX_VALIDATION_BATCH: i64 = 4096;

/// Why `performance.cuda_graph` is refused with the Prox objective.
pub(crate) const CUDA_GRAPH_GS_ONLY: &str = "performance.cuda_graph works for the GS objective only (the Prox penalty reads its estimates back at every step)";

/// Everything a training run needs besides the device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: logs and checkpoints go to `<runs_dir>/<name>/`.
    pub name: String,
    /// Parent directory of all runs.
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Architecture of `N_σ`.
    pub model: DrunetConfig,
    /// GS denoising loss alone, or with the Prox spectral-norm penalty.
    #[serde(default)]
    pub objective: Objective,
    /// Start from the weights of this checkpoint (fine-tuning); the optimizer starts fresh.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Training patches.
    pub data: PatchSamplerConfig,
    /// How `σ` is drawn.
    #[serde(default)]
    pub noise: NoiseConfig,
    /// Adam's hyper-parameters (`lr` is the initial learning rate).
    #[serde(default)]
    pub optimizer: AdamConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    #[serde(default = "default_clip")]
    pub clip_grad_norm: Option<f64>,
    /// Number of optimizer steps of the whole run.
    pub steps: u64,
    /// Seed of the weight initialisation and of the per-step noise.
    #[serde(default)]
    pub seed: u64,
    /// Validation.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Checkpointing.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Precision and differentiation method (speed, not what is learned).
    #[serde(default)]
    pub performance: PerformanceConfig,
}

/// The training objective.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Objective {
    /// `mean ‖D_σ(x + σξ) − x‖²` (ICLR 2022).
    #[default]
    Gs,
    /// The GS loss plus `μ · mean_b max(‖∇²g_σ(y_b)‖₂, 1 − ε)` (ICML 2022).
    Prox(ProxPenaltyConfig),
}

impl Objective {
    /// The kind of denoiser this objective produces.
    pub fn kind(&self) -> DenoiserKind {
        match self {
            Objective::Gs => DenoiserKind::Gs,
            Objective::Prox(_) => DenoiserKind::Prox,
        }
    }
}

/// Step decay: `lr(t) = lr₀ · γ^{#{m ∈ milestones : m ≤ t}}` (t = steps done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Steps at which the learning rate is multiplied by `gamma`.
    pub milestones: Vec<u64>,
    /// The factor (`0.5`: halved).
    pub gamma: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            milestones: Vec::new(),
            gamma: 0.5,
        }
    }
}

impl ScheduleConfig {
    /// Number of milestones passed after `steps_done` steps.
    pub fn position(&self, steps_done: u64) -> usize {
        self.milestones.iter().filter(|&&m| m <= steps_done).count()
    }

    /// The learning rate of the step that follows `steps_done` steps.
    pub fn lr(&self, lr0: f64, steps_done: u64) -> f64 {
        lr0 * self.gamma.powi(self.position(steps_done) as i32)
    }
}

/// Validation on centre crops of a directory of clean images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Candidate directories, the first existing one is used; none existing: no
    /// validation (with a warning).
    pub dirs: Vec<PathBuf>,
    /// Validate every this many steps (0: never).
    pub every: u64,
    /// Noise levels on the 0–255 scale.
    pub sigmas_255: Vec<f64>,
    /// Side of the centre crops.
    pub crop: i64,
    /// Use at most this many images.
    pub limit: Option<usize>,
    /// Seed of the validation noise (fixed across runs).
    pub seed: u64,
    /// Images per forward pass.
    pub batch_size: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            dirs: vec![
                PathBuf::from("../shared/data/CBSD68"),
                PathBuf::from("datasets/samples/test"),
            ],
            every: 1000,
            sigmas_255: vec![5.0, 15.0, 25.0, 50.0],
            crop: 256,
            limit: None,
            seed: 0,
            batch_size: 4,
        }
    }
}

impl ValidationConfig {
    /// The first configured directory that exists.
    pub fn directory(&self) -> Option<&Path> {
        self.dirs.iter().map(PathBuf::as_path).find(|d| d.is_dir())
    }
}

/// Checkpoint frequency and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and at the end, and on SIGINT / SIGTERM).
    pub every: u64,
    /// Keep the last this many step checkpoints (`best` is kept besides).
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: 1000,
            keep_last: 3,
        }
    }
}

/// Logging frequency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Write training scalars (and plain progress lines off a terminal) every this many steps.
    pub every: u64,
    /// Also write the validation images (noisy / denoised / clean) to TensorBoard.
    pub images: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: 50,
            images: true,
        }
    }
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

fn default_clip() -> Option<f64> {
    Some(1e-2)
}

impl TrainConfig {
    /// Reads `path` and applies the `key.path=value` overrides (values parsed as JSON, else
    /// taken as strings); unknown keys and bad values are errors naming the file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: not JSON: {e}", path.display())))?;
        for o in overrides {
            overrides::apply(&mut value, o)?;
        }
        let cfg: TrainConfig = serde_json::from_value(value).map_err(|e| {
            let with = if overrides.is_empty() {
                String::new()
            } else {
                format!(" (with --set {})", overrides.join(" --set "))
            };
            TrainError::Config(format!("{}{with}: {e}", path.display()))
        })?;
        cfg.validate()
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Checks values serde cannot; every number against the bounds documented in
    /// `configs/README.md` (finite everywhere). The message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.model.validate().map_err(|e| format!("model: {e}"))?;
        if self
            .model
            .widths
            .iter()
            .any(|w| !(1..=MAX_WIDTH).contains(w))
        {
            return Err(format!(
                "model.widths must each be in 1..={MAX_WIDTH}, got {:?}",
                self.model.widths
            ));
        }
        if !(1..=MAX_BLOCKS).contains(&self.model.blocks) {
            return Err(format!(
                "model.blocks must be in 1..={MAX_BLOCKS}, got {}",
                self.model.blocks
            ));
        }
        if self.performance.precision == Precision::Fp16 {
            return Err(
                "performance.precision = fp16 is for inference only: float16 gradients would need loss scaling, which the trainer does not do; train in bf16 or fp32"
                    .into(),
            );
        }
        if self.performance.cuda_graph && !matches!(self.objective, Objective::Gs) {
            return Err(CUDA_GRAPH_GS_ONLY.into());
        }
        if let Objective::Prox(p) = &self.objective {
            p.validate().map_err(|e| match e {
                TrainError::Config(m) => format!("objective: {m}"),
                other => format!("objective: {other}"),
            })?;
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(format!(
                "name `{}` must be a plain directory name",
                self.name
            ));
        }
        self.data.validate().map_err(|e| format!("data.{e}"))?;
        if self.data.channels != self.model.channels {
            return Err(format!(
                "data.channels = {} but model.channels = {}",
                self.data.channels, self.model.channels
            ));
        }
        self.noise.validate()?;
        let o = &self.optimizer;
        in_range("optimizer.lr", o.lr, 0.0, true, MAX_LR)?;
        in_range_open("optimizer.beta1", o.beta1, 0.0, 1.0)?;
        in_range_open("optimizer.beta2", o.beta2, 0.0, 1.0)?;
        in_range("optimizer.eps", o.eps, 0.0, true, 1.0)?;
        in_range("schedule.gamma", self.schedule.gamma, 0.0, true, 1.0)?;
        if let Some(c) = self.clip_grad_norm {
            in_range("clip_grad_norm", c, 0.0, true, MAX_CLIP_GRAD_NORM)?;
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(format!(
                "steps must be in 1..={MAX_STEPS}, got {}",
                self.steps
            ));
        }
        if self.checkpoint.every == 0 || self.checkpoint.keep_last == 0 {
            return Err("checkpoint.every and checkpoint.keep_last must be at least 1".into());
        }
        if self.log.every == 0 {
            return Err("log.every must be at least 1".into());
        }
        let v = &self.validation;
        for &s in &v.sigmas_255 {
            in_range("validation.sigmas_255", s, 0.0, true, MAX_SIGMA_255)?;
        }
        if !(1..=MAX_VALIDATION_CROP).contains(&v.crop) {
            return Err(format!(
                "validation.crop must be in 1..={MAX_VALIDATION_CROP}, got {}",
                v.crop
            ));
        }
        if !(1..=MAX_VALIDATION_BATCH).contains(&v.batch_size) {
            return Err(format!(
                "validation.batch_size must be in 1..={MAX_VALIDATION_BATCH}, got {}",
                v.batch_size
            ));
        }
        Ok(())
    }

    /// `<runs_dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }
}
