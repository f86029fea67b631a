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
    /// A data-parallel collective or rendezvous failed (a rank died, hung, or the weights
    /// differ between ranks): the message names the rank.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// Another trainer holds the run folder's lock (its PID and host are in the message).
    #[error("{0}")]
    InUse(String),
    /// SIGINT / SIGTERM arrived before the first step (e.g. during the decode-cache build):
    /// the run stopped without a checkpoint, having removed what it had started writing.
    #[error("{during} ({name})", name = signal_name(*.signal))]
    Interrupted {
        /// The first signal received (SIGINT 2, SIGTERM 15): exit with `128 + signal`.
        signal: i32,
        /// What was interrupted and what was cleaned up (`interrupted while …`).
        during: String,
    },
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub(crate) fn signal_name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
