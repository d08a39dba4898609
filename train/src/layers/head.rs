//! The head: global average pooling, then a linear layer of `outputs` logits per image (the
//! classes of a ResNet, the one logit of a branch).

use super::{Plane, Values};
use crate::sgd::Param;
use crate::TrainError;

/// Pooling and the linear layer `{name}.weight` `(outputs, width)`, `{name}.bias` `(outputs)`.
#[derive(Debug, Clone)]
pub struct Head {
    name: String,
    outputs: usize,
    width: usize,
    pub(crate) weight: Param,
    pub(crate) bias: Param,
    /// Pooled features `(width, B)` and logits `(B, outputs)` of the last forward.
    feats: Vec<f32>,
    pub(crate) logits: Vec<f32>,
}

impl Head {
    pub(crate) fn from_values(name: &str, outputs: usize, width: usize, v: &mut Values) -> Result<Self, TrainError> {
        Ok(Head {
            weight: Param::new(v.take(&format!("{name}.weight"), outputs * width)?),
            bias: Param::new(v.take(&format!("{name}.bias"), outputs)?),
            name: name.into(),
            outputs,
            width,
            feats: Vec::new(),
            logits: Vec::new(),
        })
    }

    pub(crate) fn values(&self, into: &mut Vec<(String, Vec<f32>)>) {
        into.push((format!("{}.weight", self.name), self.weight.value.clone()));
        into.push((format!("{}.bias", self.name), self.bias.value.clone()));
    }

    /// The logits of channel-major `x` on plane `p`.
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane) {
        let (hw, batch, width, o) = (p.height * p.width, p.batch, self.width, self.outputs);
        self.feats.resize(width * batch, 0.0);
        for (f, plane) in self.feats.iter_mut().zip(x.chunks(hw)) {
            *f = plane.iter().sum::<f32>() / hw as f32;
        }
        self.logits.resize(batch * o, 0.0);
        let w = &self.weight.value;
        for (b, row) in self.logits.chunks_mut(o).enumerate() {
            for (k, z) in row.iter_mut().enumerate() {
                *z = self.bias.value[k] + (0..width).map(|c| w[k * width + c] * self.feats[c * batch + b]).sum::<f32>();
            }
        }
    }

    /// From `dlogits` `(B, outputs)`: the parameter gradients, and the gradient at the pooled
    /// input (plane `p`) into `d`.
    pub(crate) fn backward(&mut self, dlogits: &[f32], p: Plane, d: &mut Vec<f32>) {
        let (hw, batch, width, o) = (p.height * p.width, p.batch, self.width, self.outputs);
        for k in 0..o {
            self.bias.grad[k] = (0..batch).map(|b| dlogits[b * o + k]).sum();
            for c in 0..width {
                self.weight.grad[k * width + c] =
                    (0..batch).map(|b| dlogits[b * o + k] * self.feats[c * batch + b]).sum();
            }
        }
        d.resize(width * p.len(), 0.0);
        let w = &self.weight.value;
        for (i, chunk) in d.chunks_mut(hw).enumerate() {
            let (c, b) = (i / batch, i % batch);
            let g: f32 = (0..o).map(|k| dlogits[b * o + k] * w[k * width + c]).sum();
            chunk.fill(g / hw as f32);
        }
    }

    pub(crate) fn params(&self) -> [&Param; 2] {
        [&self.weight, &self.bias]
    }

    pub(crate) fn params_mut(&mut self) -> [&mut Param; 2] {
        [&mut self.weight, &mut self.bias]
    }
}
