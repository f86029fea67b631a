//! One module per subcommand.
pub mod bench;
pub mod bench_data;
pub mod bench_memory;
pub mod bench_model;
pub mod bench_pnp;
pub mod bench_prox;
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
