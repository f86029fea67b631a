//! `gradstep bench dist`: data-parallel GS training steps, 1 rank against N ranks with the
//! same per-rank batch (weak scaling), beside PyTorch DDP on the same model and batch
//! (`anchor_deepinv.py dist`) in the same call.
//!
//! Each measurement runs in fresh processes: this command again, once with `WORLD_SIZE=1`
//! and once with N ranks (torchrun's variables, a free local port), so that both sides get
//! the same threads per rank. A rank times the training crate's own step
//! ([`GsStep::run`]) with its gradient hook [`DataParallel`] (flat buckets, c10d's
//! all-reduce): ELU DRUNet of `--widths`, seed 0, σ = 25/255, Adam lr 1e-4, clip 1e-2, its
//! own random batch (as the anchor). Rank 0 reports the median step time over `--reps`
//! after 2 warm-ups, and the time and bytes per step in collectives.
//!
//! Efficiency = t₁ / t_N (1.0 = perfect weak scaling). Last line:
//! `bench-dist efficiency <ratio>` (gradstep's).
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gradstep_dist::{Backend, LaunchEnv, ProcessGroup, Rendezvous};
use gradstep_model::{Activation, Drunet, DrunetConfig, GradientStepDenoiser, Precision};
use gradstep_train::step::{GradientSync, GsStep, LocalOnly, NoisyBatch};
use gradstep_train::{Adam, AdamConfig, DataParallel};
use tch::{Device, Kind, Tensor};

use crate::anchor::{metric, run_anchor};
use crate::error::{BenchError, Result};
use crate::timing::time_ms;
use crate::train_step::{CLIP_GRAD_NORM, SIGMA};

/// Options of `gradstep bench dist`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DistOptions {
    /// Ranks of the N-rank run (default: the visible GPUs on CUDA, 2 on the CPU).
    #[cfg_attr(feature = "clap", arg(long))]
    pub world: Option<usize>,
    /// DRUNet widths, finest first (e.g. 8,16,32,64 for a quick CPU run).
    #[cfg_attr(feature = "clap", arg(long, default_value = "64,128,256,512"))]
    pub widths: String,
    /// Patches per rank per step.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 16))]
    pub batch: i64,
    /// Patch side.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 128))]
    pub patch: i64,
    /// Timed steps (median reported), after 2 warm-ups.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 10))]
    pub reps: usize,
    /// On the CPU: libtorch threads per rank.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub threads: usize,
    /// `anchor_deepinv.py` to run in the same call (DDP on the same model and batch).
    #[cfg_attr(feature = "clap", arg(long))]
    pub anchor: Option<PathBuf>,
    /// Python that runs the anchor (needs torch 2.11 and deepinv 0.5.0).
    #[cfg_attr(feature = "clap", arg(long, default_value = "python3"))]
    pub anchor_python: PathBuf,
}

/// What rank 0 of one measurement reports.
#[derive(Debug, Clone, Copy)]
struct Measured {
    step_ms: f64,
    comm_ms: f64,
    comm_mb: f64,
}

/// The line a rank-0 worker prints and the coordinator reads.
const WORKER_TAG: &str = "bench-dist-rank0";

/// Runs the benchmark (or, inside a launched worker, one rank of it).
pub fn run(a: &DistOptions, device: Device) -> Result<()> {
    if let Some(launch) = LaunchEnv::from_env().map_err(|e| BenchError::Options(e.to_string()))? {
        return worker(a, device, &launch);
    }
    let world = a.world.unwrap_or(if device.is_cuda() {
        (tch::Cuda::device_count() as usize).max(1)
    } else {
        2
    });
    if world < 2 {
        return Err(BenchError::Options(format!(
            "--world {world}: data-parallel scaling needs at least 2 ranks"
        )));
    }
    println!(
        "bench dist: GS step, widths {}, batch {} of {}² per rank, {} rank(s) vs 1, {}",
        a.widths,
        a.batch,
        a.patch,
        world,
        if device.is_cuda() {
            "one GPU per rank (NCCL)".to_string()
        } else {
            format!("CPU, Gloo, {} thread(s) per rank", a.threads)
        }
    );
    let one = launch_workers(1)?;
    let many = launch_workers(world)?;
    let efficiency = one.step_ms / many.step_ms;
    println!("gradstep 1 rank: {:.2} ms/step", one.step_ms);
    println!(
        "gradstep {world} ranks: {:.2} ms/step, of which {:.2} ms in collectives ({:.1} MB all-reduced per step per rank)",
        many.step_ms, many.comm_ms, many.comm_mb
    );
    println!("gradstep efficiency (t1/t{world}): {efficiency:.3}");
    if let Some(anchor) = &a.anchor {
        let extra: Vec<String> = [
            ("--world", world.to_string()),
            ("--widths", a.widths.clone()),
            ("--batch", a.batch.to_string()),
            ("--patch", a.patch.to_string()),
            ("--threads", a.threads.to_string()),
            ("--reps", a.reps.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
        let lines = run_anchor(&a.anchor_python, anchor, "dist", device, &extra)?;
        let get = |m: &str| {
            metric(&lines, m)
                .ok_or_else(|| BenchError::Anchor(format!("the anchor printed no {m}")))
        };
        let (t1, tn, eff) = (
            get("dist_step_ms_1")?,
            get(&format!("dist_step_ms_{world}"))?,
            get("dist_efficiency")?,
        );
        println!(
            "PyTorch DDP: 1 rank {t1:.2} ms/step, {world} ranks {tn:.2} ms/step, efficiency {eff:.3}"
        );
        // DDP's time beyond one rank's step is its communication overhead (and contention);
        // gradstep's on the same footing.
        println!(
            "overhead of {world} ranks over 1: gradstep {:.2} ms/step, DDP {:.2} ms/step",
            many.step_ms - one.step_ms,
            tn - t1
        );
    }
    println!("bench-dist efficiency {efficiency:.3}");
    Ok(())
}

/// This command again as `world` local ranks (torchrun's variables); rank 0's figures.
fn launch_workers(world: usize) -> Result<Measured> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Options(format!("cannot find this executable: {e}")))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::Options(format!("no free local port: {e}")))?
        .port();
    let mut children = Vec::new();
    for rank in 0..world {
        let child = Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Options(format!("cannot start worker {rank}: {e}")))?;
        children.push(child);
    }
    let mut measured = None;
    let mut failure = None;
    for (rank, child) in children.into_iter().enumerate() {
        let out = child
            .wait_with_output()
            .map_err(|e| BenchError::Options(format!("worker {rank}: {e}")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string();
            failure.get_or_insert(format!(
                "rank {rank} of {world} failed ({}): {why}",
                out.status
            ));
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.starts_with(WORKER_TAG)) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if let (Some(step_ms), Some(comm_ms), Some(comm_mb)) =
                (value("step_ms"), value("comm_ms"), value("comm_mb"))
            {
                measured = Some(Measured {
                    step_ms,
                    comm_ms,
                    comm_mb,
                });
            }
        }
    }
    if let Some(why) = failure {
        return Err(BenchError::Options(why));
    }
    measured.ok_or_else(|| BenchError::Options(format!("rank 0 of {world} reported no time")))
}

/// One rank: the timed steps, and rank 0's line for the coordinator.
fn worker(a: &DistOptions, device: Device, launch: &LaunchEnv) -> Result<()> {
    let device = match device {
        Device::Cuda(_) => Device::Cuda(launch.local_rank),
        d => {
            tch::set_num_threads(a.threads as i32);
            d
        }
    };
    let widths: Vec<i64> = a
        .widths
        .split(',')
        .map(|w| w.trim().parse::<i64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| BenchError::Options(format!("--widths {:?}: four integers", a.widths)))?;
    let widths: [i64; 4] = widths
        .try_into()
        .map_err(|_| BenchError::Options(format!("--widths {:?}: four integers", a.widths)))?;
    let arch = DrunetConfig {
        widths,
        activation: Activation::Elu,
        ..Default::default()
    };
    let mut ranks = if launch.world_size > 1 {
        let group = ProcessGroup::new(
            &Rendezvous::Tcp {
                host: launch.master_addr.clone(),
                port: launch.master_port,
            },
            launch.rank,
            launch.world_size,
            Backend::for_device(device),
            Duration::from_secs(300),
        )
        .map_err(|e| BenchError::Options(e.to_string()))?;
        Some(DataParallel::new(group))
    } else {
        None
    };
    tch::manual_seed(0);
    let den = GradientStepDenoiser::new(Drunet::new(&arch, device)?);
    let params = den.network().var_store().variables().into_iter().collect();
    let mut adam = Adam::new(
        params,
        AdamConfig {
            lr: 1e-4,
            ..AdamConfig::default()
        },
    )?;
    let step = GsStep {
        precision: Precision::Fp32,
        clip_grad_norm: Some(CLIP_GRAD_NORM),
    };
    // Each rank its own batch, as the anchor's ranks.
    tch::manual_seed(1000 + launch.rank as i64);
    let clean = Tensor::f_rand([a.batch, 3, a.patch, a.patch], (Kind::Float, device))?;
    let mut local = LocalOnly;
    let step_ms = time_ms(device, 2, a.reps, || {
        let xi = Tensor::f_randn([a.batch, 3, a.patch, a.patch], (Kind::Float, device))?;
        let batch = NoisyBatch::from_noise(&clean, &xi, vec![SIGMA])?;
        let sync: &mut dyn GradientSync = match ranks.as_mut() {
            Some(r) => r,
            None => &mut local,
        };
        step.run(&den, &mut adam, &batch, 1e-4, sync)?;
        Ok(())
    })?;
    let (comm_s, comm_mb) = ranks
        .as_ref()
        .and_then(DataParallel::comm_per_step)
        .unwrap_or((0.0, 0.0));
    if launch.rank == 0 {
        println!(
            "{WORKER_TAG} step_ms {step_ms:.4} comm_ms {:.4} comm_mb {comm_mb:.4}",
            comm_s * 1e3
        );
    }
    Ok(())
}
