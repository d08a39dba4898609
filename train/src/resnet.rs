//! A ResNet as it trains on the slice engine: the runtime's architecture and tensor names, batch
//! norm in training mode, one [`TrainableResNet::step`] of SGD at a time. What `classmod train`
//! runs on CPU, from a fresh initialisation or from a model (fine-tuning).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use classmod_runtime::host::{BlockKind, ModelFile, ModelMeta, Network, Shortcut, Stem};

use crate::init::resnet_values;
use crate::layers::{BasicBlock, ConvBn, Head, Plane, Shortcut as BlockShortcut, Values};
use crate::loss::cross_entropy;
use crate::stack::Stack;
use crate::{SgdConfig, TrainError};

/// A ResNet whose parameters can be trained.
#[derive(Debug)]
pub struct TrainableResNet {
    meta: ModelMeta,
    stack: Stack,
    /// The minibatch channel-major, and the gradient at the logits (kept across steps).
    input: Vec<f32>,
    dlogits: Vec<f32>,
}

/// The stack of `net`, its values taken from `values`.
fn build(net: &Network, values: HashMap<String, Vec<f32>>) -> Result<Stack, TrainError> {
    let unsupported = |what: &str| Err(TrainError::Unsupported { what: what.into() });
    let first = match net.stem {
        Stem::Cifar3x3 { channels } => channels,
        Stem::ImageNet7x7 { .. } => return unsupported("an ImageNet stem (7x7 convolution and max pool)"),
    };
    let mut v = Values(values);
    let entry = ConvBn::from_values("conv1".into(), "bn1".into(), first, net.in_channels, 3, 1, &mut v)?;
    let mut blocks = Vec::new();
    for b in net.blocks() {
        if b.kind != BlockKind::Basic {
            return unsupported("bottleneck blocks");
        }
        let p = b.prefix();
        let conv1 =
            ConvBn::from_values(format!("{p}.conv1"), format!("{p}.bn1"), b.planes, b.in_planes, 3, b.stride, &mut v)?;
        let conv2 = ConvBn::from_values(format!("{p}.conv2"), format!("{p}.bn2"), b.planes, b.planes, 3, 1, &mut v)?;
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
        blocks.push(BasicBlock::new(conv1, conv2, shortcut));
    }
    let width = blocks.last().map_or(first, |b| b.channels());
    let head = Head::from_values("linear", net.num_classes, width, &mut v)?;
    v.finish()?;
    // One network steps at a time: its products spread over rayon's threads.
    Ok(Stack::new(entry, blocks, head, true))
}

impl TrainableResNet {
    /// A freshly initialised network, seeded (see [`crate::init`]).
    pub fn init(meta: ModelMeta, seed: u64) -> Result<Self, TrainError> {
        meta.validate()?;
        let values = resnet_values(&meta.arch, seed);
        Self::from_values(meta, values)
    }

    /// Starts from an existing model (fine-tuning).
    pub fn from_model(model: &ModelFile) -> Result<Self, TrainError> {
        let mut values = HashMap::new();
        for (name, _) in model.meta.arch.tensor_shapes() {
            let t = model.tensor(&name)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            values.insert(name, t);
        }
        Self::from_values(model.meta.clone(), values)
    }

    fn from_values(meta: ModelMeta, values: HashMap<String, Vec<f32>>) -> Result<Self, TrainError> {
        let stack = build(&meta.arch.network(), values)?;
        Ok(TrainableResNet { meta, stack, input: Vec::new(), dlogits: Vec::new() })
    }

    /// What the network is and reads.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The current weights and running statistics as a model file (what checkpoints hold).
    pub fn to_model(&self) -> Result<ModelFile, TrainError> {
        let shapes: HashMap<String, Vec<usize>> = self.meta.arch.tensor_shapes().into_iter().collect();
        let mut tensors = HashMap::new();
        for (name, v) in self.stack.values() {
            let shape = shapes.get(&name).ok_or_else(|| TrainError::Values { name: name.clone() })?;
            tensors.insert(name.clone(), Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?);
        }
        Ok(ModelFile::new(self.meta.clone(), tensors)?)
    }

    /// The plane of `count` images of the network's input, after checking `images` holds them.
    fn plane(&self, images: &[f32], count: usize) -> Result<Plane, TrainError> {
        let i = &self.meta.input;
        if count < 1 || images.len() != count * i.channels * i.height * i.width {
            return Err(TrainError::Minibatch {
                what: format!("{} values for {count} images of {}x{}x{}", images.len(), i.channels, i.height, i.width),
            });
        }
        Ok(Plane { batch: count, height: i.height, width: i.width })
    }

    /// `images` (`(B, C, H, W)`, normalised) channel-major into the input buffer.
    fn load(&mut self, images: &[f32], p: Plane) {
        let (c, hw) = (self.meta.input.channels, p.height * p.width);
        self.input.resize(images.len(), 0.0);
        for (i, image) in images.chunks(c * hw).enumerate() {
            for (ch, plane) in image.chunks(hw).enumerate() {
                self.input[(ch * p.batch + i) * hw..][..hw].copy_from_slice(plane);
            }
        }
    }

    /// One SGD step on a minibatch of normalised images `(B, C, H, W)` and their labels, at
    /// learning rate `lr` (batch norm on the batch's statistics); the loss before the step (mean
    /// cross entropy).
    pub fn step(&mut self, images: &[f32], labels: &[u32], sgd: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        let p = self.plane(images, labels.len())?;
        let classes = self.meta.arch.num_classes as u32;
        if let Some(&bad) = labels.iter().find(|&&y| y >= classes) {
            return Err(TrainError::Minibatch { what: format!("label {bad} of {classes} classes") });
        }
        self.load(images, p);
        let input = std::mem::take(&mut self.input);
        let logits = self.stack.forward(&input, p, true);
        let loss = cross_entropy(logits, labels, &mut self.dlogits);
        self.stack.backward(&self.dlogits, &input, p);
        self.stack.sgd(sgd, lr as f32);
        self.input = input;
        Ok(loss)
    }

    /// The logits `(B, classes)` of normalised images `(B, C, H, W)` in eval mode (running
    /// statistics).
    pub fn logits(&mut self, images: &[f32], count: usize) -> Result<Vec<f32>, TrainError> {
        let p = self.plane(images, count)?;
        self.load(images, p);
        let input = std::mem::take(&mut self.input);
        let logits = self.stack.forward(&input, p, false).to_vec();
        self.input = input;
        Ok(logits)
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
            arch,
            input: InputSpec { channels: 3, height: 8, width: 8, mean: vec![0.5; 3], std: vec![0.25; 3] },
            class_names: (0..5).map(|i| format!("c{i}")).collect(),
        }
    }

    /// Two SGD steps here against the same two steps through candle's autograd and [`Sgd`]
    /// (the reference: candle derives that backward itself), for both shortcut options: the
    /// losses, every parameter and running statistic after the steps; then the saved model run
    /// by the runtime's inference engine gives this network's eval-mode logits (a second,
    /// independent forward), and reloads to the same values.
    #[test]
    fn steps_match_candle_autograd_and_the_runtime_runs_the_result() -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        for shortcut in [Shortcut::A, Shortcut::B] {
            let meta = meta(shortcut);
            let batch = 20; // two chunks of images
            let x: Vec<f32> = stream(batch * 3 * 64, 5).iter().map(|v| v * 2.0).collect();
            let labels: Vec<u32> = (0..batch as u32).map(|i| i * 3 % 5).collect();
            let mut ours = TrainableResNet::init(meta.clone(), 9)?;
            let mut twin = AutogradResNet::init(meta.clone(), 9, &dev)?;
            let mut opt = Sgd::new(twin.vars(), sgd);
            let (xt, yt) =
                (Tensor::from_vec(x.clone(), (batch, 3, 8, 8), &dev)?, Tensor::new(labels.as_slice(), &dev)?);
            for lr in [0.1, 0.05] {
                let got = ours.step(&x, &labels, &sgd, lr)?;
                let loss = candle_nn::loss::cross_entropy(&twin.forward(&xt, true)?, &yt)?;
                let want = loss.to_scalar::<f32>()? as f64;
                assert!((got - want).abs() < 1e-4 * want.max(1.0), "{shortcut:?}: loss {got} vs {want}");
                opt.set_lr(lr);
                opt.step(&loss.backward()?)?;
            }
            let (model, reference) = (ours.to_model()?, twin.to_model()?);
            for (name, _) in meta.arch.tensor_shapes() {
                let a = model.tensor(&name)?.flatten_all()?.to_vec1::<f32>()?;
                let b = reference.tensor(&name)?.flatten_all()?.to_vec1::<f32>()?;
                let d = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-4, "{shortcut:?}: `{name}` differs by {d} after two steps");
            }
            let logits = ours.logits(&x, batch)?;
            let runtime = ResNet::new(&model, &dev)?.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?;
            let d = logits.iter().zip(&runtime).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-3, "{shortcut:?}: eval logits and the runtime's differ by {d}");
            let mut again = TrainableResNet::from_model(&model)?;
            assert_eq!(again.logits(&x, batch)?, logits, "{shortcut:?}: a saved model reloads exactly");
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
        assert!(matches!(TrainableResNet::from_values(net.meta().clone(), values), Err(TrainError::Values { .. })));
        Ok(())
    }
}
