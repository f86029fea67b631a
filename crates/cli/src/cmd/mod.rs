//! One module per subcommand.
pub mod bench;
pub mod denoise;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod import;
pub mod info;
pub mod lipschitz;
pub mod restore;
pub mod sweep;
pub mod train;
