//! The bench crate's error type.
use std::path::PathBuf;

/// Errors of the benchmarks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A libtorch call failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The model crate failed (checkpoint I/O, shapes).
    #[error(transparent)]
    Model(#[from] gradstep_model::ModelError),
    /// The data crate failed.
    #[error(transparent)]
    Data(#[from] gradstep_data::DataError),
    /// The training step failed.
    #[error(transparent)]
    Train(#[from] gradstep_train::TrainError),
    /// A restoration failed.
    #[error(transparent)]
    Pnp(#[from] gradstep_pnp::PnpError),
    /// Reading or writing a file or folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The PyTorch anchor could not be run or printed no usable number.
    #[error("{0}")]
    Anchor(String),
    /// A CUDA graph could not be captured or replayed.
    #[error(transparent)]
    CudaGraph(#[from] gradstep_model::cuda::CudaGraphError),
    /// The options cannot be combined (the message names them).
    #[error("{0}")]
    Options(String),
    /// A benchmark could not produce its result (the message says which check failed).
    #[error("{0}")]
    Failed(String),
    /// What was being done when `source` failed.
    #[error("{what}")]
    Context {
        /// The work that failed.
        what: String,
        /// Why.
        source: Box<BenchError>,
    },
}

impl BenchError {
    /// `self` with `what` (the work that failed) in front.
    pub fn context(self, what: impl Into<String>) -> Self {
        BenchError::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The message and those of its causes, joined by `: ` (as a command prints an error).
    pub fn chain_text(&self) -> String {
        let mut parts = vec![self.to_string()];
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        parts.join(": ")
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, BenchError>;
