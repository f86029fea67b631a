//! Validation: PSNR of `D_σ` and of `N_σ` alone (the paper compares them) on fixed noisy
//! centre crops, per `σ`.
use gradstep_data::{metrics, ValidationSet};
use gradstep_model::{GradientStepDenoiser, Graph, Sigma};
use tch::{Device, Tensor};

use crate::error::Result;

/// The PSNRs (dB, outputs clipped to `[0, 1]`) at one noise level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelScore {
    /// `σ` on the 0–255 scale.
    pub sigma_255: f64,
    /// Mean PSNR of the noisy inputs.
    pub noisy: f64,
    /// Mean PSNR of `D_σ(y)`.
    pub denoiser: f64,
    /// Mean PSNR of `N_σ(y)`.
    pub network: f64,
}

/// A validation pass: the scores per level, and the first image's noisy / denoised / clean
/// triple at the middle level (for TensorBoard).
#[derive(Debug)]
pub struct Validation {
    /// One score per `σ`.
    pub levels: Vec<LevelScore>,
    /// `(σ_255, noisy, D_σ(noisy), clean)` of the first image, on the CPU.
    pub example: Option<(f64, Tensor, Tensor, Tensor)>,
}

impl Validation {
    /// Mean over the levels of the PSNR of `D_σ` (what `best` is chosen by).
    pub fn mean_denoiser_psnr(&self) -> f64 {
        self.levels.iter().map(|l| l.denoiser).sum::<f64>() / self.levels.len().max(1) as f64
    }
}

/// Scores `denoiser` on `set`, `batch` images per forward pass.
pub fn validate(
    denoiser: &GradientStepDenoiser,
    set: &ValidationSet,
    batch: i64,
    device: Device,
) -> Result<Validation> {
    let n = set.clean.size()[0];
    let mut levels = Vec::new();
    let mut example = None;
    let middle = set.noisy.len() / 2;
    for (li, (sigma_255, noisy_all)) in set.noisy.iter().enumerate() {
        let sigma = Sigma::from_255(*sigma_255);
        let (mut p_noisy, mut p_den, mut p_net) = (0.0, 0.0, 0.0);
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let clean = set.clean.f_narrow(0, start, len)?.f_to_device(device)?;
            let noisy = noisy_all.f_narrow(0, start, len)?.f_to_device(device)?;
            let den = denoiser
                .denoise(&noisy, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            let net = denoiser
                .network_output(&noisy, &sigma, Graph::Inference)?
                .f_clamp(0.0, 1.0)?;
            p_noisy += metrics::psnr(&noisy.f_clamp(0.0, 1.0)?, &clean)?
                .iter()
                .sum::<f64>();
            p_den += metrics::psnr(&den, &clean)?.iter().sum::<f64>();
            p_net += metrics::psnr(&net, &clean)?.iter().sum::<f64>();
            if li == middle && start == 0 {
                let first =
                    |t: &Tensor| -> Result<Tensor> { Ok(t.f_get(0)?.f_to_device(Device::Cpu)?) };
                example = Some((*sigma_255, first(&noisy)?, first(&den)?, first(&clean)?));
            }
            start += len;
        }
        let nf = n as f64;
        levels.push(LevelScore {
            sigma_255: *sigma_255,
            noisy: p_noisy / nf,
            denoiser: p_den / nf,
            network: p_net / nf,
        });
    }
    Ok(Validation { levels, example })
}
