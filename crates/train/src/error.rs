//! The train crate's error type.

/// Errors of training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The model crate failed (checkpoint I/O, shapes).
    #[error(transparent)]
    Model(#[from] gradstep_model::ModelError),
    /// The data crate failed.
    #[error(transparent)]
    Data(#[from] gradstep_data::DataError),
    /// A checkpoint cannot be resumed from.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {error}", path = .0.display(), error = .1)]
    Io(std::path::PathBuf, std::io::Error),
    /// The loss or the gradient became NaN or infinite.
    #[error("training diverged: {0}")]
    Diverged(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
