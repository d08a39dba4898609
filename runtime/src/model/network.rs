//! The network description the engines build from: an input, a stem, a list of stages (each a
//! block kind, a number of blocks, their output channels and the first block's stride), the
//! shortcut rule and the classifier's width. It owns the arithmetic every engine and every tool
//! shares: the parameter tensors (names and shapes), the blocks in forward order, the ReLU sites
//! and their activation shapes, the planes after each stage and the multiply-accumulates.
//!
//! Two families are described: the CIFAR ResNets (a 3x3 stem, three stages of basic blocks,
//! [`crate::ResNetConfig::network`]) and torchvision's ImageNet ResNets (a 7x7 stride-2 stem and
//! a max-pool, four stages of basic or bottleneck blocks, [`Network::torchvision`]). Nothing here
//! assumes three stages or one block type, and both engines run all of them.

use serde::{Deserialize, Serialize};

use crate::model::config::Shortcut;
use crate::Error;
use crate::Result;

/// The layers before the first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// A 3x3 stride-1 convolution, batch norm, ReLU (the CIFAR ResNets): keeps the plane.
    Cifar3x3 {
        /// Output channels.
        channels: usize,
    },
    /// A 7x7 stride-2 convolution (padding 3), batch norm, ReLU, then a 3x3 stride-2 max-pool
    /// (padding 1): torchvision's ImageNet ResNets. A quarter of the plane in each direction.
    ImageNet7x7 {
        /// Output channels.
        channels: usize,
    },
}

impl Stem {
    /// Output channels.
    pub fn channels(&self) -> usize {
        match *self {
            Stem::Cifar3x3 { channels } | Stem::ImageNet7x7 { channels } => channels,
        }
    }

    /// Side of the stem's square kernel.
    pub fn kernel(&self) -> usize {
        match self {
            Stem::Cifar3x3 { .. } => 3,
            Stem::ImageNet7x7 { .. } => 7,
        }
    }

    /// The plane of the stem's ReLU output (its ReLU site) for an `h` x `w` input.
    pub fn relu_plane(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Stem::Cifar3x3 { .. } => (h, w),
            Stem::ImageNet7x7 { .. } => (h.div_ceil(2), w.div_ceil(2)),
        }
    }

    /// The plane the first stage takes (after the max-pool, where there is one).
    pub fn out_plane(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Stem::Cifar3x3 { .. } => (h, w),
            Stem::ImageNet7x7 { .. } => (h.div_ceil(2).div_ceil(2), w.div_ceil(2).div_ceil(2)),
        }
    }
}

/// The residual block a stage is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Two 3x3 convolutions (`conv1` with the block's stride, `conv2`), each with batch norm;
    /// ReLU sites after `bn1` and after the residual add.
    Basic,
    /// A 1x1 convolution to `width` channels, a 3x3 at `width` with the block's stride (as
    /// torchvision places it), a 1x1 to the block's output channels, each with batch norm; ReLU
    /// sites after `bn1`, `bn2` and the residual add.
    Bottleneck {
        /// Channels of the inner convolutions (a quarter of the output for ResNet-50, half for
        /// wide_resnet50_2).
        width: usize,
    },
}

impl BlockKind {
    /// ReLU sites in one block.
    pub fn relu_sites(&self) -> usize {
        match self {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck { .. } => 3,
        }
    }
}

/// One stage: `blocks` blocks of one kind, giving `channels` channels; the first block takes
/// the previous stage's channels and has stride `stride`, the others stride 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// The block every position of the stage holds.
    pub block: BlockKind,
    /// Blocks in the stage.
    pub blocks: usize,
    /// Output channels of each block.
    pub channels: usize,
    /// Stride of the stage's first block (2 where the stage halves the plane).
    pub stride: usize,
}

impl Stage {
    /// Channels of the stage's 3x3 convolutions: its output channels for basic blocks, a
    /// bottleneck's inner width.
    pub fn inner_width(&self) -> usize {
        match self.block {
            BlockKind::Basic => self.channels,
            BlockKind::Bottleneck { width } => width,
        }
    }
}

/// One block position: `layer{stage+1}.{index}`.
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
    /// Stride of its strided convolution (2 where a stage halves the plane).
    pub stride: usize,
    /// What the block is made of.
    pub kind: BlockKind,
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

    /// The block's convolutions in forward order, each followed by its batch norm and, but
    /// for the last, a ReLU. torchvision puts a bottleneck's stride on its 3x3 (ResNet v1.5),
    /// a basic block's on its first convolution.
    pub fn convs(&self) -> Vec<BlockConv> {
        let (p, s) = (self.planes, self.stride);
        let shapes: &[(usize, usize, usize, usize)] = match self.kind {
            BlockKind::Basic => &[(p, self.in_planes, 3, s), (p, p, 3, 1)],
            BlockKind::Bottleneck { width: w } => &[(w, self.in_planes, 1, 1), (w, w, 3, s), (p, w, 1, 1)],
        };
        let prefix = self.prefix();
        shapes
            .iter()
            .enumerate()
            .map(|(i, &(out, inp, kernel, stride))| BlockConv {
                conv: format!("{prefix}.conv{}", i + 1),
                bn: format!("{prefix}.bn{}", i + 1),
                out,
                inp,
                kernel,
                stride,
            })
            .collect()
    }
}

/// One convolution of a block (padding `kernel / 2`, no bias) and the batch norm after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConv {
    /// The convolution's tensor-name prefix, e.g. `layer2.0.conv1`.
    pub conv: String,
    /// Its batch norm's, e.g. `layer2.0.bn1`.
    pub bn: String,
    /// Output channels.
    pub out: usize,
    /// Input channels.
    pub inp: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride (2 where the block halves the plane).
    pub stride: usize,
}

/// Shape of one ReLU site's activation for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReluSite {
    /// e.g. `relu0` (stem), `layer2.0.relu1` (inside a block), `layer2.0.out` (after the add).
    pub name: String,
    /// Channels of the activation.
    pub channels: usize,
    /// Rows of the activation.
    pub height: usize,
    /// Columns of the activation.
    pub width: usize,
}

/// Where a trunk ends: after its first `stages` stages and `blocks` more blocks of the next one
/// (a compact module's branch runs on from there). A stage count alone converts into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TrunkEnd {
    /// Whole stages.
    pub stages: usize,
    /// Blocks of stage `stages + 1` (fewer than it has).
    pub blocks: usize,
}

impl From<usize> for TrunkEnd {
    fn from(stages: usize) -> Self {
        TrunkEnd { stages, blocks: 0 }
    }
}

/// A ResNet as the engines build it (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Channels of the input images.
    pub in_channels: usize,
    /// The layers before the first stage.
    pub stem: Stem,
    /// The stages, in forward order.
    pub stages: Vec<Stage>,
    /// How blocks that change shape add their input.
    pub shortcut: Shortcut,
    /// Outputs of the classifier: one per class.
    pub num_classes: usize,
}

/// torchvision's ImageNet ResNet depths and their blocks per stage (`torchvision.models.resnet`).
const TORCHVISION: [(usize, [usize; 4], bool); 5] = [
    (18, [2, 2, 2, 2], false),
    (34, [3, 4, 6, 3], false),
    (50, [3, 4, 6, 3], true),
    (101, [3, 4, 23, 3], true),
    (152, [3, 8, 36, 3], true),
];

impl Network {
    /// torchvision's `resnet{depth}` (18, 34, 50, 101, 152) for `num_classes` classes, with
    /// inner bottleneck width `width_per_group` (64 for the ResNets, 128 for
    /// `wide_resnet{50,101}_2`; basic blocks take only 64, as torchvision's do).
    pub fn torchvision(depth: usize, width_per_group: usize, num_classes: usize) -> Result<Self> {
        let Some(&(_, blocks, bottleneck)) = TORCHVISION.iter().find(|(d, _, _)| *d == depth) else {
            return Err(Error::InvalidArchitecture {
                reason: format!("torchvision has no ResNet-{depth} (18, 34, 50, 101 or 152)"),
            });
        };
        if !bottleneck && width_per_group != 64 || width_per_group == 0 || width_per_group > 1024 {
            return Err(Error::InvalidArchitecture {
                reason: format!("width_per_group {width_per_group} for ResNet-{depth}"),
            });
        }
        let stages = (0..4)
            .map(|s| {
                let planes = 64 << s;
                let (block, channels) = if bottleneck {
                    (BlockKind::Bottleneck { width: planes * width_per_group / 64 }, 4 * planes)
                } else {
                    (BlockKind::Basic, planes)
                };
                Stage { block, blocks: blocks[s], channels, stride: if s == 0 { 1 } else { 2 } }
            })
            .collect();
        let net = Network {
            in_channels: 3,
            stem: Stem::ImageNet7x7 { channels: 64 },
            stages,
            shortcut: Shortcut::B,
            num_classes,
        };
        net.validate()?;
        Ok(net)
    }

    /// Checks every size against what this runtime builds (and what a hostile file could make
    /// it allocate).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidArchitecture { reason });
        if self.stages.is_empty() || self.stages.len() > 8 {
            return bad(format!("{} stages (1 to 8)", self.stages.len()));
        }
        let too_wide = |c: usize| c == 0 || c > 8192;
        if too_wide(self.stem.channels()) {
            return bad(format!("a stem of {} channels (1 to 8192)", self.stem.channels()));
        }
        for (s, st) in self.stages.iter().enumerate() {
            if st.blocks == 0 || st.blocks > 200 {
                return bad(format!("stage {} has {} blocks (1 to 200)", s + 1, st.blocks));
            }
            let inner = st.inner_width();
            if too_wide(st.channels) || too_wide(inner) {
                return bad(format!("stage {} is {} channels wide, {inner} inside (1 to 8192)", s + 1, st.channels));
            }
            if !(1..=2).contains(&st.stride) {
                return bad(format!("stage {} has stride {} (1 or 2)", s + 1, st.stride));
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

    /// Channels of the pooled features (the classifier's input): the last stage's.
    pub fn features(&self) -> usize {
        self.stages.last().map_or(self.stem.channels(), |s| s.channels)
    }

    /// Channels after stage `stages` (0: the stem's).
    pub fn channels_after(&self, stages: usize) -> usize {
        match stages {
            0 => self.stem.channels(),
            s => self.stages[s - 1].channels,
        }
    }

    /// Every residual block in forward order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut out = Vec::with_capacity(self.stages.iter().map(|s| s.blocks).sum());
        let mut in_planes = self.stem.channels();
        for (stage, st) in self.stages.iter().enumerate() {
            for index in 0..st.blocks {
                let stride = if index == 0 { st.stride } else { 1 };
                out.push(BlockSpec { stage, index, in_planes, planes: st.channels, stride, kind: st.block });
                in_planes = st.channels;
            }
        }
        out
    }

    /// Blocks of the first `stages` stages: where a trunk of that many stages ends. An error
    /// names the out-of-range request.
    pub fn blocks_until(&self, stages: usize) -> Result<usize> {
        if stages > self.stages.len() {
            return Err(Error::TrunkOutOfRange { stages, network_stages: self.stages.len() });
        }
        Ok(self.stages[..stages].iter().map(|s| s.blocks).sum())
    }

    /// Blocks before `end`: where a trunk ending there stops. An error names a stage the network
    /// lacks, or a stage's blocks asked of one that has no more.
    pub fn blocks_until_end(&self, end: TrunkEnd) -> Result<usize> {
        let whole = self.blocks_until(end.stages)?;
        if end.blocks == 0 {
            return Ok(whole);
        }
        match self.stages.get(end.stages) {
            Some(next) if end.blocks < next.blocks => Ok(whole + end.blocks),
            next => Err(Error::TrunkBlocksOutOfRange {
                stage: end.stages + 1,
                blocks: end.blocks,
                stage_blocks: next.map_or(0, |s| s.blocks),
            }),
        }
    }

    /// The first ReLU site of each block, and the number of sites: the stem's site is 0.
    pub fn first_sites(&self) -> (Vec<usize>, usize) {
        let mut site = 1;
        let firsts = self
            .blocks()
            .iter()
            .map(|b| {
                let first = site;
                site += b.kind.relu_sites();
                first
            })
            .collect();
        (firsts, site)
    }

    /// The ReLU sites in forward order, with their per-image activation shapes, for an `h` x
    /// `w` input.
    pub fn relu_sites(&self, h: usize, w: usize) -> Vec<ReluSite> {
        let site = |name: String, channels, (height, width): (usize, usize)| ReluSite { name, channels, height, width };
        let mut out = vec![site("relu0".into(), self.stem.channels(), self.stem.relu_plane(h, w))];
        let mut p = self.stem.out_plane(h, w);
        for b in self.blocks() {
            let convs = b.convs();
            for (i, c) in convs.iter().enumerate() {
                if c.stride == 2 {
                    p = (p.0.div_ceil(2), p.1.div_ceil(2));
                }
                if i + 1 < convs.len() {
                    out.push(site(format!("{}.relu{}", b.prefix(), i + 1), c.out, p));
                }
            }
            out.push(site(format!("{}.out", b.prefix()), b.planes, p));
        }
        out
    }

    /// The plane after the first `stages` stages for an `h` x `w` input (0: the stem's output,
    /// after its max-pool where it has one).
    pub fn plane_after(&self, stages: usize, h: usize, w: usize) -> (usize, usize) {
        let blocks = self.blocks_until(stages.min(self.stages.len())).unwrap_or(0);
        self.plane_after_blocks(blocks, h, w)
    }

    /// The plane after the first `blocks` blocks for an `h` x `w` input.
    pub fn plane_after_blocks(&self, blocks: usize, h: usize, w: usize) -> (usize, usize) {
        let p = self.stem.out_plane(h, w);
        self.blocks()
            .iter()
            .take(blocks)
            .fold(p, |p, b| if b.stride == 2 { (p.0.div_ceil(2), p.1.div_ceil(2)) } else { p })
    }

    /// Every parameter tensor, by its canonical name, with its shape, in forward order. Batch
    /// norm buffers (`running_mean`, `running_var`) are included; `num_batches_tracked` is not.
    /// A shortcut projection is `{block}.shortcut.{0,1}` and the classifier `linear`, whatever
    /// the file imported from called them.
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
        conv(&mut t, "conv1".into(), self.stem.channels(), self.in_channels, self.stem.kernel());
        bn(&mut t, "bn1".into(), self.stem.channels());
        for b in self.blocks() {
            let p = b.prefix();
            for c in b.convs() {
                conv(&mut t, c.conv, c.out, c.inp, c.kernel);
                bn(&mut t, c.bn, c.out);
            }
            if self.shortcut == Shortcut::B && b.changes_shape() {
                conv(&mut t, format!("{p}.shortcut.0"), b.planes, b.in_planes, 1);
                bn(&mut t, format!("{p}.shortcut.1"), b.planes);
            }
        }
        t.push(("linear.weight".into(), vec![self.num_classes, self.features()]));
        t.push(("linear.bias".into(), vec![self.num_classes]));
        t
    }

    /// Trainable parameters (weights and biases; no batch-norm buffers).
    pub fn params(&self) -> u64 {
        let shapes = self.tensor_shapes();
        let trained = shapes.iter().filter(|(n, _)| !n.contains("running_"));
        trained.map(|(_, s)| s.iter().product::<usize>() as u64).sum()
    }

    /// Multiply-accumulate operations of one forward pass on an `h` x `w` input: the stem and
    /// the blocks up to stage `stages` (all of them and the classifier when `stages` is the
    /// stage count). What a trunk of that many stages costs.
    pub fn macs_until(&self, stages: usize, h: usize, w: usize) -> u64 {
        let last = self.blocks_until(stages.min(self.stages.len())).unwrap_or(0);
        let head = if stages >= self.stages.len() { (self.features() * self.num_classes) as u64 } else { 0 };
        self.macs_until_blocks(last, h, w) + head
    }

    /// Multiply-accumulates of one `h` x `w` image through the stem and the first `blocks`
    /// blocks: what a trunk ending there costs.
    pub fn macs_until_blocks(&self, blocks: usize, h: usize, w: usize) -> u64 {
        let (sh, sw) = self.stem.relu_plane(h, w);
        let k = self.stem.kernel();
        let mut macs = (sh * sw * self.stem.channels() * self.in_channels * k * k) as u64;
        let (mut h, mut w) = self.stem.out_plane(h, w);
        for b in self.blocks().into_iter().take(blocks) {
            for c in b.convs() {
                if c.stride == 2 {
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                macs += (h * w * c.out * c.inp * c.kernel * c.kernel) as u64;
            }
            let hw = (h * w) as u64;
            if self.shortcut == Shortcut::B && b.changes_shape() {
                macs += hw * (b.planes * b.in_planes) as u64;
            }
        }
        macs
    }

    /// Multiply-accumulates of a whole forward pass on an `h` x `w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.macs_until(self.stages.len(), h, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's published figures (`torchvision.models` weights tables: parameters, and
    /// "GFLOPS" which torchvision counts as multiply-accumulates, at 224x224, 1000 classes): the
    /// description of each ImageNet ResNet gives the same numbers.
    #[test]
    fn torchvision_resnets_have_their_published_sizes() {
        for (depth, wpg, params, gmacs) in [
            (18, 64, 11_689_512u64, 1.81),
            (34, 64, 21_797_672, 3.66),
            (50, 64, 25_557_032, 4.09),
            (101, 64, 44_549_160, 7.80),
            (152, 64, 60_192_808, 11.51),
            (50, 128, 68_883_240, 11.40),
        ] {
            let net = Network::torchvision(depth, wpg, 1000).unwrap();
            assert_eq!(net.params(), params, "resnet{depth} x{wpg}");
            let g = net.macs(224, 224) as f64 / 1e9;
            assert!((g - gmacs).abs() < 0.015, "resnet{depth} x{wpg}: {g:.3} GMACs, published {gmacs}");
        }
    }

    /// A four-stage network of the next issue's shapes, described and walked without an engine:
    /// ResNet-18's 17 ReLU sites (stem, two a basic block) and ResNet-50's 49 (three a
    /// bottleneck), the planes of 224x224 (112 at the stem's ReLU, 56 after its max-pool, 7 at
    /// the end), and the trunk boundaries.
    #[test]
    fn a_four_stage_network_is_described_through_stages_and_block_kinds() {
        let r18 = Network::torchvision(18, 64, 200).unwrap();
        assert_eq!(r18.stages.len(), 4);
        let sites = r18.relu_sites(224, 224);
        assert_eq!(sites.len(), 17);
        assert_eq!((sites[0].channels, sites[0].height), (64, 112));
        assert_eq!((sites[1].name.as_str(), sites[1].height), ("layer1.0.relu1", 56));
        assert_eq!((sites[16].name.as_str(), sites[16].channels, sites[16].height), ("layer4.1.out", 512, 7));
        assert_eq!(r18.first_sites(), (vec![1, 3, 5, 7, 9, 11, 13, 15], 17));
        assert_eq!(r18.features(), 512);
        assert_eq!([0, 1, 2, 3, 4].map(|s| r18.plane_after(s, 224, 224).0), [56, 56, 28, 14, 7]);
        assert_eq!([0, 1, 2, 3, 4].map(|s| r18.blocks_until(s).unwrap()), [0, 2, 4, 6, 8]);
        assert!(matches!(r18.blocks_until(5), Err(Error::TrunkOutOfRange { stages: 5, network_stages: 4 })));
        // A trunk into a stage: layer3's first block (it halves 28 to 14) beyond two stages.
        let end = |stages, blocks| TrunkEnd { stages, blocks };
        assert_eq!((r18.blocks_until_end(end(2, 1)).unwrap(), r18.blocks_until_end(2.into()).unwrap()), (5, 4));
        assert_eq!(r18.plane_after_blocks(5, 224, 224), (14, 14));
        let (two, three) = (r18.macs_until(2, 224, 224), r18.macs_until(3, 224, 224));
        assert!(
            (two..three).contains(&r18.macs_until_blocks(5, 224, 224)) && two == r18.macs_until_blocks(4, 224, 224)
        );
        for (bad, stage, stage_blocks) in [(end(2, 2), 3, 2), (end(4, 1), 5, 0)] {
            let err = r18.blocks_until_end(bad).unwrap_err();
            assert!(
                matches!(err, Error::TrunkBlocksOutOfRange { stage: s, stage_blocks: b, .. } if (s, b) == (stage, stage_blocks)),
                "{bad:?}: {err}"
            );
        }
        let shapes = r18.tensor_shapes();
        assert!(shapes.contains(&("conv1.weight".into(), vec![64, 3, 7, 7])));
        assert!(shapes.contains(&("layer2.0.shortcut.0.weight".into(), vec![128, 64, 1, 1])));
        assert!(!shapes.iter().any(|(n, _)| n.starts_with("layer1.0.shortcut")), "layer1 keeps its shape");

        let r50 = Network::torchvision(50, 64, 10).unwrap();
        let sites = r50.relu_sites(224, 224);
        assert_eq!(sites.len(), 1 + 16 * 3);
        // layer2.0: the 1x1 on 56x56, the strided 3x3 to 28x28 (torchvision's v1.5 placement).
        let at = |name: &str| sites.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!((at("layer2.0.relu1").channels, at("layer2.0.relu1").height), (128, 56));
        assert_eq!((at("layer2.0.relu2").channels, at("layer2.0.relu2").height), (128, 28));
        assert_eq!((at("layer2.0.out").channels, at("layer2.0.out").height), (512, 28));
        assert!(r50.tensor_shapes().contains(&("layer1.0.shortcut.0.weight".into(), vec![256, 64, 1, 1])));
        assert_eq!(r50.features(), 2048);
        // A trunk's cost grows with its stages and ends at the whole network's.
        let costs: Vec<u64> = (0..=4).map(|s| r50.macs_until(s, 224, 224)).collect();
        assert!(costs.windows(2).all(|c| c[0] < c[1]) && costs[4] == r50.macs(224, 224), "{costs:?}");
    }

    #[test]
    fn bad_descriptions_are_refused_by_name() {
        assert!(Network::torchvision(20, 64, 10).is_err());
        assert!(Network::torchvision(18, 128, 10).is_err(), "basic blocks are 64 wide per group");
        let mut net = Network::torchvision(18, 64, 10).unwrap();
        net.stages[2].stride = 3;
        assert!(net.validate().unwrap_err().to_string().contains("stage 3 has stride 3"));
        net.stages.clear();
        assert!(net.validate().is_err());
    }
}
