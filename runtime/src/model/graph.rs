//! The eval-mode CIFAR ResNet graph. Batch norm is folded into the preceding convolution at load
//! time (`w' = w * g/sqrt(v+eps)`, `b' = beta - m * g/sqrt(v+eps)`), so a forward pass is
//! convolutions, bias adds, ReLUs and residual adds only.
//!
//! Every ReLU output is a *site* (numbered in forward order: the stem, then per block the ReLU
//! after `bn1` and the ReLU after the residual add). A [`ReluHook`] sees, and may replace, each
//! site's activation: decomposition observes nodes through it and, on other devices than the
//! CPU, modules apply node masks through it.
//!
//! On the CPU the graph runs on the CPU path (`crate::cpu`: NHWC, packed weights, own
//! micro-kernels and Winograd, fused epilogues, masks applied inside the convolutions); elsewhere
//! through candle's operations, in f32 or, on a GPU, in half precision ([`ResNet::with_precision`]).

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, D};

use crate::cpu::conv::Plane;
use crate::cpu::net::{to_nchw, to_nhwc, CpuBlock, CpuNet, CpuShortcut, SiteMasks, SiteVisitor};
use crate::model::layers::{Block, BlockShortcut, ConvBn};
use crate::Result;
use crate::{Error, InputSpec, ModelFile, Precision, ResNetConfig};

/// Observes or rewrites the activation at each ReLU site of a forward pass.
pub trait ReluHook {
    /// Called with the output of ReLU number `site`; returns the tensor the forward continues with.
    fn after_relu(&mut self, site: usize, activation: Tensor) -> candle_core::Result<Tensor>;

    /// True for a hook that neither looks nor changes: the forward need not call it at all.
    fn is_identity(&self) -> bool {
        false
    }
}

/// The hook that changes nothing.
pub struct NoHook;
impl ReluHook for NoHook {
    fn after_relu(&mut self, _: usize, a: Tensor) -> candle_core::Result<Tensor> {
        Ok(a)
    }
    fn is_identity(&self) -> bool {
        true
    }
}

/// A [`ReluHook`] called from the CPU path: each NHWC site activation as an NCHW tensor, and
/// what the hook returns copied back if it is another tensor.
struct HookVisitor<'a> {
    hook: &'a mut dyn ReluHook,
}

impl SiteVisitor for HookVisitor<'_> {
    fn visit(&mut self, site: usize, act: &mut [f32], [b, h, w, c]: [usize; 4]) -> Result<()> {
        let t = Tensor::from_vec(to_nchw(act, b, c, h * w), (b, c, h, w), &Device::Cpu)?;
        let id = t.id();
        let out = self.hook.after_relu(site, t)?;
        if out.id() != id {
            if out.dims() != [b, c, h, w] {
                return Err(Error::HookChangedShape { site });
            }
            act.copy_from_slice(&to_nhwc(&out.flatten_all()?.to_vec1::<f32>()?, b, c, h * w));
        }
        Ok(())
    }
}

/// How the convolutions run.
#[derive(Debug, Clone)]
enum Engine {
    /// The CPU path; shared, since snapshots and module groups clone the network.
    Cpu(Arc<CpuNet>),
    Candle {
        stem: ConvBn,
        blocks: Vec<Block>,
    },
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

/// A loaded eval-mode ResNet.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    input: InputSpec,
    class_names: Vec<String>,
    engine: Engine,
    /// (features, classes): the linear weight transposed once at load.
    linear_wt: Tensor,
    linear_b: Tensor,
    /// The linear layer as plain rows `(classes, features)` and bias, for the CPU path (no
    /// tensor round trip per classification); empty on other engines.
    linear_rows: Arc<(Vec<f32>, Vec<f32>)>,
    device: Device,
    /// What the convolutions compute in; activations leave the network as f32.
    precision: Precision,
}

impl ResNet {
    /// Builds the graph from a validated model on `device` (on the CPU, the CPU path).
    pub fn new(model: &ModelFile, device: &Device) -> Result<Self> {
        Self::build(model, device, matches!(device, Device::Cpu))
    }

    /// Bytes of weights this network holds, in whatever form its engine keeps them (the CPU
    /// path's packed and Winograd-transformed convolutions, or candle's folded tensors), plus the
    /// linear head.
    pub fn resident_bytes(&self) -> u64 {
        let tensor = |t: &Tensor| t.elem_count() as u64 * 4;
        let convs = match &self.engine {
            Engine::Cpu(net) => net.weight_bytes(),
            Engine::Candle { stem, blocks } => {
                stem.weight_bytes() + blocks.iter().map(Block::weight_bytes).sum::<u64>()
            }
        };
        convs
            + tensor(&self.linear_wt)
            + tensor(&self.linear_b)
            + 4 * (self.linear_rows.0.len() + self.linear_rows.1.len()) as u64
    }

    /// `cpu_path: false` runs candle's operations even on the CPU: the reference the CPU path is
    /// tested against.
    pub(crate) fn build(model: &ModelFile, device: &Device, cpu_path: bool) -> Result<Self> {
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
        let blocks = cfg.blocks().iter().map(|b| Block::fold(model, cfg, b)).collect::<Result<Vec<_>, _>>()?;
        let linear_wt = model.tensor("linear.weight")?.t()?.contiguous()?;
        let linear_b = model.tensor("linear.bias")?.clone();
        let linear_rows = Arc::new(if cpu_path {
            (model.tensor("linear.weight")?.flatten_all()?.to_vec1::<f32>()?, linear_b.flatten_all()?.to_vec1::<f32>()?)
        } else {
            (Vec::new(), Vec::new())
        });
        let engine = if cpu_path {
            let input = Plane { height: model.meta.input.height, width: model.meta.input.width };
            Engine::Cpu(Arc::new(Self::cpu_net(&stem, &blocks, input)?))
        } else {
            Engine::Candle { stem, blocks }
        };
        Ok(ResNet {
            config: cfg.clone(),
            input: model.meta.input.clone(),
            class_names: model.meta.class_names.clone(),
            engine,
            linear_wt,
            linear_b,
            linear_rows,
            device: device.clone(),
            precision: Precision::F32,
        })
    }

    /// The same network with its convolutions computing in `precision` (weights converted once,
    /// here). The CPU path computes in f32 only: other precisions are for GPUs.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if precision == self.precision {
            return Ok(self);
        }
        let Engine::Candle { stem, blocks } = &self.engine else {
            return Err(Error::PrecisionUnsupported {
                precision,
                device: "the CPU".into(),
                reason: "the CPU path computes in f32 only; half precision is for a GPU (--device cuda)".into(),
            });
        };
        let dtype = precision.dtype();
        let stem = stem.to_dtype(dtype)?;
        let blocks = blocks.iter().map(|b| b.to_dtype(dtype)).collect::<candle_core::Result<Vec<_>>>()?;
        self.engine = Engine::Candle { stem, blocks };
        self.precision = precision;
        Ok(self)
    }

    /// What the convolutions compute in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The CPU path's network of `stem` and `blocks` on input plane `input` (a base's, or a
    /// compact module's branch, whose entry convolution is its stem).
    pub(crate) fn cpu_net(stem: &ConvBn, blocks: &[Block], input: Plane) -> candle_core::Result<CpuNet> {
        let stem = stem.packed(input)?;
        let blocks = Self::cpu_blocks(blocks, stem.out_plane(input))?;
        Ok(CpuNet { stem, blocks, input, small_batch: Default::default() })
    }

    /// `blocks` on the CPU path, the first taking plane `p`.
    pub(crate) fn cpu_blocks(blocks: &[Block], mut p: Plane) -> candle_core::Result<Vec<CpuBlock>> {
        // Every convolution's input plane is fixed by the model's: follow it through the blocks.
        blocks
            .iter()
            .map(|b| {
                let conv1 = b.conv1.packed(p)?;
                let mid = conv1.out_plane(p);
                let block = CpuBlock {
                    conv2: b.conv2.packed(mid)?,
                    shortcut: match &b.shortcut {
                        BlockShortcut::Identity => CpuShortcut::Identity,
                        BlockShortcut::SubsamplePad { stride, pad } => {
                            CpuShortcut::SubsamplePad { stride: *stride, pad: *pad }
                        }
                        BlockShortcut::Projection(s) => CpuShortcut::Projection(s.packed(p)?),
                    },
                    conv1,
                };
                p = block.conv2.out_plane(mid);
                Ok(block)
            })
            .collect()
    }

    /// The CPU path's network, when the graph runs on the CPU.
    pub(crate) fn cpu(&self) -> Option<&CpuNet> {
        match &self.engine {
            Engine::Cpu(net) => Some(net),
            Engine::Candle { .. } => None,
        }
    }

    /// Reads a model file and builds its graph.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        Self::new(&ModelFile::read(path, device)?, device)
    }

    /// The architecture.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
    /// The images the network takes.
    pub fn input_spec(&self) -> &InputSpec {
        &self.input
    }
    /// One name per output.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    /// Where the network's tensors live.
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

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let want = (self.input.channels, self.input.height, self.input.width);
        match x.dims() {
            [_, c, h, w] if (*c, *h, *w) == want => Ok(()),
            dims => Err(Error::InputShape { expected: want, found: dims.to_vec() }),
        }
    }

    /// Logits `(batch, classes)` of a normalised NCHW batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_hooked(x, &mut NoHook)
    }

    /// Logits, with `hook` called at every ReLU site.
    pub fn forward_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor> {
        let feats = self.features_hooked(x, hook)?;
        self.linear(&feats)
    }

    /// The classifier layer: logits `(batch, classes)` of pooled features `(batch, widths[2])`.
    pub fn linear(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.matmul(&self.linear_wt)?.broadcast_add(&self.linear_b)?)
    }

    /// Globally average-pooled features `(batch, widths[2])`, the input of the linear layer.
    pub fn features_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor> {
        self.check_input(x)?;
        let (stem, blocks) = match &self.engine {
            Engine::Cpu(_) if hook.is_identity() => return self.cpu_features(x, None, None),
            Engine::Cpu(_) => return self.cpu_features(x, None, Some(&mut HookVisitor { hook })),
            Engine::Candle { stem, blocks } => (stem, blocks),
        };
        let x = Self::candle_blocks(stem, blocks, x, hook)?.to_dtype(DType::F32)?;
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    /// The stem and `blocks` on candle's operations, `hook` seeing every ReLU site.
    fn candle_blocks(
        stem: &ConvBn,
        blocks: &[Block],
        x: &Tensor,
        hook: &mut dyn ReluHook,
    ) -> candle_core::Result<Tensor> {
        // The network's precision starts at its entry (a no-op in f32).
        let x = x.to_dtype(stem.dtype())?;
        let mut x = hook.after_relu(0, stem.forward(&x)?.relu()?)?;
        for (i, b) in blocks.iter().enumerate() {
            x = b.forward_hooked(&x, 1 + 2 * i, hook)?;
        }
        Ok(x)
    }

    /// Blocks of a trunk of `stages` stages (0 to 3), after checking `x` and the stage count.
    fn trunk_blocks(&self, x: &Tensor, stages: usize) -> Result<usize> {
        self.check_input(x)?;
        if stages > 3 {
            return Err(Error::InvalidArchitecture {
                reason: format!("a trunk of {stages} stages; the network has 3"),
            });
        }
        Ok(stages * self.config.blocks_per_stage)
    }

    /// The trunk of the network: the stem and its first `stages` stages (0 to 3), for a batch
    /// `x` (B, C, H, W) of normalised images; returns the activation there, (B, C', H', W')
    /// NCHW, after its ReLU. A compact module's branch runs on it, computed once for every
    /// loaded class of this base.
    pub fn trunk(&self, x: &Tensor, stages: usize) -> Result<Tensor> {
        let n = self.trunk_blocks(x, stages)?;
        match &self.engine {
            Engine::Cpu(net) => {
                let (images, nhwc) = nhwc_of(x)?;
                let (act, p, channels) = net.trunk(&nhwc, images, n)?;
                nchw_tensor(&act, images, p, channels)
            }
            Engine::Candle { stem, blocks } => {
                Ok(Self::candle_blocks(stem, &blocks[..n], x, &mut NoHook)?.to_dtype(DType::F32)?)
            }
        }
    }

    /// The trunk's activation (as [`ResNet::trunk`] gives it) and the logits `(B, classes)` of
    /// the whole network, in one pass: the network's remaining stages continue from the trunk's
    /// activation instead of starting over. What a compact decomposition caches.
    pub fn trunk_and_logits(&self, x: &Tensor, stages: usize) -> Result<(Tensor, Tensor)> {
        let n = self.trunk_blocks(x, stages)?;
        match &self.engine {
            Engine::Cpu(net) => {
                let (images, nhwc) = nhwc_of(x)?;
                let (act, p, channels, feats) = net.trunk_and_features(&nhwc, images, n)?;
                let trunk = nchw_tensor(&act, images, p, channels)?;
                let logits = self.linear_rows_of(&feats, images);
                let classes = logits.len() / images.max(1);
                Ok((trunk, Tensor::from_vec(logits, (images, classes), &Device::Cpu)?))
            }
            Engine::Candle { stem, blocks } => {
                let trunk = Self::candle_blocks(stem, &blocks[..n], x, &mut NoHook)?;
                let mut y = trunk.clone();
                for (i, b) in blocks.iter().enumerate().skip(n) {
                    y = b.forward_hooked(&y, 1 + 2 * i, &mut NoHook)?;
                }
                let logits = self.linear(&y.to_dtype(DType::F32)?.mean(D::Minus1)?.mean(D::Minus1)?)?;
                Ok((trunk.to_dtype(DType::F32)?, logits))
            }
        }
    }

    /// Pooled features `(k*B, F)` of `masks.modules` = k modules on the B images of `x`: the
    /// batch is stacked k times (module-major) and each copy masked by its module's `masks`
    /// inside the convolutions. CPU path only.
    pub(crate) fn features_masked(&self, x: &Tensor, masks: &SiteMasks) -> Result<Tensor> {
        self.check_input(x)?;
        self.cpu_features(x, Some(masks), None)
    }

    /// On the CPU path: pooled features `(k*B, F)` of B images already normalised in NHWC
    /// order, stacked once per module of `masks`, and the logits `(k*B, classes)`, all as plain
    /// rows: what a served group runs, with no tensor in between.
    pub(crate) fn cpu_features_and_logits(
        &self,
        nhwc: &[f32],
        images: usize,
        masks: Option<&SiteMasks>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (feats, batch) = self.stacked_features(nhwc, images, masks, None)?;
        let logits = self.linear_rows_of(&feats, batch);
        Ok((feats, logits))
    }

    /// The CPU path's pooled features of `images` NHWC images, stacked once per module of
    /// `masks` (module-major), and the stacked batch size.
    fn stacked_features(
        &self,
        nhwc: &[f32],
        images: usize,
        masks: Option<&SiteMasks>,
        visitor: Option<&mut dyn SiteVisitor>,
    ) -> Result<(Vec<f32>, usize)> {
        let Engine::Cpu(net) = &self.engine else {
            return Err(Error::DeviceUnavailable {
                device: "the CPU path".into(),
                reason: "this network runs on another device".into(),
            });
        };
        // No modules: nothing to mask, one copy.
        let masks = masks.filter(|m| m.modules > 0);
        let copies = masks.map_or(1, |m| m.modules);
        let batch = images * copies;
        let feats = if copies > 1 {
            net.features(&nhwc.repeat(copies), batch, masks, visitor)?
        } else {
            net.features(nhwc, batch, masks, visitor)?
        };
        Ok((feats, batch))
    }

    /// `features · Wᵀ + b` over plain rows (the CPU path's linear layer).
    fn linear_rows_of(&self, features: &[f32], batch: usize) -> Vec<f32> {
        let (w, b) = &*self.linear_rows;
        let classes = b.len();
        let f = features.len() / batch.max(1);
        let mut out = Vec::with_capacity(batch * classes);
        for row in features.chunks_exact(f.max(1)) {
            out.extend(
                w.chunks_exact(f.max(1))
                    .zip(b)
                    .map(|(wc, bc)| wc.iter().zip(row).map(|(a, x)| a * x).sum::<f32>() + bc),
            );
        }
        out
    }

    /// `x` converted to NHWC once, stacked once per module when there are masks.
    fn cpu_features(
        &self,
        x: &Tensor,
        masks: Option<&SiteMasks>,
        visitor: Option<&mut dyn SiteVisitor>,
    ) -> Result<Tensor> {
        let (images, nhwc) = nhwc_of(x)?;
        let (feats, batch) = self.stacked_features(&nhwc, images, masks, visitor)?;
        let f = feats.len() / batch.max(1);
        Ok(Tensor::from_vec(feats, (batch, f), &Device::Cpu)?)
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ResNet::forward(self, x).map_err(|e| match e {
            Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        })
    }
}

/// An NCHW batch's values in NHWC order, with its number of images (the CPU path's input).
fn nhwc_of(x: &Tensor) -> Result<(usize, Vec<f32>)> {
    let (images, c, h, w) = x.dims4()?;
    Ok((images, to_nhwc(&x.flatten_all()?.to_vec1::<f32>()?, images, c, h * w)))
}

/// A CPU-path activation (NHWC) as an NCHW tensor.
fn nchw_tensor(act: &[f32], images: usize, p: Plane, channels: usize) -> Result<Tensor> {
    let nchw = to_nchw(act, images, channels, p.height * p.width);
    Ok(Tensor::from_vec(nchw, (images, channels, p.height, p.width), &Device::Cpu)?)
}

/// `x[:, :, ::s, ::s]` for NCHW `x` whose height and width are multiples of `s`.
pub fn subsample(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h % s != 0 || w % s != 0 {
        candle_core::bail!("subsample: {h}x{w} is not a multiple of stride {s}");
    }
    x.contiguous()?.reshape((b, c, h / s, s, w / s, s))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((b, c, h / s, w / s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::tiny_model;

    fn batch(n: usize) -> Tensor {
        let v: Vec<f32> = (0..n * 64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        Tensor::from_vec(v, (n, 1, 8, 8), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// Scales every activation of one site by 0.5: a hook that changes what the forward sees.
    struct HalveSite(usize);
    impl ReluHook for HalveSite {
        fn after_relu(&mut self, site: usize, a: Tensor) -> candle_core::Result<Tensor> {
            if site == self.0 {
                a * 0.5
            } else {
                Ok(a)
            }
        }
    }

    /// A batch too small to slice computes the same bits on one core as across the cores (how
    /// it runs changes the time, never a result), on both shortcut options; `Auto` times both
    /// ways on a network's first small calls, apart for each kind of pass.
    #[test]
    fn small_batches_answer_the_same_on_one_core_and_on_all() {
        use crate::cpu::conv::Threads;
        use crate::cpu::small_batch::{PassKind, SmallBatch};
        for model in [tiny_model(7), crate::testing::tiny_model::tiny_model_b(8)] {
            let net = ResNet::new(&model, &Device::Cpu).unwrap();
            let cpu = net.cpu().unwrap();
            for images in [1, 3] {
                let x: Vec<f32> = (0..images * 64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
                let x = to_nhwc(&x, images, 1, 64);
                let one = cpu.forward_slice(&x, images, 0, images, None, None, Threads::Caller).unwrap();
                let all = cpu.forward_slice(&x, images, 0, images, None, None, Threads::Tiles).unwrap();
                assert_eq!(one, all, "{images} images");
                assert_eq!(cpu.features(&x, images, None, None).unwrap(), one);
            }
            if SmallBatch::current() == SmallBatch::Auto && rayon::current_num_threads() > 1 {
                assert!(cpu.small_batch.preferred(PassKind::Features).is_some(), "both ways timed");
                assert!(cpu.small_batch.preferred(PassKind::Trunk).is_none(), "each kind apart");
            } else {
                let var = crate::cpu::small_batch::SMALL_BATCH_ENV;
                eprintln!("(small batches are not measured here: one thread, or {var} set)");
            }
        }
    }

    /// The trunk after every stage boundary, on the CPU path against candle's operations (the
    /// reference engine), for both shortcut options; the whole trunk, pooled, is the features.
    #[test]
    fn the_trunk_stops_at_each_stage_boundary_on_both_engines() {
        for model in [tiny_model(5), crate::testing::tiny_model::tiny_model_b(6)] {
            let fast = ResNet::new(&model, &Device::Cpu).unwrap();
            let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
            let x = batch(3);
            let widths = model.meta.arch.widths;
            for stages in 0..=3 {
                let a = fast.trunk(&x, stages).unwrap();
                let b = reference.trunk(&x, stages).unwrap();
                let (c, side) = match stages {
                    0 => (widths[0], 8),
                    s => (widths[s - 1], 8 >> (s - 1)),
                };
                assert_eq!(a.dims(), [3, c, side, side], "stages {stages}");
                assert_eq!(a.dims(), b.dims());
                assert!(max_diff(&a, &b) < 1e-5, "stages {stages}: {}", max_diff(&a, &b));
                assert!(a.min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0, "after a ReLU");
            }
            let pooled = fast.trunk(&x, 3).unwrap().mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
            assert!(max_diff(&pooled, &fast.features_hooked(&x, &mut NoHook).unwrap()) < 1e-6);
            assert!(matches!(fast.trunk(&x, 4), Err(Error::InvalidArchitecture { .. })));
        }
    }

    /// The trunk and the logits in one pass equal the trunk and the forward run apart, on both
    /// engines, at every stage boundary; the batch of 9 runs as parallel slices on the CPU path.
    #[test]
    fn trunk_and_logits_in_one_pass_equal_them_apart() {
        for model in [tiny_model(5), crate::testing::tiny_model::tiny_model_b(6)] {
            for net in [ResNet::new(&model, &Device::Cpu).unwrap(), ResNet::build(&model, &Device::Cpu, false).unwrap()]
            {
                for images in [3, 9] {
                    let x = batch(images);
                    let logits = net.forward(&x).unwrap();
                    for stages in 0..=3 {
                        let (t, l) = net.trunk_and_logits(&x, stages).unwrap();
                        let trunk = net.trunk(&x, stages).unwrap();
                        assert_eq!(t.dims(), trunk.dims());
                        assert!(max_diff(&t, &trunk) < 1e-6, "stages {stages}: trunk");
                        assert!(max_diff(&l, &logits) < 1e-5, "stages {stages}: logits {}", max_diff(&l, &logits));
                    }
                }
                assert!(matches!(net.trunk_and_logits(&batch(2), 4), Err(Error::InvalidArchitecture { .. })));
            }
        }
    }

    /// The CPU path against candle's own operations on the same weights (the reference), with
    /// and without a hook that rewrites a site, for every site.
    #[test]
    fn the_cpu_path_computes_what_candles_operations_compute() {
        let model = tiny_model(5);
        let fast = ResNet::new(&model, &Device::Cpu).unwrap();
        let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
        assert!(fast.cpu().is_some() && reference.cpu().is_none());
        let x = batch(5);
        assert!(max_diff(&fast.forward(&x).unwrap(), &reference.forward(&x).unwrap()) < 1e-5);
        for site in 0..fast.relu_sites().len() {
            let a = fast.forward_hooked(&x, &mut HalveSite(site)).unwrap();
            let b = reference.forward_hooked(&x, &mut HalveSite(site)).unwrap();
            assert!(max_diff(&a, &b) < 1e-5, "site {site}");
            assert!(max_diff(&a, &fast.forward(&x).unwrap()) > 1e-4, "site {site}: the hook changed nothing");
        }
    }
}
