//! The CPU execution path: the model's operations on NHWC activations with weights packed once
//! at load (`conv.rs`: tiled patch gathering, the `gemm` crate's micro-kernels, and a fused
//! epilogue of bias, residual add, ReLU and node mask). Candle stays the tensor type at the
//! boundary and the path for other devices.

pub mod conv;
pub mod net;
