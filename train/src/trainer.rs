//! A ResNet being trained with its optimiser, on the engine its device has: the slice engine
//! ([`TrainableResNet`]) on the CPU, the autograd twin ([`AutogradResNet`], candle's kernels)
//! elsewhere. What a training loop holds; it sees one step at a time either way.

use candle_core::{Device, Tensor};
use classmod_runtime::host::{ModelFile, ModelMeta};

use crate::autograd::{AutogradResNet, Sgd};
use crate::{SgdConfig, TrainError, TrainableResNet};

/// A network and its optimiser state (momentum buffers).
pub struct Trainer {
    engine: Engine,
}

// One per training run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Slices(TrainableResNet),
    Autograd { net: AutogradResNet, sgd: Sgd, device: Device },
}

impl Trainer {
    /// A fresh network (seeded) on `device`.
    pub fn init(meta: ModelMeta, seed: u64, device: &Device) -> Result<Self, TrainError> {
        Ok(Trainer {
            engine: match device {
                Device::Cpu => Engine::Slices(TrainableResNet::init(meta, seed)?),
                _ => Self::autograd(AutogradResNet::init(meta, seed, device)?, device),
            },
        })
    }

    /// A network starting from `model` (fine-tuning) on `device`.
    pub fn from_model(model: &ModelFile, device: &Device) -> Result<Self, TrainError> {
        Ok(Trainer {
            engine: match device {
                Device::Cpu => Engine::Slices(TrainableResNet::from_model(model)?),
                _ => Self::autograd(AutogradResNet::from_model(model, device)?, device),
            },
        })
    }

    fn autograd(net: AutogradResNet, device: &Device) -> Engine {
        // Its settings come with every step.
        let none = SgdConfig { lr: 0.0, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let sgd = Sgd::new(net.vars(), none);
        Engine::Autograd { net, sgd, device: device.clone() }
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

    /// One SGD step (`c`, at learning rate `lr`) on normalised images `(B, C, H, W)` and their
    /// labels; the loss before the step (mean cross entropy).
    pub fn step(&mut self, images: &[f32], labels: &[u32], c: &SgdConfig, lr: f64) -> Result<f64, TrainError> {
        match &mut self.engine {
            Engine::Slices(n) => n.step(images, labels, c, lr),
            Engine::Autograd { net, sgd, device } => {
                let i = &net.meta.input;
                let x = Tensor::from_slice(images, (labels.len(), i.channels, i.height, i.width), device)?;
                let y = Tensor::from_slice(labels, labels.len(), device)?;
                let loss = candle_nn::loss::cross_entropy(&net.forward(&x, true)?, &y)?;
                let value = loss.to_scalar::<f32>()? as f64;
                sgd.config = *c;
                sgd.set_lr(lr);
                sgd.step(&loss.backward()?)?;
                Ok(value)
            }
        }
    }

    /// The current weights as a model file.
    pub fn to_model(&self) -> Result<ModelFile, TrainError> {
        match &self.engine {
            Engine::Slices(n) => n.to_model(),
            Engine::Autograd { net, .. } => net.to_model(),
        }
    }
}
