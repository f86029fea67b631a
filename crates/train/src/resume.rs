//! `--resume`: continue from the newest *intact* step checkpoint of the run.
//!
//! A checkpoint is damaged when it cannot be read (truncated by a full disk or a copy that
//! did not finish, corrupt, unreadable), has no training state, or its weights or Adam
//! moments do not fit the network. `--resume` then falls back to the next older one, says
//! which it skipped and why (one line each), and renames each skipped file to
//! `<name>.corrupt`: kept for inspection, but no longer a step checkpoint that pruning would
//! count (with `keep_last = 1`, a damaged newer file would otherwise outlive every new one).
//! When none is intact, nothing is renamed and one error line lists them all.
//!
//! A checkpoint of another architecture or objective is not damaged: the config differs
//! from the run's, and that is refused as before.
use std::path::{Path, PathBuf};

use gradstep_model::{Checkpoint, GradientStepDenoiser, ModelError};
use tch::{Device, Kind};

use crate::adam::Adam;
use crate::checkpoints::{training_state, CheckpointStore, TrainingState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Suffix given to the damaged checkpoints skipped on the way to an intact one.
pub const DAMAGED_SUFFIX: &str = "corrupt";

/// Loads the newest intact step checkpoint of `store` into `denoiser` and `adam`; its path
/// and training state, or `None` when the run has no step checkpoint. What was skipped is
/// added to `messages`.
pub(crate) fn restore_newest_intact(
    store: &CheckpointStore,
    cfg: &TrainConfig,
    denoiser: &mut GradientStepDenoiser,
    adam: &mut Adam,
    device: Device,
    messages: &mut Vec<String>,
) -> Result<Option<(PathBuf, TrainingState)>> {
    let mut damaged: Vec<(PathBuf, String)> = Vec::new();
    for (_, path) in store.steps()?.into_iter().rev() {
        match restore(&path, cfg, denoiser, adam, device)? {
            Ok(state) => {
                for (bad, why) in &damaged {
                    let aside = aside_path(bad);
                    std::fs::rename(bad, &aside).map_err(|e| TrainError::Io(bad.clone(), e))?;
                    messages.push(format!(
                        "--resume: skipped {}: {why} (renamed to {})",
                        bad.display(),
                        file_name(&aside)
                    ));
                }
                return Ok(Some((path, state)));
            }
            Err(why) => damaged.push((path, why)),
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    let list: Vec<String> = damaged
        .iter()
        .map(|(p, why)| format!("{} ({why})", file_name(p)))
        .collect();
    Err(TrainError::Resume(format!(
        "no intact checkpoint in {}: {}; move them away to start the run afresh",
        store.dir().display(),
        list.join(", ")
    )))
}

/// Reads `path` and loads it into `denoiser` and `adam`: its training state, or why the
/// file is damaged. Errors that are not the file's fault (a config that differs from the
/// run's, libtorch out of memory) are returned as errors. Every check that can fail runs
/// before anything is copied, except Adam's, whose partial copy the next candidate
/// overwrites.
fn restore(
    path: &Path,
    cfg: &TrainConfig,
    denoiser: &mut GradientStepDenoiser,
    adam: &mut Adam,
    device: Device,
) -> Result<std::result::Result<TrainingState, String>> {
    let ckpt = match Checkpoint::read(path) {
        Ok(c) => c,
        Err(e) => return damage(e.into(), path),
    };
    check_compatible(&ckpt, cfg, path)?;
    let loaded = (|| {
        let (saved, moments) = training_state(&ckpt, path)?;
        copy_weights(&ckpt, denoiser, device, path)?;
        adam.load_state(&moments, saved.adam_step)?;
        Ok(saved)
    })();
    match loaded {
        Ok(state) => Ok(Ok(state)),
        Err(e) => damage(e, path),
    }
}

/// `Ok(Err(why))` when `e` says the file at `path` is damaged (`why` without the path);
/// `Err(e)` otherwise.
fn damage(e: TrainError, path: &Path) -> Result<std::result::Result<TrainingState, String>> {
    let prefix = format!("{}: ", path.display());
    let bare = |s: &str| s.strip_prefix(&prefix).unwrap_or(s).to_string();
    let why = match &e {
        TrainError::Model(ModelError::Checkpoint { reason, .. }) => bare(reason),
        TrainError::Model(ModelError::Weight { key, reason, .. }) => {
            format!("tensor `{key}`: {reason}")
        }
        TrainError::Model(ModelError::Io { error, .. }) => error.to_string(),
        // A missing or unreadable training state, missing or misshaped Adam moments.
        TrainError::Resume(reason) => bare(reason),
        _ => return Err(e),
    };
    Ok(Err(why))
}

/// Refuses a checkpoint whose architecture or denoiser kind differs from the config's.
fn check_compatible(ckpt: &Checkpoint, cfg: &TrainConfig, path: &Path) -> Result<()> {
    if ckpt.model.architecture != cfg.model {
        return Err(TrainError::Resume(format!(
            "{} has architecture {:?}, the config asks for {:?}: the architecture cannot change on resume (start a new run, or fine-tune with init_from)",
            path.display(),
            ckpt.model.architecture,
            cfg.model
        )));
    }
    if ckpt.model.kind != cfg.objective.kind() {
        return Err(TrainError::Resume(format!(
            "{} was trained with objective {:?}, the config asks for {:?}",
            path.display(),
            ckpt.model.kind,
            cfg.objective.kind()
        )));
    }
    Ok(())
}

/// `<path>.corrupt`, or `<path>.corrupt-<n>` when that exists already.
fn aside_path(path: &Path) -> PathBuf {
    let base = format!("{}.{DAMAGED_SUFFIX}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    aside
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Copies a checkpoint's weights into `denoiser` (same architecture required).
pub(crate) fn copy_weights(
    ckpt: &Checkpoint,
    denoiser: &mut GradientStepDenoiser,
    device: Device,
    path: &std::path::Path,
) -> Result<()> {
    if &ckpt.model.architecture != denoiser.network().config() {
        return Err(TrainError::Config(format!(
            "{}: architecture {:?} differs from the config's {:?}",
            path.display(),
            ckpt.model.architecture,
            denoiser.network().config()
        )));
    }
    let loaded = ckpt.denoiser(device, Kind::Float, path)?;
    let src = loaded.network().var_store().variables();
    for (name, mut dst) in denoiser.network().var_store().variables() {
        if let Some(s) = src.get(&name) {
            tch::no_grad(|| dst.f_copy_(s))?;
        }
    }
    Ok(())
}
