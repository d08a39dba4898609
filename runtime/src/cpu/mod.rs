//! The CPU execution path: the model's operations on NHWC activations with weights packed once
//! at load. `microkernel.rs` owns the micro-kernels (AVX2+FMA, NEON, scalar, chosen at run
//! time), `conv.rs` one convolution (padding, tiles), `epilogue.rs` what follows it in the same
//! pass (residual add, ReLU, node mask), `net.rs` the network. Candle stays the tensor type at
//! the boundary and the path for other devices.

pub mod conv;
pub mod epilogue;
pub mod microkernel;
pub mod net;
