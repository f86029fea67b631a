//! `gradstep import`: PyTorch checkpoint → gradstep checkpoint.
//!
//! Unpickling goes through the venv's torch with a restricted unpickler (`unpickle.py`):
//! only tensor and container constructors resolve, so a hostile file cannot run code.
//! The architecture is then inferred from the tensors' names and shapes.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use gradstep_model::{import, Activation, Checkpoint, DenoiserKind};
use tch::{Device, Kind};

use crate::common;

const UNPICKLE: &str = include_str!("unpickle.py");

/// Arguments of `gradstep import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// GS or Prox denoiser (Prox implies Softplus).
    #[arg(long, default_value = "gs")]
    kind: DenoiserKind,
    /// Activation of the residual blocks (default: the checkpoint's `act_mode`, else ELU
    /// for GS and Softplus for Prox).
    #[arg(long)]
    activation: Option<Activation>,
    /// PyTorch file: Lightning `.ckpt` (`state_dict` entry) or a plain state dict, or a
    /// safetensors file with deepinv key names.
    input: PathBuf,
    /// The gradstep checkpoint to write (safetensors).
    output: PathBuf,
}

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    if !a.input.is_file() {
        bail!("{}: no such file", a.input.display());
    }
    let is_safetensors = a.input.extension().is_some_and(|e| e == "safetensors");
    let tmp_dir = std::env::temp_dir().join(format!("gradstep-import-{}", std::process::id()));
    let converted = if is_safetensors {
        a.input.clone()
    } else {
        common::create_dir(&tmp_dir)?;
        let script = tmp_dir.join("unpickle.py");
        std::fs::write(&script, UNPICKLE).context("writing the unpickling script")?;
        let out = tmp_dir.join("state.safetensors");
        let python = common::python();
        let output = Command::new(&python)
            .arg(&script)
            .arg(&a.input)
            .arg(&out)
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (set GRADSTEP_PYTHON to a Python with torch)",
                    python.display()
                )
            })?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            // The script's last stderr line names the file and the problem.
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            if reason.contains(&a.input.display().to_string()) {
                bail!("{reason}");
            }
            bail!(
                "{}: could not be read as a PyTorch checkpoint: {reason}",
                a.input.display()
            );
        }
        out
    };
    let result = convert(&a, &converted);
    if !is_safetensors {
        let _ = std::fs::remove_dir_all(&tmp_dir);
    }
    result
}

fn convert(a: &Args, converted: &std::path::Path) -> anyhow::Result<()> {
    let (tensors, meta) = import::read_safetensors(converted)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
    let (activation, activation_from) =
        match (a.activation, meta.get("act_mode").or(meta.get("act"))) {
            (Some(act), _) => (act, "flag"),
            (None, Some(m)) => (m.parse::<Activation>()?, "checkpoint"),
            (None, None) if a.kind == DenoiserKind::Prox => {
                (Activation::Softplus, "default for prox")
            }
            (None, None) => (Activation::Elu, "default for gs"),
        };
    if a.kind == DenoiserKind::Prox && activation != Activation::Softplus {
        bail!("a Prox denoiser needs the Softplus activation (twice differentiable), got {activation:?}");
    }
    let den =
        import::denoiser_from_state_dict(tensors, activation, Device::Cpu, Kind::Float, &a.input)?;
    let provenance = serde_json::json!({
        "imported_from": a.input.display().to_string(),
        "source_format": meta.get("source_format").cloned().unwrap_or_else(|| "safetensors".into()),
        "activation_from": activation_from,
        "gradstep_version": env!("CARGO_PKG_VERSION"),
    });
    let ckpt = Checkpoint::from_denoiser(&den, a.kind, provenance)?;
    ckpt.write(&a.output)?;
    let cfg = &ckpt.model.architecture;
    println!(
        "imported {} -> {}: {:?} denoiser, {} channel(s), widths {:?}, {} blocks, {:?}, {} parameters",
        a.input.display(),
        a.output.display(),
        a.kind,
        cfg.channels,
        cfg.widths,
        cfg.blocks,
        cfg.activation,
        cfg.parameter_count()
    );
    Ok(())
}
