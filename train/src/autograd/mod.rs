//! The autograd twins: [`AutogradResNet`] and [`AutogradBranch`], the slice engine's networks
//! written with candle's differentiable ops, and [`Sgd`] on candle `Var`s. They share names and
//! initial values with the slice engine, so a step of one is held to a step of the other in
//! tests (an independent reference: candle derives the backward itself). On a CUDA device they
//! are the engine, since candle's kernels run there and the slice engine does not.

pub mod branch;
pub mod resnet;
pub mod sgd;

pub use branch::AutogradBranch;
pub use resnet::AutogradResNet;
pub use sgd::Sgd;
