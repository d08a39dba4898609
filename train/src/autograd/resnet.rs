//! The autograd twin of [`crate::TrainableResNet`]: the same architecture, tensor names and
//! initialisation written with candle's differentiable ops (batch norm in training mode, running
//! statistics updated as PyTorch does: momentum 0.1, unbiased variance). Parameters are candle
//! `Var`s; running statistics are plain tensors replaced after each training step. The
//! reference the slice engine is held to, and the engine on a CUDA device.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var, D};
use classmod_runtime::host::subsample;
use classmod_runtime::host::BN_EPS;
use classmod_runtime::host::{ModelFile, ModelMeta, Shortcut, Stem};

use crate::init::resnet_values;
use crate::{TrainError, BN_MOMENTUM};

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
) -> Result<(Tensor, Option<(Tensor, Tensor)>), TrainError> {
    let y = x.conv2d(w, w.dim(3)? / 2, stride, 1, 1)?;
    let c = w.dim(0)?;
    if train {
        let (b, _, h, wd) = y.dims4()?;
        let m = (b * h * wd) as f64;
        let mean = y.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let xc = y.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let shape = (1, c, 1, 1);
        let xhat = xc.broadcast_div(&(&var + BN_EPS)?.sqrt()?)?;
        let out = xhat.broadcast_mul(&gamma.reshape(shape)?)?.broadcast_add(&beta.reshape(shape)?)?;
        let (mean, unbiased) =
            (mean.detach().flatten_all()?, (var.detach().flatten_all()? * (m / (m - 1.0).max(1.0)))?);
        let rm = ((running.0 * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?;
        let rv = ((running.1 * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?;
        return Ok((out, Some((rm, rv))));
    }
    let shape = (1, c, 1, 1);
    let inv = (running.1 + BN_EPS)?.sqrt()?.recip()?.reshape(shape)?;
    let norm = y.broadcast_sub(&running.0.reshape(shape)?)?.broadcast_mul(&inv)?;
    Ok((norm.broadcast_mul(&gamma.reshape(shape)?)?.broadcast_add(&beta.reshape(shape)?)?, None))
}

/// A ResNet whose parameters can be trained.
pub struct AutogradResNet {
    pub meta: ModelMeta,
    /// Trainable parameters by canonical name, in forward order.
    params: Vec<(String, Var)>,
    /// `*.running_mean` / `*.running_var` by canonical name.
    running: HashMap<String, Tensor>,
}

/// PyTorch's `MaxPool2d(3, 2, 1)` of ReLU outputs, as the maximum of its nine strided views:
/// candle derives the backward of `maximum` but not of an overlapping `max_pool2d`. The inputs
/// are at least 0, so padding with -1 is PyTorch's -inf padding here.
fn max_pool_3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    // One more row and column on the far side, so that every view is 2*ho by 2*wo.
    let padded = (x + 1.0)?.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?.affine(1.0, -1.0)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        for dx in 0..3 {
            let view = padded.narrow(2, dy, 2 * ho)?.narrow(3, dx, 2 * wo)?.contiguous()?;
            let view = view.reshape((b, c, ho, 2, wo, 2))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((b, c, ho, wo))?;
            out = Some(match out {
                None => view,
                Some(o) => o.maximum(&view)?,
            });
        }
    }
    Ok(out.expect("nine views"))
}

impl AutogradResNet {
    /// A freshly initialised network, seeded: the same values as [`crate::TrainableResNet::init`]'s.
    pub fn init(meta: ModelMeta, seed: u64, device: &Device) -> Result<Self, TrainError> {
        meta.validate()?;
        let shapes: HashMap<String, Vec<usize>> = meta.arch.tensor_shapes().into_iter().collect();
        let mut tensors = HashMap::new();
        for (name, values) in resnet_values(&meta.arch, seed) {
            let t = Tensor::from_vec(values, shapes[&name].as_slice(), device)?;
            tensors.insert(name, t);
        }
        Self::from_model(&ModelFile::new(meta, tensors)?, device)
    }

    /// Starts from an existing model (fine-tuning).
    pub fn from_model(model: &ModelFile, device: &Device) -> Result<Self, TrainError> {
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
        Ok(AutogradResNet { meta: model.meta.clone(), params, running })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    fn param(&self, name: &str) -> Result<&Tensor, TrainError> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| TrainError::Values { name: name.into() })
    }

    /// The current weights as a model file (what checkpoints hold).
    pub fn to_model(&self) -> Result<ModelFile, TrainError> {
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
    ) -> Result<Tensor, TrainError> {
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
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        self.forward_from(x, 0, train)
    }

    /// Logits from the activations after the stem and the first `stages` stages (0: from the
    /// images): the stages after them only, as a network with a frozen trunk trains.
    pub fn forward_from(&mut self, x: &Tensor, stages: usize, train: bool) -> Result<Tensor, TrainError> {
        let mut updates = Vec::new();
        let logits = self.forward_inner(x, stages, if train { Some(&mut updates) } else { None })?;
        for (k, v) in updates {
            self.running.insert(k, v);
        }
        Ok(logits)
    }

    fn forward_inner(
        &self,
        x: &Tensor,
        stages: usize,
        mut updates: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor, TrainError> {
        let arch = self.meta.arch.network();
        let mut x = match (stages, arch.stem) {
            (0, Stem::Cifar3x3 { .. }) => self.conv_bn(x, "conv1", "bn1", 1, updates.as_deref_mut())?.relu()?,
            (0, Stem::ImageNet7x7 { .. }) => {
                let y = self.conv_bn(x, "conv1", "bn1", 2, updates.as_deref_mut())?.relu()?;
                max_pool_3x3_s2(&y)?
            }
            _ => x.clone(),
        };
        for b in arch.blocks().into_iter().filter(|b| b.stage >= stages) {
            let p = b.prefix();
            let convs = b.convs();
            let mut h = x.clone();
            for (i, c) in convs.iter().enumerate() {
                h = self.conv_bn(&h, &c.conv, &c.bn, c.stride, updates.as_deref_mut())?;
                if i + 1 < convs.len() {
                    h = h.relu()?;
                }
            }
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
