//! Progress of long loops on stderr: an `indicatif` bar with ETA on a terminal; elsewhere
//! (a log file, a Slurm job, a pipe) a plain line about every tenth of the work, so logs stay
//! short and still show how far a job got.
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress over `total` units of work (restorations, images).
pub struct Progress {
    bar: ProgressBar,
    what: &'static str,
    total: u64,
    done: u64,
    /// `done` when the last plain line was printed.
    reported: u64,
    start: Instant,
}

impl Progress {
    /// A progress over `total` units named `what` (plural, e.g. `restorations`).
    pub fn new(total: u64, what: &'static str) -> Self {
        // Draws on stderr, hidden when stderr is not a terminal.
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what}, ETA {{eta}}"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Progress {
            bar,
            what,
            total,
            done: 0,
            reported: 0,
            start: Instant::now(),
        }
    }

    /// Counts `n` more units done.
    pub fn advance(&mut self, n: usize) {
        self.done += n as u64;
        self.bar.inc(n as u64);
        let step = (self.total / 10).max(1);
        if self.bar.is_hidden() && (self.done - self.reported >= step || self.done == self.total) {
            self.reported = self.done;
            eprintln!("{}", self.plain_line(self.start.elapsed()));
        }
    }

    /// `12/48 restorations, 30 s elapsed, ETA 90 s`.
    fn plain_line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let eta = if self.done == 0 {
            "?".to_string()
        } else {
            format!(
                "{:.0} s",
                secs * (self.total - self.done.min(self.total)) as f64 / self.done as f64
            )
        };
        format!(
            "{}/{} {}, {secs:.0} s elapsed, ETA {eta}",
            self.done, self.total, self.what
        )
    }

    /// Prints a line above the bar (or as is when there is no bar).
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_extrapolate_the_eta_from_the_rate_so_far() {
        let mut p = Progress::new(40, "restorations");
        p.done = 10;
        assert_eq!(
            p.plain_line(Duration::from_secs(30)),
            "10/40 restorations, 30 s elapsed, ETA 90 s"
        );
        p.done = 0;
        assert_eq!(
            p.plain_line(Duration::from_secs(1)),
            "0/40 restorations, 1 s elapsed, ETA ?"
        );
    }
}
