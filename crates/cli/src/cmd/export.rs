//! `gradstep export`: a gradstep checkpoint → a file PyTorch reads (deepinv's `GSDRUNet`, the
//! official GS-PnP Lightning module, or a plain DRUNet state dict).
//!
//! `.safetensors` outputs are written here; pickled outputs (`.pth`, `.pt`, `.ckpt`) by the
//! venv's Python (`torch.save` has no Rust writer): the tensors go to a private temporary
//! safetensors file, and the interpreter runs isolated (`-I`: no user site, no `PYTHON*`
//! variables, no script folder on `sys.path`) with its program given inline.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gradstep_model::export::{deepinv_arguments, exported_state_dict, ExportFormat};
use gradstep_model::{write_safetensors, Checkpoint};

use crate::{checks, common};

/// Reads the temporary safetensors file and pickles it as asked; one stderr line on error.
const TO_TORCH: &str = r#"
import json, os, sys
import torch
from safetensors.torch import load_file
src, dst, fmt, meta = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sd = load_file(src)
if fmt == "lightning":
    obj = {"state_dict": sd, "hyper_parameters": meta["hyper_parameters"], "gradstep": meta["gradstep"]}
else:
    obj = sd
tmp = dst + ".partial"
try:
    torch.save(obj, tmp)
    os.replace(tmp, dst)
except Exception as e:
    if os.path.exists(tmp):
        os.remove(tmp)
    sys.exit(f"{dst}: cannot write ({type(e).__name__}: {e})")
"#;

/// Arguments of `gradstep export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// deepinv (`student_grad.model.*`, for `GSDRUNet(...).load_state_dict(sd, strict=True)`),
    /// lightning (the official GS-PnP `.ckpt`: `state_dict` + `hyper_parameters`) or
    /// state-dict (DRUNet's own names, for `DRUNet(...).load_state_dict`).
    #[arg(long, default_value = "deepinv", value_parser = parse_format)]
    format: ExportFormat,
    /// The gradstep checkpoint.
    checkpoint: PathBuf,
    /// The file to write: `.safetensors` (any format; the architecture in its metadata) or
    /// `.pth` / `.pt` / `.ckpt` (torch.save; the architecture in `OUT.json` beside it, and in
    /// `hyper_parameters` for lightning).
    output: PathBuf,
}

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    s.parse()
}

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    let ext = a
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(ext.as_str(), "safetensors" | "pth" | "pt" | "ckpt") {
        bail!(
            "{}: unknown output extension (expected .safetensors, .pth, .pt or .ckpt)",
            a.output.display()
        );
    }
    checks::not_an_input(&a.output, &[&a.checkpoint])?;
    let ckpt = Checkpoint::read(&a.checkpoint)?;
    let config = &ckpt.model.architecture;
    let tensors = exported_state_dict(&ckpt, a.format);
    let kwargs = deepinv_arguments(config);
    let class = match a.format {
        ExportFormat::StateDict => "deepinv.models.DRUNet",
        _ => "deepinv.models.GSDRUNet",
    };
    let note = serde_json::json!({
        "exported_from": a.checkpoint.display().to_string(),
        "denoiser": ckpt.model.kind,
        "format": format!("{:?}", a.format),
        "load_with": format!("{class}(**kwargs, pretrained=None).load_state_dict(state_dict, strict=True)"),
        "kwargs": kwargs,
        "gradstep_version": env!("CARGO_PKG_VERSION"),
    });
    if ext == "safetensors" {
        let meta = HashMap::from([("gradstep_export".to_string(), note.to_string())]);
        write_safetensors(&a.output, &tensors, meta)?;
    } else {
        let dir = match a.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Private (0600, unpredictable name, created exclusively) and removed on every path.
        let tmp = tempfile::Builder::new()
            .prefix(".gradstep-export-")
            .suffix(".safetensors")
            .tempfile_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        write_safetensors(tmp.path(), &tensors, HashMap::new())?;
        let hyper = serde_json::json!({
            "hyper_parameters": {
                "act_mode": kwargs["act_mode"],
                "nc": kwargs["nc"],
                "nb": kwargs["nb"],
                "in_channels": kwargs["in_channels"],
                "out_channels": kwargs["out_channels"],
                "grad_matching": true,
            },
            "gradstep": note,
        });
        let fmt = match a.format {
            ExportFormat::Lightning => "lightning",
            _ => "state_dict",
        };
        let hyper = hyper.to_string();
        let args = [
            tmp.path().as_os_str(),
            a.output.as_os_str(),
            fmt.as_ref(),
            hyper.as_ref(),
        ];
        let output = common::isolated_python(TO_TORCH, args)
            .output()
            .with_context(common::python_start_error)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = common::last_line(&stderr);
            bail!("{}: export failed: {reason}", a.output.display());
        }
        let side = side_note_path(&a.output);
        gradstep_model::write_atomic(&side, serde_json::to_string_pretty(&note)?.as_bytes())?;
    }
    println!(
        "exported {} -> {} ({:?}, {} tensors): {class}(**{kwargs})",
        a.checkpoint.display(),
        a.output.display(),
        a.format,
        tensors.len()
    );
    Ok(())
}

/// `OUT.json` beside a pickled export.
fn side_note_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}
