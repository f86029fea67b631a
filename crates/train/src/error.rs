//! The train crate's error type.

/// Errors of training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// The model crate failed (checkpoint I/O, shapes).
    #[error(transparent)]
    Model(#[from] gradstep_model::ModelError),
    /// The data crate failed.
    #[error(transparent)]
    Data(#[from] gradstep_data::DataError),
    /// A checkpoint cannot be resumed from.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The configuration is invalid (the message starts with the offending file or field).
    #[error("config: {0}")]
    Config(String),
    /// A CUDA graph of `performance.cuda_graph` could not be created, captured or replayed.
    #[error("performance.cuda_graph")]
    CudaGraph(#[from] gradstep_model::cuda::CudaGraphError),
    /// The SIGINT / SIGTERM handlers could not be installed.
    #[error("cannot install the SIGINT / SIGTERM handlers")]
    SignalHandler(#[source] std::io::Error),
    /// A checkpoint's training state or the run's `config.json` could not be serialised.
    #[error("cannot serialise {what}")]
    Serialise {
        /// `the training state` or `the config`.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The noise worker thread stopped before delivering a step's noise.
    #[error("the noise worker stopped")]
    NoiseWorkerStopped,
    /// The noise worker delivered the noise of another step than the one asked for.
    #[error("noise drawn for step {drawn_for}, asked for step {asked}")]
    NoiseOutOfStep {
        /// The step the noise was drawn for.
        drawn_for: u64,
        /// The step that asked.
        asked: u64,
    },
    /// The optimizer's parameters or gradients are not what a device step needs.
    #[error("optimizer: {0}")]
    Optimizer(String),
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

/// libtorch's message is part of this error's own text, so the `TchError` is not also its
/// `source()`: a chain printer shows it once (thiserror's `#[from]` would chain it as well).
impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
