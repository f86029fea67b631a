//! `gradstep import`: PyTorch checkpoint → gradstep checkpoint.
//!
//! Unpickling goes through the venv's torch with a restricted unpickler (`unpickle.py`):
//! only tensor and container constructors resolve, so a hostile file cannot run code, and
//! every network tensor's size and layout is checked before it is copied. The script runs
//! in an isolated interpreter (`-I -c`: no PYTHON* variables, no user site-packages, no
//! folder of ours or the current one on `sys.path`) and hands its result back on stdout, so
//! nothing is written to a temporary folder that another user could prepare.
//! The architecture is then inferred from the tensors' names and shapes.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context};
use gradstep_model::import::{MAX_IMPORT_BYTES, MAX_IMPORT_ELEMENTS};
use gradstep_model::{import, Activation, Checkpoint, DenoiserKind};
use tch::{Device, Kind, Tensor};

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
    let (tensors, meta) = if a.input.extension().is_some_and(|e| e == "safetensors") {
        import::read_safetensors(&a.input)?
    } else {
        import::parse_safetensors(&unpickle(&a.input)?, &a.input)?
    };
    convert(&a, tensors, meta)
}

/// The network tensors of PyTorch checkpoint `input` as safetensors bytes, from
/// `unpickle.py` in an isolated interpreter.
fn unpickle(input: &Path) -> anyhow::Result<Vec<u8>> {
    let mut child = common::isolated_python(
        UNPICKLE,
        [input.as_os_str(), MAX_IMPORT_ELEMENTS.to_string().as_ref()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .with_context(common::python_start_error)?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut bytes = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(MAX_IMPORT_BYTES + 1)
        .read_to_end(&mut bytes);
    if read.is_err() || bytes.len() as u64 > MAX_IMPORT_BYTES {
        // The script bounds its output itself; this is the guard should it not.
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for the unpickling script")?;
    let stderr = stderr_reader
        .join()
        .map_err(|_| anyhow!("reading the unpickling script's messages"))?;
    read.context("reading the unpickling script's output")?;
    if bytes.len() as u64 > MAX_IMPORT_BYTES {
        bail!(
            "{}: the unpickled tensors exceed the import limit of {MAX_IMPORT_BYTES} bytes",
            input.display()
        );
    }
    if !status.success() {
        // The script's last stderr line names the file and the problem.
        let reason = common::last_line(&stderr);
        if reason.contains(&input.display().to_string()) {
            bail!("{reason}");
        }
        bail!(
            "{}: could not be read as a PyTorch checkpoint: {reason}",
            input.display()
        );
    }
    Ok(bytes)
}

fn convert(
    a: &Args,
    tensors: std::collections::BTreeMap<String, Tensor>,
    meta: std::collections::HashMap<String, String>,
) -> anyhow::Result<()> {
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
