//! A small random ResNet for unit tests that must not depend on ../shared: ResNet-8, widths
//! [4, 8, 16], one 8x8 gray input channel, three classes; seeded, plausible BN statistics.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::{InputSpec, ModelFile, ModelMeta, ResNetConfig, Shortcut};

pub(crate) fn tiny_model(seed: u64) -> ModelFile {
    tiny_model_with(seed, Shortcut::A)
}

/// The same with option-B (projection) shortcuts.
pub(crate) fn tiny_model_b(seed: u64) -> ModelFile {
    tiny_model_with(seed, Shortcut::B)
}

fn tiny_model_with(seed: u64, shortcut: Shortcut) -> ModelFile {
    let arch = ResNetConfig { blocks_per_stage: 1, widths: [4, 8, 16], shortcut, in_channels: 1, num_classes: 3 };
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let tensors: HashMap<String, Tensor> = arch
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    if name.ends_with("running_var") {
                        1.0 + r
                    } else if name.ends_with("bn1.weight") || name.ends_with("bn2.weight") || name == "bn1.weight" {
                        1.0 + 0.2 * r
                    } else {
                        r
                    }
                })
                .collect();
            (name, Tensor::from_vec(values, shape, &Device::Cpu).expect("shape matches"))
        })
        .collect();
    let meta = ModelMeta {
        arch,
        input: InputSpec { channels: 1, height: 8, width: 8, mean: vec![0.5], std: vec![0.25] },
        class_names: vec!["a".into(), "b".into(), "c".into()],
    };
    ModelFile::new(meta, tensors).expect("a valid tiny model")
}
