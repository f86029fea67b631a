//! `gradstep train`: train a GS (or Prox) denoiser from a JSON config.
use std::path::PathBuf;

use anyhow::Context;
use gradstep_train::{train, TrainConfig, TrainOptions};

use crate::common;

/// Arguments of `gradstep train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training configuration (JSON; fields documented in configs/README.md).
    #[arg(long)]
    config: PathBuf,
    /// Continue the run from its latest checkpoint (starts fresh when it has none).
    #[arg(long)]
    resume: bool,
    /// Override a config field: `--set optimizer.lr=5e-5` (value parsed as JSON, else a
    /// string; nested keys with dots; unknown keys are errors). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    device: Option<String>,
    /// No progress bar or progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Runs the command.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = TrainConfig::load(&a.config, &a.set)?;
    let device = common::parse_device(a.device.as_deref())?;
    let out = train(
        &cfg,
        &TrainOptions {
            device,
            resume: a.resume,
            quiet: a.quiet,
        },
    )
    .with_context(|| format!("training {}", cfg.name))?;
    if let Some(best) = out.best_psnr {
        println!("best mean validation PSNR of D_σ: {best:.2} dB");
    }
    println!(
        "checkpoint: {}\nTensorBoard: make tensorboard (logs in {})",
        out.checkpoint.display(),
        cfg.run_dir().display()
    );
    if let Some(sig) = out.signal {
        println!("interrupted: continue with --resume");
        // A checkpoint is safe on disk, but the run is not finished: exit as interrupted
        // commands do (130 for SIGINT, 143 for SIGTERM), so that `make train-gs && next`
        // or a job chain does not go on as if it were. scripts/slurm/train.sbatch requeues
        // on either.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(128 + sig);
    }
    Ok(())
}
