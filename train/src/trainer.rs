//! A ResNet being trained with its optimiser, on the engine its device has: the slice engine
//! ([`TrainableResNet`]) on the CPU, the autograd twin ([`AutogradResNet`], candle's kernels)
//! elsewhere. What a training loop holds; it sees one step at a time either way, on images or,
//! with a frozen trunk, on the trunk's cached activations.

use candle_core::{Device, Tensor};
use classmod_runtime::host::{ModelFile, ModelMeta};

use crate::autograd::{AutogradResNet, Sgd};
use crate::{SgdConfig, TrainError, TrainableResNet};

/// A network and its optimiser state (momentum buffers).
pub struct Trainer {
    engine: Engine,
    frozen_stages: usize,
}

// One per training run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Slices(TrainableResNet),
    /// `trunk_output`: `(C, H, W)` of the frozen trunk's output (what `step_cached` reads),
    /// worked out once rather than from the architecture at every step.
    Autograd {
        net: AutogradResNet,
        sgd: Sgd,
        device: Device,
        trunk_output: (usize, usize, usize),
    },
}

impl Trainer {
    /// A fresh network (seeded) on `device`.
    pub fn init(meta: ModelMeta, seed: u64, device: &Device) -> Result<Self, TrainError> {
        Ok(Trainer {
            engine: match device {
                Device::Cpu => Engine::Slices(TrainableResNet::init(meta, seed)?),
                _ => Self::autograd(AutogradResNet::init(meta, seed, device)?, 0, device),
            },
            frozen_stages: 0,
        })
    }

    /// A network starting from `model` (fine-tuning) on `device`.
    pub fn from_model(model: &ModelFile, device: &Device) -> Result<Self, TrainError> {
        Self::from_model_frozen(model, 0, device)
    }

    /// A network starting from `model` with its stem and first `frozen_stages` stages frozen
    /// (their batch norms in eval mode): [`Trainer::step_cached`] trains the rest on the frozen
    /// trunk's activations.
    pub fn from_model_frozen(model: &ModelFile, frozen_stages: usize, device: &Device) -> Result<Self, TrainError> {
        let engine = match device {
            Device::Cpu => Engine::Slices(TrainableResNet::from_model_frozen(model, frozen_stages)?),
            _ => {
                model.meta.arch.network().blocks_until(frozen_stages)?; // a trunk the network has
                Self::autograd(AutogradResNet::from_model(model, device)?, frozen_stages, device)
            }
        };
        Ok(Trainer { engine, frozen_stages })
    }

    fn autograd(net: AutogradResNet, frozen_stages: usize, device: &Device) -> Engine {
        // Its settings come with every step.
        let none = SgdConfig { lr: 0.0, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let sgd = Sgd::new(net.vars(), none);
        let n = net.meta.arch.network();
        let (h, w) = n.plane_after(frozen_stages, net.meta.input.height, net.meta.input.width);
        let trunk_output = (n.channels_after(frozen_stages), h, w);
        Engine::Autograd { net, sgd, device: device.clone(), trunk_output }
    }

    /// Which engine trains: `"slices"` or `"candle-autograd"`.
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Slices(_) => "slices",
            Engine::Autograd { .. } => "candle-autograd",
        }
    }

    /// What the network is and reads.
    pub fn meta(&self) -> &ModelMeta {
        match &self.engine {
            Engine::Slices(n) => n.meta(),
            Engine::Autograd { net, .. } => &net.meta,
        }
    }

    /// The stages frozen with the stem (0: none, the network trains on images).
    pub fn frozen_stages(&self) -> usize {
        self.frozen_stages
    }

    /// One SGD step (`c`, at learning rate `lr`) on normalised images `(B, C, H, W)` and their
    /// labels; the loss before the step (mean cross entropy). For a network with nothing frozen.
    pub fn step(&mut self, images: &[f32], labels: &[u32], c: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        match &mut self.engine {
            Engine::Slices(n) => n.step(images, labels, c, lr),
            Engine::Autograd { .. } if self.frozen_stages > 0 => Err(TrainError::Minibatch {
                what: format!("images for a network whose stem and {} stages are frozen", self.frozen_stages),
            }),
            Engine::Autograd { net, .. } => {
                let i = &net.meta.input;
                let shape = (labels.len(), i.channels, i.height, i.width);
                self.autograd_step(images, shape, false, labels, c, lr)
            }
        }
    }

    /// One SGD step on the frozen trunk's activations of a minibatch, channel-major
    /// `(C, B, H, W)` as a trunk cache gathers them, and their labels; the loss before the step.
    pub fn step_cached(&mut self, acts: &[f32], labels: &[u32], c: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        match &mut self.engine {
            Engine::Slices(n) => n.step_cached(acts, labels, c, lr),
            Engine::Autograd { trunk_output, .. } => {
                let (ch, h, w) = *trunk_output;
                self.autograd_step(acts, (ch, labels.len(), h, w), true, labels, c, lr)
            }
        }
    }

    /// A step of the autograd twin on `values` of `shape`, channel-major when `cached`.
    fn autograd_step(
        &mut self,
        values: &[f32],
        shape: (usize, usize, usize, usize),
        cached: bool,
        labels: &[u32],
        c: &SgdConfig,
        lr: f64,
    ) -> Result<f64, TrainError> {
        let Engine::Autograd { net, sgd, device, .. } = &mut self.engine else { unreachable!("the autograd engine") };
        if values.len() != shape.0 * shape.1 * shape.2 * shape.3 {
            return Err(TrainError::Minibatch { what: format!("{} values for {shape:?}", values.len()) });
        }
        let mut x = Tensor::from_slice(values, shape, device)?;
        if cached {
            x = x.permute((1, 0, 2, 3))?.contiguous()?;
        }
        let y = Tensor::from_slice(labels, labels.len(), device)?;
        let loss = candle_nn::loss::cross_entropy(&net.forward_from(&x, self.frozen_stages, true)?, &y)?;
        let value = loss.to_scalar::<f32>()? as f64;
        sgd.config = *c;
        sgd.set_lr(lr);
        sgd.step(&loss.backward()?)?;
        Ok(value)
    }

    /// The current weights as a model file.
    pub fn to_model(&self) -> Result<ModelFile, TrainError> {
        match &self.engine {
            Engine::Slices(n) => n.to_model(),
            Engine::Autograd { net, .. } => net.to_model(),
        }
    }

    /// The optimiser's momentum buffers: with [`Trainer::to_model`], all a resumed run needs.
    pub fn momentum(&self) -> Result<Vec<Vec<f32>>, TrainError> {
        match &self.engine {
            Engine::Slices(n) => Ok(n.momentum()),
            Engine::Autograd { sgd, .. } => Ok(sgd.momentum()?),
        }
    }

    /// Restores buffers [`Trainer::momentum`] gave for the same network on the same engine.
    pub fn restore_momentum(&mut self, saved: &[Vec<f32>]) -> Result<(), TrainError> {
        match &mut self.engine {
            Engine::Slices(n) => n.restore_momentum(saved),
            Engine::Autograd { sgd, .. } => match sgd.restore_momentum(saved)? {
                true => Ok(()),
                false => Err(TrainError::Mismatch {
                    what: format!("{} momentum buffers that do not fit the network's variables", saved.len()),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stream;
    use classmod_runtime::host::ResNetConfig;
    use classmod_runtime::InputSpec;

    fn model(classes: usize, seed: u64) -> ModelFile {
        let mut arch = ResNetConfig::cifar(14, 3, classes).unwrap();
        arch.widths = [4, 8, 16];
        let meta = ModelMeta {
            arch: arch.into(),
            input: InputSpec::new(3, 8, 8, vec![0.5; 3], vec![0.25; 3]),
            class_names: (0..classes).map(|i| format!("c{i}")).collect(),
        };
        TrainableResNet::init(meta, seed).unwrap().to_model().unwrap()
    }

    /// The two engines behind one [`Trainer`] on a frozen trunk's cached activations: the slice
    /// engine against the autograd twin (candle differentiates it itself), same losses and
    /// values after three steps; and a trainer rebuilt from a checkpoint (model + momentum)
    /// goes on exactly as the one that never stopped.
    #[test]
    fn cached_steps_agree_across_engines_and_a_restored_trainer_goes_on_exactly() -> Result<(), TrainError> {
        let m = model(6, 4);
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        let frozen = 1;
        let mut slices = Trainer::from_model_frozen(&m, frozen, &Device::Cpu)?;
        let mut twin = Trainer {
            engine: Trainer::autograd(AutogradResNet::from_model(&m, &Device::Cpu)?, frozen, &Device::Cpu),
            frozen_stages: frozen,
        };
        assert_eq!((slices.engine(), twin.engine()), ("slices", "candle-autograd"));
        let batch = 6;
        let acts: Vec<f32> = stream(4 * batch * 64, 3).iter().map(|v| v.max(0.0)).collect(); // (C=4, B, 8, 8)
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 6).collect();
        for lr in [0.1, 0.05, 0.02] {
            let (a, b) = (slices.step_cached(&acts, &labels, &sgd, lr)?, twin.step_cached(&acts, &labels, &sgd, lr)?);
            assert!((a - b).abs() < 1e-4, "loss {a} vs {b}");
        }
        let (a, b) = (slices.to_model()?, twin.to_model()?);
        for (name, t) in &a.tensors {
            let diff = (t - b.tensor(name)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{name}: {diff}");
        }
        assert!(slices.step(&acts, &labels, &sgd, 0.1).is_err(), "images for a frozen network are refused");
        assert!(twin.step(&acts, &labels, &sgd, 0.1).is_err());

        // Checkpoint, rebuild, go on: bit for bit the same as going on.
        for t in [&mut slices, &mut twin] {
            let mut restored = match t.engine() {
                "slices" => Trainer::from_model_frozen(&t.to_model()?, frozen, &Device::Cpu)?,
                _ => Trainer {
                    engine: Trainer::autograd(
                        AutogradResNet::from_model(&t.to_model()?, &Device::Cpu)?,
                        frozen,
                        &Device::Cpu,
                    ),
                    frozen_stages: frozen,
                },
            };
            restored.restore_momentum(&t.momentum()?)?;
            for lr in [0.04, 0.01] {
                assert_eq!(t.step_cached(&acts, &labels, &sgd, lr)?, restored.step_cached(&acts, &labels, &sgd, lr)?);
            }
            let (a, b) = (t.to_model()?, restored.to_model()?);
            for (name, v) in &a.tensors {
                let (v, w) = (v.flatten_all()?.to_vec1::<f32>()?, b.tensor(name)?.flatten_all()?.to_vec1::<f32>()?);
                assert!(v == w, "{}: {name} differs after a restore", t.engine());
            }
            assert!(restored.restore_momentum(&[vec![0.0; 3]]).is_err(), "another network's buffers are refused");
        }
        Ok(())
    }

    /// A fresh head keeps every other tensor, is seeded, and has the new classes' shape.
    #[test]
    fn a_fresh_head_replaces_only_the_head() -> Result<(), TrainError> {
        let m = model(6, 4);
        let mut meta = m.meta.clone();
        meta.arch = meta.arch.with_classes(9);
        meta.class_names = (0..9).map(|i| format!("new{i}")).collect();
        meta.input.height = 16;
        let a = crate::init::with_fresh_head(&m, meta.clone(), 1)?;
        let b = crate::init::with_fresh_head(&m, meta.clone(), 1)?;
        let c = crate::init::with_fresh_head(&m, meta.clone(), 2)?;
        assert_eq!(a.tensor("linear.weight")?.dims(), &[9, 16]);
        let vals = |m: &ModelFile, n: &str| m.tensor(n).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(vals(&a, "linear.weight"), vals(&b, "linear.weight"));
        assert_ne!(vals(&a, "linear.weight"), vals(&c, "linear.weight"));
        assert!(vals(&a, "linear.weight").iter().all(|v| v.abs() <= 0.25), "uniform in +-1/sqrt(16)");
        for (name, _) in m.meta.arch.tensor_shapes().into_iter().filter(|(n, _)| !n.starts_with("linear")) {
            assert_eq!(vals(&a, &name), vals(&m, &name), "{name} kept");
        }
        let mut other = meta;
        other.arch =
            classmod_runtime::host::ResNetConfig { widths: [8, 16, 32], ..other.arch.as_cifar().unwrap().clone() }
                .into();
        assert!(matches!(crate::init::with_fresh_head(&m, other, 1), Err(TrainError::Mismatch { .. })));
        Ok(())
    }
}
