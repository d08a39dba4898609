//! Seeded initial values, the same for both engines (so a slice network and its autograd twin
//! start from the same numbers): Kaiming-normal convolutions (fan-in, ReLU gain), batch norms at
//! scale 1 (0 for the last of a bottleneck block) and shift 0 with running statistics 0 and 1,
//! linear layers uniform in +-1/sqrt(fan_in) as PyTorch's default. ChaCha and Box-Muller make a
//! seed give the same network on every machine.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use classmod_runtime::host::{Architecture, BlockKind, BranchSpec, ModelFile, ModelMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Kaiming-normal values from a seeded stream.
fn kaiming(rng: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let std = (2.0 / fan_in as f64).sqrt();
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// PyTorch's default linear init: uniform in +-1/sqrt(fan_in).
fn linear_uniform(rng: &mut ChaCha8Rng, n: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// A fresh ResNet's values by canonical name (the order of `tensor_shapes` draws the stream).
/// The last batch norm of each bottleneck block starts at scale 0, so that every such block
/// starts as the identity (Goyal et al. 2017; timm's `zero_init_last`, torchvision's
/// `zero_init_residual`). Measured on ResNet-50, CIFAR-10, lr 0.1 one-cycle, batch 128: at scale
/// 1 the loss was still 2.2 (spikes to 3.7) after 465 steps, at 0 it was 1.6-1.9 after 500
/// (torchvision's own ResNet-50 in PyTorch, scale 1, the same recipe: 1.8-2.9 over steps
/// 140-200; ResNet-34 of basic blocks was at 1.5 by step 200). A small bottleneck network on
/// Fashion-MNIST learns either way. Basic blocks keep scale 1, as the recorded runs of
/// ResNet-18/34 and the CIFAR ResNets were trained.
pub fn resnet_values(arch: &Architecture, seed: u64) -> HashMap<String, Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = HashMap::new();
    let net = arch.network();
    let features = net.features();
    let zero_scale: Vec<String> = net
        .blocks()
        .iter()
        .filter(|b| b.kind != BlockKind::Basic)
        .filter_map(|b| b.convs().last().map(|c| format!("{}.weight", c.bn)))
        .collect();
    for (name, shape) in arch.tensor_shapes() {
        let n: usize = shape.iter().product();
        let is_bn = shape.len() == 1 && !name.starts_with("linear");
        let v = if zero_scale.contains(&name) {
            vec![0.0; n]
        } else if is_bn && (name.ends_with(".weight") || name.ends_with("running_var")) {
            vec![1.0; n]
        } else if is_bn {
            vec![0.0; n] // BN shift and running mean
        } else if name.starts_with("linear") {
            linear_uniform(&mut rng, n, features)
        } else {
            kaiming(&mut rng, n, shape[1..].iter().product())
        };
        values.insert(name, v);
    }
    values
}

/// `model` made ready to fine-tune on other classes: its head (`linear.*`) replaced by a fresh
/// one of `meta`'s classes (seeded: weight and bias uniform in +-1/sqrt(width), PyTorch's default),
/// every other tensor kept; `meta` also brings the input the new model reads (the same network,
/// pooled globally, reads any size). `meta.arch` must be `model`'s but for its classes.
pub fn with_fresh_head(model: &ModelFile, meta: ModelMeta, seed: u64) -> Result<ModelFile, crate::TrainError> {
    let same = meta.arch.with_classes(model.meta.arch.num_classes());
    if same != model.meta.arch || meta.input.channels != model.meta.input.channels {
        return Err(crate::TrainError::Mismatch {
            what: format!(
                "a new head for {} of {} input channels on {} of {}: only the classes may differ",
                meta.arch.name(),
                meta.input.channels,
                model.meta.arch.name(),
                model.meta.input.channels
            ),
        });
    }
    let width = meta.arch.network().features();
    let classes = meta.arch.num_classes();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let weight = linear_uniform(&mut rng, classes * width, width);
    let bias = linear_uniform(&mut rng, classes, width);
    let mut tensors = HashMap::new();
    for (name, _) in model.meta.arch.tensor_shapes() {
        if !name.starts_with("linear.") {
            tensors.insert(name.clone(), model.tensor(&name)?.to_dtype(DType::F32)?);
        }
    }
    tensors.insert("linear.weight".into(), Tensor::from_vec(weight, (classes, width), &Device::Cpu)?);
    tensors.insert("linear.bias".into(), Tensor::from_vec(bias, classes, &Device::Cpu)?);
    Ok(ModelFile::new(meta, tensors)?)
}

/// `(layer, weight shape)` of a branch's convolutions in forward order, as
/// [`BranchSpec::tensor_shapes`] names them.
pub(crate) fn branch_layers(spec: &BranchSpec) -> Vec<(String, Vec<usize>)> {
    spec.tensor_shapes()
        .into_iter()
        .filter_map(|(name, shape)| name.strip_suffix(".weight").map(|l| (l.to_string(), shape)))
        .collect()
}

/// A fresh branch's values: `{layer}.weight`, `{layer}.bn.*`, `linear.weight` `(1, width)`,
/// `linear.bias` (zero).
pub fn branch_values(spec: &BranchSpec, seed: u64) -> HashMap<String, Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = HashMap::new();
    for (layer, shape) in branch_layers(spec) {
        let (n, fan_in) = (shape.iter().product(), shape[1..].iter().product());
        values.insert(format!("{layer}.weight"), kaiming(&mut rng, n, fan_in));
        let c = shape[0];
        values.insert(format!("{layer}.bn.weight"), vec![1f32; c]);
        values.insert(format!("{layer}.bn.bias"), vec![0f32; c]);
        values.insert(format!("{layer}.bn.running_mean"), vec![0f32; c]);
        values.insert(format!("{layer}.bn.running_var"), vec![1f32; c]);
    }
    values.insert("linear.weight".into(), linear_uniform(&mut rng, spec.width, spec.width));
    values.insert("linear.bias".into(), vec![0f32]);
    values
}
