//! Progress reporting: an indicatif bar (steps/s, loss, ETA) on a terminal, plain log lines
//! otherwise (Slurm logs, pipes), and messages that do not tear the bar.
//!
//! Lines go to stdout. When stdout fails (its reader went away: `gradstep train | head`;
//! a full disk under a redirected log), printing stops and training goes on: losing the
//! log is no reason to lose the run. The CLI ignores SIGPIPE for `train`, so that such a
//! write fails with `EPIPE` instead of killing the process.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    start_step: u64,
    quiet: bool,
    /// A write to stdout failed: nothing more is printed there.
    stdout_failed: AtomicBool,
}

impl Progress {
    /// Progress over steps `start..total`; a bar when stderr is a terminal and `quiet` is off.
    pub fn new(start: u64, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(start);
            bar.reset_eta();
            bar
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            start_step: start,
            quiet,
            stdout_failed: AtomicBool::new(false),
        }
    }

    /// Steps per second since the start (or the resume).
    pub fn rate(&self, step: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (step - self.start_step) as f64 / secs
        } else {
            0.0
        }
    }

    /// Reports step `step` done with training loss `loss` and `extra` (e.g. the Prox
    /// penalty's Hessian norm estimates; may be empty); `log_line` asks for a plain line when
    /// there is no bar.
    pub fn step(&self, step: u64, loss: f64, lr: f64, extra: &str, log_line: bool) {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("  {extra}")
        };
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(format!("loss {loss:.3e}  lr {lr:.1e}{extra}"));
            }
            None if log_line && !self.quiet => {
                let rate = self.rate(step);
                let eta = if rate > 0.0 {
                    (self.total - step) as f64 / rate
                } else {
                    f64::NAN
                };
                self.print(&format!(
                    "step {step}/{}  loss {loss:.4e}  lr {lr:.2e}{extra}  {rate:.2} steps/s  ETA {}",
                    self.total,
                    format_secs(eta)
                ));
            }
            None => {}
        }
    }

    /// A message line (validation results, checkpoints, warnings).
    pub fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => self.print(text),
        }
    }

    /// Whether a write to stdout has failed (and printing there stopped).
    pub fn stdout_failed(&self) -> bool {
        self.stdout_failed.load(Ordering::Relaxed)
    }

    /// One line on stdout, until a write fails.
    fn print(&self, line: &str) {
        if self.stdout_failed() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            self.stdout_failed.store(true, Ordering::Relaxed);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn format_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
