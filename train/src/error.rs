//! The engine's errors: values that do not fit a network, and what candle or the runtime report.

/// What went wrong building, training or saving a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A parameter or running statistic that is missing, unknown or of the wrong size.
    #[error("network values: `{name}` is missing, unknown or of the wrong size")]
    Values {
        /// The tensor's name.
        name: String,
    },

    /// A minibatch whose sizes do not match the network or each other.
    #[error("minibatch: {what}")]
    Minibatch {
        /// What does not match.
        what: String,
    },

    /// Saved state that does not fit the network it is given to (a new head on another
    /// network, momentum buffers of another one).
    #[error("{what}")]
    Mismatch {
        /// What does not fit what.
        what: String,
    },

    /// From the runtime (an architecture that does not validate, a model file).
    #[error(transparent)]
    Runtime(#[from] classmod_runtime::Error),

    /// From candle (the autograd twins, tensors of model files).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
