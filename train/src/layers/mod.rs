//! The layers networks are built of, each with its forward (training or eval mode) and its
//! backward on channel-major `(C, B, H, W)` slices: [`ConvBn`] (a convolution without bias and a
//! batch norm), [`ResidualBlock`] (a chain of them, a shortcut, ReLUs) and [`Head`] (global average
//! pool, linear), and the ImageNet stem's [`MaxPool`]. Each layer keeps the activations its
//! backward needs and its scratch between steps, so a step allocates nothing once the buffers
//! have grown.

pub mod conv_bn;
pub mod head;
pub mod max_pool;
pub mod residual_block;

pub use conv_bn::ConvBn;
pub use head::Head;
pub use max_pool::MaxPool;
pub use residual_block::{ResidualBlock, Shortcut};

use std::collections::HashMap;

use crate::TrainError;

/// Plane geometry of a batch of activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    /// Images.
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl Plane {
    /// Values of one channel of the batch.
    pub fn len(&self) -> usize {
        self.batch * self.height * self.width
    }

    /// Whether the plane is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Scratch columns shared by the layers of one network, and whether its products may spread
/// over rayon's threads (not when many networks already step in parallel, as a branch set's).
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) cols: Vec<f32>,
    pub(crate) dcols: Vec<f32>,
    pub(crate) parallel: bool,
}

impl Scratch {
    /// Scratch for a network whose products run on the calling thread (`parallel = false`) or
    /// across rayon's threads.
    pub fn new(parallel: bool) -> Self {
        Scratch { parallel, ..Scratch::default() }
    }
}

/// Images per convolution product: their columns (a few hundred KB) stay in cache between the
/// im2col that writes them and the GEMM that reads them; the whole batch's did not.
pub(crate) const CHUNK_IMAGES: usize = 16;

pub(crate) fn image_chunks(batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..batch).step_by(CHUNK_IMAGES).map(move |s| s..(s + CHUNK_IMAGES).min(batch))
}

/// `(B, C, hw)` image-major values into `out` as channel-major `(C, B, hw)`.
pub(crate) fn channel_major_into(x: &[f32], batch: usize, channels: usize, hw: usize, out: &mut Vec<f32>) {
    out.resize(x.len(), 0.0);
    for (i, image) in x.chunks(channels * hw).take(batch).enumerate() {
        for (c, plane) in image.chunks(hw).enumerate() {
            out[(c * batch + i) * hw..][..hw].copy_from_slice(plane);
        }
    }
}

pub(crate) fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `d *= (a > 0)`: the gradient through a ReLU whose output was `a`.
pub(crate) fn relu_backward(d: &mut [f32], a: &[f32]) {
    for (d, &a) in d.iter_mut().zip(a) {
        if a <= 0.0 {
            *d = 0.0;
        }
    }
}

/// Named values a network is built from (parameters and running statistics, flattened), taken
/// one by one so that a missing, misshapen or left-over name is an error.
pub(crate) struct Values(pub(crate) HashMap<String, Vec<f32>>);

impl Values {
    pub(crate) fn take(&mut self, name: &str, len: usize) -> Result<Vec<f32>, TrainError> {
        match self.0.remove(name) {
            Some(v) if v.len() == len => Ok(v),
            _ => Err(TrainError::Values { name: name.into() }),
        }
    }

    /// Succeeds when every value was taken.
    pub(crate) fn finish(self) -> Result<(), TrainError> {
        match self.0.into_keys().min() {
            Some(name) => Err(TrainError::Values { name }),
            None => Ok(()),
        }
    }
}
