//! The trainable twin of a compact module's branch ([`classmod_runtime::host::Branch`]): the same
//! layers with batch norm in training mode and a linear output of one logit, trained on cached
//! trunk activations; [`TrainableBranch::fold`] folds the batch norms into the stored form.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor, Var, D};
use classmod_runtime::host::BN_EPS;
use classmod_runtime::host::{BranchSpec, BranchWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::net::{conv_bn, kaiming};
use crate::HostError;

/// A branch whose parameters can be trained, ending in one logit.
pub struct TrainableBranch {
    spec: BranchSpec,
    /// By name: `{layer}.weight` (convolution, no bias), `{layer}.bn.weight`, `{layer}.bn.bias`,
    /// `linear.weight` (1, width), `linear.bias` (1).
    params: Vec<(String, Var)>,
    /// `{layer}.bn.running_mean` / `.running_var`.
    running: HashMap<String, Tensor>,
}

/// `(layer, weight shape)` of the branch's convolutions in forward order, as
/// [`BranchSpec::tensor_shapes`] names them.
fn layers(spec: &BranchSpec) -> Vec<(String, Vec<usize>)> {
    spec.tensor_shapes()
        .into_iter()
        .filter_map(|(name, shape)| name.strip_suffix(".weight").map(|l| (l.to_string(), shape)))
        .collect()
}

impl TrainableBranch {
    /// A fresh branch: Kaiming-normal convolutions, BN scale 1 / shift 0, the linear layer
    /// uniform in +-1/sqrt(width); seeded.
    pub fn init(spec: BranchSpec, seed: u64, device: &Device) -> Result<Self, HostError> {
        spec.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = HashMap::new();
        for (layer, shape) in layers(&spec) {
            let (n, fan_in) = (shape.iter().product(), shape[1..].iter().product());
            values.insert(format!("{layer}.weight"), kaiming(&mut rng, n, fan_in));
            let c = shape[0];
            values.insert(format!("{layer}.bn.weight"), vec![1f32; c]);
            values.insert(format!("{layer}.bn.bias"), vec![0f32; c]);
            values.insert(format!("{layer}.bn.running_mean"), vec![0f32; c]);
            values.insert(format!("{layer}.bn.running_var"), vec![1f32; c]);
        }
        let bound = 1.0 / (spec.width as f32).sqrt();
        values.insert("linear.weight".into(), (0..spec.width).map(|_| rng.random_range(-bound..bound)).collect());
        values.insert("linear.bias".into(), vec![0f32]);
        Self::from_values(spec, values, device)
    }

    /// A branch from the values of every parameter and running statistic, by name (as
    /// [`TrainableBranch::values`] gives them).
    pub fn from_values(
        spec: BranchSpec,
        mut values: HashMap<String, Vec<f32>>,
        device: &Device,
    ) -> Result<Self, HostError> {
        spec.validate()?;
        let mut take = |name: String, shape: Vec<usize>| -> Result<Tensor, HostError> {
            let v = values.remove(&name).ok_or_else(|| HostError::BranchValues { name: name.clone() })?;
            if v.len() != shape.iter().product::<usize>() {
                return Err(HostError::BranchValues { name });
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
            Some(name) => Err(HostError::BranchValues { name }),
            None => Ok(TrainableBranch { spec, params, running }),
        }
    }

    /// Every parameter's and running statistic's values, by name.
    pub fn values(&self) -> Result<HashMap<String, Vec<f32>>, HostError> {
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
    ) -> Result<Tensor, HostError> {
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
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor, HostError> {
        let mut updates = train.then(Vec::new);
        let z = self.logit(x, &mut updates)?;
        for (k, v) in updates.into_iter().flatten() {
            self.running.insert(k, v);
        }
        Ok(z)
    }

    /// The logit in eval mode (running statistics).
    pub fn eval(&self, x: &Tensor) -> Result<Tensor, HostError> {
        self.logit(x, &mut None)
    }

    fn logit(&self, x: &Tensor, updates: &mut Option<Vec<(String, Tensor)>>) -> Result<Tensor, HostError> {
        let mut a = self.layer(x, "entry", 2, updates)?.relu()?;
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

    /// The branch with every batch norm folded into its convolution (`w * g/sqrt(v+eps)`,
    /// `beta - m * g/sqrt(v+eps)`, in f64), and the linear layer `(weight, bias)`.
    pub fn fold(&self) -> Result<(BranchWeights, Vec<f32>, f32), HostError> {
        let v64 = |t: &Tensor| -> Result<Vec<f64>, HostError> {
            Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
        };
        let mut tensors = BTreeMap::new();
        for (layer, shape) in layers(&self.spec) {
            let w = v64(self.param(&format!("{layer}.weight")))?;
            let (g, beta) =
                (v64(self.param(&format!("{layer}.bn.weight")))?, v64(self.param(&format!("{layer}.bn.bias")))?);
            let (m, v) = (
                v64(&self.running[&format!("{layer}.bn.running_mean")])?,
                v64(&self.running[&format!("{layer}.bn.running_var")])?,
            );
            let per = w.len() / shape[0];
            let scale: Vec<f64> = g.iter().zip(&v).map(|(g, v)| g / (v + BN_EPS).sqrt()).collect();
            let folded: Vec<f32> = w.iter().enumerate().map(|(i, w)| (w * scale[i / per]) as f32).collect();
            let bias: Vec<f32> = (0..shape[0]).map(|o| (beta[o] - m[o] * scale[o]) as f32).collect();
            tensors.insert(format!("{layer}.weight"), folded);
            tensors.insert(format!("{layer}.bias"), bias);
        }
        let w = self.param("linear.weight").flatten_all()?.to_vec1::<f32>()?;
        let b = self.param("linear.bias").flatten_all()?.to_vec1::<f32>()?[0];
        Ok((BranchWeights::new(self.spec, tensors)?, w, b))
    }
}
