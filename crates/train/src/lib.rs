//! Training of Gradient-Step and Proximal denoisers.
#![deny(missing_docs)]

pub mod adam;
mod error;

pub use adam::{Adam, AdamConfig};
pub use error::{Result, TrainError};
