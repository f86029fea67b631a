//! [`PnpRunner`]: one sweep point = synthesize the observations of an image set and restore
//! them with the crate's public API ([`crate::algorithms::restore_all`]), then score them.
//!
//! Observation `i` of a set (sorted file order) is drawn with seed `settings.seed + i`; the
//! inpainting mask with the same seed. The denoiser and the images of the last point are
//! kept, so a grid that varies only the algorithm's parameters loads them once.
use std::path::PathBuf;

use gradstep_model::{Checkpoint, GradientStepDenoiser, InferenceOptions};
use tch::{Device, Kind, Tensor};

use crate::algorithms::{AlgorithmConfig, Overrides, StopReason};
use crate::error::{PnpError, Result};
use crate::problem::{DegradationSpec, RestorationProblem};
use crate::sweep::config::{ImageSet, Task};
use crate::sweep::engine::{PointResult, PointRunner};
use crate::sweep::grid::Point;
use crate::sweep::store::{Curve, ImageScore};

/// The images of the last set loaded: the set, the channel count, `(file name, image)`.
type LoadedSet = (ImageSet, i64, Vec<(String, Tensor)>);

/// Restores sweep points with the PnP algorithms.
pub struct PnpRunner {
    device: Device,
    max_batch: usize,
    options: InferenceOptions,
    denoiser: Option<(PathBuf, GradientStepDenoiser)>,
    images: Option<LoadedSet>,
}

impl PnpRunner {
    /// A runner on `device`, restoring up to `max_batch` images of a point in one batch.
    pub fn new(device: Device, max_batch: usize) -> Self {
        PnpRunner {
            device,
            max_batch: max_batch.max(1),
            options: InferenceOptions::default(),
            denoiser: None,
            images: None,
        }
    }

    /// How the denoiser runs (tiles, precision, memory layout).
    pub fn with_options(mut self, options: InferenceOptions) -> Result<Self> {
        options.tiling.validate()?;
        self.options = options;
        self.denoiser = None;
        Ok(self)
    }

    fn denoiser(&mut self, path: &PathBuf) -> Result<&GradientStepDenoiser> {
        if self.denoiser.as_ref().is_none_or(|(p, _)| p != path) {
            self.denoiser = None;
            let den = Checkpoint::read(path)?
                .denoiser(self.device, Kind::Float, path)?
                .with_options(&self.options)?;
            self.denoiser = Some((path.clone(), den));
        }
        Ok(&self.denoiser.as_ref().expect("just loaded").1)
    }

    fn images(&mut self, set: &ImageSet, channels: i64) -> Result<Vec<(String, Tensor)>> {
        let cached = self
            .images
            .as_ref()
            .is_some_and(|(s, c, _)| s == set && *c == channels);
        if !cached {
            self.images = None;
            let loaded = load_set(set, channels, self.device)?;
            self.images = Some((set.clone(), channels, loaded));
        }
        let (.., images) = self.images.as_ref().expect("just loaded");
        Ok(images
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect())
    }

    fn restore_point(&mut self, p: &Point) -> Result<PointResult> {
        let config = algorithm_config(p)?;
        let degrade = degradation(p)?;
        let channels = self.denoiser(&p.checkpoint)?.network().config().channels;
        let images = self.images(&p.image_set, channels)?;
        let mut problems = Vec::with_capacity(images.len());
        for (i, (_, clean)) in images.iter().enumerate() {
            let seed = p.settings.seed as i64 + i as i64;
            let degrade = match &degrade {
                DegradationSpec::Inpaint { keep, hole, .. } => DegradationSpec::Inpaint {
                    keep: *keep,
                    mask_seed: seed,
                    hole: *hole,
                },
                d => d.clone(),
            };
            problems.push(RestorationProblem::synthesize(
                clean, &degrade, p.noise, seed,
            )?);
        }
        let items: Vec<(&RestorationProblem, &AlgorithmConfig)> =
            problems.iter().map(|pr| (pr, &config)).collect();
        let max_batch = self.max_batch;
        let den = self.denoiser(&p.checkpoint)?;
        let results = crate::algorithms::restore_all(den, &items, max_batch)?;
        let mut scores = Vec::with_capacity(results.len());
        let mut curve = None;
        for (((name, _), problem), r) in images.iter().zip(&problems).zip(&results) {
            let truth = problem.ground_truth.as_ref().ok_or(PnpError::Internal(
                "synthesized problem without ground truth",
            ))?;
            // A diverged restoration is not scored (its image is the last finite iterate).
            let (psnr, ssim) = if r.stop == StopReason::Diverged {
                (None, None)
            } else {
                let x = r.image.f_clamp(0.0, 1.0)?;
                (
                    ImageScore::metric(gradstep_data::psnr(&x, truth)?[0]),
                    ImageScore::metric(gradstep_data::ssim(&x, truth)?[0]),
                )
            };
            scores.push(ImageScore {
                image: name.clone(),
                psnr,
                ssim,
                iterations: r.iterations,
                seconds: r.seconds,
                stop: Some(r.stop),
            });
            if curve.is_none() {
                curve = Some(Curve {
                    image: name.clone(),
                    objective: r.records.iter().map(|k| k.objective).collect(),
                    psnr: r
                        .records
                        .iter()
                        .map(|k| k.psnr.unwrap_or(f64::NAN))
                        .collect(),
                });
            }
        }
        Ok(PointResult {
            images: scores,
            curve,
        })
    }
}

impl PointRunner for PnpRunner {
    fn run(&mut self, point: &Point) -> std::result::Result<PointResult, String> {
        self.restore_point(point).map_err(|e| e.to_string())
    }
}

/// The images of a set, in sorted file order, limited and centre-cropped as configured.
pub fn load_set(set: &ImageSet, channels: i64, device: Device) -> Result<Vec<(String, Tensor)>> {
    let (files, _) = gradstep_data::dataset::scan(std::slice::from_ref(&set.dir))?;
    let files: Vec<_> = files
        .into_iter()
        .take(set.limit.unwrap_or(usize::MAX))
        .collect();
    if files.is_empty() {
        return Err(PnpError::file(&set.dir, "holds no image"));
    }
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let mut img = gradstep_data::load_image(&f.path, channels, device)?;
        if let Some(c) = set.crop {
            let s = img.size();
            let (h, w) = (s[2], s[3]);
            if h < c || w < c {
                return Err(PnpError::file(
                    &f.path,
                    format!("{h}×{w} is smaller than the crop {c}"),
                ));
            }
            img = img
                .f_narrow(2, (h - c) / 2, c)?
                .f_narrow(3, (w - c) / 2, c)?
                .f_contiguous()?;
        }
        let name = f
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        out.push((name, img));
    }
    Ok(out)
}

/// The degradation of a point (the inpainting mask seed is set per image by the caller).
fn degradation(p: &Point) -> Result<DegradationSpec> {
    let kernel = || -> Result<crate::kernels::Kernel> {
        let k = p
            .kernel
            .as_ref()
            .ok_or_else(|| PnpError::Invalid(format!("{:?} needs a kernel", p.task)))?;
        let dir = p.settings.kernel_dir.clone().unwrap_or_default();
        k.0.load(&dir)
    };
    Ok(match p.task {
        Task::Denoise => DegradationSpec::Denoise,
        Task::Deblur => DegradationSpec::Deblur(kernel()?),
        Task::Sr => DegradationSpec::SuperResolution {
            kernel: kernel()?,
            scale: i64::from(p.scale.unwrap_or(2)),
        },
        Task::Inpaint => DegradationSpec::Inpaint {
            keep: p.settings.keep_probability.unwrap_or(0.5),
            mask_seed: p.settings.seed as i64,
            hole: None,
        },
    })
}

/// The reference configuration of the point's algorithm and task, with the point's values
/// ([`AlgorithmConfig::with_overrides`], as the command line's).
pub fn algorithm_config(p: &Point) -> Result<AlgorithmConfig> {
    let kernel = p.kernel.as_ref().map(|k| &k.0);
    AlgorithmConfig::reference(p.algorithm, p.task, kernel, p.noise).with_overrides(&Overrides {
        lambda: p.lambda,
        sigma: p.sigma_den_255(),
        max_iter: p.settings.max_iter,
        tol: p.settings.tol,
        tau0: p.tau0,
        alpha: p.alpha,
        backtracking: p.settings.backtracking,
        output: None,
    })
}
