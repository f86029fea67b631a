//! One module per subcommand.
pub mod bench;
pub mod denoise;
pub mod import;
pub mod info;
