//! `gradstep train`: train a GS (or Prox) denoiser from a JSON config, on one device or as
//! one rank of a data-parallel run (launched by torchrun, `srun`, or `--nproc N` here).
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gradstep_dist::{Backend, LaunchEnv, Launcher, ProcessGroup, Rendezvous};
use gradstep_train::{
    train, train_data_parallel, DataParallel, TrainConfig, TrainError, TrainOptions,
};

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
    /// Start N local worker processes of this command (one rank each, torchrun's variables
    /// set, a rendezvous on a free local port) and wait for them. Each rank uses cuda:RANK
    /// on a GPU machine.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
    /// Collective backend of a data-parallel run: nccl (default on CUDA) or gloo (default
    /// on the CPU).
    #[arg(long, value_parser = ["gloo", "nccl"])]
    backend: Option<String>,
    /// Seconds a data-parallel rank waits for the others (rendezvous, each collective)
    /// before it stops with an error naming the missing rank.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    dist_timeout: u64,
}

/// The free TCP port the kernel gives now (the rendezvous of `--nproc`; rank 0 binds it
/// right after, a race only with another process picking ports at the same instant).
fn free_local_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?.port())
}

/// `--nproc N`: this command again, N times, without `--nproc`, with torchrun's variables;
/// SIGINT / SIGTERM are passed on to every worker. Exits with rank 0's status, or the first
/// failing worker's when rank 0 succeeded.
fn spawn_local_workers(n: usize) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;
    anyhow::ensure!(n >= 1, "--nproc must be at least 1");
    let exe = std::env::current_exe().context("cannot find this executable to start workers")?;
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--nproc" {
            it.next();
        } else if !arg.starts_with("--nproc=") {
            args.push(arg);
        }
    }
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => p,
        Err(_) => free_local_port()?.to_string(),
    };
    let received = Arc::new(AtomicI32::new(0));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let received = received.clone();
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(sig, move || received.store(sig, Ordering::SeqCst))
        }
        .context("cannot install the signal handlers")?;
    }
    let mut workers = Vec::new();
    for rank in 0..n {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new(&exe)
            // A process group of their own: a terminal's Ctrl-C reaches this process only,
            // which passes it on once (a second SIGINT would make a worker exit at once,
            // without its checkpoint).
            .process_group(0)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .spawn()
            .with_context(|| format!("cannot start worker {rank}"))?;
        workers.push(Some(child));
    }
    let mut status: Vec<Option<i32>> = vec![None; n];
    let mut forwarded = 0;
    while status.iter().any(Option::is_none) {
        let sig = received.load(Ordering::SeqCst);
        if sig != 0 && sig != forwarded {
            forwarded = sig;
            for child in workers.iter().flatten() {
                // SAFETY: sends a signal to a child we started and have not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
            }
        }
        for (rank, slot) in workers.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Some(exit) = child.try_wait()? {
                    use std::os::unix::process::ExitStatusExt;
                    status[rank] = Some(
                        exit.code()
                            .unwrap_or_else(|| 128 + exit.signal().unwrap_or(0)),
                    );
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let codes: Vec<i32> = status.into_iter().map(|s| s.unwrap_or(1)).collect();
    let code = if codes[0] != 0 {
        codes[0]
    } else {
        codes.iter().copied().find(|&c| c != 0).unwrap_or(0)
    };
    if code != 0 {
        let failed: Vec<String> = codes
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 0)
            .map(|(r, c)| format!("rank {r} exited {c}"))
            .collect();
        eprintln!("gradstep: train --nproc {n}: {}", failed.join(", "));
        std::process::exit(code);
    }
    Ok(())
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
    if let Some(n) = a.nproc {
        anyhow::ensure!(
            std::env::var_os("RANK").is_none(),
            "--nproc inside a launched rank (RANK is set): start either the launcher or --nproc"
        );
        // Check the config once here rather than N times in the workers.
        TrainConfig::load(&a.config, &a.set)?;
        return spawn_local_workers(n);
    }
    let cfg = TrainConfig::load(&a.config, &a.set)?;
    let mut device = common::parse_device(a.device.as_deref())?;
    let launch = LaunchEnv::from_env()?;
    let mut ranks = match launch.filter(|l| l.world_size > 1) {
        None => None,
        Some(l) => {
            if device.is_cuda() {
                // One GPU per rank: cuda:LOCAL_RANK.
                device = common::parse_device(Some(&format!("cuda:{}", l.local_rank)))?;
            }
            let backend = match a.backend.as_deref() {
                Some("nccl") => Backend::Nccl,
                Some(_) => Backend::Gloo,
                None => Backend::for_device(device),
            };
            let rendezvous = Rendezvous::Tcp {
                host: l.master_addr.clone(),
                port: l.master_port,
            };
            let timeout = Duration::from_secs(a.dist_timeout.max(1));
            let group = ProcessGroup::new(&rendezvous, l.rank, l.world_size, backend, timeout)
                .with_context(|| {
                    format!(
                        "training {} (rank {} of {})",
                        cfg.name, l.rank, l.world_size
                    )
                })?;
            // One line per rank: under srun or torchrun, the log shows that every rank joined.
            eprintln!(
                "gradstep: rank {} of {} joined ({} at {rendezvous}, {device:?}, {})",
                l.rank,
                l.world_size,
                match l.launcher {
                    Launcher::Slurm => "slurm",
                    Launcher::Torchrun => "torchrun variables",
                },
                backend.name()
            );
            Some(DataParallel::new(group))
        }
    };
    let opts = TrainOptions {
        device,
        resume: a.resume,
        quiet: a.quiet,
    };
    let result = match ranks.as_mut() {
        Some(r) => train_data_parallel(&cfg, &opts, r),
        None => train(&cfg, &opts),
    };
    let rank = ranks.as_ref().map_or(0, DataParallel::rank);
    drop(ranks);
    let out = match result {
        // Stopped before the first step (e.g. during the decode-cache build): one line, and
        // the exit status of the signal, as after a checkpointed interruption.
        Err(e @ TrainError::Interrupted { signal, .. }) => {
            eprintln!("gradstep: training {}: {e}", cfg.name);
            std::process::exit(128 + signal);
        }
        other => other.with_context(|| {
            if rank > 0 {
                format!("training {} (rank {rank})", cfg.name)
            } else {
                format!("training {}", cfg.name)
            }
        })?,
    };
    // stdout may be closed by now (see above): what is printed here is also in the log of
    // the run and on disk, so failures to print are ignored.
    let mut stdout = std::io::stdout();
    if rank > 0 {
        // Rank 0 reports the run; the others only exit as it does.
        if let Some(sig) = out.signal {
            std::process::exit(128 + sig);
        }
        return Ok(());
    }
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
