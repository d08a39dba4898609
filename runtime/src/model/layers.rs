//! The layers of a ResNet with batch norm folded in at load
//! (`w' = w * g/sqrt(v+eps)`, `b' = beta - m * g/sqrt(v+eps)`): a convolution ([`ConvBn`]), a
//! residual block of basic or bottleneck kind ([`Block`]) and the stem ([`StemLayers`]). The graph is built from them, and so can a smaller network that
//! reuses a base's layers (a compact module's branch).

use candle_core::{DType, Tensor};

use crate::cpu::conv::{PackedConv, Plane};
use crate::model::config::BN_EPS;
use crate::model::graph::{subsample, ReluHook};
use crate::model::network::{BlockSpec, Stem};
use crate::{ModelFile, Result, Shortcut};

/// A convolution with the following batch norm folded in.
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// (out, in, k, k)
    weight: Tensor,
    /// (1, out, 1, 1), ready to broadcast over NCHW.
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    /// Folds `{bn}.{weight,bias,running_mean,running_var}` into `{conv}.weight`.
    pub fn fold(model: &ModelFile, conv: &str, bn: &str, stride: usize) -> Result<Self> {
        let w = model.tensor(&format!("{conv}.weight"))?;
        let g = model.tensor(&format!("{bn}.weight"))?;
        let beta = model.tensor(&format!("{bn}.bias"))?;
        let mean = model.tensor(&format!("{bn}.running_mean"))?;
        let var = model.tensor(&format!("{bn}.running_var"))?;
        // Fold in f64 so folding adds no rounding beyond the final cast to f32.
        let f64_ = |t: &Tensor| t.to_dtype(DType::F64);
        let scale = f64_(g)?.div(&(f64_(var)? + BN_EPS)?.sqrt()?)?;
        let out = w.dim(0)?;
        let weight = f64_(w)?.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?.to_dtype(DType::F32)?;
        let bias = (f64_(beta)? - f64_(mean)?.mul(&scale)?)?.to_dtype(DType::F32)?.reshape((1, out, 1, 1))?;
        let padding = w.dim(3)? / 2;
        Ok(ConvBn { weight, bias, stride, padding })
    }

    /// A convolution whose batch norm is already folded in: `weight` (out, in, k, k) and `bias`
    /// (out), padding `k / 2` (a compact module's branch, stored folded).
    pub fn from_folded(weight: Tensor, bias: Tensor, stride: usize) -> candle_core::Result<Self> {
        let (out, _, _, k) = weight.dims4()?;
        let bias = bias.reshape((1, out, 1, 1))?;
        Ok(ConvBn { weight, bias, stride, padding: k / 2 })
    }

    /// The convolution plus bias on candle's operations, NCHW.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?.broadcast_add(&self.bias)
    }

    /// Weight and bias bytes as candle tensors.
    pub fn weight_bytes(&self) -> u64 {
        ((self.weight.elem_count() + self.bias.elem_count()) * self.weight.dtype().size_in_bytes()) as u64
    }

    /// The same convolution computing in `dtype` (weights converted once, here).
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        Ok(ConvBn { weight: self.weight.to_dtype(dtype)?, bias: self.bias.to_dtype(dtype)?, ..*self })
    }

    /// Channels the convolution takes.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The type the convolution computes in.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// Packed for the CPU path, for input plane `p` (only the weights that plane needs).
    pub(crate) fn packed(&self, p: Plane) -> candle_core::Result<PackedConv> {
        let dims = self.weight.dims4()?;
        let w = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let b = self.bias.flatten_all()?.to_vec1::<f32>()?;
        Ok(PackedConv::for_plane(&w, b, [dims.0, dims.1, dims.2, dims.3], self.stride, self.padding, p))
    }
}

/// How a block adds its input to its output.
#[derive(Debug, Clone)]
pub enum BlockShortcut {
    /// The input as it is (shapes match).
    Identity,
    /// Option A: every `stride`-th pixel, then `pad` zero channels on each side.
    SubsamplePad {
        /// Pixel step.
        stride: usize,
        /// Zero channels added on each side.
        pad: usize,
    },
    /// Option B: a 1x1 convolution with batch norm.
    Projection(ConvBn),
}

/// A residual block, batch norms folded: its convolutions in order, each but the last followed
/// by a ReLU site, the last by the shortcut's add and the block's last ReLU site. A basic block
/// is `relu(conv2(relu(conv1(x))) + shortcut(x))`; a bottleneck block adds a 1x1 before and
/// after its 3x3, `relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct Block {
    /// The convolutions in forward order (the one with the block's stride where it has one).
    pub convs: Vec<ConvBn>,
    /// The shortcut.
    pub shortcut: BlockShortcut,
}

impl Block {
    /// A basic block of two convolutions.
    pub fn basic(conv1: ConvBn, conv2: ConvBn, shortcut: BlockShortcut) -> Block {
        Block { convs: vec![conv1, conv2], shortcut }
    }

    /// Folds the block at `b` (`layer{s}.{i}`) of `model`, whose shortcuts follow `shortcut`.
    pub fn fold(model: &ModelFile, shortcut: Shortcut, b: &BlockSpec) -> Result<Block> {
        let p = b.prefix();
        let shortcut = match (b.changes_shape(), shortcut) {
            (false, _) => BlockShortcut::Identity,
            (true, Shortcut::A) => BlockShortcut::SubsamplePad { stride: b.stride, pad: (b.planes - b.in_planes) / 2 },
            (true, Shortcut::B) => BlockShortcut::Projection(ConvBn::fold(
                model,
                &format!("{p}.shortcut.0"),
                &format!("{p}.shortcut.1"),
                b.stride,
            )?),
        };
        let convs =
            b.convs().iter().map(|c| ConvBn::fold(model, &c.conv, &c.bn, c.stride)).collect::<Result<Vec<_>>>()?;
        Ok(Block { convs, shortcut })
    }

    /// ReLU sites in the block (one a convolution).
    pub fn relu_sites(&self) -> usize {
        self.convs.len()
    }

    /// The block on candle's operations, `hook` seeing its ReLU sites from `site` on.
    pub fn forward_hooked(&self, x: &Tensor, site: usize, hook: &mut dyn ReluHook) -> candle_core::Result<Tensor> {
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let mut h = x.clone();
        for (i, conv) in inner.iter().enumerate() {
            h = hook.after_relu(site + i, conv.forward(&h)?.relu()?)?;
        }
        let h = last.forward(&h)?;
        let short = match &self.shortcut {
            BlockShortcut::Identity => x.clone(),
            BlockShortcut::SubsamplePad { stride, pad } => subsample(x, *stride)?.pad_with_zeros(1, *pad, *pad)?,
            BlockShortcut::Projection(p) => p.forward(x)?,
        };
        hook.after_relu(site + inner.len(), (h + short)?.relu()?)
    }

    /// The same block computing in `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        Ok(Block {
            convs: self.convs.iter().map(|c| c.to_dtype(dtype)).collect::<candle_core::Result<_>>()?,
            shortcut: match &self.shortcut {
                BlockShortcut::Projection(p) => BlockShortcut::Projection(p.to_dtype(dtype)?),
                other => other.clone(),
            },
        })
    }

    /// Weight and bias bytes as candle tensors.
    pub fn weight_bytes(&self) -> u64 {
        let shortcut = match &self.shortcut {
            BlockShortcut::Projection(c) => c.weight_bytes(),
            _ => 0,
        };
        self.convs.iter().map(ConvBn::weight_bytes).sum::<u64>() + shortcut
    }
}

/// The layers before the first block: a convolution (its ReLU the network's site 0) and, in
/// the ImageNet stem, a 3x3 stride-2 max-pool with padding 1 after it.
#[derive(Debug, Clone)]
pub struct StemLayers {
    /// The convolution, batch norm folded.
    pub conv: ConvBn,
    /// Whether the 3x3 stride-2 max-pool follows.
    pub max_pool: bool,
}

impl StemLayers {
    /// Folds `conv1`/`bn1` of `model` for `stem`.
    pub fn fold(model: &ModelFile, stem: Stem) -> Result<Self> {
        let (stride, max_pool) = match stem {
            Stem::Cifar3x3 { .. } => (1, false),
            Stem::ImageNet7x7 { .. } => (2, true),
        };
        Ok(StemLayers { conv: ConvBn::fold(model, "conv1", "bn1", stride)?, max_pool })
    }

    /// The stem on candle's operations, `hook` seeing site 0 (the ReLU before the pool).
    pub fn forward_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> candle_core::Result<Tensor> {
        let x = hook.after_relu(0, self.conv.forward(x)?.relu()?)?;
        if !self.max_pool {
            return Ok(x);
        }
        // PyTorch pads a max-pool with -inf; padding with a copy of the edge is the same here,
        // as each padded value's original lies in the same 3x3 window.
        // Windows at 2i-1..=2i+1 of the unpadded plane, ceil(n/2) of them (candle's max-pool has
        // no padding of its own, hence the copies).
        let x = x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?;
        x.max_pool2d_with_stride(3, 2)
    }

    /// The same stem computing in `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        Ok(StemLayers { conv: self.conv.to_dtype(dtype)?, max_pool: self.max_pool })
    }
}
