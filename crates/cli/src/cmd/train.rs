//! `gradstep train`: train a GS (or Prox) denoiser from a JSON config.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use gradstep_train::{train, TrainConfig, TrainError, TrainOptions};

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
    // A reader that goes away (`gradstep train … | head`) must not kill a training run
    // before its checkpoint: ignore SIGPIPE, so that a write to the closed pipe fails with
    // EPIPE, and the progress output stops while training goes on (`Progress`).
    #[cfg(unix)]
    // SAFETY: sets the disposition of one signal to "ignore"; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let cfg = TrainConfig::load(&a.config, &a.set)?;
    let device = common::parse_device(a.device.as_deref())?;
    let result = train(
        &cfg,
        &TrainOptions {
            device,
            resume: a.resume,
            quiet: a.quiet,
        },
    );
    let out = match result {
        // Stopped before the first step (e.g. during the decode-cache build): one line, and
        // the exit status of the signal, as after a checkpointed interruption.
        Err(e @ TrainError::Interrupted { signal, .. }) => {
            eprintln!("gradstep: training {}: {e}", cfg.name);
            std::process::exit(128 + signal);
        }
        other => other.with_context(|| format!("training {}", cfg.name))?,
    };
    // stdout may be closed by now (see above): what is printed here is also in the log of
    // the run and on disk, so failures to print are ignored.
    let mut stdout = std::io::stdout();
    if let Some(best) = out.best_psnr {
        let _ = writeln!(stdout, "best mean validation PSNR of D_σ: {best:.2} dB");
    }
    let _ = writeln!(
        stdout,
        "checkpoint: {}\nTensorBoard: make tensorboard (logs in {})",
        out.checkpoint.display(),
        cfg.run_dir().display()
    );
    if let Some(sig) = out.signal {
        let _ = writeln!(stdout, "interrupted: continue with --resume");
        // A checkpoint is safe on disk, but the run is not finished: exit as interrupted
        // commands do (130 for SIGINT, 143 for SIGTERM), so that `make train-gs && next`
        // or a job chain does not go on as if it were. scripts/slurm/train.sbatch requeues
        // on either.
        let _ = stdout.flush();
        std::process::exit(128 + sig);
    }
    Ok(())
}
