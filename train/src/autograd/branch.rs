//! The autograd twin of [`crate::Branch`]: the same layers, names and initialisation with
//! candle's differentiable ops (batch norm in training mode, one logit). The reference a
//! [`crate::BranchSet`] step is held to.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var, D};
use classmod_runtime::host::BranchSpec;

use super::resnet::conv_bn;
use crate::init::{branch_layers as layers, branch_values};
use crate::TrainError;

/// A branch whose parameters can be trained, ending in one logit.
pub struct AutogradBranch {
    spec: BranchSpec,
    /// By name: `{layer}.weight` (convolution, no bias), `{layer}.bn.weight`, `{layer}.bn.bias`,
    /// `linear.weight` (1, width), `linear.bias` (1).
    params: Vec<(String, Var)>,
    /// `{layer}.bn.running_mean` / `.running_var`.
    running: HashMap<String, Tensor>,
}

impl AutogradBranch {
    /// A fresh branch, seeded: the same values as [`crate::Branch::init`]'s.
    pub fn init(spec: BranchSpec, seed: u64, device: &Device) -> Result<Self, TrainError> {
        spec.validate()?;
        Self::from_values(spec, branch_values(&spec, seed), device)
    }

    /// A branch from the values of every parameter and running statistic, by name (as
    /// [`AutogradBranch::values`] gives them).
    pub fn from_values(
        spec: BranchSpec,
        mut values: HashMap<String, Vec<f32>>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        spec.validate()?;
        let mut take = |name: String, shape: Vec<usize>| -> Result<Tensor, TrainError> {
            let v = values.remove(&name).ok_or_else(|| TrainError::Values { name: name.clone() })?;
            if v.len() != shape.iter().product::<usize>() {
                return Err(TrainError::Values { name });
            }
            Ok(Tensor::from_vec(v, shape, device)?)
        };
        let mut params = Vec::new();
        let mut running = HashMap::new();
        for (layer, shape) in layers(&spec) {
            let c = shape[0];
            for (name, shape) in [
                (format!("{layer}.weight"), shape),
                (format!("{layer}.bn.weight"), vec![c]),
                (format!("{layer}.bn.bias"), vec![c]),
            ] {
                params.push((name.clone(), Var::from_tensor(&take(name, shape)?)?));
            }
            for name in [format!("{layer}.bn.running_mean"), format!("{layer}.bn.running_var")] {
                running.insert(name.clone(), take(name, vec![c])?);
            }
        }
        params.push(("linear.weight".into(), Var::from_tensor(&take("linear.weight".into(), vec![1, spec.width])?)?));
        params.push(("linear.bias".into(), Var::from_tensor(&take("linear.bias".into(), vec![1])?)?));
        match values.into_keys().next() {
            Some(name) => Err(TrainError::Values { name }),
            None => Ok(AutogradBranch { spec, params, running }),
        }
    }

    /// Every parameter's and running statistic's values, by name.
    pub fn values(&self) -> Result<HashMap<String, Vec<f32>>, TrainError> {
        let mut out = HashMap::new();
        for (name, t) in self.params.iter().map(|(n, v)| (n, v.as_tensor())).chain(&self.running) {
            out.insert(name.clone(), t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The parameters, for the optimiser.
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    fn param(&self, name: &str) -> &Tensor {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_tensor()).expect("every layer has its params")
    }

    fn layer(
        &self,
        x: &Tensor,
        layer: &str,
        stride: usize,
        updates: &mut Option<Vec<(String, Tensor)>>,
    ) -> Result<Tensor, TrainError> {
        let (mk, vk) = (format!("{layer}.bn.running_mean"), format!("{layer}.bn.running_var"));
        let (out, new) = conv_bn(
            x,
            self.param(&format!("{layer}.weight")),
            self.param(&format!("{layer}.bn.weight")),
            self.param(&format!("{layer}.bn.bias")),
            (&self.running[&mk], &self.running[&vk]),
            stride,
            updates.is_some(),
        )?;
        if let (Some(u), Some((rm, rv))) = (updates.as_mut(), new) {
            u.push((mk, rm));
            u.push((vk, rv));
        }
        Ok(out)
    }

    /// The logit `(B,)` of a batch of trunk activations `(B, C, H, W)`. `train = true` uses batch
    /// statistics and updates the running statistics.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        let mut updates = train.then(Vec::new);
        let z = self.logit(x, &mut updates)?;
        for (k, v) in updates.into_iter().flatten() {
            self.running.insert(k, v);
        }
        Ok(z)
    }

    /// The logit in eval mode (running statistics).
    pub fn eval(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        self.logit(x, &mut None)
    }

    fn logit(&self, x: &Tensor, updates: &mut Option<Vec<(String, Tensor)>>) -> Result<Tensor, TrainError> {
        let mut a = self.layer(x, "entry", self.spec.entry_stride(), updates)?.relu()?;
        for j in 0..self.spec.blocks {
            let stride = self.spec.block_stride(j);
            let h = self.layer(&a, &format!("block{j}.conv1"), stride, updates)?.relu()?;
            let h = self.layer(&h, &format!("block{j}.conv2"), 1, updates)?;
            let short = if stride == 1 { a } else { self.layer(&a, &format!("block{j}.shortcut"), stride, updates)? };
            a = (h + short)?.relu()?;
        }
        let feats = a.mean(D::Minus1)?.mean(D::Minus1)?;
        let z = feats.matmul(&self.param("linear.weight").t()?)?.broadcast_add(self.param("linear.bias"))?;
        Ok(z.squeeze(1)?)
    }
}
