//! classmod-host: the workstation side of classmod. A library first (the `classmod` binary is a
//! thin CLI over it, and the integration tests call it directly): PyTorch import, datasets,
//! evaluation, training, decomposition, packing (and Mender artifacts of it), the experiments, and the speed comparison with
//! PyTorch (whose side is a development tool run by path, not compiled in).

pub mod bench;
pub mod compose_eval;
pub mod dataset;
pub mod decompose;
pub mod demo;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod import;
pub mod mender_artifact;
pub mod pack;
pub mod plot;
pub mod progress;
pub mod recalibrate;
pub mod report;
pub mod train;
pub mod verify;
pub use error::HostError;
