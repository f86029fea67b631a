//! `gradstep sweep run | merge | submit`: evaluation sweeps, locally or as a Slurm job array.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use gradstep_pnp::sweep::{self, Outcome, PnpRunner, Shard, SweepConfig, SweepDir};

use crate::common;

/// The sweep subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sweep {
    /// Run the points of a sweep (or of one shard), skipping finished ones.
    Run(RunArgs),
    /// Merge the records of a sweep: table.csv, table.md and PNG figures.
    Merge(MergeArgs),
    /// Submit a sweep to Slurm as a job array of N shards (calls `sbatch`).
    Submit(SubmitArgs),
}

/// Arguments of `gradstep sweep run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Sweep configuration (JSON, see configs/sweeps/).
    #[arg(long)]
    config: PathBuf,
    /// Sweep name (default: the config's file stem); records go to RUNS_DIR/NAME/.
    #[arg(long)]
    name: Option<String>,
    /// Folder of all sweeps.
    #[arg(long, default_value = "runs/sweeps")]
    runs_dir: PathBuf,
    /// Run only shard I of N (points i with i mod N = I of the id-sorted grid).
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// cpu, cuda or cuda:N (default: CUDA when available).
    #[arg(long)]
    device: Option<String>,
    /// Images of one point restored together in one batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Skip lines of the records files that are not records (each reported as file:line
    /// and the reason; their points run again) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    #[command(flatten)]
    run: common::RunOptions,
}

/// Arguments of `gradstep sweep merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Sweep name (the folder under RUNS_DIR).
    name: String,
    /// Folder of all sweeps.
    #[arg(long, default_value = "runs/sweeps")]
    runs_dir: PathBuf,
    /// Fail unless every grid point has exactly one `done` record.
    #[arg(long)]
    strict: bool,
    /// Skip lines of the records files that are not records (each reported as file:line
    /// and the reason) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

/// Arguments of `gradstep sweep submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Sweep name; the configuration defaults to configs/sweeps/NAME.json.
    name: String,
    /// Sweep configuration (default: configs/sweeps/NAME.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of shards = array tasks.
    #[arg(long)]
    shards: usize,
    /// Folder of all sweeps.
    #[arg(long, default_value = "runs/sweeps")]
    runs_dir: PathBuf,
    /// Device of every task (cpu, cuda, cuda:N; default: CUDA when the node has one).
    #[arg(long)]
    device: Option<String>,
    /// Images of one point restored together in one batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// The batch script.
    #[arg(long, default_value = "scripts/slurm/sweep.sbatch")]
    script: PathBuf,
    /// Extra sbatch option, e.g. `--sbatch-arg=--gres=gpu:1` or `--sbatch-arg=--partition=gpu`.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
}

/// Runs a sweep subcommand.
pub fn run(s: Sweep) -> anyhow::Result<()> {
    match s {
        Sweep::Run(a) => run_points(a),
        Sweep::Merge(a) => merge(a),
        Sweep::Submit(a) => submit(a),
    }
}

fn name_of(config: &Path, name: Option<String>) -> anyhow::Result<String> {
    match name {
        Some(n) => Ok(n),
        None => config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{}: cannot name the sweep after it", config.display())),
    }
}

fn run_points(a: RunArgs) -> anyhow::Result<()> {
    let config = SweepConfig::load(&a.config)?;
    let name = name_of(&a.config, a.name)?;
    let dir = SweepDir::new(&a.runs_dir, &name)?.skip_bad_lines(a.skip_bad);
    let device = common::parse_device(a.device.as_deref())?;
    common::autotune_convolutions(device);
    let mut runner = PnpRunner::new(device, a.batch).with_options(a.run.inference(device))?;
    let total = Shard::select(&a.shard, &sweep::expand(&config)).len();
    let mut k = 0;
    let mut progress = |r: &sweep::Record| {
        k += 1;
        let diverged = r.diverged_images();
        match &r.outcome {
            Outcome::Done { images, .. } if diverged > 0 => println!(
                "[{k}/{total}] {} diverged: {diverged} of {} images (no PSNR/SSIM), {:.1} iterations, {:.1} s",
                r.id,
                images.len(),
                r.mean_iterations().unwrap_or(f64::NAN),
                r.seconds
            ),
            Outcome::Done { .. } => println!(
                "[{k}/{total}] {} done: PSNR {:.2} dB, SSIM {:.4}, {:.1} iterations, {:.1} s",
                r.id,
                r.mean_psnr().unwrap_or(f64::NAN),
                r.mean_ssim().unwrap_or(f64::NAN),
                r.mean_iterations().unwrap_or(f64::NAN),
                r.seconds
            ),
            Outcome::Failed { error } => println!("[{k}/{total}] {} failed: {error}", r.id),
        }
    };
    let s = sweep::run_shard(&config, &dir, a.shard, &mut runner, &mut progress)?;
    println!(
        "sweep {name} shard {}: {} points ({} in the grid), {} skipped (finished), {} done, {} failed; records in {}",
        a.shard,
        s.shard,
        s.grid,
        s.skipped,
        s.done,
        s.failed,
        dir.path().display()
    );
    Ok(())
}

fn merge(a: MergeArgs) -> anyhow::Result<()> {
    let dir = SweepDir::new(&a.runs_dir, &a.name)?.skip_bad_lines(a.skip_bad);
    let r = sweep::merge(&dir)?;
    println!(
        "sweep {}: {} points, {} done ({} diverged), {} failed, {} missing, {} run more than once, {} unreadable lines skipped",
        a.name,
        r.grid,
        r.done,
        r.diverged,
        r.failed,
        r.missing.len(),
        r.duplicated.len(),
        r.skipped.len()
    );
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    if a.strict && (!r.missing.is_empty() || !r.duplicated.is_empty() || r.done != r.grid) {
        bail!(
            "--strict: {} of {} points done, missing {:?}, duplicated {:?}",
            r.done,
            r.grid,
            r.missing,
            r.duplicated
        );
    }
    Ok(())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p)
        .with_context(|| format!("{}: cannot make the path absolute", p.display()))
}

fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    if a.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let config_path = a
        .config
        .clone()
        .unwrap_or_else(|| Path::new("configs/sweeps").join(format!("{}.json", a.name)));
    // Everything is checked, and the grid written, before any job is queued.
    let config = SweepConfig::load(&config_path)?;
    let dir = SweepDir::new(&a.runs_dir, &a.name)?;
    let grid = sweep::expand(&config);
    dir.write_grid(&config, &grid)?;
    if !a.script.is_file() {
        bail!(
            "{}: batch script not found (run from the repository root or pass --script)",
            a.script.display()
        );
    }
    let exe = std::env::current_exe().context("cannot locate the gradstep binary")?;
    let runs_dir = absolute(&a.runs_dir)?;
    let env = [
        ("GRADSTEP_BIN", exe.display().to_string()),
        (
            "SWEEP_CONFIG",
            absolute(&config_path)?.display().to_string(),
        ),
        ("SWEEP_NAME", a.name.clone()),
        ("SWEEP_RUNS_DIR", runs_dir.display().to_string()),
        ("SWEEP_SHARDS", a.shards.to_string()),
        ("SWEEP_DEVICE", a.device.clone().unwrap_or_default()),
        ("SWEEP_BATCH", a.batch.to_string()),
    ];
    if let Some((k, v)) = env.iter().find(|(_, v)| v.contains(',')) {
        bail!("{k}={v}: sbatch --export cannot pass a value with a comma");
    }
    let export = std::iter::once("ALL".to_string())
        .chain(env.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",");
    let sbatch = std::env::var("SBATCH").unwrap_or_else(|_| "sbatch".into());
    let mut cmd = Command::new(&sbatch);
    cmd.arg("--parsable")
        .arg(format!("--array=0-{}", a.shards - 1))
        .arg(format!("--job-name=sweep-{}", a.name))
        .arg(format!("--output={}/slurm-%A_%a.out", dir.path().display()))
        .arg(format!("--chdir={}", absolute(Path::new("."))?.display()))
        .arg(format!("--export={export}"))
        .args(&a.sbatch_args)
        .arg(&a.script);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{sbatch}` (is Slurm installed?)"))?;
    if !out.status.success() {
        bail!(
            "sbatch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job = stdout.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {stdout:?}");
    }
    println!(
        "submitted job {job}: {} points in {} shards",
        grid.len(),
        a.shards
    );
    println!("job id: {job}");
    println!(
        "when it is done: gradstep sweep merge {} --runs-dir {}",
        a.name,
        runs_dir.display()
    );
    Ok(())
}
