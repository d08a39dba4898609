//! `classmod`: the umbrella package of the workspace. It holds no code of its own; it exists so
//! that `tests/` (cross-crate integration tests) and `benches/` (criterion benchmarks) can depend
//! on every member crate. Re-exports keep test imports short.
pub use classmod_boards as boards;
pub use classmod_host as host;
pub use classmod_runtime as runtime;
