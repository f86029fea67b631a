//! Training checkpoints: `gradstep_model::Checkpoint` files with the optimizer's moments
//! (`adam.m.<name>`, `adam.v.<name>`) and a `section.training` JSON ([`TrainingState`]).
//!
//! Layout of a run: `<run>/checkpoints/step-<8 digits>.safetensors` (the last
//! `keep_last` are kept) and `<run>/checkpoints/best.safetensors` (best mean validation PSNR
//! of `D_σ`). Every file is written atomically (temporary file + rename), so a run killed
//! mid-write leaves the previous checkpoint intact; older files are removed only after the
//! new one is in place.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gradstep_data::SamplerPosition;
use gradstep_model::{Checkpoint, GradientStepDenoiser};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::adam::Adam;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Prefix of the optimizer tensors in a checkpoint.
pub const ADAM_PREFIX: &str = "adam.";
/// Name of the JSON section holding the [`TrainingState`].
pub const SECTION: &str = "training";

/// Everything besides tensors that an exact resume needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingState {
    /// Optimizer steps done.
    pub step: u64,
    /// Adam's own step count (bias corrections).
    pub adam_step: i64,
    /// Learning rate of the next step.
    pub lr: f64,
    /// Milestones of the schedule passed so far.
    pub schedule_position: usize,
    /// The noise of step `t` is drawn from `mix(noise_seed, t)` (see `crate::noise`), so
    /// this seed is the whole random state of the loop besides the sampler's.
    pub noise_seed: u64,
    /// Position of the next batch of the patch sampler.
    pub sampler: SamplerPosition,
    /// Best mean validation PSNR of `D_σ` so far (dB).
    pub best_psnr: Option<f64>,
    /// The ranks that trained (data-parallel; 1 for one process and for checkpoints older
    /// than this field): `sampler` counts global batches of `world_size · batch_size`.
    #[serde(default = "one_rank")]
    pub world_size: u64,
    /// The configuration of the run (as given, with overrides applied).
    pub config: serde_json::Value,
}

fn one_rank() -> u64 {
    1
}

/// Writes and finds a run's checkpoints.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointStore {
    /// The checkpoints of the run in `run_dir`.
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        CheckpointStore {
            dir: run_dir.join("checkpoints"),
            keep_last: keep_last.max(1),
        }
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the step checkpoint of `step`.
    pub fn step_path(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:08}.safetensors"))
    }

    /// The `best` checkpoint's path.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }

    /// Step checkpoints present, oldest first.
    pub fn steps(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(TrainError::Io(self.dir.clone(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::Io(self.dir.clone(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")
                .and_then(|s| s.strip_suffix(".safetensors"))
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(step) = step {
                out.push((step, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The most recent step checkpoint.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.steps()?.pop().map(|(_, p)| p))
    }

    /// Writes a step checkpoint (and `best` when `is_best`), then prunes old step files.
    pub fn save(
        &self,
        denoiser: &GradientStepDenoiser,
        config: &TrainConfig,
        adam: &Adam,
        state: &TrainingState,
        is_best: bool,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| TrainError::Io(self.dir.clone(), e))?;
        let ckpt = build(denoiser, config, adam, state)?;
        let path = self.step_path(state.step);
        ckpt.write(&path)?;
        if is_best {
            ckpt.write(&self.best_path())?;
        }
        let steps = self.steps()?;
        if steps.len() > self.keep_last {
            for (_, old) in &steps[..steps.len() - self.keep_last] {
                std::fs::remove_file(old).map_err(|e| TrainError::Io(old.clone(), e))?;
            }
        }
        Ok(path)
    }
}

/// The checkpoint of the current training state.
fn build(
    denoiser: &GradientStepDenoiser,
    config: &TrainConfig,
    adam: &Adam,
    state: &TrainingState,
) -> Result<Checkpoint> {
    let provenance = serde_json::json!({
        "trained_by": "gradstep train",
        "run": config.name,
        "step": state.step,
    });
    let mut ckpt = Checkpoint::from_denoiser(denoiser, config.objective.kind(), provenance)?;
    let (moments, _) = adam.state()?;
    for (name, t) in moments {
        ckpt.tensors.insert(format!("{ADAM_PREFIX}{name}"), t);
    }
    let section = serde_json::to_value(state).map_err(|source| TrainError::Serialise {
        what: "the training state",
        source,
    })?;
    ckpt.sections.insert(SECTION.into(), section);
    Ok(ckpt)
}

/// The training state and optimizer moments of a checkpoint read from `path`.
pub fn training_state(
    ckpt: &Checkpoint,
    path: &Path,
) -> Result<(TrainingState, BTreeMap<String, Tensor>)> {
    let section = ckpt.sections.get(SECTION).ok_or_else(|| {
        TrainError::Resume(format!(
            "{}: no `section.{SECTION}` (not a training checkpoint)",
            path.display()
        ))
    })?;
    let state: TrainingState = serde_json::from_value(section.clone())
        .map_err(|e| TrainError::Resume(format!("{}: section.{SECTION}: {e}", path.display())))?;
    let moments = ckpt
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(ADAM_PREFIX)
                .map(|n| (n.to_string(), t.shallow_clone()))
        })
        .collect();
    Ok((state, moments))
}
