//! The classifier layer after the global average pool, as plain rows: every engine's pooled
//! features come back to the host (a few values an image), so the logits are computed here once
//! for all engines, with no tensor in between.

use candle_core::Tensor;

use crate::Result;

/// `logits = features · Wᵀ + b`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Linear {
    /// `(classes, features)`, row-major.
    weight: Vec<f32>,
    /// `(classes)`.
    bias: Vec<f32>,
}

impl Linear {
    /// From PyTorch's `linear.weight` `(classes, features)` and `linear.bias` `(classes)`.
    pub(crate) fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let weight = weight.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Linear { weight, bias })
    }

    /// Outputs.
    pub(crate) fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        4 * (self.weight.len() + self.bias.len()) as u64
    }

    /// Logits `(batch, classes)` of `batch` rows of pooled features.
    pub(crate) fn apply(&self, features: &[f32], batch: usize) -> Vec<f32> {
        let f = (features.len() / batch.max(1)).max(1);
        let mut out = Vec::with_capacity(batch * self.classes());
        for row in features.chunks_exact(f) {
            out.extend(
                self.weight
                    .chunks_exact(f)
                    .zip(&self.bias)
                    .map(|(wc, bc)| wc.iter().zip(row).map(|(a, x)| a * x).sum::<f32>() + bc),
            );
        }
        out
    }
}
