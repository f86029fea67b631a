//! The records of a sweep: JSON Lines files under `runs/sweeps/<name>/`.
//!
//! Layout of `<runs>/<name>/`:
//! - `grid.json`: the configuration and the ids of all points (written before any point
//!   runs, so `merge` knows what is missing);
//! - `records-<I>of<N>.jsonl`: one line per finished point of shard `I/N`, appended with a
//!   single `write` on a file opened in append mode, then `fsync`: a crash leaves at worst a
//!   truncated last line, which readers skip with a warning (that point simply runs again).
//!
//! A point counts as finished once it has a `done` record; `failed` points run again on the
//! next run (their failure stays in the file; the merge keeps the latest record).
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sweep::config::SweepConfig;
use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::grid::{GridPoint, Point, Shard};

/// Metrics of one restored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageScore {
    /// File name of the image.
    pub image: String,
    /// PSNR (dB) of the restoration clipped to `[0, 1]`.
    pub psnr: f64,
    /// SSIM (Gaussian 11×11 window, std 1.5).
    pub ssim: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Wall-clock seconds of the restoration.
    pub seconds: f64,
}

/// Per-iteration values of one restoration (for convergence figures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// The image the curve belongs to.
    pub image: String,
    /// The objective (`F` for GS-PnP, the Lyapunov function for Prox-PnP) per iteration.
    pub objective: Vec<f64>,
    /// PSNR (dB) per iteration.
    pub psnr: Vec<f64>,
}

/// How a point ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Every image was restored.
    Done {
        /// Per image.
        images: Vec<ImageScore>,
        /// Convergence of the first image.
        curve: Option<Curve>,
    },
    /// The point failed (bad input, libtorch error, panic); the sweep went on.
    Failed {
        /// The error, one line.
        error: String,
    },
}

/// One line of a records file (no `deny_unknown_fields`: serde does not support it together
/// with the flattened [`Outcome`]; the fields inside are strict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`Point::id`].
    pub id: String,
    /// The parameters.
    pub params: Point,
    /// Result.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall-clock seconds of the whole point (loading included).
    pub seconds: f64,
    /// Shard that ran it.
    pub shard: Shard,
    /// Unix time (s) when it finished.
    pub finished_at: u64,
}

impl Record {
    /// Mean PSNR over the images (`None` for failed points).
    pub fn mean_psnr(&self) -> Option<f64> {
        self.mean(|s| s.psnr)
    }

    /// Mean SSIM over the images.
    pub fn mean_ssim(&self) -> Option<f64> {
        self.mean(|s| s.ssim)
    }

    /// Mean number of iterations over the images.
    pub fn mean_iterations(&self) -> Option<f64> {
        self.mean(|s| s.iterations as f64)
    }

    fn mean(&self, f: impl Fn(&ImageScore) -> f64) -> Option<f64> {
        match &self.outcome {
            Outcome::Done { images, .. } if !images.is_empty() => {
                Some(images.iter().map(f).sum::<f64>() / images.len() as f64)
            }
            _ => None,
        }
    }

    /// Whether the point finished successfully.
    pub fn is_done(&self) -> bool {
        matches!(self.outcome, Outcome::Done { .. })
    }
}

/// What `grid.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    /// The configuration the grid was expanded from.
    pub config: SweepConfig,
    /// Every point id, sorted.
    pub ids: Vec<String>,
}

/// The folder of one sweep.
#[derive(Debug, Clone)]
pub struct SweepDir {
    dir: PathBuf,
}

impl SweepDir {
    /// `<runs>/<name>`.
    pub fn new(runs: &Path, name: &str) -> SweepResult<Self> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(SweepError::Invalid(format!("bad sweep name `{name}`")));
        }
        Ok(SweepDir {
            dir: runs.join(name),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder and writes `grid.json` atomically. When one exists for another
    /// grid, refuses: records of different grids must not mix.
    pub fn write_grid(&self, config: &SweepConfig, grid: &[GridPoint]) -> SweepResult<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| SweepError::io(&self.dir, e))?;
        let file = GridFile {
            config: config.clone(),
            ids: grid.iter().map(|p| p.id.clone()).collect(),
        };
        let path = self.dir.join("grid.json");
        if path.exists() {
            let old = self.read_grid()?;
            if old.ids != file.ids {
                return Err(SweepError::Invalid(format!(
                    "{} holds another grid ({} points, this one has {}): use another sweep name or --runs-dir",
                    path.display(),
                    old.ids.len(),
                    file.ids.len()
                )));
            }
        }
        let text = serde_json::to_string_pretty(&file).map_err(|e| SweepError::config(&path, e))?;
        gradstep_model::write_atomic(&path, text.as_bytes())
            .map_err(|e| SweepError::Invalid(e.to_string()))
    }

    /// Reads `grid.json`.
    pub fn read_grid(&self) -> SweepResult<GridFile> {
        let path = self.dir.join("grid.json");
        let text = std::fs::read_to_string(&path).map_err(|e| SweepError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| SweepError::config(&path, e))
    }

    /// The records file of `shard`.
    pub fn records_path(&self, shard: Shard) -> PathBuf {
        self.dir
            .join(format!("records-{}of{}.jsonl", shard.index, shard.count))
    }

    /// Appends one record (one `write` of one line, then `fsync`).
    pub fn append(&self, shard: Shard, record: &Record) -> SweepResult<()> {
        let path = self.records_path(shard);
        let mut line = serde_json::to_string(record).map_err(|e| SweepError::config(&path, e))?;
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SweepError::io(&path, e))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| SweepError::io(&path, e))
    }

    /// Every record of every shard file, in file then line order. A truncated or
    /// unparseable *last* line (a crash during a write) is skipped with a warning; a bad line
    /// elsewhere is an error.
    pub fn read_records(&self) -> SweepResult<Vec<Record>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("records-") && n.ends_with(".jsonl"))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(SweepError::io(&self.dir, e)),
        };
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| SweepError::io(&path, e))?;
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Record>(line) {
                    Ok(r) => out.push(r),
                    Err(e) if i + 1 == lines.len() && !text.ends_with('\n') => {
                        eprintln!(
                            "warning: {}:{}: skipping a truncated last record ({e})",
                            path.display(),
                            i + 1
                        );
                    }
                    Err(e) => {
                        return Err(SweepError::Record {
                            path: path.clone(),
                            line: i + 1,
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// The latest record of each point, preferring `done` over `failed` records.
    pub fn latest(&self) -> SweepResult<BTreeMap<String, Record>> {
        let mut by_id: BTreeMap<String, Record> = BTreeMap::new();
        for r in self.read_records()? {
            match by_id.get(&r.id) {
                Some(old) if old.is_done() && !r.is_done() => {}
                _ => {
                    by_id.insert(r.id.clone(), r);
                }
            }
        }
        Ok(by_id)
    }
}
