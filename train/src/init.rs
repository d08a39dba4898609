//! Seeded initial values, the same for both engines (so a slice network and its autograd twin
//! start from the same numbers): Kaiming-normal convolutions (fan-in, ReLU gain), batch norms at
//! scale 1 and shift 0 with running statistics 0 and 1, linear layers uniform in
//! +-1/sqrt(fan_in) as PyTorch's default. ChaCha and Box-Muller make a seed give the same
//! network on every machine.

use std::collections::HashMap;

use classmod_runtime::host::{BranchSpec, ResNetConfig};
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

/// A fresh ResNet's values by canonical name (the order of `tensor_shapes` draws the stream).
pub fn resnet_values(arch: &ResNetConfig, seed: u64) -> HashMap<String, Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = HashMap::new();
    for (name, shape) in arch.tensor_shapes() {
        let n: usize = shape.iter().product();
        let is_bn = shape.len() == 1 && !name.starts_with("linear");
        let v = if is_bn && (name.ends_with(".weight") || name.ends_with("running_var")) {
            vec![1.0; n]
        } else if is_bn {
            vec![0.0; n] // BN shift and running mean
        } else if name.starts_with("linear") {
            let bound = 1.0 / (arch.widths[2] as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else {
            kaiming(&mut rng, n, shape[1..].iter().product())
        };
        values.insert(name, v);
    }
    values
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
    let bound = 1.0 / (spec.width as f32).sqrt();
    values.insert("linear.weight".into(), (0..spec.width).map(|_| rng.random_range(-bound..bound)).collect());
    values.insert("linear.bias".into(), vec![0f32]);
    values
}
