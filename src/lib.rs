//! `classmod`: the umbrella package of the workspace. It exists so that `tests/` (cross-crate
//! integration tests) and `benches/` (criterion benchmarks) can depend on every member crate;
//! its only code is [`fixtures`], the real packed directories they share. Re-exports keep test
//! imports short.
pub use classmod_boards as boards;
pub use classmod_edge as edge;
pub use classmod_host as host;
pub use classmod_runtime as runtime;
pub use classmod_train as train;

pub mod fixtures;
