//! The trainable twin of the runtime's ResNet: the same architecture and tensor names, with
//! batch norm in training mode (batch statistics, running statistics updated as PyTorch does:
//! momentum 0.1, unbiased variance). Parameters are candle `Var`s; running statistics are plain
//! tensors replaced after each training step.

use crate::HostError;
use std::collections::HashMap;

use candle_core::{Device, Tensor, Var, D};
use classmod_runtime::host::subsample;

use super::batch_norm::batch_norm_train;
use super::conv::conv2d;
use classmod_runtime::host::BN_EPS;
use classmod_runtime::host::{ModelFile, ModelMeta, ResNetConfig, Shortcut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) const BN_MOMENTUM: f64 = 0.1;

/// Conv (padding k/2) + BN on `x`. With `train`, BN normalises with the batch's statistics and
/// the new running statistics `(mean, var)` come back (PyTorch's: momentum 0.1, unbiased
/// variance); otherwise it uses `running`.
pub fn conv_bn(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: (&Tensor, &Tensor),
    stride: usize,
    train: bool,
) -> Result<(Tensor, Option<(Tensor, Tensor)>), HostError> {
    let y = conv2d(x, w, stride)?;
    let c = w.dim(0)?;
    if train {
        let (out, mean, var) = batch_norm_train(&y, gamma, beta)?;
        let (b, _, h, wd) = y.dims4()?;
        let m = (b * h * wd) as f64;
        let unbiased: Vec<f32> = var.iter().map(|v| (v * m / (m - 1.0).max(1.0)) as f32).collect();
        let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        let dev = y.device();
        let rm = ((running.0 * (1.0 - BN_MOMENTUM))? + (Tensor::from_vec(mean, c, dev)? * BN_MOMENTUM)?)?;
        let rv = ((running.1 * (1.0 - BN_MOMENTUM))? + (Tensor::from_vec(unbiased, c, dev)? * BN_MOMENTUM)?)?;
        return Ok((out, Some((rm, rv))));
    }
    let shape = (1, c, 1, 1);
    let inv = (running.1 + BN_EPS)?.sqrt()?.recip()?.reshape(shape)?;
    let norm = y.broadcast_sub(&running.0.reshape(shape)?)?.broadcast_mul(&inv)?;
    Ok((norm.broadcast_mul(&gamma.reshape(shape)?)?.broadcast_add(&beta.reshape(shape)?)?, None))
}

/// A ResNet whose parameters can be trained.
pub struct TrainableResNet {
    pub meta: ModelMeta,
    /// Trainable parameters by canonical name, in forward order.
    params: Vec<(String, Var)>,
    /// `*.running_mean` / `*.running_var` by canonical name.
    running: HashMap<String, Tensor>,
}

/// Kaiming-normal (fan-in, ReLU gain) values from a seeded stream, via Box-Muller, so that the
/// same seed gives the same network on every machine.
pub(crate) fn kaiming(rng: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let std = (2.0 / fan_in as f64).sqrt();
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

impl TrainableResNet {
    /// A freshly initialised network: Kaiming-normal convolutions, BN scale 1 / shift 0,
    /// linear layer uniform in +-1/sqrt(fan_in) as PyTorch's default.
    pub fn init(meta: ModelMeta, seed: u64, device: &Device) -> Result<Self, HostError> {
        meta.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, shape) in meta.arch.tensor_shapes() {
            let n: usize = shape.iter().product();
            let is_bn = shape.len() == 1 && !name.starts_with("linear");
            let values = if is_bn && (name.ends_with(".weight") || name.ends_with("running_var")) {
                vec![1.0; n]
            } else if is_bn {
                vec![0.0; n] // BN shift and running mean
            } else if name.starts_with("linear") {
                let bound = 1.0 / (meta.arch.widths[2] as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            } else {
                let fan_in = shape[1..].iter().product();
                kaiming(&mut rng, n, fan_in)
            };
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Self::from_model(&ModelFile::new(meta, tensors)?, device)
    }

    /// Starts from an existing model (fine-tuning).
    pub fn from_model(model: &ModelFile, device: &Device) -> Result<Self, HostError> {
        let mut params = Vec::new();
        let mut running = HashMap::new();
        for (name, _) in model.meta.arch.tensor_shapes() {
            let t = model.tensor(&name)?.to_device(device)?;
            if name.contains("running_") {
                running.insert(name, t);
            } else {
                params.push((name, Var::from_tensor(&t)?));
            }
        }
        Ok(TrainableResNet { meta: model.meta.clone(), params, running })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    fn param(&self, name: &str) -> Result<&Tensor, HostError> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| HostError::MissingTensor { name: name.into() })
    }

    /// The current weights as a model file (what checkpoints hold).
    pub fn to_model(&self) -> Result<ModelFile, HostError> {
        let mut tensors: HashMap<String, Tensor> =
            self.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
        tensors.extend(self.running.iter().map(|(n, t)| (n.clone(), t.clone())));
        Ok(ModelFile::new(self.meta.clone(), tensors)?)
    }

    /// Conv + BN. In training mode BN uses batch statistics and the new running statistics are
    /// recorded in `updates`; in eval mode it uses the running statistics.
    fn conv_bn(
        &self,
        x: &Tensor,
        conv: &str,
        bn: &str,
        stride: usize,
        updates: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor, HostError> {
        let (mk, vk) = (format!("{bn}.running_mean"), format!("{bn}.running_var"));
        let (out, running) = conv_bn(
            x,
            self.param(&format!("{conv}.weight"))?,
            self.param(&format!("{bn}.weight"))?,
            self.param(&format!("{bn}.bias"))?,
            (&self.running[&mk], &self.running[&vk]),
            stride,
            updates.is_some(),
        )?;
        if let (Some(updates), Some((rm, rv))) = (updates, running) {
            updates.push((mk, rm));
            updates.push((vk, rv));
        }
        Ok(out)
    }

    /// Logits. `train = true` uses batch statistics and updates the running statistics.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, HostError> {
        let mut updates = Vec::new();
        let logits = self.forward_inner(x, if train { Some(&mut updates) } else { None })?;
        for (k, v) in updates {
            self.running.insert(k, v);
        }
        Ok(logits)
    }

    fn forward_inner(&self, x: &Tensor, mut updates: Option<&mut Vec<(String, Tensor)>>) -> Result<Tensor, HostError> {
        let arch: &ResNetConfig = &self.meta.arch;
        let mut x = self.conv_bn(x, "conv1", "bn1", 1, updates.as_deref_mut())?.relu()?;
        for b in arch.blocks() {
            let p = b.prefix();
            let h = self
                .conv_bn(&x, &format!("{p}.conv1"), &format!("{p}.bn1"), b.stride, updates.as_deref_mut())?
                .relu()?;
            let h = self.conv_bn(&h, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, updates.as_deref_mut())?;
            let short = match (b.changes_shape(), arch.shortcut) {
                (false, _) => x,
                (true, Shortcut::A) => {
                    let pad = (b.planes - b.in_planes) / 2;
                    subsample(&x, b.stride)?.pad_with_zeros(1, pad, pad)?
                }
                (true, Shortcut::B) => self.conv_bn(
                    &x,
                    &format!("{p}.shortcut.0"),
                    &format!("{p}.shortcut.1"),
                    b.stride,
                    updates.as_deref_mut(),
                )?,
            };
            x = (h + short)?.relu()?;
        }
        let feats = x.mean(D::Minus1)?.mean(D::Minus1)?;
        let w = self.param("linear.weight")?;
        let bias = self.param("linear.bias")?;
        Ok(feats.matmul(&w.t()?)?.broadcast_add(bias)?)
    }
}
