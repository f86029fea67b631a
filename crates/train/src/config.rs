//! The typed training configuration (one JSON file, every field documented in
//! `configs/README.md`; unknown fields are errors at every level).
//!
//! Loss of the GS objective, per batch of clean patches `x` and noise `ξ ~ N(0, I)`:
//! `L(θ) = mean ‖D_σ(x + σξ) − x‖²` (mean over pixels, as `nn.MSELoss` in the reference),
//! plus `μ · mean_b penalty_b` for the Prox objective (`crate::prox`).
use std::path::{Path, PathBuf};

use gradstep_data::PatchSamplerConfig;
use gradstep_model::{DenoiserKind, DrunetConfig};
use serde::{Deserialize, Serialize};

use crate::adam::AdamConfig;
use crate::error::{Result, TrainError};
use crate::overrides;
use crate::performance::{PerformanceConfig, Precision};
use crate::prox::ProxPenaltyConfig;

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

/// The noise level drawn for each training step: `σ ~ U[min, max] / 255`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// Lower bound of `σ` on the 0–255 scale.
    pub sigma_min_255: f64,
    /// Upper bound of `σ` on the 0–255 scale.
    pub sigma_max_255: f64,
    /// One `σ` per image instead of one per batch (the reference draws one per batch).
    pub per_image: bool,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            sigma_min_255: 0.0,
            sigma_max_255: 50.0,
            per_image: false,
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

    /// Checks values serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.model.validate().map_err(|e| format!("model: {e}"))?;
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
            p.validate().map_err(|e| format!("objective: {e}"))?;
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(format!(
                "name `{}` must be a plain directory name",
                self.name
            ));
        }
        if self.data.channels != self.model.channels {
            return Err(format!(
                "data.channels = {} but model.channels = {}",
                self.data.channels, self.model.channels
            ));
        }
        let n = &self.noise;
        if !(0.0 <= n.sigma_min_255
            && n.sigma_min_255 <= n.sigma_max_255
            && n.sigma_max_255.is_finite())
        {
            return Err(format!(
                "noise: need 0 ≤ sigma_min_255 ≤ sigma_max_255, got {} and {}",
                n.sigma_min_255, n.sigma_max_255
            ));
        }
        let o = &self.optimizer;
        if !(o.lr > 0.0
            && (0.0..1.0).contains(&o.beta1)
            && (0.0..1.0).contains(&o.beta2)
            && o.eps > 0.0)
        {
            return Err(format!("optimizer: invalid values {o:?}"));
        }
        if self.schedule.gamma.is_nan() || self.schedule.gamma <= 0.0 {
            return Err("schedule.gamma must be positive".into());
        }
        if let Some(c) = self.clip_grad_norm {
            if c.is_nan() || c <= 0.0 {
                return Err(format!("clip_grad_norm must be positive, got {c}"));
            }
        }
        if self.checkpoint.every == 0 || self.checkpoint.keep_last == 0 {
            return Err("checkpoint.every and checkpoint.keep_last must be at least 1".into());
        }
        if self.log.every == 0 {
            return Err("log.every must be at least 1".into());
        }
        let v = &self.validation;
        if v.sigmas_255.iter().any(|s| s.is_nan() || *s <= 0.0) || v.crop <= 0 || v.batch_size <= 0
        {
            return Err(format!("validation: invalid values {v:?}"));
        }
        Ok(())
    }

    /// `<runs_dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }
}
