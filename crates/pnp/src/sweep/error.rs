//! Errors of the sweep engine (configuration, records, shards, tables and figures).
//!
//! A failing *point* is not an error of the engine: it is written as a `failed` record and
//! the sweep goes on. These errors stop a command before or after the points run.
use std::path::{Path, PathBuf};

/// What can stop a sweep command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// A file or folder could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The sweep configuration is invalid (unknown key, empty axis, missing path, …).
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record file holds a line that is not a record.
    #[error("{path}:{line}: {reason}")]
    Record {
        /// The JSON Lines file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A command-line value is invalid (e.g. `--shard 4/4`).
    #[error("{0}")]
    Invalid(String),
    /// A figure could not be drawn.
    #[error("{path}: cannot draw: {reason}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// The plotting backend's message.
        reason: String,
    },
}

impl SweepError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        SweepError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn config(path: &Path, reason: impl ToString) -> Self {
        SweepError::Config {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn plot(path: &Path, reason: impl ToString) -> Self {
        SweepError::Plot {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Shorthand for results of the sweep engine.
pub type SweepResult<T> = std::result::Result<T, SweepError>;
