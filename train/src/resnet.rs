//! A ResNet as it trains on the slice engine: the runtime's architecture and tensor names, batch
//! norm in training mode, one step of SGD at a time. What `classmod train` runs on CPU, from a
//! fresh initialisation or from a model (fine-tuning); with the stem and the first stages frozen,
//! only the rest trains, on the frozen trunk's activations computed once (a `TrunkCache` of the
//! host, the machinery the compact branches' distillation uses).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use classmod_runtime::host::{ModelFile, ModelMeta, Network, Shortcut, Stem};

use crate::init::resnet_values;
use crate::layers::{channel_major_into, ConvBn, Head, Plane, ResidualBlock, Shortcut as BlockShortcut, Values};
use crate::loss::cross_entropy;
use crate::stack::{Body, Stack};
use crate::{SgdConfig, TrainError};

/// What trains: the whole network, or the stages after a frozen trunk. One per network, so the
/// variants' sizes do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Trainable {
    Whole(Stack),
    /// The frozen stem and stages' values (kept for the model file) and the body after them.
    Tail {
        frozen: Vec<(String, Vec<f32>)>,
        body: Body,
    },
}

/// A ResNet whose parameters (all, or those after a frozen trunk) can be trained.
#[derive(Debug)]
pub struct TrainableResNet {
    meta: ModelMeta,
    frozen_stages: usize,
    /// `(C, H, W)` of what the trainable part reads per image.
    trainable_input: (usize, usize, usize),
    trainable: Trainable,
    /// The minibatch channel-major, and the gradient at the logits (kept across steps).
    input: Vec<f32>,
    dlogits: Vec<f32>,
}

/// A network's layers as built: the stem, each block with its stage, the head.
type Layers = (ConvBn, Vec<(usize, ResidualBlock)>, Head);

/// The stem, the blocks with their stage, and the head of `net`, their values taken from
/// `values`.
fn build(net: &Network, values: HashMap<String, Vec<f32>>) -> Result<Layers, TrainError> {
    // The ImageNet stem: a 7x7 stride-2 convolution (its max-pool is the stack's, `Stack::with_max_pool`).
    let (first, k, stride) = match net.stem {
        Stem::Cifar3x3 { channels } => (channels, 3, 1),
        Stem::ImageNet7x7 { channels } => (channels, 7, 2),
    };
    let mut v = Values(values);
    let entry = ConvBn::from_values("conv1".into(), "bn1".into(), first, net.in_channels, k, stride, &mut v)?;
    let mut blocks = Vec::new();
    for b in net.blocks() {
        let p = b.prefix();
        let convs = b
            .convs()
            .into_iter()
            .map(|c| ConvBn::from_values(c.conv, c.bn, c.out, c.inp, c.kernel, c.stride, &mut v))
            .collect::<Result<Vec<_>, _>>()?;
        let shortcut = match (b.changes_shape(), net.shortcut) {
            (false, _) => BlockShortcut::Identity,
            (true, Shortcut::A) => BlockShortcut::Pad { pad: (b.planes - b.in_planes) / 2, stride: b.stride },
            (true, Shortcut::B) => BlockShortcut::Projection(Box::new(ConvBn::from_values(
                format!("{p}.shortcut.0"),
                format!("{p}.shortcut.1"),
                b.planes,
                b.in_planes,
                1,
                b.stride,
                &mut v,
            )?)),
        };
        blocks.push((b.stage, ResidualBlock::new(convs, shortcut)));
    }
    let width = blocks.last().map_or(first, |(_, b)| b.channels());
    let head = Head::from_values("linear", net.num_classes, width, &mut v)?;
    v.finish()?;
    Ok((entry, blocks, head))
}

impl TrainableResNet {
    /// A freshly initialised network, seeded (see [`crate::init`]).
    pub fn init(meta: ModelMeta, seed: u64) -> Result<Self, TrainError> {
        meta.validate()?;
        let values = resnet_values(&meta.arch, seed);
        Self::from_values(meta, values, 0)
    }

    /// Starts from an existing model (fine-tuning), everything trainable.
    pub fn from_model(model: &ModelFile) -> Result<Self, TrainError> {
        Self::from_model_frozen(model, 0)
    }

    /// Starts from an existing model with its stem and first `frozen_stages` stages frozen (0:
    /// nothing frozen; every stage: only the classifier trains). The frozen part keeps its weights
    /// and its running statistics; [`TrainableResNet::step_cached`] trains the rest on the frozen
    /// trunk's activations.
    pub fn from_model_frozen(model: &ModelFile, frozen_stages: usize) -> Result<Self, TrainError> {
        let mut values = HashMap::new();
        for (name, _) in model.meta.arch.tensor_shapes() {
            let t = model.tensor(&name)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            values.insert(name, t);
        }
        Self::from_values(model.meta.clone(), values, frozen_stages)
    }

    fn from_values(
        meta: ModelMeta,
        values: HashMap<String, Vec<f32>>,
        frozen_stages: usize,
    ) -> Result<Self, TrainError> {
        let net = meta.arch.network();
        net.blocks_until(frozen_stages)?; // a trunk the network has
        let (entry, blocks, head) = build(&net, values)?;
        // One network steps at a time: its products spread over rayon's threads.
        let trainable = if frozen_stages == 0 {
            let body = Body::new(blocks.into_iter().map(|(_, b)| b).collect(), head, true);
            match net.stem {
                Stem::Cifar3x3 { .. } => Trainable::Whole(Stack::new(entry, body)),
                Stem::ImageNet7x7 { .. } => Trainable::Whole(Stack::with_max_pool(entry, body)),
            }
        } else {
            let mut frozen = Vec::new();
            entry.values(&mut frozen);
            let (trunk, tail): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|(stage, _)| *stage < frozen_stages);
            for (_, b) in &trunk {
                b.layers().for_each(|l| l.values(&mut frozen));
            }
            Trainable::Tail { frozen, body: Body::new(tail.into_iter().map(|(_, b)| b).collect(), head, true) }
        };
        let i = &meta.input;
        let trainable_input = match frozen_stages {
            0 => (i.channels, i.height, i.width),
            t => {
                let (h, w) = net.plane_after(t, i.height, i.width);
                (net.channels_after(t), h, w)
            }
        };
        Ok(TrainableResNet { meta, frozen_stages, trainable_input, trainable, input: Vec::new(), dlogits: Vec::new() })
    }

    /// What the network is and reads.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The stages frozen with the stem (0: none).
    pub fn frozen_stages(&self) -> usize {
        self.frozen_stages
    }

    /// `(channels, height, width)` of what the trainable part reads per image: the image
    /// itself when nothing is frozen, else the frozen trunk's output (after its last ReLU).
    pub fn trainable_input(&self) -> (usize, usize, usize) {
        self.trainable_input
    }

    /// The current weights and running statistics as a model file (what checkpoints hold); a
    /// frozen trunk's as they were.
    pub fn to_model(&self) -> Result<ModelFile, TrainError> {
        let shapes: HashMap<String, Vec<usize>> = self.meta.arch.tensor_shapes().into_iter().collect();
        let values = match &self.trainable {
            Trainable::Whole(stack) => stack.values(),
            Trainable::Tail { frozen, body } => {
                let mut all = frozen.clone();
                body.values(&mut all);
                all
            }
        };
        let mut tensors = HashMap::new();
        for (name, v) in values {
            let shape = shapes.get(&name).ok_or_else(|| TrainError::Values { name: name.clone() })?;
            tensors.insert(name.clone(), Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?);
        }
        Ok(ModelFile::new(self.meta.clone(), tensors)?)
    }

    /// The trainable parameters' momentum buffers in forward order: with [`Self::to_model`],
    /// what a run resumed after a checkpoint needs to go on exactly as it would have.
    pub fn momentum(&self) -> Vec<Vec<f32>> {
        let params: Box<dyn Iterator<Item = &crate::sgd::Param>> = match &self.trainable {
            Trainable::Whole(stack) => Box::new(stack.entry.params().into_iter().chain(stack.body.params())),
            Trainable::Tail { body, .. } => Box::new(body.params()),
        };
        params.map(|p| p.momentum().to_vec()).collect()
    }

    /// Restores buffers [`Self::momentum`] gave for the same network (same frozen stages).
    pub fn restore_momentum(&mut self, saved: &[Vec<f32>]) -> Result<(), TrainError> {
        let params: Vec<&mut crate::sgd::Param> = match &mut self.trainable {
            Trainable::Whole(stack) => stack.entry.params_mut().into_iter().chain(stack.body.params_mut()).collect(),
            Trainable::Tail { body, .. } => body.params_mut().collect(),
        };
        let count = params.len();
        let fits = saved.len() == count && params.into_iter().zip(saved).all(|(p, s)| p.restore_momentum(s));
        match fits {
            true => Ok(()),
            false => Err(TrainError::Mismatch {
                what: format!(
                    "{} momentum buffers for a network of {count} trained parameters, or one of another size",
                    saved.len()
                ),
            }),
        }
    }

    /// The plane of `count` inputs of shape `(c, h, w)`, after checking `values` holds them and
    /// `labels` (when given) fit the classes.
    fn plane(
        &self,
        values: &[f32],
        count: usize,
        labels: Option<&[u32]>,
        input: (usize, usize, usize),
    ) -> Result<Plane, TrainError> {
        let (c, h, w) = input;
        if count < 1 || values.len() != count * c * h * w {
            return Err(TrainError::Minibatch {
                what: format!("{} values for {count} inputs of {c}x{h}x{w}", values.len()),
            });
        }
        let classes = self.meta.arch.num_classes() as u32;
        if let Some(&bad) = labels.into_iter().flatten().find(|&&y| y >= classes) {
            return Err(TrainError::Minibatch { what: format!("label {bad} of {classes} classes") });
        }
        Ok(Plane { batch: count, height: h, width: w })
    }

    fn whole_only(&self) -> Result<(), TrainError> {
        match self.frozen_stages {
            0 => Ok(()),
            t => Err(TrainError::Minibatch {
                what: format!(
                    "images for a network whose stem and {t} stages are frozen: give their activations (`step_cached`)"
                ),
            }),
        }
    }

    /// `images` (`(B, C, H, W)`) channel-major into the input buffer.
    fn load(&mut self, images: &[f32], p: Plane) {
        let hw = p.height * p.width;
        channel_major_into(images, p.batch, images.len() / (p.batch * hw), hw, &mut self.input);
    }

    /// One SGD step on a minibatch of normalised images `(B, C, H, W)` and their labels, at
    /// learning rate `lr` (batch norm on the batch's statistics); the loss before the step (mean
    /// cross entropy). For a network with nothing frozen.
    pub fn step(&mut self, images: &[f32], labels: &[u32], sgd: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        self.whole_only()?;
        let p = self.plane(images, labels.len(), Some(labels), self.trainable_input())?;
        self.load(images, p);
        let input = std::mem::take(&mut self.input);
        let loss = self.step_on(&input, p, labels, sgd, lr);
        self.input = input;
        Ok(loss)
    }

    /// One SGD step on what the trainable part reads ([`TrainableResNet::trainable_input`]),
    /// channel-major `(C, B, H, W)` as a `TrunkCache` gathers it, and the labels; the loss
    /// before the step. The frozen part's batch norms stay in eval mode: it ran once, with its
    /// running statistics, when the activations were cached.
    pub fn step_cached(&mut self, input: &[f32], labels: &[u32], sgd: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        let p = self.plane(input, labels.len(), Some(labels), self.trainable_input())?;
        Ok(self.step_on(input, p, labels, sgd, lr))
    }

    fn step_on(&mut self, input: &[f32], p: Plane, labels: &[u32], sgd: &SgdConfig, lr: f64) -> f64 {
        let lr = lr as f32;
        match &mut self.trainable {
            Trainable::Whole(stack) => {
                let loss = cross_entropy(stack.forward(input, p, true), labels, &mut self.dlogits);
                stack.backward(&self.dlogits, input, p);
                stack.sgd(sgd, lr);
                loss
            }
            Trainable::Tail { body, .. } => {
                let loss = cross_entropy(body.forward(input, p, true), labels, &mut self.dlogits);
                body.backward(&self.dlogits, input, p);
                body.sgd(sgd, lr);
                loss
            }
        }
    }

    /// The logits `(B, classes)` of normalised images `(B, C, H, W)` in eval mode (running
    /// statistics), for a network with nothing frozen.
    pub fn logits(&mut self, images: &[f32], count: usize) -> Result<Vec<f32>, TrainError> {
        self.whole_only()?;
        let p = self.plane(images, count, None, self.trainable_input())?;
        self.load(images, p);
        let input = std::mem::take(&mut self.input);
        let logits = self.logits_on(&input, p);
        self.input = input;
        Ok(logits)
    }

    /// The logits in eval mode of what the trainable part reads (channel-major, as
    /// [`TrainableResNet::step_cached`] takes it).
    pub fn logits_cached(&mut self, input: &[f32], count: usize) -> Result<Vec<f32>, TrainError> {
        let p = self.plane(input, count, None, self.trainable_input())?;
        Ok(self.logits_on(input, p))
    }

    fn logits_on(&mut self, input: &[f32], p: Plane) -> Vec<f32> {
        match &mut self.trainable {
            Trainable::Whole(stack) => stack.forward(input, p, false).to_vec(),
            Trainable::Tail { body, .. } => body.forward(input, p, false).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{AutogradResNet, Sgd};
    use crate::testing::stream;
    use classmod_runtime::host::{ResNet, ResNetConfig};
    use classmod_runtime::InputSpec;

    fn meta(shortcut: Shortcut) -> ModelMeta {
        let mut arch = ResNetConfig::cifar(8, 3, 5).unwrap();
        arch.widths = [4, 8, 16];
        arch.shortcut = shortcut;
        ModelMeta {
            arch: arch.into(),
            input: InputSpec::new(3, 8, 8, vec![0.5; 3], vec![0.25; 3]),
            class_names: (0..5).map(|i| format!("c{i}")).collect(),
        }
    }

    /// A four-stage network of torchvision's ResNet-18 layout (the 7x7 stride-2 stem, its
    /// max-pool, basic blocks, projections) at small widths, on 3x20x20 images.
    fn torchvision_meta() -> ModelMeta {
        let mut net = classmod_runtime::host::Network::torchvision(18, 64, 5).unwrap();
        net.stem = Stem::ImageNet7x7 { channels: 4 };
        for (s, stage) in net.stages.iter_mut().enumerate() {
            (stage.channels, stage.blocks) = (4 << s, 1);
        }
        ModelMeta {
            arch: net.into(),
            input: InputSpec::new(3, 20, 20, vec![0.5; 3], vec![0.25; 3]),
            class_names: (0..5).map(|i| format!("c{i}")).collect(),
        }
    }

    /// A four-stage network of torchvision's bottleneck layout (ResNet-50's: a 1x1, a strided
    /// 3x3 and a 1x1 to twice the inner width, as the wide ResNets have it), at small widths, on
    /// 3x20x20 images; stage 2 has a second block, whose shortcut is the identity.
    fn bottleneck_meta() -> ModelMeta {
        let mut net = classmod_runtime::host::Network::torchvision(50, 64, 5).unwrap();
        net.stem = Stem::ImageNet7x7 { channels: 4 };
        for (s, stage) in net.stages.iter_mut().enumerate() {
            stage.block = classmod_runtime::host::BlockKind::Bottleneck { width: 4 << s };
            (stage.channels, stage.blocks) = (8 << s, if s == 1 { 2 } else { 1 });
        }
        ModelMeta {
            arch: net.into(),
            input: InputSpec::new(3, 20, 20, vec![0.5; 3], vec![0.25; 3]),
            class_names: (0..5).map(|i| format!("c{i}")).collect(),
        }
    }

    /// `model` with every batch norm's scale drawn from 0.5..1.5: a fresh bottleneck block's
    /// last norm starts at 0, which would leave its convolutions without a gradient in a first
    /// step.
    fn with_scaled_norms(model: ModelFile) -> Result<ModelFile, TrainError> {
        let mut tensors = model.tensors.clone();
        for (i, (name, shape)) in model.meta.arch.tensor_shapes().into_iter().enumerate() {
            if shape.len() == 1 && name.ends_with(".weight") && !name.starts_with("linear") {
                let v = stream(shape[0], 100 + i as u32).iter().map(|v| 1.0 + v / 2.0).collect::<Vec<f32>>();
                tensors.insert(name, Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?);
            }
        }
        Ok(ModelFile::new(model.meta.clone(), tensors)?)
    }

    /// Two SGD steps here against the same two steps through candle's autograd and [`Sgd`]
    /// (the reference: candle derives that backward itself), for both shortcut options and a
    /// four-stage network with the ImageNet stem (its max-pool's backward included) of basic and
    /// of bottleneck blocks: the losses, every parameter and running statistic after the steps;
    /// then the saved model run by the runtime's inference engine gives this network's
    /// eval-mode logits (a second, independent forward), and reloads to the same values.
    #[test]
    fn steps_match_candle_autograd_and_the_runtime_runs_the_result() -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        for (label, meta) in [
            ("option A", meta(Shortcut::A)),
            ("option B", meta(Shortcut::B)),
            ("basic blocks, ImageNet stem", torchvision_meta()),
            ("bottlenecks, ImageNet stem", bottleneck_meta()),
        ] {
            let i = &meta.input;
            let batch = 20; // two chunks of images
            let x: Vec<f32> = stream(batch * i.image_len(), 5).iter().map(|v| v * 2.0).collect();
            let labels: Vec<u32> = (0..batch as u32).map(|i| i * 3 % 5).collect();
            let start = with_scaled_norms(TrainableResNet::init(meta.clone(), 9)?.to_model()?)?;
            let mut ours = TrainableResNet::from_model(&start)?;
            let mut twin = AutogradResNet::from_model(&start, &dev)?;
            let mut opt = Sgd::new(twin.vars(), sgd);
            let dims = (batch, i.channels, i.height, i.width);
            let (xt, yt) = (Tensor::from_vec(x.clone(), dims, &dev)?, Tensor::new(labels.as_slice(), &dev)?);
            for lr in [0.1, 0.05] {
                let got = ours.step(&x, &labels, &sgd, lr)?;
                let loss = candle_nn::loss::cross_entropy(&twin.forward(&xt, true)?, &yt)?;
                let want = loss.to_scalar::<f32>()? as f64;
                assert!((got - want).abs() < 1e-4 * want.max(1.0), "{label}: loss {got} vs {want}");
                opt.set_lr(lr);
                opt.step(&loss.backward()?)?;
            }
            let (model, reference) = (ours.to_model()?, twin.to_model()?);
            for (name, _) in meta.arch.tensor_shapes() {
                let a = model.tensor(&name)?.flatten_all()?.to_vec1::<f32>()?;
                let b = reference.tensor(&name)?.flatten_all()?.to_vec1::<f32>()?;
                let d = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-4, "{label}: `{name}` differs by {d} after two steps");
            }
            let logits = ours.logits(&x, batch)?;
            let runtime = ResNet::new(&model, &dev)?.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?;
            let d = logits.iter().zip(&runtime).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-3, "{label}: eval logits and the runtime's differ by {d}");
            let mut again = TrainableResNet::from_model(&model)?;
            assert_eq!(again.logits(&x, batch)?, logits, "{label}: a saved model reloads exactly");
        }
        Ok(())
    }

    /// With the stem and the first T stages frozen (T = 1, 2, 3; both shortcut options), on
    /// trunk activations from the runtime's inference engine: two SGD steps against the same
    /// steps through candle's autograd from the same activations (`forward_from`, its own
    /// backward; the frozen parameters get no gradient there and are left alone): losses and
    /// every trained value; the frozen values come back untouched; and before training, the
    /// tail's eval-mode logits are the runtime's logits of the whole network.
    #[test]
    fn a_tail_on_a_frozen_trunk_matches_candle_autograd_and_the_runtime() -> Result<(), TrainError> {
        use crate::testing::channel_major;
        use classmod_runtime::host::Images;
        let dev = Device::Cpu;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        for (label, meta) in [
            ("option A", meta(Shortcut::A)),
            ("option B", meta(Shortcut::B)),
            ("basic blocks, ImageNet stem", torchvision_meta()),
            ("bottlenecks, ImageNet stem", bottleneck_meta()),
        ] {
            let i = &meta.input;
            let mut model = TrainableResNet::init(meta.clone(), 4)?;
            let batch = 18;
            let x: Vec<f32> = stream(batch * i.image_len(), 8).iter().map(|v| v * 2.0).collect();
            let labels: Vec<u32> = (0..batch as u32).map(|i| i * 2 % 5).collect();
            // A few steps first, so that the running statistics are not the initial ones.
            for _ in 0..3 {
                model.step(&x, &labels, &sgd, 0.05)?;
            }
            let model = model.to_model()?;
            let runtime = ResNet::new(&model, &dev)?;
            let xt = Tensor::from_vec(x.clone(), (batch, i.channels, i.height, i.width), &dev)?;
            let whole = runtime.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?;
            for frozen in 1..=3 {
                let trunk = runtime.trunk(Images::Nchw(&xt), frozen)?;
                let (c, h, w) = (trunk.channels, trunk.height, trunk.width);
                let acts = trunk.to_nchw();
                let mut ours = TrainableResNet::from_model_frozen(&model, frozen)?;
                assert_eq!(ours.trainable_input(), (c, h, w));
                let input = channel_major(&acts, batch, c, h * w);
                let eval = ours.logits_cached(&input, batch)?;
                let d = eval.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-3, "{label} T{frozen}: the tail's eval logits and the runtime's differ by {d}");
                assert!(matches!(ours.step(&x, &labels, &sgd, 0.1), Err(TrainError::Minibatch { .. })));
                let mut twin = AutogradResNet::from_model(&model, &dev)?;
                let mut opt = Sgd::new(twin.vars(), sgd);
                let (at, yt) =
                    (Tensor::from_vec(acts.clone(), (batch, c, h, w), &dev)?, Tensor::new(labels.as_slice(), &dev)?);
                for lr in [0.1, 0.05] {
                    let got = ours.step_cached(&input, &labels, &sgd, lr)?;
                    let loss = candle_nn::loss::cross_entropy(&twin.forward_from(&at, frozen, true)?, &yt)?;
                    let want = loss.to_scalar::<f32>()? as f64;
                    assert!((got - want).abs() < 1e-4 * want.max(1.0), "{label} T{frozen}: loss {got} vs {want}");
                    opt.set_lr(lr);
                    opt.step(&loss.backward()?)?;
                }
                let (trained, reference) = (ours.to_model()?, twin.to_model()?);
                let mut changed = 0;
                for (name, _) in meta.arch.tensor_shapes() {
                    let v = |m: &ModelFile| m.tensor(&name).and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?));
                    let (a, b, before) = (v(&trained)?, v(&reference)?, v(&model)?);
                    let d = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(d < 1e-4, "{label} T{frozen}: `{name}` differs by {d} after two steps");
                    let frozen_tensor = name.starts_with("conv1")
                        || name.starts_with("bn1")
                        || (1..=frozen).any(|s| name.starts_with(&format!("layer{s}.")));
                    if frozen_tensor {
                        assert_eq!(a, before, "{label} T{frozen}: frozen `{name}` changed");
                    } else if a != before {
                        changed += 1;
                    }
                }
                assert!(changed > 0, "{label} T{frozen}: nothing trained");
            }
        }
        Ok(())
    }

    /// Inputs that do not fit are errors, not panics; so are names the architecture lacks.
    #[test]
    fn bad_minibatches_and_values_are_refused() -> Result<(), TrainError> {
        let mut net = TrainableResNet::init(meta(Shortcut::A), 1)?;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let x = vec![0.1f32; 2 * 3 * 64];
        assert!(net.step(&x, &[0, 1], &sgd, 0.1)?.is_finite());
        assert!(matches!(net.step(&x[1..], &[0, 1], &sgd, 0.1), Err(TrainError::Minibatch { .. })));
        assert!(matches!(net.step(&x, &[0, 5], &sgd, 0.1), Err(TrainError::Minibatch { .. })));
        assert!(matches!(net.logits(&x, 3), Err(TrainError::Minibatch { .. })));
        let mut values = resnet_values(&net.meta().arch, 1);
        values.insert("layer9.0.conv1.weight".into(), vec![0.0]);
        assert!(matches!(TrainableResNet::from_values(net.meta().clone(), values, 0), Err(TrainError::Values { .. })));
        let model = net.to_model()?;
        assert!(TrainableResNet::from_model_frozen(&model, 4).is_err(), "a trunk of more stages than the network's");
        Ok(())
    }
}
