//! Data-parallel runtime for gradstep: PyTorch's own distributed runtime, c10d, reached
//! through a small C++ shim (`csrc/dist_ext.cpp`) and wrapped in a safe [`ProcessGroup`],
//! plus the launch environment of torchrun and Slurm ([`LaunchEnv`]).
//!
//! Nothing here moves bytes itself: the store (TCPStore / FileStore), the collectives
//! (Gloo on the CPU, NCCL on CUDA) and their timeouts are c10d's. What this crate adds is
//! the part c10d leaves to its caller: reading who we are from the launcher's variables,
//! checking that every rank joined, and naming the rank that is missing when a collective
//! fails.
mod error;
mod group;
mod launch;

pub use error::DistError;
pub use group::{Backend, ProcessGroup, ReduceOp, Rendezvous};
pub use launch::{expand_hostlist, LaunchEnv, Launcher};
