//! classmod-train: the training engine of classmod. What it owns:
//! - [`TrainableResNet`]: a CIFAR-style ResNet trained on plain slices (`classmod train`, the
//!   demo, fine-tuning);
//! - [`Branch`] and [`BranchSet`]: the compact modules' branches, distilled together on cached
//!   trunk activations (`decompose --kind compact`);
//! - the pieces both are made of: [`kernels`] (im2col, GEMM), [`layers`] (convolution + batch
//!   norm, basic block, pooled linear head), the [`loss`]es, PyTorch's SGD rule ([`SgdConfig`])
//!   and the learning-rate [`Schedule`]s;
//! - [`autograd`]: the same networks written with candle's differentiable ops. They are the
//!   independent reference the slice engine is held to in tests, and the path on a device the
//!   slice engine does not run on (CUDA).
//!
//! One engine, one layout: every activation is channel-major, `(C, B, H, W)`, the layout a
//! convolution GEMM `W (out, in*k*k) @ columns` produces, so no step transposes between layers.
//! Every buffer lives across steps. Through candle's autograd a step was a few dozen allocating
//! tensor ops per layer, and candle differentiates `conv2d` through a `conv_transpose2d` about
//! 14x slower than the forward on CPU; measured in `benches/train_step.rs`.
//!
//! Depends on the runtime (architectures, model files, branch specs), never the reverse; it reads
//! no dataset (the host's pipeline hands it minibatches).

pub mod autograd;
pub mod branch;
pub mod branch_set;
pub mod error;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod resnet;
pub mod schedule;
pub mod sgd;
mod stack;
#[cfg(test)]
mod testing;
pub mod trainer;

pub use branch::Branch;
pub use branch_set::{BranchSet, Minibatch};
pub use error::TrainError;
pub use resnet::TrainableResNet;
pub use schedule::Schedule;
pub use sgd::SgdConfig;
pub use trainer::Trainer;

/// PyTorch's batch-norm momentum for the running statistics (with the unbiased batch variance).
pub const BN_MOMENTUM: f64 = 0.1;

/// What a training loop needs in one import.
pub mod prelude {
    pub use crate::{Branch, BranchSet, Minibatch, Schedule, SgdConfig, TrainError, TrainableResNet, Trainer};
}
