//! A compact module's branch: a small network that continues from the trunk of a base (its stem
//! and first stages, computed once for every loaded class of that base) to the base's last plane,
//! at its own reduced width, and ends in pooled features for the module's head.
//!
//! The family is fixed by seven numbers ([`BranchSpec`]): an entry 3x3 convolution from the
//! trunk's channels to `width` (ReLU after), then `blocks` BasicBlocks at `width`; the base's
//! stage count and the stride of its stem say where its last plane is (a CIFAR ResNet's three
//! stages after the 3x3 stem, or torchvision's four after the ImageNet stem and its max-pool,
//! where a bottleneck base still gets a branch of basic blocks). A trunk of
//! whole stages ends on the plane of its last stage, and the entry convolution halves it (stride
//! 2); a trunk that also runs the first blocks of the next stage (`trunk_blocks`, what a base of
//! many classes needs: there the branch starts from features its base learnt for its own
//! classes) ends on that stage's plane, and the entry keeps it (stride 1). The first blocks halve
//! the plane for each base stage the entry did not reach (a 1x1 projection shortcut each), so
//! every branch ends on the plane the base's last stage has. Batch norm is folded in before the weights are
//! stored, so a branch is convolutions, bias adds, ReLUs and residual adds only, on the same
//! layers ([`ConvBn`], [`Block`]) and CPU path as the base.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::cpu::conv::{PackedConv, Plane};
use crate::model::graph::NoHook;
use crate::model::layers::{Block, BlockShortcut, ConvBn};
use crate::model::network::{Network, Stem, TrunkEnd};
use crate::{Error, Result};

/// The widest branch and the most blocks a stored branch may name (bounds on untrusted metadata
/// before anything is allocated from it; a branch wider than its base would not be compact).
const MAX_WIDTH: usize = 1024;
const MAX_BLOCKS: usize = 64;

/// The shape of a branch (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
// A key this build does not know may change what the branch runs on: refused, not ignored.
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// Stages of the base the trunk covers (1 or 2); the branch starts after stage
    /// `trunk_stages`.
    pub trunk_stages: usize,
    /// Blocks of stage `trunk_stages + 1` the trunk runs too (0: it ends with stage
    /// `trunk_stages`). Absent from the metadata of branches without them, as before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trunk_blocks: usize,
    /// Channels of the trunk's activation: the base's width of the stage the trunk ends in.
    pub in_channels: usize,
    /// The branch's channel width.
    pub width: usize,
    /// BasicBlocks after the entry convolution.
    pub blocks: usize,
    /// Stages of the base (3 for the CIFAR ResNets, 4 for torchvision's): the branch ends on
    /// the last one's plane. Absent from the metadata of three-stage bases, as before it existed.
    #[serde(default = "three", skip_serializing_if = "is_three")]
    pub base_stages: usize,
    /// How many input pixels a side of one pixel of the base's first stage covers: 1 after the
    /// CIFAR stem, 4 after the ImageNet stem's stride-2 convolution and max-pool. Absent where 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub stem_stride: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn three() -> usize {
    3
}

fn is_three(n: &usize) -> bool {
    *n == 3
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl BranchSpec {
    /// A branch of `width` channels and `blocks` blocks after a trunk of `base` that ends at
    /// `end` (its channels the base's there).
    pub fn after(end: TrunkEnd, base: &Network, width: usize, blocks: usize) -> Self {
        let stem_stride = match base.stem {
            Stem::Cifar3x3 { .. } => 1,
            Stem::ImageNet7x7 { .. } => 4,
        };
        let spec = BranchSpec {
            trunk_stages: end.stages,
            trunk_blocks: end.blocks,
            in_channels: 0,
            width,
            blocks,
            base_stages: base.stages.len(),
            stem_stride,
        };
        let in_channels = base.stages.get(spec.trunk_stage().max(1) - 1).map_or(0, |s| s.channels);
        BranchSpec { in_channels, ..spec }
    }

    /// A branch on a CIFAR ResNet (three stages after the 3x3 stem): what tests and the
    /// experiments of that family build.
    pub fn cifar(trunk_stages: usize, trunk_blocks: usize, in_channels: usize, width: usize, blocks: usize) -> Self {
        BranchSpec { trunk_stages, trunk_blocks, in_channels, width, blocks, base_stages: 3, stem_stride: 1 }
    }

    /// Where the trunk the branch runs on ends.
    pub fn trunk_end(&self) -> TrunkEnd {
        TrunkEnd { stages: self.trunk_stages, blocks: self.trunk_blocks }
    }

    /// The stage whose plane the trunk's activation has (1-based).
    fn trunk_stage(&self) -> usize {
        self.trunk_stages + usize::from(self.trunk_blocks > 0)
    }

    /// The entry convolution's stride: 2 after whole stages (it does what the next stage's
    /// first block does), 1 inside a stage (the trunk did).
    pub fn entry_stride(&self) -> usize {
        if self.trunk_blocks == 0 {
            2
        } else {
            1
        }
    }

    /// Checks the numbers on their own (not against a base).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidArchitecture { reason: format!("a branch with {reason}") });
        if !(2..=8).contains(&self.base_stages) || ![1, 2, 4].contains(&self.stem_stride) {
            return bad(format!("a base of {} stages after a stem of stride {}", self.base_stages, self.stem_stride));
        }
        if !(1..self.base_stages).contains(&self.trunk_stages) {
            return bad(format!("a trunk of {} stages (1 to {})", self.trunk_stages, self.base_stages - 1));
        }
        if self.width == 0 || self.width > MAX_WIDTH || self.in_channels == 0 || self.in_channels > MAX_WIDTH {
            return bad(format!("width {} from {} channels", self.width, self.in_channels));
        }
        if self.trunk_blocks > MAX_BLOCKS {
            return bad(format!("a trunk of {} blocks into a stage", self.trunk_blocks));
        }
        if self.blocks < self.downsampling_blocks() || self.blocks > MAX_BLOCKS {
            return bad(format!("{} blocks after a trunk of {} stages", self.blocks, self.trunk_stages));
        }
        Ok(())
    }

    /// Blocks that halve the plane: the stages the base has after the trunk beyond the one the
    /// entry convolution reaches (the same whether the trunk runs into a stage or not: then it
    /// reached that stage's plane and the entry keeps it).
    fn downsampling_blocks(&self) -> usize {
        self.base_stages.saturating_sub(1 + self.trunk_stages)
    }

    /// The stride of block `j` (2 for the blocks that halve the plane, else 1).
    pub fn block_stride(&self, j: usize) -> usize {
        if j < self.downsampling_blocks() {
            2
        } else {
            1
        }
    }

    /// Checks the spec against the base it branches from: a trunk the base has, whose channels
    /// the branch takes.
    pub fn fits(&self, base: &Network) -> Result<(), String> {
        self.validate().map_err(|e| e.to_string())?;
        let made_for = BranchSpec::after(self.trunk_end(), base, self.width, self.blocks);
        if (self.base_stages, self.stem_stride) != (made_for.base_stages, made_for.stem_stride) {
            return Err(format!(
                "it was made for a base of {} stages after a stem of stride {}, this one has {} after one of {}",
                self.base_stages, self.stem_stride, made_for.base_stages, made_for.stem_stride
            ));
        }
        let stage_blocks = base.stages[self.trunk_stages].blocks;
        if self.trunk_blocks >= stage_blocks {
            return Err(format!(
                "its trunk runs {} blocks of stage {} but the base's stage has {stage_blocks}",
                self.trunk_blocks,
                self.trunk_stages + 1,
            ));
        }
        let stage = self.trunk_stage();
        let channels = base.stages[stage - 1].channels;
        if channels != self.in_channels {
            return Err(format!(
                "its branch takes {} channels but the base's stage {stage} gives {channels}",
                self.in_channels
            ));
        }
        Ok(())
    }

    /// Every stored tensor, its name and shape (folded weights and biases), in forward order:
    /// the single source of truth of what a branch holds.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let w = self.width;
        let mut t = Vec::new();
        let mut conv = |name: String, o: usize, i: usize, k: usize| {
            t.push((format!("{name}.weight"), vec![o, i, k, k]));
            t.push((format!("{name}.bias"), vec![o]));
        };
        conv("entry".into(), w, self.in_channels, 3);
        for j in 0..self.blocks {
            conv(format!("block{j}.conv1"), w, w, 3);
            conv(format!("block{j}.conv2"), w, w, 3);
            if self.block_stride(j) != 1 {
                conv(format!("block{j}.shortcut"), w, w, 1);
            }
        }
        t
    }

    /// The plane of the trunk's activation for an input of `h` x `w`: the stem's (the input's,
    /// or a quarter of it each way after the ImageNet stem), halved by each stage after the
    /// first.
    pub fn trunk_plane(&self, h: usize, w: usize) -> (usize, usize) {
        let halvings = self.stem_stride.trailing_zeros() as usize + self.trunk_stage() - 1;
        (0..halvings).fold((h, w), |(h, w), _| (h.div_ceil(2), w.div_ceil(2)))
    }

    /// The plane after the entry convolution, on a trunk activation of plane `h` x `w`.
    fn entry_plane(&self, h: usize, w: usize) -> (usize, usize) {
        match self.entry_stride() {
            1 => (h, w),
            _ => (h.div_ceil(2), w.div_ceil(2)),
        }
    }

    /// Stored parameters (weights and biases).
    pub fn params(&self) -> u64 {
        self.tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum()
    }

    /// Multiply-accumulates of one image whose trunk activation has plane `h` x `w`.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (mut h, mut w) = self.entry_plane(h, w);
        let c = self.width as u64;
        let mut macs = (h * w) as u64 * c * self.in_channels as u64 * 9;
        for j in 0..self.blocks {
            if self.block_stride(j) == 2 {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
                macs += (h * w) as u64 * c * c; // the 1x1 projection
            }
            macs += 2 * (h * w) as u64 * c * c * 9;
        }
        macs
    }
}

/// A branch's folded weights as they are stored: plain values, checked against the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchWeights {
    spec: BranchSpec,
    tensors: BTreeMap<String, Vec<f32>>,
}

impl BranchWeights {
    /// Checks that `tensors` are exactly the spec's ([`BranchSpec::tensor_shapes`]), of the
    /// right lengths and finite.
    pub fn new(spec: BranchSpec, tensors: BTreeMap<String, Vec<f32>>) -> Result<Self> {
        spec.validate()?;
        let shapes = spec.tensor_shapes();
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let Some(values) = tensors.get(name) else {
                return Err(Error::MissingTensor { name: format!("branch.{name}"), expected: shape.clone() });
            };
            if values.len() != n {
                return Err(Error::TensorLength {
                    name: format!("branch.{name}"),
                    expected: shape.clone(),
                    found: values.len(),
                });
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { name: format!("branch.{name}") });
            }
        }
        if let Some((extra, v)) = tensors.iter().find(|(k, _)| !shapes.iter().any(|(n, _)| n == *k)) {
            return Err(Error::UnexpectedTensor {
                name: format!("branch.{extra}"),
                shape: vec![v.len()],
                arch: format!("a branch of width {} with {} blocks", spec.width, spec.blocks),
            });
        }
        Ok(BranchWeights { spec, tensors })
    }

    /// The shape.
    pub fn spec(&self) -> &BranchSpec {
        &self.spec
    }

    /// The stored tensors by name (without the `branch.` prefix), with their shapes.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, Vec<usize>, &[f32])> {
        self.spec.tensor_shapes().into_iter().map(|(name, shape)| {
            let (name, values) = self.tensors.get_key_value(&name).expect("checked in new");
            (name.as_str(), shape, values.as_slice())
        })
    }

    /// Bytes the stored values take.
    pub fn bytes(&self) -> u64 {
        4 * self.spec.params()
    }

    /// Bytes a served branch holds on a trunk activation of plane `h` x `w`
    /// ([`BranchSpec::trunk_plane`]): the stored values, and the CPU path's packed copy of them,
    /// each convolution as `PackedConv::for_plane` packs it for its plane (in Winograd form where
    /// that runs, 16/9 or 36/9 of its weights; whole panels of 16 output channels).
    pub fn served_bytes(&self, h: usize, w: usize) -> u64 {
        let (spec, c) = (self.spec, self.spec.width);
        let plane = |height, width| Plane { height, width };
        let mut floats = PackedConv::planned_floats([c, spec.in_channels, 3, 3], spec.entry_stride(), 1, plane(h, w));
        let (mut h, mut w) = spec.entry_plane(h, w);
        for j in 0..spec.blocks {
            let stride = spec.block_stride(j);
            floats += PackedConv::planned_floats([c, c, 3, 3], stride, 1, plane(h, w));
            if stride != 1 {
                floats += PackedConv::planned_floats([c, c, 1, 1], stride, 0, plane(h, w));
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            floats += PackedConv::planned_floats([c, c, 3, 3], 1, 1, plane(h, w));
        }
        self.bytes() + 4 * floats
    }

    /// The values of stored tensor `name` (one the spec names).
    pub(crate) fn values(&self, name: &str) -> &[f32] {
        &self.tensors[name]
    }

    fn conv(&self, name: &str, stride: usize, device: &Device) -> Result<ConvBn> {
        let w = &self.tensors[&format!("{name}.weight")];
        let b = &self.tensors[&format!("{name}.bias")];
        let (out, k) = (b.len(), if name.ends_with("shortcut") { 1 } else { 3 });
        let weight = Tensor::from_slice(w, (out, w.len() / (out * k * k), k, k), device)?;
        Ok(ConvBn::from_folded(weight, Tensor::from_slice(b, out, device)?, stride)?)
    }
}

/// A branch ready to run on candle's operations, on one device. (On the CPU path a group's
/// branches run together instead: `engine/cpu.rs`.)
#[derive(Debug, Clone)]
pub struct Branch {
    spec: BranchSpec,
    entry: ConvBn,
    blocks: Vec<Block>,
}

impl Branch {
    /// Builds `weights` on `device`.
    pub(crate) fn build(weights: &BranchWeights, device: &Device) -> Result<Self> {
        let spec = weights.spec;
        let entry = weights.conv("entry", spec.entry_stride(), device)?;
        let blocks = (0..spec.blocks)
            .map(|j| {
                let stride = spec.block_stride(j);
                let shortcut = if stride == 1 {
                    BlockShortcut::Identity
                } else {
                    BlockShortcut::Projection(weights.conv(&format!("block{j}.shortcut"), stride, device)?)
                };
                Ok(Block::basic(
                    weights.conv(&format!("block{j}.conv1"), stride, device)?,
                    weights.conv(&format!("block{j}.conv2"), 1, device)?,
                    shortcut,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Branch { spec, entry, blocks })
    }

    /// The shape.
    pub fn spec(&self) -> &BranchSpec {
        &self.spec
    }

    /// The blocks after the entry convolution.
    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Pooled features `(B, width)` of a trunk activation `(B, C, H, W)` on candle's operations.
    pub fn forward(&self, trunk: &Tensor) -> Result<Tensor> {
        let mut x = self.entry.forward(&trunk.to_dtype(self.entry.dtype())?)?.relu()?;
        for b in &self.blocks {
            x = b.forward_hooked(&x, 0, &mut NoHook)?;
        }
        Ok(x.to_dtype(candle_core::DType::F32)?.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    /// The same branch computing in `dtype` (its base's precision).
    pub(crate) fn into_dtype(self, dtype: candle_core::DType) -> Result<Self> {
        Ok(Branch {
            spec: self.spec,
            entry: self.entry.to_dtype(dtype)?,
            blocks: self.blocks.iter().map(|b| b.to_dtype(dtype)).collect::<candle_core::Result<_>>()?,
        })
    }

    /// Bytes the built branch's tensors hold.
    pub fn resident_bytes(&self) -> u64 {
        self.entry.weight_bytes() + self.blocks.iter().map(Block::weight_bytes).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::cpu_branches;
    use crate::engine::Images;
    use crate::testing::tiny_model::{compact_after, tiny_model, tiny_model_14, tiny_model_b};
    use crate::ResNet;

    /// The branch on the CPU path (packed convolutions, Winograd, fused epilogues) against the
    /// same network written out op by op with plain candle operations on the stored values (the
    /// reference), after a trunk of one and of two stages, and of those and a block of the next;
    /// and on four-stage bases of torchvision's layout (the ImageNet stem, basic and bottleneck
    /// blocks) after one, two and three stages, where the branch halves the plane once more.
    #[test]
    fn the_branch_computes_what_plain_candle_operations_compute() {
        use crate::testing::tiny_model::tiny_torchvision;
        let end = |stages, blocks| TrunkEnd { stages, blocks };
        // Each case: the base, the trunk's end, and the strides of the branch's two blocks (the
        // entry halves the plane after whole stages; the blocks halve it for the stages left).
        for (model, end, strides) in [
            (tiny_model(3), end(1, 0), [2, 1]),
            (tiny_model(4), end(2, 0), [1, 1]),
            (tiny_model_b(5), end(1, 0), [2, 1]),
            (tiny_model_b(6), end(2, 0), [1, 1]),
            (tiny_model_14(7), end(1, 1), [2, 1]),
            (tiny_model_14(8), end(2, 1), [1, 1]),
            (tiny_torchvision(9, true, [1, 1, 1, 1], 64), end(1, 0), [2, 2]),
            (tiny_torchvision(10, false, [1, 1, 1, 1], 64), end(2, 0), [2, 1]),
            (tiny_torchvision(11, true, [1, 1, 2, 1], 64), end(2, 1), [2, 1]),
            (tiny_torchvision(12, true, [1, 1, 1, 1], 64), end(3, 0), [1, 1]),
        ] {
            let m = compact_after(&model, 1, end, 8, 2, 11);
            let weights = m.as_compact().unwrap();
            let spec = weights.spec();
            let base = ResNet::new(&model, &Device::Cpu).unwrap();
            let input = &model.meta.input;
            let x: Vec<f32> = (0..5 * input.image_len()).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
            let x = Tensor::from_vec(x, (5, input.channels, input.height, input.width), &Device::Cpu).unwrap();
            let act = base.trunk(Images::Nchw(&x), end).unwrap();
            // The spec's arithmetic of the trunk's plane is the engine's.
            assert_eq!((act.height, act.width), spec.trunk_plane(input.height, input.width), "{end:?}");
            assert_eq!(act.channels, spec.in_channels, "{end:?}");
            let (h, w) = (act.height, act.width);
            let trunk = Tensor::from_vec(act.to_nchw(), (5, act.channels, h, w), &Device::Cpu).unwrap();
            let t: BTreeMap<&str, (Vec<usize>, &[f32])> = weights.tensors().map(|(n, s, v)| (n, (s, v))).collect();
            let conv = |x: &Tensor, name: &str, stride: usize| {
                let (ws, wv) = &t[format!("{name}.weight").as_str()];
                let (_, bv) = &t[format!("{name}.bias").as_str()];
                let wt = Tensor::from_slice(wv, ws.as_slice(), &Device::Cpu).unwrap();
                let bt = Tensor::from_slice(bv, (1, ws[0], 1, 1), &Device::Cpu).unwrap();
                x.conv2d(&wt, ws[3] / 2, stride, 1, 1).unwrap().broadcast_add(&bt).unwrap()
            };
            let mut a = conv(&trunk, "entry", if end.blocks == 0 { 2 } else { 1 }).relu().unwrap();
            for (j, stride) in strides.into_iter().enumerate() {
                let hidden = conv(&a, &format!("block{j}.conv1"), stride).relu().unwrap();
                let out = conv(&hidden, &format!("block{j}.conv2"), 1);
                let short = if stride == 2 { conv(&a, &format!("block{j}.shortcut"), 2) } else { a.clone() };
                a = (out + short).unwrap().relu().unwrap();
            }
            let reference = a.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
            let on_cpu_path = cpu_branches(&[weights], Plane { height: h, width: w }).unwrap();
            let nhwc = act.values.clone();
            let pass = crate::cpu::net::Pass::plain(5, crate::cpu::conv::Threads::Tiles);
            let plane = Plane { height: h, width: w };
            let cpu = on_cpu_path.features((nhwc, plane, trunk.dim(1).unwrap()), &pass).unwrap();
            let cpu = Tensor::from_vec(cpu[0].clone(), (5, 8), &Device::Cpu).unwrap();
            let candle = Branch::build(weights, &Device::Cpu).unwrap().forward(&trunk).unwrap();
            for (found, path) in [(cpu, "cpu path"), (candle, "candle")] {
                let d = (found - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-4, "{end:?}, {path}: {d}");
            }
            assert!(
                reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 1e-3,
                "a branch that computes something"
            );
        }
    }

    #[test]
    fn specs_are_checked_and_counted() {
        let spec = BranchSpec::cifar(2, 0, 32, 16, 2);
        // The reference branch of the issue: 5.2 % of ResNet-20's parameters, 2.2 % of its MACs.
        assert_eq!(spec.params(), 32 * 16 * 9 + 16 + 4 * (16 * 16 * 9 + 16));
        assert_eq!(spec.macs(16, 16), 64 * 16 * 32 * 9 + 4 * 64 * 16 * 16 * 9);
        let one = BranchSpec::cifar(1, 0, 16, 16, 2);
        assert!(one.tensor_shapes().iter().any(|(n, s)| n == "block0.shortcut.weight" && s == &[16, 16, 1, 1]));
        // Into stage 3 by one block: 64 channels on stage 3's 8x8, which the entry keeps.
        let into = BranchSpec { trunk_blocks: 1, in_channels: 64, ..spec };
        assert_eq!((into.entry_stride(), into.trunk_plane(32, 32)), (1, (8, 8)));
        assert_eq!(into.macs(8, 8), 64 * 16 * 64 * 9 + 4 * 64 * 16 * 16 * 9);
        assert_eq!(
            BranchSpec::after(into.trunk_end(), &crate::ResNetConfig::cifar(20, 3, 10).unwrap().network(), 16, 2),
            into
        );
        for bad in [
            BranchSpec { trunk_stages: 0, ..spec },
            BranchSpec { trunk_stages: 3, ..spec },
            BranchSpec { width: 0, ..spec },
            BranchSpec { width: 1 << 20, ..spec },
            BranchSpec { blocks: 0, ..one },
            BranchSpec { blocks: 1000, ..spec },
            BranchSpec { trunk_blocks: 1000, ..spec },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidArchitecture { .. })), "{bad:?}");
        }
        let cfg = crate::ResNetConfig::cifar(20, 3, 10).unwrap().network();
        assert!(spec.fits(&cfg).is_ok() && one.fits(&cfg).is_ok());
        assert!(BranchSpec { in_channels: 16, ..spec }.fits(&cfg).is_err());
        assert!(into.fits(&cfg).is_ok() && BranchSpec { trunk_blocks: 2, ..into }.fits(&cfg).is_ok());
        assert!(BranchSpec { trunk_blocks: 3, ..into }.fits(&cfg).is_err(), "ResNet-20's stages have 3 blocks");
        assert!(BranchSpec { in_channels: 32, ..into }.fits(&cfg).is_err(), "stage 3 gives 64 channels");
        let zeros = |s: &BranchSpec| s.tensor_shapes().into_iter().map(|(n, sh)| (n, vec![0.0; sh.iter().product()]));
        let mut t: BTreeMap<String, Vec<f32>> = zeros(&spec).collect();
        assert!(BranchWeights::new(spec, t.clone()).is_ok());
        t.get_mut("entry.bias").unwrap()[3] = f32::NAN;
        assert!(matches!(BranchWeights::new(spec, t.clone()), Err(Error::NonFinite { .. })));
        t.get_mut("entry.bias").unwrap().pop();
        let e = BranchWeights::new(spec, t.clone()).unwrap_err();
        assert!(matches!(e, Error::TensorLength { .. }) && e.to_string().contains("values; its shape ["), "{e}");
        t.remove("entry.bias");
        assert!(matches!(BranchWeights::new(spec, t.clone()), Err(Error::MissingTensor { .. })));
        let mut extra: BTreeMap<String, Vec<f32>> = zeros(&spec).collect();
        extra.insert("stowaway".into(), vec![1.0]);
        assert!(matches!(BranchWeights::new(spec, extra), Err(Error::UnexpectedTensor { .. })));

        // torchvision's ResNet-18: a trunk of one to three of its four stages; the branch ends on
        // layer4's 7x7 at 224x224 whatever the trunk; a CIFAR branch does not fit it.
        let r18 = Network::torchvision(18, 64, 10).unwrap();
        for (stages, plane, halvings) in [(1, 56, 3), (2, 28, 2), (3, 14, 1)] {
            let s = BranchSpec::after(stages.into(), &r18, 32, 2);
            assert_eq!((s.base_stages, s.stem_stride, s.in_channels), (4, 4, 64 << (stages - 1)));
            assert_eq!(s.trunk_plane(224, 224), (plane, plane));
            let strides: Vec<usize> = (0..2).map(|j| s.block_stride(j)).collect();
            assert_eq!(1 + strides.iter().filter(|&&st| st == 2).count(), halvings, "T={stages}");
            assert!(s.fits(&r18).is_ok(), "T={stages}");
            // Stored as before for three-stage bases; with the base's stages and stem here.
            let json = serde_json::to_string(&s).unwrap();
            assert!(json.contains("\"base_stages\":4") && json.contains("\"stem_stride\":4"), "{json}");
            assert_eq!(serde_json::from_str::<BranchSpec>(&json).unwrap(), s);
        }
        assert!(!serde_json::to_string(&spec).unwrap().contains("base_stages"), "a CIFAR branch's JSON is unchanged");
        assert!(BranchSpec { trunk_stages: 4, ..BranchSpec::after(3.into(), &r18, 32, 2) }.validate().is_err());
        let err = BranchSpec::cifar(2, 0, 128, 32, 2).fits(&r18).unwrap_err();
        assert!(err.contains("a base of 3 stages") && err.contains("this one has 4"), "{err}");
    }

    /// A served branch's estimated bytes are its values plus what the CPU path packs for it,
    /// on the planes of ResNet-20's trunks (F(4x4) at 16x16, F(2x2) at 8x8) and on widths that
    /// are not whole vectors of 8 (direct).
    #[test]
    fn served_bytes_are_what_the_cpu_path_holds() {
        let zeros = |s: &BranchSpec| s.tensor_shapes().into_iter().map(|(n, sh)| (n, vec![0.5; sh.iter().product()]));
        for (trunk_stages, trunk_blocks, in_channels, plane) in [(1, 0, 16, 32), (2, 0, 32, 16), (2, 1, 64, 8)] {
            for (width, blocks) in [(16, 1), (16, 2), (24, 2), (12, 2)] {
                let spec = BranchSpec::cifar(trunk_stages, trunk_blocks, in_channels, width, blocks);
                let Ok(weights) = BranchWeights::new(spec, zeros(&spec).collect()) else { continue };
                let (h, w) = spec.trunk_plane(32, 32);
                assert_eq!((h, w), (plane, plane));
                let packed = cpu_branches(&[&weights], Plane { height: h, width: w }).unwrap().weight_bytes();
                assert_eq!(weights.served_bytes(h, w), weights.bytes() + packed, "{spec:?}");
            }
        }
    }
}
