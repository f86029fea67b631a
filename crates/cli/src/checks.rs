//! Checks of the command line made before any work: before the checkpoint is loaded and before
//! anything is written, so that a refused command costs nothing, writes nothing and loses
//! nothing. Each error is one line naming the flag or the file.
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use gradstep_model::Sigma;

use crate::cmd::restore::Common;

/// A noise level flag on the 0–255 scale: finite and in `(0, 255]`, or `[0, 255]` when
/// `zero_allowed` (an observation's noise `ν` may be 0; a denoiser's `σ` may not).
pub fn level_255(flag: &str, level: f64, zero_allowed: bool) -> anyhow::Result<()> {
    Sigma::check_level_255(level, zero_allowed).map_err(|e| anyhow!("{flag} {e}"))
}

/// The level flags shared by `restore` and `eval`.
pub fn common_levels(c: &Common) -> anyhow::Result<()> {
    match c.sigma_denoiser {
        Some(s) => level_255("--sigma-denoiser", s, false),
        None => Ok(()),
    }
}

/// Refuses to write `output` when it is one of `inputs` (or an earlier output): the same
/// path, or the same file reached through a symbolic or hard link.
pub fn not_an_input(output: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    for input in inputs {
        if output == *input || same_file::is_same_file(input, output).unwrap_or(false) {
            bail!(
                "{}: output is the same file as {}; refusing to overwrite it",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// An output image: an extension `save_image` writes, and not one of `inputs`.
pub fn output_image(output: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    gradstep_data::image_io::check_output_format(output)?;
    not_an_input(output, inputs)
}

/// Removes `names` from `dir` where an earlier run left them, so that a re-used output folder
/// holds this run's files only (a run that draws fewer plots would keep stale ones).
pub fn remove_earlier_outputs(dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}
