//! The data crate's error type.
use std::path::PathBuf;

/// Errors of image I/O and data loading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// A file could not be read, decoded or written.
    #[error("{path}: {reason}")]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An argument or configuration is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A long operation (the decode cache build) was stopped on request (SIGINT / SIGTERM);
    /// what it had written was removed.
    #[error("{0}")]
    Interrupted(String),
}

impl DataError {
    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        DataError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// libtorch's message is part of this error's own text, so the `TchError` is not also its
/// `source()`: a chain printer shows it once (thiserror's `#[from]` would chain it as well).
impl From<tch::TchError> for DataError {
    fn from(e: tch::TchError) -> Self {
        DataError::Torch(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
