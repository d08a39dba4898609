//! The arithmetic under every layer: a convolution is im2col ([`im2col_into()`]) then one GEMM
//! ([`matmul()`]); its input gradient is the GEMM with the transposed weights then col2im, its
//! weight gradient the GEMM of the output gradient with the columns transposed. candle 0.11's
//! CPU `conv2d` is a direct tiled loop at about a quarter of the GEMM's throughput on these
//! shapes, and its backward goes through `conv_transpose2d`, about 14x slower than the forward.

pub mod im2col;
pub mod matmul;

pub use im2col::{col2im_add, im2col_into, ConvGeometry, PlaneOrder};
pub use matmul::{matmul, matmul_columns, MatRef};
