//! `gradstep denoise`: `D_σ` of one image.
use std::path::PathBuf;

use anyhow::{bail, Context};
use gradstep_data::noise::{add_noise, seeded};
use gradstep_data::{load_image, metrics, save_image};
use gradstep_model::{Graph, Sigma};

use crate::{checks, common};

/// Arguments of `gradstep denoise`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// gradstep checkpoint (`gradstep import` converts PyTorch ones).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Noise level σ of the denoiser, on the 0–255 scale.
    #[arg(long)]
    sigma: f64,
    /// Add Gaussian noise of level σ to the input first (the input is then the reference).
    #[arg(long)]
    add_noise: bool,
    /// Seed of the added noise.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Clean image to report PSNR against.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Also write the noisy input here. Needs --add-noise (refused without it: the input is
    /// then the noisy image already).
    #[arg(long)]
    save_noisy: Option<PathBuf>,
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    run: common::RunOptions,
    /// Input image (PNG, JPEG, BMP, TIFF; colour or gray).
    input: PathBuf,
    /// Output image (.png recommended; .jpg, .bmp, .tif). Never the input or the reference.
    output: PathBuf,
}

/// Checks the flags and the output paths before any work.
fn check(a: &Args) -> anyhow::Result<()> {
    checks::level_255("--sigma", a.sigma, false)?;
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.reference.as_deref());
    if let Some(noisy) = &a.save_noisy {
        if !a.add_noise {
            bail!("--save-noisy needs --add-noise (without it the input is the noisy image)");
        }
        checks::output_image(noisy, &inputs)?;
        inputs.push(noisy);
    }
    checks::output_image(&a.output, &inputs)
}

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    check(&a)?;
    let device = common::parse_device(a.device.as_deref())?;
    let (ckpt, den) = common::load_denoiser(&a.checkpoint, device)?;
    let den = den.with_options(&a.run.inference(device))?;
    let channels = ckpt.model.architecture.channels;
    let input = load_image(&a.input, channels, device)?;
    let sigma = a.sigma / 255.0;
    let (noisy, reference) = if a.add_noise {
        (
            add_noise(&input, &[sigma], &mut seeded(a.seed as u64, 0))?,
            Some(input.shallow_clone()),
        )
    } else {
        (input.shallow_clone(), None)
    };
    let reference = match &a.reference {
        Some(p) => {
            let r = load_image(p, channels, device)?;
            if r.size() != noisy.size() {
                bail!(
                    "{}: size {:?} differs from the input's {:?}",
                    p.display(),
                    r.size(),
                    noisy.size()
                );
            }
            Some(r)
        }
        None => reference,
    };
    if let Some(p) = &a.save_noisy {
        save_image(p, &noisy)?;
    }
    let t0 = std::time::Instant::now();
    let out = den
        .denoise(&noisy, &Sigma::Scalar(sigma), Graph::Inference)
        .with_context(|| format!("denoising {}", a.input.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    save_image(&a.output, &out)?;
    let tiles = match den.auto_tile() {
        Some(t) => format!(", out of memory whole: tiles of {t} px"),
        None => String::new(),
    };
    println!(
        "denoised {} -> {} ({secs:.2} s on {device:?}{tiles})",
        a.input.display(),
        a.output.display()
    );
    if let Some(r) = reference {
        let p_in = metrics::psnr(&noisy.f_clamp(0.0, 1.0)?, &r)?[0];
        let p_out = metrics::psnr(&out.f_clamp(0.0, 1.0)?, &r)?[0];
        println!("PSNR input {p_in:.2} dB, denoised {p_out:.2} dB");
    }
    Ok(())
}
