//! The architecture of a CIFAR-style ResNet-(6n+2) (He et al. 2016, section 4.2), and the exact
//! list of parameter tensors (PyTorch names and shapes) it implies. The tensor list is the single
//! source of truth used to validate imports and model files.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::Result;

/// How a block whose shape changes carries its input to the residual add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shortcut {
    /// Option A: parameter-free; take every second pixel and zero-pad the new channels equally
    /// on both sides (the original CIFAR ResNets).
    A,
    /// Option B: a 1x1 convolution (with the block's stride) followed by batch norm, stored as
    /// `shortcut.0` / `shortcut.1`.
    B,
}

/// A CIFAR-style ResNet: a 3x3 stem, three stages of `blocks_per_stage` BasicBlocks (the first
/// block of stages 2 and 3 has stride 2), global average pooling and one linear layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// n in ResNet-(6n+2).
    pub blocks_per_stage: usize,
    /// Channel width of each stage; the stem has the width of the first stage.
    pub widths: [usize; 3],
    /// How blocks that change shape add their input (option A or B).
    pub shortcut: Shortcut,
    /// Channels of the input images (3 for RGB, 1 for gray).
    pub in_channels: usize,
    /// Outputs of the linear layer: one per class.
    pub num_classes: usize,
}

/// Batch-norm epsilon of the PyTorch models we import (`nn.BatchNorm2d` default).
pub const BN_EPS: f64 = 1e-5;

/// One stage-block position: `layer{stage+1}.{block}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Stage, from 0.
    pub stage: usize,
    /// Block within its stage, from 0.
    pub index: usize,
    /// Channels the block takes.
    pub in_planes: usize,
    /// Channels the block gives.
    pub planes: usize,
    /// Stride of its first convolution (2 where a stage halves the plane).
    pub stride: usize,
}

impl BlockSpec {
    /// The block's tensor-name prefix, e.g. `layer2.0`.
    pub fn prefix(&self) -> String {
        format!("layer{}.{}", self.stage + 1, self.index)
    }
    /// Whether the identity cannot be used as the shortcut.
    pub fn changes_shape(&self) -> bool {
        self.stride != 1 || self.in_planes != self.planes
    }
}

impl ResNetConfig {
    /// The classic CIFAR ResNet of the given depth (20, 32, 44, 56, 110, ...), option A.
    pub fn cifar(depth: usize, in_channels: usize, num_classes: usize) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(Error::InvalidArchitecture { reason: format!("depth {depth} is not 6n+2 with n >= 1") });
        }
        let cfg = ResNetConfig {
            blocks_per_stage: (depth - 2) / 6,
            widths: [16, 32, 64],
            shortcut: Shortcut::A,
            in_channels,
            num_classes,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Layers counted as the paper does: `6n + 2`.
    pub fn depth(&self) -> usize {
        6 * self.blocks_per_stage + 2
    }

    /// A short human name, e.g. `resnet20` or `resnet8-b[8,16,32]`.
    pub fn name(&self) -> String {
        let mut s = format!("resnet{}", self.depth());
        if self.shortcut == Shortcut::B {
            s.push_str("-b");
        }
        if self.widths != [16, 32, 64] {
            s.push_str(&format!("[{},{},{}]", self.widths[0], self.widths[1], self.widths[2]));
        }
        s
    }

    /// Checks every size against what this runtime builds (and what a hostile file could make it allocate).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidArchitecture { reason });
        if self.blocks_per_stage == 0 || self.blocks_per_stage > 200 {
            return bad(format!("blocks_per_stage {} out of range 1..=200", self.blocks_per_stage));
        }
        if self.widths.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("stage widths {:?} out of range 1..=4096", self.widths));
        }
        if self.shortcut == Shortcut::A {
            // Option A pads (planes - in_planes) channels, half on each side, as planes/4 each
            // side in the reference code: it only works when each stage doubles the width.
            for s in 1..3 {
                if self.widths[s] != 2 * self.widths[s - 1] || !self.widths[s].is_multiple_of(4) {
                    return bad(format!(
                        "option-A shortcuts need each stage to double a width divisible by 4, got {:?}",
                        self.widths
                    ));
                }
            }
        }
        if self.in_channels == 0 || self.in_channels > 64 {
            return bad(format!("in_channels {} out of range 1..=64", self.in_channels));
        }
        if self.num_classes < 2 || self.num_classes > 100_000 {
            return bad(format!("num_classes {} out of range 2..=100000", self.num_classes));
        }
        Ok(())
    }

    /// All residual blocks in forward order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut out = Vec::with_capacity(3 * self.blocks_per_stage);
        let mut in_planes = self.widths[0];
        for (stage, &planes) in self.widths.iter().enumerate() {
            for index in 0..self.blocks_per_stage {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                out.push(BlockSpec { stage, index, in_planes, planes, stride });
                in_planes = planes;
            }
        }
        out
    }

    /// Every parameter tensor, by its canonical PyTorch name, with its shape, in forward order.
    /// Batch-norm buffers (`running_mean`, `running_var`) are included; `num_batches_tracked` is not.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut t = Vec::new();
        let conv = |t: &mut Vec<(String, Vec<usize>)>, name: String, o: usize, i: usize, k: usize| {
            t.push((format!("{name}.weight"), vec![o, i, k, k]));
        };
        let bn = |t: &mut Vec<(String, Vec<usize>)>, name: String, c: usize| {
            for p in ["weight", "bias", "running_mean", "running_var"] {
                t.push((format!("{name}.{p}"), vec![c]));
            }
        };
        conv(&mut t, "conv1".into(), self.widths[0], self.in_channels, 3);
        bn(&mut t, "bn1".into(), self.widths[0]);
        for b in self.blocks() {
            let p = b.prefix();
            conv(&mut t, format!("{p}.conv1"), b.planes, b.in_planes, 3);
            bn(&mut t, format!("{p}.bn1"), b.planes);
            conv(&mut t, format!("{p}.conv2"), b.planes, b.planes, 3);
            bn(&mut t, format!("{p}.bn2"), b.planes);
            if self.shortcut == Shortcut::B && b.changes_shape() {
                conv(&mut t, format!("{p}.shortcut.0"), b.planes, b.in_planes, 1);
                bn(&mut t, format!("{p}.shortcut.1"), b.planes);
            }
        }
        t.push(("linear.weight".into(), vec![self.num_classes, self.widths[2]]));
        t.push(("linear.bias".into(), vec![self.num_classes]));
        t
    }

    /// Multiply-accumulate operations of one forward pass on an `h` x `w` input (convolutions and
    /// the linear layer), for throughput reports.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let mut macs = (h * w * self.widths[0] * self.in_channels * 9) as u64;
        let (mut h, mut w) = (h, w);
        for b in self.blocks() {
            if b.stride == 2 {
                h = h.div_ceil(2);
                w = w.div_ceil(2);
            }
            let hw = (h * w) as u64;
            macs += hw * (b.planes * b.in_planes * 9 + b.planes * b.planes * 9) as u64;
            if self.shortcut == Shortcut::B && b.changes_shape() {
                macs += hw * (b.planes * b.in_planes) as u64;
            }
        }
        macs + (self.widths[2] * self.num_classes) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet20_has_the_published_parameter_count() {
        // He et al. 2016, Table 6: ResNet-20 has 0.27M parameters; exactly 269,722 trainable
        // elements in the pretrained ../shared checkpoint (akamaster), BN running stats excluded.
        let cfg = ResNetConfig::cifar(20, 3, 10).unwrap();
        let params: usize = cfg
            .tensor_shapes()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 269_722);
        // ~40.8M MACs per 32x32 image (the commonly quoted 41 MFLOPs-as-MACs figure).
        let macs = cfg.macs(32, 32);
        assert!((40_000_000..42_000_000).contains(&macs), "{macs}");
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(ResNetConfig::cifar(21, 3, 10).is_err());
        assert!(ResNetConfig::cifar(20, 0, 10).is_err());
        let mut c = ResNetConfig::cifar(20, 3, 10).unwrap();
        c.widths = [16, 24, 64];
        assert!(c.validate().is_err());
        c.shortcut = Shortcut::B;
        assert!(c.validate().is_ok());
    }
}
