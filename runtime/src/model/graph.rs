//! The eval-mode ResNet: a network description ([`Network`]), its folded layers and the engine
//! that runs them. Batch norm is folded into the preceding convolution at load time
//! (`w' = w * g/sqrt(v+eps)`, `b' = beta - m * g/sqrt(v+eps)`), so a forward pass is
//! convolutions, bias adds, ReLUs and residual adds only.
//!
//! Every ReLU output is a *site* (numbered in forward order: the stem, then per block its ReLUs
//! in order, the last after the residual add). A [`ReluHook`] sees, and may replace, each
//! site's activation: decomposition observes nodes through it.
//!
//! Which engine runs the convolutions is chosen here, once (`crate::engine`): on the CPU the CPU
//! path (NHWC, packed weights, own micro-kernels and Winograd, fused epilogues), elsewhere
//! candle's operations, in f32 or, on a GPU, in half precision ([`ResNet::with_precision`]).

use std::sync::Arc;

use candle_core::{Device, Module, Tensor};

use crate::cpu::conv::Plane;
use crate::engine::candle::CandleEngine;
use crate::engine::cpu::CpuEngine;
use crate::engine::{Activation, Engine, Images};
use crate::model::layers::{Block, StemLayers};
use crate::model::linear::Linear;
use crate::model::network::{Network, ReluSite, TrunkEnd};
use crate::Result;
use crate::{Architecture, Error, InputSpec, ModelFile, Precision};

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

/// A loaded eval-mode ResNet.
#[derive(Debug, Clone)]
pub struct ResNet {
    arch: Architecture,
    network: Network,
    input: InputSpec,
    class_names: Vec<String>,
    /// Shared: snapshots and module groups clone the network.
    engine: Arc<dyn Engine>,
    linear: Arc<Linear>,
    device: Device,
}

impl ResNet {
    /// Builds the graph from a validated model on `device` (on the CPU, the CPU path).
    pub fn new(model: &ModelFile, device: &Device) -> Result<Self> {
        Self::build(model, device, matches!(device, Device::Cpu))
    }

    /// The network on candle's operations even on the CPU: what a GPU runs, and the reference
    /// engine the CPU path is checked against.
    pub fn new_on_candle(model: &ModelFile, device: &Device) -> Result<Self> {
        Self::build(model, device, false)
    }

    /// Bytes of weights this network holds, in whatever form its engine keeps them (the CPU
    /// path's packed and Winograd-transformed convolutions, or candle's folded tensors), plus the
    /// linear head.
    pub fn resident_bytes(&self) -> u64 {
        self.engine.weight_bytes() + self.linear.bytes()
    }

    /// `cpu_path: false` runs candle's operations even on the CPU: the reference the CPU path is
    /// tested against.
    pub(crate) fn build(model: &ModelFile, device: &Device, cpu_path: bool) -> Result<Self> {
        let network = model.meta.arch.network();
        let model = &ModelFile {
            meta: model.meta.clone(),
            tensors: model
                .tensors
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
                .collect::<Result<_, candle_core::Error>>()?,
        };
        let stem = StemLayers::fold(model, network.stem)?;
        let blocks =
            network.blocks().iter().map(|b| Block::fold(model, network.shortcut, b)).collect::<Result<Vec<_>, _>>()?;
        let linear = Arc::new(Linear::new(model.tensor("linear.weight")?, model.tensor("linear.bias")?)?);
        let (h, w) = (model.meta.input.height, model.meta.input.width);
        // The one place an engine is chosen: every other operation goes through the trait.
        let engine: Arc<dyn Engine> = if cpu_path {
            Arc::new(CpuEngine::new(&stem, &blocks, Plane { height: h, width: w })?)
        } else {
            Arc::new(CandleEngine::new(stem, blocks, device, (h, w)))
        };
        Ok(ResNet {
            arch: model.meta.arch.clone(),
            network,
            input: model.meta.input.clone(),
            class_names: model.meta.class_names.clone(),
            engine,
            linear,
            device: device.clone(),
        })
    }

    /// The same network with its convolutions computing in `precision` (weights converted once,
    /// here). The CPU path computes in f32 only: other precisions are for GPUs.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if precision != self.engine.precision() {
            self.engine = self.engine.with_precision(precision)?;
        }
        Ok(self)
    }

    /// What the convolutions compute in.
    pub fn precision(&self) -> Precision {
        self.engine.precision()
    }

    /// The engine, for the module groups built on this base.
    pub(crate) fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// The classifier layer, for the module groups built on this base.
    pub(crate) fn linear_layer(&self) -> &Linear {
        &self.linear
    }

    #[cfg(feature = "host")]
    /// Reads a model file and builds its graph.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        Self::new(&ModelFile::read(path, device)?, device)
    }

    /// The architecture, as stored in the model file.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }
    /// The network the engine runs: stem, stages, block kinds.
    pub fn network(&self) -> &Network {
        &self.network
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
        self.network.relu_sites(self.input.height, self.input.width)
    }

    /// That `x` holds whole images of the input spec's shape.
    pub(crate) fn check_images(&self, x: &Images) -> Result<()> {
        let want = (self.input.channels, self.input.height, self.input.width);
        match *x {
            Images::Nchw(t) => match t.dims() {
                [_, c, h, w] if (*c, *h, *w) == want => Ok(()),
                dims => Err(Error::InputShape { expected: want, found: dims.to_vec() }),
            },
            Images::Nhwc { values, count } if values.len() == count * want.0 * want.1 * want.2 => Ok(()),
            Images::Nhwc { values, .. } => Err(Error::InputShape { expected: want, found: vec![values.len()] }),
        }
    }

    /// Logits `(batch, classes)` of a normalised NCHW batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_hooked(x, &mut NoHook)
    }

    /// Logits, with `hook` called at every ReLU site.
    pub fn forward_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor> {
        let images = Images::Nchw(x);
        let logits = self.linear.apply(&self.feature_rows(images, hook)?, images.count());
        Ok(Tensor::from_vec(logits, (images.count(), self.linear.classes()), &self.device)?)
    }

    /// The classifier layer: logits `(batch, classes)` of pooled features `(batch, features)`.
    pub fn linear(&self, features: &Tensor) -> Result<Tensor> {
        let batch = features.dim(0)?;
        let rows = features.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let logits = self.linear.apply(&rows, batch);
        Ok(Tensor::from_vec(logits, (batch, self.linear.classes()), features.device())?)
    }

    /// Logits `(batch, classes)` as plain rows of normalised `x`.
    pub fn logits(&self, x: Images) -> Result<Vec<f32>> {
        Ok(self.linear.apply(&self.feature_rows(x, &mut NoHook)?, x.count()))
    }

    /// Globally average-pooled features `(batch, features)`, the input of the linear layer.
    pub fn features_hooked(&self, x: &Tensor, hook: &mut dyn ReluHook) -> Result<Tensor> {
        let feats = self.feature_rows(Images::Nchw(x), hook)?;
        let batch = x.dim(0)?;
        let f = feats.len() / batch.max(1);
        Ok(Tensor::from_vec(feats, (batch, f), &self.device)?)
    }

    /// Pooled features as plain rows, after checking the images: what the classifier reads
    /// straight, with no tensor between the engine and it.
    fn feature_rows(&self, x: Images, hook: &mut dyn ReluHook) -> Result<Vec<f32>> {
        self.check_images(&x)?;
        self.engine.features(x, hook)
    }

    /// The trunk of the network: the stem and its first stages (and blocks of the next, where
    /// `end` says), for a batch `x` of normalised images; the activation there (NHWC, after its
    /// ReLU). A compact module's branch runs on it, computed once for every loaded class of
    /// this base.
    pub fn trunk(&self, x: Images, end: impl Into<TrunkEnd>) -> Result<Activation> {
        let blocks = self.network.blocks_until_end(end.into())?;
        self.check_images(&x)?;
        self.engine.trunk(x, blocks)
    }

    /// The trunk's activation (as [`ResNet::trunk`] gives it) and the logits `(B, classes)` of
    /// the whole network, as rows, in one pass: the network's remaining stages continue from the
    /// trunk's activation instead of starting over. What a compact decomposition caches.
    pub fn trunk_and_logits(&self, x: Images, end: impl Into<TrunkEnd>) -> Result<(Activation, Vec<f32>)> {
        let blocks = self.network.blocks_until_end(end.into())?;
        self.check_images(&x)?;
        let images = x.count();
        let (trunk, feats) = self.engine.trunk_and_features(x, blocks)?;
        Ok((trunk, self.linear.apply(&feats, images)))
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
    use crate::cpu::net::to_nhwc;
    use crate::testing::tiny_model::tiny_model;
    use candle_core::D;

    /// An activation as an NCHW tensor, to compare with candle's.
    fn tensor_of(a: &Activation) -> Tensor {
        Tensor::from_vec(a.to_nchw(), (a.images, a.channels, a.height, a.width), &Device::Cpu).unwrap()
    }

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
            let cpu = net.engine().cpu_net().unwrap();
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
        for model in
            [tiny_model(5), crate::testing::tiny_model::tiny_model_b(6), crate::testing::tiny_model::tiny_model_14(7)]
        {
            let fast = ResNet::new(&model, &Device::Cpu).unwrap();
            let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
            let x = batch(3);
            let widths = model.meta.arch.as_cifar().unwrap().widths;
            for stages in 0..=3 {
                let a = tensor_of(&fast.trunk(Images::Nchw(&x), stages).unwrap());
                let b = tensor_of(&reference.trunk(Images::Nchw(&x), stages).unwrap());
                let (c, side) = match stages {
                    0 => (widths[0], 8),
                    s => (widths[s - 1], 8 >> (s - 1)),
                };
                assert_eq!(a.dims(), [3, c, side, side], "stages {stages}");
                assert_eq!(a.dims(), b.dims());
                // Relative: ResNet-14's activations grow larger than ResNet-8's.
                let scale = 1.0 + a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(max_diff(&a, &b) < 1e-5 * scale, "stages {stages}: {} (scale {scale})", max_diff(&a, &b));
                assert!(a.min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0, "after a ReLU");
            }
            // Into stage 3 by its first block (which halves the plane): the next stage's plane.
            if model.meta.arch.as_cifar().unwrap().blocks_per_stage > 1 {
                let end = TrunkEnd { stages: 2, blocks: 1 };
                let a = tensor_of(&fast.trunk(Images::Nchw(&x), end).unwrap());
                let b = tensor_of(&reference.trunk(Images::Nchw(&x), end).unwrap());
                assert_eq!(a.dims(), [3, widths[2], 2, 2]);
                let scale = 1.0 + a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(max_diff(&a, &b) < 1e-5 * scale, "into stage 3: {}", max_diff(&a, &b));
            }
            let pooled =
                tensor_of(&fast.trunk(Images::Nchw(&x), 3).unwrap()).mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
            let features = fast.features_hooked(&x, &mut NoHook).unwrap();
            let scale = 1.0 + features.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(max_diff(&pooled, &features) < 1e-6 * scale, "{}", max_diff(&pooled, &features));
            assert!(matches!(
                fast.trunk(Images::Nchw(&x), 4),
                Err(Error::TrunkOutOfRange { stages: 4, network_stages: 3 })
            ));
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
                        let (t, l) = net.trunk_and_logits(Images::Nchw(&x), stages).unwrap();
                        let l = Tensor::from_vec(l, logits.dims(), &Device::Cpu).unwrap();
                        let (t, trunk) = (tensor_of(&t), tensor_of(&net.trunk(Images::Nchw(&x), stages).unwrap()));
                        assert_eq!(t.dims(), trunk.dims());
                        assert!(max_diff(&t, &trunk) < 1e-6, "stages {stages}: trunk");
                        assert!(max_diff(&l, &logits) < 1e-5, "stages {stages}: logits {}", max_diff(&l, &logits));
                    }
                }
                assert!(matches!(net.trunk_and_logits(Images::Nchw(&batch(2)), 4), Err(Error::TrunkOutOfRange { .. })));
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
        assert!(fast.engine().cpu_net().is_some() && reference.engine().cpu_net().is_none());
        let x = batch(5);
        assert!(max_diff(&fast.forward(&x).unwrap(), &reference.forward(&x).unwrap()) < 1e-5);
        for site in 0..fast.relu_sites().len() {
            let a = fast.forward_hooked(&x, &mut HalveSite(site)).unwrap();
            let b = reference.forward_hooked(&x, &mut HalveSite(site)).unwrap();
            assert!(max_diff(&a, &b) < 1e-5, "site {site}");
            assert!(max_diff(&a, &fast.forward(&x).unwrap()) > 1e-4, "site {site}: the hook changed nothing");
        }
    }

    /// Four-stage networks of torchvision's layout (the 7x7 stride-2 stem and its max-pool,
    /// basic and bottleneck blocks, projection shortcuts with stride in layer 1 of a bottleneck
    /// network too) on the CPU path against candle's operations (the reference engine): the
    /// logits at batch 1, 3 and 9 (run whole and as parallel slices), on an odd plane (the pool
    /// and each stride-2 layer lose a padded edge), a hook rewriting each site, and the trunk at
    /// every stage boundary. The sites the engines visit are the ones the network lists.
    #[test]
    fn four_stage_networks_run_the_same_on_both_engines() {
        use crate::testing::tiny_model::tiny_torchvision;
        for (bottleneck, blocks, side) in
            [(false, [2, 1, 1, 1], 32), (true, [1, 2, 1, 1], 36), (true, [1, 1, 1, 1], 28)]
        {
            let model = tiny_torchvision(11, bottleneck, blocks, side);
            let fast = ResNet::new(&model, &Device::Cpu).unwrap();
            let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
            let images = |n: usize| {
                let v: Vec<f32> = (0..n * 3 * side * side).map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.2).collect();
                Tensor::from_vec(v, (n, 3, side, side), &Device::Cpu).unwrap()
            };
            let tol = |a: &Tensor| 1e-5 * (1.0 + a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap());
            for n in [1, 3, 9] {
                let (a, b) = (fast.forward(&images(n)).unwrap(), reference.forward(&images(n)).unwrap());
                assert!(max_diff(&a, &b) < tol(&b), "{bottleneck} {n} images: {}", max_diff(&a, &b));
            }
            let sites = fast.relu_sites();
            assert_eq!(sites.len(), 1 + blocks.iter().sum::<usize>() * if bottleneck { 3 } else { 2 });
            let x = images(2);
            for (site, at) in sites.iter().enumerate() {
                let a = fast.forward_hooked(&x, &mut HalveSite(site)).unwrap();
                let b = reference.forward_hooked(&x, &mut HalveSite(site)).unwrap();
                assert!(max_diff(&a, &b) < tol(&b), "site {site} ({})", at.name);
                assert!(max_diff(&a, &fast.forward(&x).unwrap()) > 1e-6, "site {site}: the hook changed nothing");
            }
            let net = model.meta.arch.network();
            for stages in 0..=4 {
                let (a, b) =
                    (fast.trunk(Images::Nchw(&x), stages).unwrap(), reference.trunk(Images::Nchw(&x), stages).unwrap());
                let (h, w) = net.plane_after(stages, side, side);
                assert_eq!((a.height, a.width, a.channels), (h, w, net.channels_after(stages)), "stages {stages}");
                let (a, b) = (tensor_of(&a), tensor_of(&b));
                assert!(max_diff(&a, &b) < tol(&b), "stages {stages}");
            }
        }
    }
}
