//! The typed sweep configuration (`configs/sweeps/*.json`) and its validation.
//!
//! A sweep is a Cartesian grid: every axis lists the values to try, an axis left out takes
//! the algorithm's reference default (one value). Everything is checked by [`SweepConfig::load`]
//! before any point runs: unknown keys (serde `deny_unknown_fields`), empty axes, values out
//! of range, and paths (checkpoints, image sets, kernel files) that do not exist.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernels::KernelSpec;
use crate::sweep::error::{SweepError, SweepResult};
pub use crate::task::{Algorithm, Task};

/// The denoiser's noise level `σ_den`, absolute or relative to the observation's `ν`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SigmaDen {
    /// `σ_den` on the 0–255 scale.
    Absolute(f64),
    /// `σ_den = r · ν` (the papers' `σ_den/ν` axis, the U-curve).
    TimesNoise(f64),
}

impl SigmaDen {
    /// `σ_den` on the 0–255 scale for the noise level `ν` (0–255).
    pub fn on_255(self, noise: f64) -> f64 {
        match self {
            SigmaDen::Absolute(s) => s,
            SigmaDen::TimesNoise(r) => r * noise,
        }
    }

    /// `σ_den / ν`, or `None` when `ν = 0`.
    pub fn ratio(self, noise: f64) -> Option<f64> {
        match self {
            SigmaDen::TimesNoise(r) => Some(r),
            SigmaDen::Absolute(s) if noise > 0.0 => Some(s / noise),
            SigmaDen::Absolute(_) => None,
        }
    }
}

/// A kernel as written in configs: `levin:I`, `uniform`, `gaussian`, `k12:I`, `file:PATH`
/// (the syntax of `gradstep restore --kernel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelName(pub KernelSpec);

impl Serialize for KernelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for KernelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<KernelSpec>()
            .map(KernelName)
            .map_err(serde::de::Error::custom)
    }
}

/// A named folder of test images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSet {
    /// Short name used in tables and figures (`set3c`, `CBSD10`).
    pub name: String,
    /// Folder of images (relative paths are resolved against the working directory).
    pub dir: PathBuf,
    /// Use only the first `limit` images (sorted by file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Centre-crop every image to `crop × crop` (quick CPU sweeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<i64>,
}

/// The grid: one list of values per parameter. A missing axis means "the default".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    /// Algorithms.
    pub algorithm: Vec<Algorithm>,
    /// Denoiser checkpoints (gradstep format).
    pub checkpoint: Vec<PathBuf>,
    /// Image sets.
    pub image_set: Vec<ImageSet>,
    /// Noise levels `ν` of the observation (0–255 scale).
    pub noise: Vec<f64>,
    /// Blur kernels (deblurring and super-resolution).
    #[serde(default)]
    pub kernel: Option<Vec<KernelName>>,
    /// Super-resolution factors `s`.
    #[serde(default)]
    pub scale: Option<Vec<u32>>,
    /// Denoiser levels `σ_den`.
    #[serde(default)]
    pub sigma_den: Option<Vec<SigmaDen>>,
    /// Regularisation weights `λ`.
    #[serde(default)]
    pub lambda: Option<Vec<f64>>,
    /// Initial step sizes `τ₀` (GS-PnP).
    #[serde(default)]
    pub tau0: Option<Vec<f64>>,
    /// Relaxations `α` of `D^α = (1 − α)I + αD_σ` (Prox-PnP).
    #[serde(default)]
    pub alpha: Option<Vec<f64>>,
}

/// Settings shared by every point (part of each point's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Folder holding `levin09.json` and `kernels12.json` (needed for `levin:I` / `k12:I`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_dir: Option<PathBuf>,
    /// Seed of the observation noise (and the inpainting mask).
    #[serde(default)]
    pub seed: u64,
    /// Iteration cap (default: the algorithm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iter: Option<usize>,
    /// Stopping tolerance on the relative change of the objective (default: the algorithm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tol: Option<f64>,
    /// GS-PnP: backtracking on or off (default: the algorithm's, on except for inpainting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtracking: Option<bool>,
    /// Inpainting: probability of keeping a pixel (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_probability: Option<f64>,
}

/// A whole sweep configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// What the sweep reproduces (free text, copied to the Markdown table).
    #[serde(default)]
    pub description: String,
    /// The task of every point.
    pub task: Task,
    /// The grid.
    pub axes: Axes,
    /// Settings shared by every point.
    #[serde(default = "default_settings")]
    pub settings: Settings,
}

fn default_settings() -> Settings {
    Settings {
        kernel_dir: None,
        seed: 0,
        max_iter: None,
        tol: None,
        backtracking: None,
        keep_probability: None,
    }
}

impl SweepConfig {
    /// Reads and validates a configuration: any problem is one error naming the file.
    pub fn load(path: &Path) -> SweepResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::io(path, e))?;
        let config: SweepConfig =
            serde_json::from_str(&text).map_err(|e| SweepError::config(path, e))?;
        config
            .validate()
            .map_err(|reason| SweepError::config(path, reason))?;
        Ok(config)
    }

    /// Checks axes and paths; returns the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        let a = &self.axes;
        non_empty("algorithm", Some(&a.algorithm))?;
        non_empty("checkpoint", Some(&a.checkpoint))?;
        non_empty("image_set", Some(&a.image_set))?;
        non_empty("noise", Some(&a.noise))?;
        non_empty("kernel", a.kernel.as_ref())?;
        non_empty("scale", a.scale.as_ref())?;
        non_empty("sigma_den", a.sigma_den.as_ref())?;
        non_empty("lambda", a.lambda.as_ref())?;
        non_empty("tau0", a.tau0.as_ref())?;
        non_empty("alpha", a.alpha.as_ref())?;
        let blurs = self.task.blurs();
        if blurs && a.kernel.is_none() {
            return Err("axes.kernel is required for deblur and sr".into());
        }
        if !blurs && a.kernel.is_some() {
            return Err("axes.kernel applies to deblur and sr only".into());
        }
        if (self.task == Task::Sr) != a.scale.is_some() {
            return Err("axes.scale is required for sr and applies to sr only".into());
        }
        for s in a.scale.iter().flatten() {
            if !matches!(s, 2 | 3) {
                return Err(format!("axes.scale: {s} (supported: 2, 3)"));
            }
        }
        for &n in &a.noise {
            level_255("axes.noise", n, true)?;
        }
        for s in a.sigma_den.iter().flatten() {
            match *s {
                SigmaDen::Absolute(v) => level_255("axes.sigma_den", v, false)?,
                SigmaDen::TimesNoise(r) => {
                    positive("sigma_den", r)?;
                    if a.noise.contains(&0.0) {
                        return Err("axes.sigma_den: times_noise needs noise levels > 0".into());
                    }
                    for &n in &a.noise {
                        level_255(
                            &format!("axes.sigma_den (times_noise {r} × noise {n})"),
                            r * n,
                            false,
                        )?;
                    }
                }
            }
        }
        for &v in a.lambda.iter().flatten() {
            positive("lambda", v)?;
        }
        for &v in a.tau0.iter().flatten() {
            positive("tau0", v)?;
        }
        let prox = |alg: &Algorithm| alg.is_prox();
        if a.tau0.is_some() && a.algorithm.iter().any(|alg| *alg != Algorithm::GsPgd) {
            return Err("axes.tau0 applies to gs-pgd only".into());
        }
        if self.settings.backtracking.is_some()
            && a.algorithm.iter().any(|alg| *alg != Algorithm::GsPgd)
        {
            return Err("settings.backtracking applies to gs-pgd only".into());
        }
        if a.alpha.is_some() && !a.algorithm.iter().all(prox) {
            return Err("axes.alpha applies to prox-pgd, prox-drs and prox-drsdiff only".into());
        }
        for &v in a.alpha.iter().flatten() {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("axes.alpha: {v} (expected 0 < α ≤ 1)"));
            }
        }
        for c in &a.checkpoint {
            exists("checkpoint", c, false)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for set in &a.image_set {
            exists(&format!("image_set `{}`", set.name), &set.dir, true)?;
            let (images, _) = gradstep_data::dataset::scan(std::slice::from_ref(&set.dir))
                .map_err(|e| format!("image_set `{}`: {e}", set.name))?;
            if images.is_empty() {
                return Err(format!(
                    "image_set `{}`: {} holds no image",
                    set.name,
                    set.dir.display()
                ));
            }
            if !names.insert(set.name.as_str()) {
                return Err(format!("axes.image_set: name `{}` used twice", set.name));
            }
            if set.limit == Some(0) || set.crop.is_some_and(|c| c < 16) {
                return Err(format!(
                    "axes.image_set `{}`: limit must be ≥ 1 and crop ≥ 16",
                    set.name
                ));
            }
        }
        for KernelName(k) in a.kernel.iter().flatten() {
            match k {
                KernelSpec::File(p) => exists("kernel", p, false)?,
                KernelSpec::Levin(_) | KernelSpec::Kernels12(_) => {
                    let Some(dir) = &self.settings.kernel_dir else {
                        return Err(format!("kernel `{k}` needs settings.kernel_dir"));
                    };
                    exists("settings.kernel_dir", dir, true)?;
                }
                KernelSpec::Uniform | KernelSpec::Gaussian => {}
            }
        }
        if let Some(p) = self.settings.keep_probability {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!(
                    "settings.keep_probability: {p} (expected 0 < p ≤ 1)"
                ));
            }
        }
        if self.settings.max_iter == Some(0) {
            return Err("settings.max_iter must be ≥ 1".into());
        }
        if let Some(t) = self.settings.tol {
            positive("settings.tol", t)?;
        }
        Ok(())
    }
}

fn non_empty<T>(axis: &str, values: Option<&Vec<T>>) -> Result<(), String> {
    match values {
        Some(v) if v.is_empty() => Err(format!(
            "axes.{axis} is empty (leave the axis out to use the default)"
        )),
        _ => Ok(()),
    }
}

fn positive(what: &str, v: f64) -> Result<(), String> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(format!("{what}: {v} (expected a finite value > 0)"))
    }
}

/// A noise level on the 0–255 scale (see [`gradstep_model::Sigma::check_level_255`]).
fn level_255(what: &str, v: f64, zero_allowed: bool) -> Result<(), String> {
    gradstep_model::Sigma::check_level_255(v, zero_allowed).map_err(|e| format!("{what} {e}"))
}

fn exists(what: &str, path: &Path, dir: bool) -> Result<(), String> {
    let ok = if dir { path.is_dir() } else { path.is_file() };
    if ok {
        Ok(())
    } else {
        let kind = if dir { "folder" } else { "file" };
        Err(format!("{what}: {kind} {} does not exist", path.display()))
    }
}
