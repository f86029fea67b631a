//! Running the points of one shard: skip finished ones, record each result or failure.
//!
//! The engine does not know how a point is computed: it calls a [`PointRunner`]
//! ([`crate::sweep::PnpRunner`] restores images with the PnP algorithms; tests use others).
//! A runner's error, or a panic inside it, becomes a `failed` record and the next point runs.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::sweep::config::SweepConfig;
use crate::sweep::error::SweepResult;
use crate::sweep::grid::{expand, GridPoint, Point, Shard};
use crate::sweep::store::{Curve, ImageScore, Outcome, Record, SweepDir};

/// What a runner returns for a successful point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointResult {
    /// One score per image.
    pub images: Vec<ImageScore>,
    /// Convergence of the first image, when recorded.
    pub curve: Option<Curve>,
}

/// Computes one point.
pub trait PointRunner {
    /// Restores the point's images; the error becomes the point's `failed` record.
    fn run(&mut self, point: &Point) -> Result<PointResult, String>;
}

/// Counts of one [`run_shard`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Points in the whole grid.
    pub grid: usize,
    /// Points of this shard.
    pub shard: usize,
    /// Points skipped because a `done` record exists.
    pub skipped: usize,
    /// Points run successfully now.
    pub done: usize,
    /// Points that failed now.
    pub failed: usize,
}

/// Expands `config`, writes `grid.json`, drops a torn last line of the shard's records file
/// (a crash during a write: that point runs again), and runs the points of `shard` that have
/// no `done` record yet, appending one record per point. `progress` is called after each point.
pub fn run_shard(
    config: &SweepConfig,
    dir: &SweepDir,
    shard: Shard,
    runner: &mut dyn PointRunner,
    progress: &mut dyn FnMut(&Record),
) -> SweepResult<RunSummary> {
    let grid = expand(config);
    dir.write_grid(config, &grid)?;
    dir.drop_torn_tail(shard)?;
    let finished = dir.latest()?;
    let mine = shard.select(&grid);
    let mut summary = RunSummary {
        grid: grid.len(),
        shard: mine.len(),
        ..RunSummary::default()
    };
    for point in mine {
        if finished.get(&point.id).is_some_and(Record::is_done) {
            summary.skipped += 1;
            continue;
        }
        let record = run_point(point, shard, runner);
        if record.is_done() {
            summary.done += 1;
        } else {
            summary.failed += 1;
        }
        dir.append(shard, &record)?;
        progress(&record);
    }
    Ok(summary)
}

/// Runs one point, turning an error or a panic into a `failed` outcome.
pub fn run_point(point: &GridPoint, shard: Shard, runner: &mut dyn PointRunner) -> Record {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| runner.run(&point.params)));
    let outcome = match result {
        Ok(Ok(r)) => Outcome::Done {
            images: r.images,
            curve: r.curve,
        },
        Ok(Err(error)) => Outcome::Failed { error },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Outcome::Failed {
                error: format!("panicked: {msg}"),
            }
        }
    };
    Record {
        id: point.id.clone(),
        params: point.params.clone(),
        outcome,
        seconds: start.elapsed().as_secs_f64(),
        shard,
        finished_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}
