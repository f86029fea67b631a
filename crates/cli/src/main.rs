//! `gradstep`: train Gradient-Step / Proximal denoisers and run convergent Plug-and-Play.
//!
//! This binary only parses arguments, validates them into the libraries' typed configs,
//! and reports errors: one line, the whole chain, exit code 1.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod checks;
mod cmd;
mod common;
mod progress;

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
    /// Write a checkpoint's network for PyTorch (deepinv GSDRUNet, GS-PnP Lightning, state dict).
    Export(cmd::export::Args),
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
    /// Restore an observed image (--observed Y), or degrade a clean one and restore it
    /// (--clean X), with a PnP algorithm (GS-PnP, Prox-PnP, HQS).
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
        Command::Export(a) => cmd::export::run(a),
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
            // Printed as is: the libraries' errors either show their source's text or chain
            // it, never both (tests/errors.rs), so no cause needs to be filtered out here.
            let chain: Vec<String> = e.chain().map(|c| one_line(&c.to_string())).collect();
            eprintln!("gradstep: error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// An error message on one line. libtorch's errors (an out-of-memory error, a bad shape) carry
/// the C++ backtrace after their message, from `Exception raised from …` on, one `frame #N:`
/// line per call: it is cut, and the remaining lines are joined.
fn one_line(message: &str) -> String {
    let message = message
        .find("Exception raised from")
        .map_or(message, |at| &message[..at]);
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("frame #"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn libtorch_backtraces_are_cut_from_error_messages() {
        let oom = "Internal torch error: [enforce fail at alloc_cpu.cpp:117] data. \
DefaultCPUAllocator: not enough memory: you tried to allocate 85899345920 bytes.
Exception raised from alloc_cpu at /pytorch/c10/core/impl/alloc_cpu.cpp:117 (most recent call first):
frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9c (0x7f in libc10.so)
frame #1: c10::alloc_cpu(unsigned long) + 0x2d4 (0x7f in libc10.so)
";
        assert_eq!(
            one_line(oom),
            "Internal torch error: [enforce fail at alloc_cpu.cpp:117] data. \
DefaultCPUAllocator: not enough memory: you tried to allocate 85899345920 bytes."
        );
        assert_eq!(one_line("a\n  b\n"), "a b");
        assert_eq!(one_line("no backtrace"), "no backtrace");
    }
}
