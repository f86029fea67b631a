//! The pnp crate's error type.
use std::path::PathBuf;

/// Errors of PnP restoration: bad inputs, file problems, and failures of libtorch or the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PnpError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// The denoiser failed.
    #[error(transparent)]
    Model(#[from] gradstep_model::ModelError),
    /// Image I/O or metrics failed.
    #[error(transparent)]
    Data(#[from] gradstep_data::DataError),
    /// A file could not be read, parsed or written.
    #[error("{path}: {reason}")]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An argument, a configuration or an input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A result the algorithms guarantee is missing: a bug of gradstep, not of the input.
    #[error("internal error: {0} (please report it)")]
    Internal(&'static str),
    /// A figure could not be drawn.
    #[error("{path}: cannot draw: {reason}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// The plotting backend's message.
        reason: String,
    },
}

impl PnpError {
    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        PnpError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// libtorch's message is part of this error's own text, so the `TchError` is not also its
/// `source()`: a chain printer shows it once (thiserror's `#[from]` would chain it as well).
impl From<tch::TchError> for PnpError {
    fn from(e: tch::TchError) -> Self {
        PnpError::Torch(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, PnpError>;
