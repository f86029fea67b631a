//! The data crate's integration tests (one binary: libtorch is linked once).
mod common;
mod conversions;
mod corrupt;
mod listing;
mod metrics_nan;
mod sampler;
mod validation;
