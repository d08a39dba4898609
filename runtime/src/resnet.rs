//! The eval-mode CIFAR ResNet graph. Batch norm is folded into the preceding convolution at load
//! time (`w' = w * g/sqrt(v+eps)`, `b' = beta - m * g/sqrt(v+eps)`), so a forward pass is
//! convolutions, bias adds, ReLUs and residual adds only.
//!
//! Every ReLU output is a *site* (numbered in forward order: the stem, then per block the ReLU
//! after `bn1` and the ReLU after the residual add). A [`ReluHook`] sees, and may replace, each
//! site's activation: decomposition observes nodes through it and modules apply node masks
//! through it.

use candle_core::{DType, Device, Module, Tensor, D};

use crate::resnet_config::{BlockSpec, BN_EPS};
use crate::{InputSpec, ModelError, ModelFile, ResNetConfig, Shortcut};

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
    fn fold(model: &ModelFile, conv: &str, bn: &str, stride: usize) -> Result<Self, ModelError> {
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

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::conv::conv2d(x, &self.weight, self.padding, self.stride)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
enum BlockShortcut {
    Identity,
    /// Option A: every second pixel, then `pad` zero channels on each side.
    SubsamplePad {
        stride: usize,
        pad: usize,
    },
    Projection(ConvBn),
}

#[derive(Debug, Clone)]
struct Block {
    conv1: ConvBn,
    conv2: ConvBn,
    shortcut: BlockShortcut,
}

/// Observes or rewrites the activation at each ReLU site of a forward pass.
pub trait ReluHook {
    /// Called with the output of ReLU number `site`; returns the tensor the forward continues with.
    fn after_relu(&mut self, site: usize, activation: Tensor) -> candle_core::Result<Tensor>;
}

/// The hook that changes nothing.
pub struct NoHook;
impl ReluHook for NoHook {
    fn after_relu(&mut self, _: usize, a: Tensor) -> candle_core::Result<Tensor> {
        Ok(a)
    }
}

/// Shape of one ReLU site's activation for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReluSite {
    /// e.g. `relu0` (stem), `layer2.0.relu1` (inside a block), `layer2.0.out` (after the add).
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// A loaded eval-mode ResNet.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    input: InputSpec,
    class_names: Vec<String>,
    stem: ConvBn,
    blocks: Vec<Block>,
    /// (features, classes): the linear weight transposed once at load.
    linear_wt: Tensor,
    linear_b: Tensor,
    device: Device,
}

impl ResNet {
    /// Builds the graph from a validated model on `device`.
    pub fn new(model: &ModelFile, device: &Device) -> Result<Self, ModelError> {
        let model = &ModelFile {
            meta: model.meta.clone(),
            tensors: model
                .tensors
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
                .collect::<Result<_, candle_core::Error>>()?,
        };
        let cfg = &model.meta.arch;
        let stem = ConvBn::fold(model, "conv1", "bn1", 1)?;
        let blocks = cfg.blocks().iter().map(|b| Self::block(model, cfg, b)).collect::<Result<Vec<_>, _>>()?;
        let linear_wt = model.tensor("linear.weight")?.t()?.contiguous()?;
        let linear_b = model.tensor("linear.bias")?.clone();
        Ok(ResNet {
            config: cfg.clone(),
            input: model.meta.input.clone(),
            class_names: model.meta.class_names.clone(),
            stem,
            blocks,
            linear_wt,
            linear_b,
            device: device.clone(),
        })
    }

    fn block(model: &ModelFile, cfg: &ResNetConfig, b: &BlockSpec) -> Result<Block, ModelError> {
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

    /// Reads a model file and builds its graph.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self, ModelError> {
        Self::new(&ModelFile::read(path, device)?, device)
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
    pub fn input_spec(&self) -> &InputSpec {
        &self.input
    }
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The ReLU sites in forward order, with their per-image activation shapes.
    pub fn relu_sites(&self) -> Vec<ReluSite> {
        let (mut h, mut w) = (self.input.height, self.input.width);
        let site = |name: String, c, h, w| ReluSite { name, channels: c, height: h, width: w };
        let mut out = vec![site("relu0".into(), self.config.widths[0], h, w)];
        for b in self.config.blocks() {
            if b.stride == 2 {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            out.push(site(format!("{}.relu1", b.prefix()), b.planes, h, w));
            out.push(site(format!("{}.out", b.prefix()), b.planes, h, w));
        }
        out
    }

    fn check_input(&self, x: &Tensor) -> Result<(), ModelError> {
        let want = (self.input.channels, self.input.height, self.input.width);
        match x.dims() {
            [_, c, h, w] if (*c, *h, *w) == want => Ok(()),
            dims => Err(ModelError::InputShape { expected: want, found: dims.to_vec() }),
        }
    }

    /// Logits `(batch, classes)` of a normalised NCHW batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        self.forward_hooked(x, &mut NoHook)
    }

    /// Logits, with `hook` called at every ReLU site.
    pub fn forward_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor, ModelError> {
        let feats = self.features_hooked(x, hook)?;
        self.linear(&feats)
    }

    /// The classifier layer: logits `(batch, classes)` of pooled features `(batch, widths[2])`.
    pub fn linear(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        Ok(features.matmul(&self.linear_wt)?.broadcast_add(&self.linear_b)?)
    }

    /// Globally average-pooled features `(batch, widths[2])`, the input of the linear layer.
    pub fn features_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor, ModelError> {
        self.check_input(x)?;
        let mut site = 0;
        let mut relu = |t: Tensor, hook: &mut dyn ReluHook| -> candle_core::Result<Tensor> {
            let out = hook.after_relu(site, t.relu()?);
            site += 1;
            out
        };
        let mut x = relu(self.stem.forward(x)?, hook)?;
        for b in &self.blocks {
            let h = relu(b.conv1.forward(&x)?, hook)?;
            let h = b.conv2.forward(&h)?;
            let short = match &b.shortcut {
                BlockShortcut::Identity => x,
                BlockShortcut::SubsamplePad { stride, pad } => subsample(&x, *stride)?.pad_with_zeros(1, *pad, *pad)?,
                BlockShortcut::Projection(p) => p.forward(&x)?,
            };
            x = relu((h + short)?, hook)?;
        }
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ResNet::forward(self, x).map_err(|e| match e {
            ModelError::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}

/// `x[:, :, ::s, ::s]` for NCHW `x` whose height and width are multiples of `s`.
pub fn subsample(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h % s != 0 || w % s != 0 {
        candle_core::bail!("subsample: {h}x{w} is not a multiple of stride {s}");
    }
    x.contiguous()?.reshape((b, c, h / s, s, w / s, s))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((b, c, h / s, w / s))
}
