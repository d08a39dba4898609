//! The architecture of a CIFAR-style ResNet-(6n+2) (He et al. 2016, section 4.2), and the exact
//! list of parameter tensors (PyTorch names and shapes) it implies. The tensor list is the single
//! source of truth used to validate imports and model files.

use serde::{Deserialize, Serialize};

use crate::model::network::{BlockKind, BlockSpec, Network, Stage, Stem};
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

    /// The network the engines build: the CIFAR 3x3 stem, three stages of basic blocks (the
    /// first block of stages 2 and 3 with stride 2).
    pub fn network(&self) -> Network {
        let stage = |s: usize| Stage {
            block: BlockKind::Basic,
            blocks: self.blocks_per_stage,
            channels: self.widths[s],
            stride: if s == 0 { 1 } else { 2 },
        };
        Network {
            in_channels: self.in_channels,
            stem: Stem::Cifar3x3 { channels: self.widths[0] },
            stages: (0..3).map(stage).collect(),
            shortcut: self.shortcut,
            num_classes: self.num_classes,
        }
    }

    /// All residual blocks in forward order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        self.network().blocks()
    }

    /// Every parameter tensor, by its canonical PyTorch name, with its shape, in forward order.
    /// Batch-norm buffers (`running_mean`, `running_var`) are included; `num_batches_tracked` is not.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.network().tensor_shapes()
    }

    /// Multiply-accumulate operations of one forward pass on an `h` x `w` input (convolutions and
    /// the linear layer), for throughput reports.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.network().macs(h, w)
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
