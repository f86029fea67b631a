//! `gradstep`: train Gradient-Step / Proximal denoisers and run convergent Plug-and-Play.
//!
//! This binary only parses arguments, validates them into the libraries' typed configs,
//! and reports errors: one line, the whole chain, exit code 1.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod common;

/// Gradient-Step and Proximal denoisers, and the Plug-and-Play algorithms built on them.
#[derive(Debug, Parser)]
#[command(name = "gradstep", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// libtorch version, CUDA / cuDNN availability, devices and threads.
    Info,
    /// Denoise an image with a checkpoint (optionally adding noise first).
    Denoise(cmd::denoise::Args),
    /// Convert a published PyTorch checkpoint (GS-DRUNet / Prox-DRUNet) to gradstep's format.
    Import(cmd::import::Args),
    /// Benchmarks (printed as ratios against the PyTorch anchor when it is given).
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Train a GS (or Prox) denoiser from a JSON config (configs/README.md).
    Train(cmd::train::Args),
    /// Evaluation sweeps: run a grid (or one shard), merge records, submit to Slurm.
    #[command(subcommand)]
    Sweep(cmd::sweep::Sweep),
    /// Estimated ‖∇²g_σ‖₂ at noisy images per σ: a Prox checkpoint must stay below 1.
    Lipschitz(cmd::lipschitz::Args),
    /// Degrade an image and restore it with a PnP algorithm (GS-PnP, Prox-PnP, HQS).
    Restore(cmd::restore::Args),
    /// The papers' PnP tables over a folder of images (batched on the GPU).
    Eval(cmd::eval::Args),
    /// Tools of the paper-experiment recipes (scripts/experiments.sh): line figures from
    /// gradstep's tables, image montages, a table of restore runs.
    #[command(subcommand)]
    Experiment(cmd::experiment::Experiment),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => cmd::info::run(),
        Command::Denoise(a) => cmd::denoise::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Bench(b) => cmd::bench::run(b),
        Command::Train(a) => cmd::train::run(a),
        Command::Sweep(s) => cmd::sweep::run(s),
        Command::Lipschitz(a) => cmd::lipschitz::run(a),
        Command::Restore(a) => cmd::restore::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Experiment(e) => cmd::experiment::run(e),
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of the output goes away
    // (`gradstep info | head -1`) instead of panicking inside `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("gradstep: error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
