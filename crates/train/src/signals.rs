//! SIGINT / SIGTERM during `train`: the first asks the run to stop cleanly (the loop writes
//! a checkpoint; a decode-cache build removes its partial file), a second one exits at once.
//! Both ways the exit status is `128 +` the *first* signal: a run stopped by Slurm's SIGTERM
//! exits 143 even when a second SIGTERM (or a stray SIGINT) cuts the checkpoint short.
//!
//! Installed at the start of `train`, before any long operation, and removed when it
//! returns (the [`StopSignals`] guard), so that a library caller's later signals behave as
//! before.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

use crate::error::{Result, TrainError};

/// The installed handlers and what they saw.
pub(crate) struct StopSignals {
    /// The first signal received, 0 before any.
    first: Arc<AtomicI32>,
    /// Set by the first signal: what a long operation polls.
    stop: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl StopSignals {
    /// Installs the handlers of SIGINT and SIGTERM.
    pub fn install() -> Result<Self> {
        let first = Arc::new(AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut installed = StopSignals {
            first: Arc::clone(&first),
            stop: Arc::clone(&stop),
            ids: Vec::new(),
        };
        for sig in [SIGINT, SIGTERM] {
            let (first, stop) = (Arc::clone(&first), Arc::clone(&stop));
            let action =
                move || match first.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => stop.store(true, Ordering::SeqCst),
                    Err(earlier) => signal_hook::low_level::exit(128 + earlier),
                };
            // SAFETY: the action runs inside the signal handler; it only does atomic
            // operations on memory the `Arc`s keep alive and `_exit`
            // (`signal_hook::low_level::exit`), all async-signal-safe.
            let id = unsafe { signal_hook::low_level::register(sig, action) }
                .map_err(|e| TrainError::Io(PathBuf::from("<signal handler>"), e))?;
            // Pushed at once: dropping `installed` on a later error unregisters it.
            installed.ids.push(id);
        }
        Ok(installed)
    }

    /// The first signal received (SIGINT 2, SIGTERM 15), if any.
    pub fn received(&self) -> Option<i32> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// Set once a signal has arrived: for operations that poll (the cache build).
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
