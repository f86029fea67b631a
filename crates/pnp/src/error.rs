//! The pnp crate's error type.
use std::path::PathBuf;

/// Errors of PnP restoration: bad inputs, file problems, and failures of libtorch or the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PnpError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The denoiser failed.
    #[error("denoiser: {0}")]
    Model(#[from] gradstep_model::ModelError),
    /// Image I/O or metrics failed.
    #[error("{0}")]
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
}

impl PnpError {
    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        PnpError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, PnpError>;
