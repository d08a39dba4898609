//! The typed errors of model loading and execution. Every variant is something a user or a
//! corrupted file can cause; none of them is a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("not a safetensors file: {reason}")]
    NotSafetensors { reason: String },

    #[error("not a classmod model: metadata key `{key}` is missing (run `classmod import` on PyTorch exports)")]
    MissingMetadata { key: &'static str },

    #[error("metadata `{key}` is invalid: {reason}")]
    BadMetadata { key: &'static str, reason: String },

    #[error("unsupported model format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: String, supported: u32 },

    #[error("tensor `{name}` is missing (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },

    #[error("unexpected tensor `{name}` (shape {shape:?}) is not part of {arch}")]
    UnexpectedTensor { name: String, shape: Vec<usize>, arch: String },

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("tensor `{name}` has dtype {found}, expected a floating-point dtype")]
    TensorDtype { name: String, found: String },

    #[error("tensor `{name}` holds a non-finite value")]
    NonFinite { name: String },

    #[error("invalid architecture: {0}")]
    BadConfig(String),

    #[error("input has shape {found:?}, the model expects [batch, {c}, {h}, {w}]", c = expected.0, h = expected.1, w = expected.2)]
    InputShape { expected: (usize, usize, usize), found: Vec<usize> },

    #[error("blob: {0}")]
    Blob(#[from] classmod_blob::BlobError),

    #[error("the blob's header and its contents disagree: {0}")]
    BlobMismatch(String),

    #[error("golden self-test failed: image {image} scores {found}, the blob says {expected}")]
    GoldenMismatch { image: usize, expected: f32, found: f32 },

    #[error("memory budget exceeded: the loaded set would need {need} bytes, the board allows {budget}")]
    BudgetExceeded { need: u64, budget: u64 },

    #[error("no module for class `{0}`")]
    UnknownClass(String),

    #[error("class `{class}` takes {}x{}x{} images, the served classes {}x{}x{}", found.0, found.1, found.2, served.0, served.1, served.2)]
    IncompatibleInput { class: String, found: (usize, usize, usize), served: (usize, usize, usize) },

    #[error("cannot use {device}: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Attaches a path to an I/O error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}
