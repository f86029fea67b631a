//! The dist crate's errors: each names what failed and, where c10d gave one, its message
//! (without c10's C++ backtrace).
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launch variable is set but unusable (`RANK=x`, `WORLD_SIZE=0`, a rank ≥ the world).
    #[error("launch environment: {name}={value:?}: {problem}")]
    LaunchVariable {
        name: &'static str,
        value: String,
        problem: String,
    },
    /// Slurm's node list could not be expanded.
    #[error("SLURM_STEP_NODELIST {list:?}: {problem}")]
    HostList { list: String, problem: String },
    /// The store could not be created or reached (wrong port, unreachable master).
    #[error("rendezvous at {at} failed: {message}")]
    Rendezvous { at: String, message: String },
    /// Some ranks never joined the rendezvous.
    #[error("rendezvous at {at}: rank(s) {missing:?} of {world} did not join within {}s", timeout.as_secs())]
    RanksMissing {
        at: String,
        missing: Vec<usize>,
        world: usize,
        timeout: Duration,
    },
    /// The process group could not be created.
    #[error("{backend} process group (rank {rank} of {world}): {message}")]
    Group {
        backend: &'static str,
        rank: usize,
        world: usize,
        message: String,
    },
    /// A collective failed and the listed ranks stopped answering: they died or hang.
    #[error("{op} failed on rank {rank}: rank(s) {missing:?} stopped answering ({message})")]
    RankLost {
        op: &'static str,
        rank: usize,
        missing: Vec<usize>,
        message: String,
    },
    /// A collective failed while every rank is still reachable.
    #[error("{op} failed on rank {rank}: {message}")]
    Collective {
        op: &'static str,
        rank: usize,
        message: String,
    },
    /// This build has no NCCL (libtorch without CUDA, or the venv lacks its headers).
    #[error("the NCCL backend is not in this build (libtorch without CUDA or without the NCCL headers); use gloo")]
    NcclUnavailable,
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}
