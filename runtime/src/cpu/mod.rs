//! The CPU execution path: the model's operations on NHWC activations with weights packed once
//! at load. `microkernel.rs` owns the micro-kernels (AVX-512, AVX2+FMA, NEON, portable, chosen
//! at run time), `conv.rs` one convolution (padding, tiles; direct or by `winograd.rs`),
//! `lanes.rs` the SIMD vocabulary of Winograd's transforms, `epilogue.rs` what follows a
//! convolution in the same pass (residual add, ReLU, node mask), `pool.rs` the max-pool of the
//! ImageNet stem and the global average pool, `net.rs` the network,
//! `recycled.rs` the activation buffers a thread reuses, `small_batch.rs` how a batch too small
//! to slice uses the cores, `team.rs` the spinning threads that share such a batch's layers,
//! `branches.rs` compact modules' branches run together on their trunk. Candle stays the tensor
//! type at the boundary and the path for other devices.

pub mod branches;
pub mod conv;
pub mod epilogue;
pub(crate) mod lanes;
pub mod microkernel;
pub mod net;
pub mod pool;
pub(crate) mod recycled;
pub mod small_batch;
pub(crate) mod team;
pub(crate) mod winograd;
