//! SIGINT / SIGTERM during `train`: the first asks the run to stop cleanly (the loop writes
//! a checkpoint; a decode-cache build removes its partial file), a second one exits at once.
//! Both ways the exit status is `128 +` the *first* signal: a run stopped by Slurm's SIGTERM
//! exits 143 even when a second SIGTERM (or a stray SIGINT) cuts the checkpoint short.
//!
//! The handlers are registered once per process, at the start of the first `train`, before
//! any long operation. While no [`StopSignals`] guard is alive (before and after `train`),
//! they do what the default action does, so a library caller's process still ends on
//! SIGINT / SIGTERM outside training, and a signal of one run never stops a later one.
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Result, TrainError};

/// The first signal received since the guards alive began, 0 before any.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// Set by the first signal: what a long operation polls.
static STOP: AtomicBool = AtomicBool::new(false);
/// Number of [`StopSignals`] guards alive (runs in progress).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Whether the handlers are registered.
static REGISTERED: Mutex<bool> = Mutex::new(false);

/// While alive, SIGINT / SIGTERM stop the run (see the module doc).
pub(crate) struct StopSignals {
    _private: (),
}

impl StopSignals {
    /// Registers the handlers (once per process) and starts listening.
    pub fn install() -> Result<Self> {
        let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        if !*registered {
            let mut ids = Vec::new();
            for sig in [SIGINT, SIGTERM] {
                // SAFETY: `on_signal` runs inside the signal handler and only does atomic
                // operations on statics, `_exit` and the default action's emulation, all
                // async-signal-safe.
                match unsafe { signal_hook::low_level::register(sig, move || on_signal(sig)) } {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        for id in ids {
                            signal_hook::low_level::unregister(id);
                        }
                        return Err(TrainError::Io("<signal handler>".into(), e));
                    }
                }
            }
            *registered = true;
        }
        // The first run of a batch of concurrent ones starts from a clean slate.
        if ACTIVE.fetch_add(1, Ordering::SeqCst) == 0 {
            FIRST.store(0, Ordering::SeqCst);
            STOP.store(false, Ordering::SeqCst);
        }
        Ok(StopSignals { _private: () })
    }

    /// The first signal received (SIGINT 2, SIGTERM 15), if any.
    pub fn received(&self) -> Option<i32> {
        match FIRST.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// The error of a run stopped before its first step by the first signal received
    /// (SIGTERM when asked before any arrived), `during` saying what was interrupted.
    pub fn interrupted(&self, during: String) -> TrainError {
        TrainError::Interrupted {
            signal: self.received().unwrap_or(SIGTERM),
            during,
        }
    }

    /// Set once a signal has arrived: for operations that poll (the cache build).
    pub fn stop_flag(&self) -> &'static AtomicBool {
        &STOP
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The action of SIGINT and SIGTERM (runs in the signal handler).
fn on_signal(sig: i32) {
    if ACTIVE.load(Ordering::SeqCst) == 0 {
        // Outside training: terminate as if no handler were installed.
        let _ = signal_hook::low_level::emulate_default_handler(sig);
        return;
    }
    match FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => STOP.store(true, Ordering::SeqCst),
        Err(earlier) => signal_hook::low_level::exit(128 + earlier),
    }
}
