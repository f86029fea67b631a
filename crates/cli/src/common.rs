//! Small helpers shared by the subcommands: device choice, checkpoint loading, paths.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_model::{
    Checkpoint, GradientStepDenoiser, InferenceOptions, MemoryFormat, Precision, Tiling,
};
use tch::{Device, Kind};

/// Parses `cpu`, `cuda` or `cuda:N`; `None` means CUDA when available, else the CPU.
pub fn parse_device(spec: Option<&str>) -> anyhow::Result<Device> {
    match spec {
        None => Ok(Device::cuda_if_available()),
        Some("cpu") => Ok(Device::Cpu),
        Some("cuda") => cuda(0),
        Some(s) => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => bail!("unknown device `{s}` (expected cpu, cuda or cuda:N)"),
        },
    }
}

/// On a GPU, lets cuDNN autotune each new input shape (worth it when the same shapes repeat
/// for many iterations, as in evaluations and sweeps).
pub fn autotune_convolutions(device: Device) {
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
}

fn cuda(n: usize) -> anyhow::Result<Device> {
    let count = tch::Cuda::device_count() as usize;
    if n >= count {
        bail!("device cuda:{n} requested but {count} CUDA device(s) are visible");
    }
    Ok(Device::Cuda(n))
}

/// Loads a gradstep checkpoint as a float32 denoiser on `device`.
pub fn load_denoiser(
    path: &Path,
    device: Device,
) -> anyhow::Result<(Checkpoint, GradientStepDenoiser)> {
    let ckpt = Checkpoint::read(path)?;
    let den = ckpt.denoiser(device, Kind::Float, path)?;
    Ok((ckpt, den))
}

/// The Python interpreter of gradstep's venv: `$GRADSTEP_PYTHON`, else the one torch-sys
/// built against, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GRADSTEP_PYTHON") {
        return PathBuf::from(p);
    }
    match option_env!("GRADSTEP_BUILD_PYTHON") {
        Some(p) if Path::new(p).exists() => PathBuf::from(p),
        _ => PathBuf::from("python3"),
    }
}

/// `python -I -c SCRIPT ARGS…` with gradstep's venv interpreter: the one way the CLI runs
/// Python (`import`, `export`). `-I` implies `-E` (PYTHONPATH, PYTHONHOME, PYTHONSTARTUP…
/// ignored) and `-s` (no user site-packages) and keeps the current folder off `sys.path`; the
/// variables are removed as well for interpreters that are wrappers around another one. No
/// temporary script file exists for anyone to replace; stdin is closed.
pub fn isolated_python<I, A>(script: &str, args: I) -> std::process::Command
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let mut command = std::process::Command::new(python());
    command
        .args(["-I", "-c", script])
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        .env_remove("PYTHONUSERBASE")
        .stdin(std::process::Stdio::null());
    command
}

/// The context of a failure to start [`isolated_python`].
pub fn python_start_error() -> String {
    format!(
        "cannot run {} (set GRADSTEP_PYTHON to a Python with torch)",
        python().display()
    )
}

/// The last non-empty line of a script's stderr, trimmed: where Python puts the exception.
pub fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Creates `dir` (and parents), with the path in the error.
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The centre `crop × crop` of `[1, C, H, W]` (each side capped at the image's); `crop ≤ 0`:
/// the whole image.
pub fn centre_crop(x: &tch::Tensor, crop: i64) -> anyhow::Result<tch::Tensor> {
    if crop <= 0 {
        return Ok(x.shallow_clone());
    }
    let s = x.size();
    let (ch, cw) = (crop.min(s[2]), crop.min(s[3]));
    Ok(x.f_narrow(2, (s[2] - ch) / 2, ch)?
        .f_narrow(3, (s[3] - cw) / 2, cw)?
        .f_contiguous()?)
}

/// SSIM of one image against its reference, or `None` when the image is smaller than SSIM's
/// window (PSNR is still defined there and reported alone).
pub fn ssim_if_defined(x: &tch::Tensor, reference: &tch::Tensor) -> anyhow::Result<Option<f64>> {
    let window = gradstep_data::metrics::SSIM_WINDOW;
    let s = x.size();
    if s.len() == 4 && (s[2] < window || s[3] < window) {
        return Ok(None);
    }
    Ok(Some(gradstep_data::metrics::ssim(x, reference)?[0]))
}

/// An SSIM for a report: four decimals, or `n/a` (see [`ssim_if_defined`]).
pub fn ssim_text(ssim: Option<f64>) -> String {
    ssim.map_or_else(|| "n/a".into(), |s| format!("{s:.4}"))
}

/// How the denoiser runs: speed and memory, not results (they agree up to rounding).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// How ∇g covers each image: whole, auto[:OVERLAP] (tiles only if the whole image runs
    /// out of memory) or TILE[:OVERLAP] (pixels, multiples of 8; overlap 32 by default).
    #[arg(long, default_value = "whole")]
    pub tiling: Tiling,
    /// fp32, bf16 or fp16 (CUDA autocast for the convolutions; no effect on the CPU). fp16
    /// keeps TF32's mantissa at bf16's speed.
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// contiguous (NCHW) or channels_last (NHWC) weights and activations (default:
    /// channels_last on CUDA, contiguous on the CPU).
    #[arg(long)]
    pub memory_format: Option<MemoryFormat>,
}

impl RunOptions {
    /// The options as the model crate takes them, for a run on `device`.
    pub fn inference(&self, device: Device) -> InferenceOptions {
        InferenceOptions {
            tiling: self.tiling,
            precision: self.precision,
            memory_format: self
                .memory_format
                .unwrap_or_else(|| MemoryFormat::default_for(device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_layout_defaults_to_channels_last_on_cuda_only() {
        let opts = RunOptions {
            tiling: Tiling::Whole,
            precision: Precision::Fp32,
            memory_format: None,
        };
        let cpu = opts.inference(Device::Cpu).memory_format;
        let cuda = opts.inference(Device::Cuda(0)).memory_format;
        assert_eq!(
            (cpu, cuda),
            (MemoryFormat::Contiguous, MemoryFormat::ChannelsLast)
        );
        let asked = RunOptions {
            memory_format: Some(MemoryFormat::Contiguous),
            ..opts
        };
        assert_eq!(
            asked.inference(Device::Cuda(0)).memory_format,
            MemoryFormat::Contiguous
        );
    }
}
