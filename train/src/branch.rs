//! A compact module's branch (its stored form is [`classmod_runtime::host::Branch`]) as it
//! trains: a strided entry convolution on the trunk's activations, basic blocks (a projection
//! shortcut where one halves the plane), and one logit. Trained in a [`crate::BranchSet`];
//! [`Branch::fold`] folds its batch norms into the stored form.

use std::collections::{BTreeMap, HashMap};

use classmod_runtime::host::{BranchSpec, BranchWeights};

use crate::init::branch_values;
use crate::layers::{ConvBn, Head, Plane, ResidualBlock, Shortcut, Values};
use crate::stack::{Body, Stack};
use crate::TrainError;

/// A branch whose parameters can be trained, ending in one logit.
#[derive(Debug)]
pub struct Branch {
    spec: BranchSpec,
    pub(crate) stack: Stack,
}

impl Branch {
    /// A fresh branch, seeded (see [`crate::init`]).
    pub fn init(spec: BranchSpec, seed: u64) -> Result<Self, TrainError> {
        spec.validate()?;
        Self::from_values(spec, branch_values(&spec, seed))
    }

    /// A branch from the values of every parameter and running statistic, by name:
    /// `{layer}.weight` (convolution, no bias), `{layer}.bn.{weight,bias,running_mean,running_var}`
    /// for `entry`, `block{j}.conv1`, `block{j}.conv2`, `block{j}.shortcut`, and `linear.weight`
    /// `(1, width)`, `linear.bias` `(1)`; as [`Branch::values`] gives them.
    pub fn from_values(spec: BranchSpec, values: HashMap<String, Vec<f32>>) -> Result<Self, TrainError> {
        spec.validate()?;
        let mut v = Values(values);
        let w = spec.width;
        let mut layer = |name: String, out: usize, inp: usize, kernel: usize, stride: usize| {
            ConvBn::from_values(name.clone(), format!("{name}.bn"), out, inp, kernel, stride, &mut v)
        };
        let entry = layer("entry".into(), w, spec.in_channels, 3, spec.entry_stride())?;
        let blocks = (0..spec.blocks)
            .map(|j| {
                let s = spec.block_stride(j);
                let conv1 = layer(format!("block{j}.conv1"), w, w, 3, s)?;
                let conv2 = layer(format!("block{j}.conv2"), w, w, 3, 1)?;
                let shortcut = match s {
                    1 => Shortcut::Identity,
                    _ => Shortcut::Projection(Box::new(layer(format!("block{j}.shortcut"), w, w, 1, s)?)),
                };
                Ok(ResidualBlock::new(vec![conv1, conv2], shortcut))
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        let head = Head::from_values("linear", 1, w, &mut v)?;
        v.finish()?;
        // Branches step side by side on rayon's threads: each one's products stay on its own.
        Ok(Branch { spec, stack: Stack::new(entry, Body::new(blocks, head, false)) })
    }

    /// Every parameter's and running statistic's values, by name.
    pub fn values(&self) -> HashMap<String, Vec<f32>> {
        self.stack.values().into_iter().collect()
    }

    /// What the branch is.
    pub fn spec(&self) -> BranchSpec {
        self.spec
    }

    /// The logit of each image of channel-major trunk activations `acts` (`(C, B, H, W)` on
    /// `plane`), in eval mode (running statistics).
    pub fn logits(&mut self, acts: &[f32], plane: Plane) -> Result<Vec<f32>, TrainError> {
        let want = self.spec.in_channels * plane.len();
        if acts.len() != want {
            return Err(TrainError::Minibatch { what: format!("{} activation values for {want}", acts.len()) });
        }
        Ok(self.stack.forward(acts, plane, false).to_vec())
    }

    /// The branch with every batch norm folded into its convolution (with the running
    /// statistics, in f64), and the linear layer `(weight, bias)`.
    pub fn fold(&self) -> Result<(BranchWeights, Vec<f32>, f32), TrainError> {
        let mut tensors = BTreeMap::new();
        for layer in self.stack.layers() {
            let (w, b) = layer.fold();
            tensors.insert(format!("{}.weight", layer.name()), w);
            tensors.insert(format!("{}.bias", layer.name()), b);
        }
        let head = &self.stack.body.head;
        Ok((BranchWeights::new(self.spec, tensors)?, head.weight.value.clone(), head.bias.value[0]))
    }
}
