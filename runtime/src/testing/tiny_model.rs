//! Small random ResNets for unit tests that must not depend on ../shared: ResNet-8, widths
//! [4, 8, 16], one 8x8 gray input channel, three classes; and four-stage networks of
//! torchvision's layout (the ImageNet stem, basic or bottleneck blocks) on small RGB images;
//! seeded, plausible BN statistics.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::model::network::{BlockKind, Network};
use crate::{Architecture, InputSpec, ModelFile, ModelMeta, ResNetConfig, Shortcut};

/// Values in [-0.5, 0.5) from a xorshift stream starting at `state` (non-zero).
fn uniform(mut state: u64) -> impl FnMut() -> f32 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

pub fn tiny_model(seed: u64) -> ModelFile {
    tiny_model_with(seed, Shortcut::A)
}

/// The same with option-B (projection) shortcuts.
pub fn tiny_model_b(seed: u64) -> ModelFile {
    tiny_model_with(seed, Shortcut::B)
}

/// ResNet-14 (two blocks a stage), otherwise [`tiny_model`]'s: a trunk can end inside a stage.
pub fn tiny_model_14(seed: u64) -> ModelFile {
    tiny_model_blocks(seed, Shortcut::A, 2)
}

fn tiny_model_with(seed: u64, shortcut: Shortcut) -> ModelFile {
    tiny_model_blocks(seed, shortcut, 1)
}

fn tiny_model_blocks(seed: u64, shortcut: Shortcut, blocks_per_stage: usize) -> ModelFile {
    let arch = ResNetConfig { blocks_per_stage, widths: [4, 8, 16], shortcut, in_channels: 1, num_classes: 3 };
    let input = InputSpec::new(1, 8, 8, vec![0.5], vec![0.25]);
    random_model(arch.into(), input, seed)
}

/// A four-stage network of torchvision's layout (the 7x7 stride-2 stem and its max-pool) with
/// stages of `[8, 16, 24, 32]` channels (bottleneck blocks: four times that out, a quarter
/// inside) and `blocks` blocks a stage, on 3x`side`x`side` images, five classes.
pub fn tiny_torchvision(seed: u64, bottleneck: bool, blocks: [usize; 4], side: usize) -> ModelFile {
    let mut net = Network::torchvision(if bottleneck { 50 } else { 18 }, 64, 5).expect("a torchvision depth");
    net.stem = crate::model::network::Stem::ImageNet7x7 { channels: 8 };
    for (s, stage) in net.stages.iter_mut().enumerate() {
        let planes = [8, 16, 24, 32][s];
        stage.blocks = blocks[s];
        (stage.block, stage.channels) =
            if bottleneck { (BlockKind::Bottleneck { width: planes }, 4 * planes) } else { (BlockKind::Basic, planes) };
    }
    let input = InputSpec::imagenet(side, side);
    random_model(net.into(), input, seed)
}

/// A model of `arch` on `input` with seeded random weights and plausible BN statistics.
pub fn random_model(arch: Architecture, input: InputSpec, seed: u64) -> ModelFile {
    let mut next = uniform(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1);
    let tensors: HashMap<String, Tensor> = arch
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    let bn_scale = ["bn1.weight", "bn2.weight", "bn3.weight"];
                    if name.ends_with("running_var") {
                        1.0 + r
                    } else if bn_scale.iter().any(|b| name.ends_with(b)) {
                        1.0 + 0.2 * r
                    } else {
                        r
                    }
                })
                .collect();
            (name, Tensor::from_vec(values, shape, &Device::Cpu).expect("shape matches"))
        })
        .collect();
    // Letters for the tiny models' few classes; numbered past 26 (ImageNet's 1000).
    let classes = arch.num_classes();
    let class_names = (0..classes)
        .map(|c| if classes <= 26 { ((b'a' + c as u8) as char).to_string() } else { format!("class{c}") })
        .collect();
    let meta = ModelMeta { arch, input, class_names };
    ModelFile::new(meta, tensors).expect("a valid tiny model")
}

/// A compact module of class `class` on `base` with a random branch of `width` channels after
/// `trunk_stages` stages (two blocks) and a random calibrated head; seeded.
pub fn tiny_compact(base: &ModelFile, class: u32, trunk_stages: usize, width: usize, seed: u64) -> crate::ClassModule {
    compact_with_blocks(base, class, trunk_stages, width, 2, seed)
}

/// [`tiny_compact`] with `blocks` blocks after the branch's entry, on any base (benches use it on
/// the real ResNet-20: a forward's cost does not depend on the weights' values).
pub fn compact_with_blocks(
    base: &ModelFile,
    class: u32,
    trunk_stages: usize,
    width: usize,
    blocks: usize,
    seed: u64,
) -> crate::ClassModule {
    compact_after(base, class, trunk_stages.into(), width, blocks, seed)
}

/// [`compact_with_blocks`] after a trunk that ends at `end` (inside a stage, where it says so).
pub fn compact_after(
    base: &ModelFile,
    class: u32,
    end: crate::model::network::TrunkEnd,
    width: usize,
    blocks: usize,
    seed: u64,
) -> crate::ClassModule {
    use crate::{BranchSpec, BranchWeights, ClassId, ClassModule, ModelKey, ModuleHead, ModuleKind};
    let spec = BranchSpec::after(end, &base.meta.arch.network(), width, blocks);
    let mut next = uniform(seed.wrapping_mul(2862933555777941757).wrapping_add(3037000493) | 1);
    let tensors = spec
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let fan_in = shape[1..].iter().product::<usize>().max(1) as f32;
            let scale = if shape.len() == 1 { 0.2 } else { 2.0 * (2.0 / fan_in).sqrt() };
            (name, (0..n).map(|_| scale * next()).collect())
        })
        .collect();
    let weights = BranchWeights::new(spec, tensors).expect("a valid branch");
    ClassModule {
        class_id: ClassId(class),
        class_name: base.meta.class_names[class as usize].clone(),
        base_key: ModelKey::of(base).expect("a valid model"),
        input: base.meta.input.clone(),
        kind: ModuleKind::Compact(weights),
        head: ModuleHead::Calibrated { weight: (0..width).map(|_| 2.0 * next()).collect(), bias: next() },
        min_score: None,
    }
}
