//! The layers of a CIFAR ResNet with batch norm folded in at load
//! (`w' = w * g/sqrt(v+eps)`, `b' = beta - m * g/sqrt(v+eps)`): a convolution ([`ConvBn`]) and a
//! BasicBlock ([`Block`]). The graph is built from them, and so can a smaller network that
//! reuses a base's layers (a compact module's branch).

use candle_core::{DType, Tensor};

use crate::cpu::conv::{PackedConv, Plane};
use crate::model::config::BN_EPS;
use crate::model::graph::{subsample, ReluHook};
use crate::model::network::BlockSpec;
use crate::{ModelFile, ResNetConfig, Result, Shortcut};

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

/// A BasicBlock: `relu(conv2(relu(conv1(x))) + shortcut(x))`, batch norms folded.
#[derive(Debug, Clone)]
pub struct Block {
    /// The first convolution (stride 2 where a stage halves the plane).
    pub conv1: ConvBn,
    /// The second convolution.
    pub conv2: ConvBn,
    /// The shortcut.
    pub shortcut: BlockShortcut,
}

impl Block {
    /// Folds the block at `b` (`layer{s}.{i}`) of `model`.
    pub fn fold(model: &ModelFile, cfg: &ResNetConfig, b: &BlockSpec) -> Result<Block> {
        let p = b.prefix();
        let shortcut = match (b.changes_shape(), cfg.shortcut) {
            (false, _) => BlockShortcut::Identity,
            (true, Shortcut::A) => BlockShortcut::SubsamplePad { stride: b.stride, pad: (b.planes - b.in_planes) / 2 },
            (true, Shortcut::B) => BlockShortcut::Projection(ConvBn::fold(
                model,
                &format!("{p}.shortcut.0"),
                &format!("{p}.shortcut.1"),
                b.stride,
            )?),
        };
        Ok(Block {
            conv1: ConvBn::fold(model, &format!("{p}.conv1"), &format!("{p}.bn1"), b.stride)?,
            conv2: ConvBn::fold(model, &format!("{p}.conv2"), &format!("{p}.bn2"), 1)?,
            shortcut,
        })
    }

    /// The block on candle's operations, `hook` seeing its two ReLU sites `site` and `site + 1`.
    pub fn forward_hooked(&self, x: &Tensor, site: usize, hook: &mut dyn ReluHook) -> candle_core::Result<Tensor> {
        let h = hook.after_relu(site, self.conv1.forward(x)?.relu()?)?;
        let h = self.conv2.forward(&h)?;
        let short = match &self.shortcut {
            BlockShortcut::Identity => x.clone(),
            BlockShortcut::SubsamplePad { stride, pad } => subsample(x, *stride)?.pad_with_zeros(1, *pad, *pad)?,
            BlockShortcut::Projection(p) => p.forward(x)?,
        };
        hook.after_relu(site + 1, (h + short)?.relu()?)
    }

    /// The same block computing in `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> candle_core::Result<Self> {
        Ok(Block {
            conv1: self.conv1.to_dtype(dtype)?,
            conv2: self.conv2.to_dtype(dtype)?,
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
        self.conv1.weight_bytes() + self.conv2.weight_bytes() + shortcut
    }
}
