//! The model crate's error type.
use std::path::PathBuf;

/// Everything that can go wrong when building, running, saving or loading a denoiser.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A libtorch call failed (shape mismatch, out of memory, unsupported device, ...).
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A checkpoint file is malformed, truncated or not one of ours.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint's weights do not fit the architecture it declares.
    #[error("{path}: key `{key}`: {reason}")]
    Weight {
        /// The file concerned.
        path: PathBuf,
        /// The tensor name that is missing, unexpected or mis-shaped.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration or an argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint's metadata could not be serialised.
    #[error("cannot serialise the checkpoint metadata")]
    Serialise(#[source] serde_json::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            error,
        }
    }
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ModelError::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn weight(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::Weight {
            path: path.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// libtorch's message is part of this error's own text, so the `TchError` is not also its
/// `source()`: a chain printer shows it once (thiserror's `#[from]` would chain it as well).
impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        ModelError::Torch(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
