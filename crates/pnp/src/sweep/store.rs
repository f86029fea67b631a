//! The records of a sweep: JSON Lines files under `runs/sweeps/<name>/`.
//!
//! Layout of `<runs>/<name>/`:
//! - `grid.json`: the configuration and the ids of all points (written before any point
//!   runs, so `merge` knows what is missing);
//! - `records-<I>of<N>.jsonl`: one line per finished point of shard `I/N`, appended with a
//!   single `write` on a file opened in append mode, then `fsync`: a crash leaves at worst a
//!   torn last line (no newline). Readers skip it with a warning (it may also be a write in
//!   progress); the shard's next run moves it to `records-<I>of<N>.jsonl.torn` and truncates
//!   the file before appending (only the shard itself writes its file, so this cannot cut a
//!   write of another process), and that point simply runs again.
//!
//! A point counts as finished once it has a `done` record; `failed` points run again on the
//! next run (their failure stays in the file; the merge keeps the latest record). A `done`
//! point may hold diverged images: their PSNR and SSIM are `null` (not a number) and their
//! stop reason `diverged`; such a point is finished, and tables show it as diverged.
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::algorithms::StopReason;
use crate::sweep::config::SweepConfig;
use crate::sweep::error::{SweepError, SweepResult};
use crate::sweep::grid::{GridPoint, Point, Shard};

/// Metrics of one restored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageScore {
    /// File name of the image.
    pub image: String,
    /// PSNR (dB) of the restoration clipped to `[0, 1]`; `None` (written `null`) when it is
    /// not a number: the restoration diverged.
    pub psnr: Option<f64>,
    /// SSIM (Gaussian 11×11 window, std 1.5); `None` (`null`) when not a number.
    pub ssim: Option<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// Wall-clock seconds of the restoration.
    pub seconds: f64,
    /// Why the restoration stopped (`None` in records written before it was kept).
    #[serde(default)]
    pub stop: Option<StopReason>,
}

impl ImageScore {
    /// A metric as recorded: `None` unless it is a finite number.
    pub fn metric(value: f64) -> Option<f64> {
        value.is_finite().then_some(value)
    }

    /// Whether the restoration diverged: it stopped as [`StopReason::Diverged`], or a metric
    /// is not a number (older records hold `null` there, and no stop reason).
    pub fn diverged(&self) -> bool {
        self.stop == Some(StopReason::Diverged) || self.psnr.is_none() || self.ssim.is_none()
    }
}

/// Per-iteration values of one restoration (for convergence figures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// The image the curve belongs to.
    pub image: String,
    /// The objective (`F` for GS-PnP, the Lyapunov function for Prox-PnP) per iteration;
    /// NaN (written `null`) where unknown, e.g. throughout for HQS.
    #[serde(deserialize_with = "nan_for_null")]
    pub objective: Vec<f64>,
    /// PSNR (dB) per iteration; NaN (`null`) where unknown.
    #[serde(deserialize_with = "nan_for_null")]
    pub psnr: Vec<f64>,
}

/// Reads numbers where `null` stands for NaN: serde_json writes NaN and `±∞` as `null`, and
/// reading `null` as an `f64` fails.
fn nan_for_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let values = Vec::<Option<f64>>::deserialize(d)?;
    Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
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
    /// Mean PSNR over the images (`None` for failed points and for points with a diverged
    /// image: a mean over the others would not compare with other points).
    pub fn mean_psnr(&self) -> Option<f64> {
        self.mean(|s| s.psnr)
    }

    /// Mean SSIM over the images (`None` as for [`Record::mean_psnr`]).
    pub fn mean_ssim(&self) -> Option<f64> {
        self.mean(|s| s.ssim)
    }

    /// Mean number of iterations over the images (diverged ones included).
    pub fn mean_iterations(&self) -> Option<f64> {
        gradstep_data::reduce::mean(self.images().iter().map(|s| s.iterations as f64))
    }

    /// How many images of the point diverged (0 for failed points).
    pub fn diverged_images(&self) -> usize {
        self.images().iter().filter(|s| s.diverged()).count()
    }

    /// The scores of a `done` point (empty for failed points).
    pub fn images(&self) -> &[ImageScore] {
        match &self.outcome {
            Outcome::Done { images, .. } => images,
            Outcome::Failed { .. } => &[],
        }
    }

    fn mean(&self, f: impl Fn(&ImageScore) -> Option<f64>) -> Option<f64> {
        let images = self.images();
        if images.is_empty() || images.iter().any(ImageScore::diverged) {
            return None;
        }
        let values = images.iter().map(f).collect::<Option<Vec<f64>>>()?;
        gradstep_data::reduce::mean(values)
    }

    /// Whether the point finished (diverged images included: running it again would
    /// diverge again).
    pub fn is_done(&self) -> bool {
        matches!(self.outcome, Outcome::Done { .. })
    }
}

/// A line of a records file that is not a record (skipped by a [`SweepDir`] made with
/// [`SweepDir::skip_bad_lines`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// The records file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Why it cannot be read.
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
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
    skip_bad: bool,
}

impl SweepDir {
    /// `<runs>/<name>`.
    pub fn new(runs: &Path, name: &str) -> SweepResult<Self> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(SweepError::Invalid(format!("bad sweep name `{name}`")));
        }
        Ok(SweepDir {
            dir: runs.join(name),
            skip_bad: false,
        })
    }

    /// With `skip = true`, lines of the records files that are not records are skipped with
    /// a warning naming `file:line` and the reason (their points run again), instead of
    /// stopping the command.
    pub fn skip_bad_lines(mut self, skip: bool) -> Self {
        self.skip_bad = skip;
        self
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

    /// Appends one record (one `write` of one line, then `fsync`), after dropping a torn
    /// last line ([`SweepDir::drop_torn_tail`]) that the record would otherwise extend.
    pub fn append(&self, shard: Shard, record: &Record) -> SweepResult<()> {
        self.drop_torn_tail(shard)?;
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

    /// Drops a torn last line of the records file of `shard` (the tail after the last
    /// newline, left by a crash during a write): it is moved to `<file>.torn` and the file
    /// truncated, with a warning naming the file, the line and the point. A last line that
    /// is a complete record and lacks only its newline gets the newline. Only the shard's own
    /// process writes its file, so the tail cannot be a write in progress.
    pub fn drop_torn_tail(&self, shard: Shard) -> SweepResult<()> {
        let path = self.records_path(shard);
        let io = |e| SweepError::io(&path, e);
        let mut f = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let len = f.metadata().map_err(io)?.len();
        if len == 0 {
            return Ok(());
        }
        let mut last = [0u8];
        f.seek(SeekFrom::End(-1)).map_err(io)?;
        f.read_exact(&mut last).map_err(io)?;
        if last[0] == b'\n' {
            return Ok(());
        }
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.read_to_end(&mut bytes).map_err(io)?;
        let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let tail = &bytes[cut..];
        let line = bytes[..cut].iter().filter(|&&b| b == b'\n').count() + 1;
        if serde_json::from_slice::<Record>(tail).is_ok() {
            f.seek(SeekFrom::End(0)).map_err(io)?;
            return f.write_all(b"\n").and_then(|()| f.sync_data()).map_err(io);
        }
        let mut aside = path.clone().into_os_string();
        aside.push(".torn");
        let aside = PathBuf::from(aside);
        let mut kept = tail.to_vec();
        kept.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&aside)
            .and_then(|mut t| t.write_all(&kept).and_then(|()| t.sync_data()))
            .map_err(|e| SweepError::io(&aside, e))?;
        f.set_len(cut as u64)
            .and_then(|()| f.sync_data())
            .map_err(io)?;
        eprintln!(
            "warning: {}:{line}: dropped a torn last record{} ({} bytes, cut short by a crash during a write; kept in {}); its point runs again",
            path.display(),
            point_of(tail).map_or(String::new(), |id| format!(" of point {id}")),
            tail.len(),
            aside.display()
        );
        Ok(())
    }

    /// Every record of every shard file, in file then line order. A torn last line (no
    /// newline: a crash during a write, or a write in progress) is skipped with a warning; a
    /// line that starts with a torn record and ends with a complete one (written by a run
    /// that appended to a torn line) gives the complete one, with a warning. Any other bad
    /// line is an error naming `file:line`, or, with [`SweepDir::skip_bad_lines`], skipped
    /// with a warning.
    pub fn read_records(&self) -> SweepResult<Vec<Record>> {
        Ok(self.read_all()?.0)
    }

    /// The records, and the bad lines skipped (with [`SweepDir::skip_bad_lines`]).
    pub(crate) fn read_all(&self) -> SweepResult<(Vec<Record>, Vec<BadLine>)> {
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
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| SweepError::io(&path, e))?;
            // Invalid UTF-8 (crash garbage) makes its line unparseable, not the whole file.
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let e = match serde_json::from_str::<Record>(line) {
                    Ok(r) => {
                        out.push(r);
                        continue;
                    }
                    Err(e) => e,
                };
                if i + 1 == lines.len() && !text.ends_with('\n') {
                    eprintln!(
                        "warning: {}:{}: skipping a torn last record{} ({e})",
                        path.display(),
                        i + 1,
                        point_of(line.as_bytes())
                            .map_or(String::new(), |id| format!(" of point {id}"))
                    );
                    continue;
                }
                if let Some((start, r)) = record_after_torn_one(line) {
                    eprintln!(
                        "warning: {}:{}: skipping {start} bytes of a torn record{} before the record of point {}",
                        path.display(),
                        i + 1,
                        point_of(line.as_bytes()).map_or(String::new(), |id| format!(" of point {id}")),
                        r.id
                    );
                    out.push(r);
                    continue;
                }
                let b = BadLine {
                    path: path.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                };
                if !self.skip_bad {
                    return Err(SweepError::Record {
                        path: b.path,
                        line: b.line,
                        reason: format!(
                            "{} (not a record; to skip unreadable lines, whose points then run again, pass --skip-bad)",
                            b.reason
                        ),
                    });
                }
                eprintln!("warning: {b}: skipping a line that is not a record (--skip-bad)");
                bad.push(b);
            }
        }
        Ok((out, bad))
    }

    /// The latest record of each point, preferring `done` over `failed` records.
    pub fn latest(&self) -> SweepResult<BTreeMap<String, Record>> {
        Ok(latest_of(self.read_records()?))
    }
}

/// The latest record of each point of `records` (in file order), preferring `done` over
/// `failed` records.
pub(crate) fn latest_of(records: impl IntoIterator<Item = Record>) -> BTreeMap<String, Record> {
    let mut by_id: BTreeMap<String, Record> = BTreeMap::new();
    for r in records {
        match by_id.get(&r.id) {
            Some(old) if old.is_done() && !r.is_done() => {}
            _ => {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    by_id
}

/// The point id at the start of a (possibly torn) record line: records are written with
/// their `id` first.
fn point_of(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"{\"id\":\"")?;
    let id = &rest[..rest.iter().position(|&b| b == b'"')?];
    std::str::from_utf8(id).ok().map(str::to_owned)
}

/// A line written by appending a record to a torn one (before torn tails were dropped):
/// the complete record at its end, and where it starts.
fn record_after_torn_one(line: &str) -> Option<(usize, Record)> {
    line.match_indices("{\"id\":\"")
        .map(|(start, _)| start)
        .filter(|&start| start > 0)
        .find_map(|start| Some((start, serde_json::from_str(&line[start..]).ok()?)))
}
