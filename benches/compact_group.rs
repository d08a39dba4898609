//! Where a compact group's time goes, on the ../shared ResNet-20 (CIFAR-10): the base's forward
//! from raw pixels, its trunk alone (stem + stages 1-2, the part every compact class shares), and
//! groups of 1, 2 and 10 compact modules of the default shape (trunk of 2 stages, branch width 16,
//! two blocks; and one block), at batch 64 and 1. The branches' weights are seeded random ones:
//! a forward's cost does not depend on the values, and a decomposition would take minutes.
//! The same-minute ratios the targets are about come from `classmod experiment serving`
//! (each classification timed against a base forward right after it); this bench is the profile
//! behind them: `cargo bench --bench compact_group`, or under `perf record` with
//! `-- --profile-time 10 <filter>`. Skips (with a message) when ../shared is absent.

use std::path::Path;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::{
    BranchSpec, BranchWeights, ClassId, ClassModule, Device, InputSpec, ModelFile, ModelKey, ModuleGroup, ModuleHead,
    ModuleKind, ResNet, Tensor,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn resnet20() -> Option<ModelFile> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/resnet20-cifar10.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("SKIPPED: {} is absent", path.display());
        return None;
    };
    let spec = InputSpec::cifar10_imagenet_stats();
    let opts = ImportOptions { mean: Some(spec.mean), std: Some(spec.std), ..Default::default() };
    Some(import_bytes(&bytes, &opts).expect("the shared model imports"))
}

/// A compact module of `class` with a branch of `blocks` blocks of width 16 on the trunk of two
/// stages, its weights drawn from a seeded generator (He-scaled, so activations stay finite).
fn compact(model: &ModelFile, class: u32, blocks: usize) -> ClassModule {
    let spec = BranchSpec { trunk_stages: 2, in_channels: model.meta.arch.widths[1], width: 16, blocks };
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(class);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
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
    ClassModule {
        class_id: ClassId(class),
        class_name: model.meta.class_names[class as usize].clone(),
        base_key: ModelKey::of(model).expect("a valid model"),
        input: model.meta.input.clone(),
        kind: ModuleKind::Compact(BranchWeights::new(spec, tensors).expect("a valid branch")),
        head: ModuleHead::Calibrated { weight: (0..16).map(|_| next()).collect(), bias: next() },
        min_score: None,
    }
}

fn compact_group(c: &mut Criterion) {
    let Some(model) = resnet20() else { return };
    let net = ResNet::new(&model, &Device::Cpu).expect("the graph builds");
    let spec = net.input_spec().clone();
    let mut g = c.benchmark_group("compact_group_resnet20");
    g.sample_size(20);
    for batch in [64usize, 1] {
        // Deterministic pseudo-images; the cost of a forward does not depend on the values.
        let pixels: Vec<u8> = (0..batch * spec.image_len()).map(|i| (i * 7919 % 251) as u8).collect();
        let mut x = vec![0f32; pixels.len()];
        spec.normalize_into(&pixels, &mut x);
        let x = Tensor::from_vec(x, (batch, spec.channels, spec.height, spec.width), &Device::Cpu).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("base", batch), |b| {
            b.iter(|| net.forward(&x).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap())
        });
        g.bench_function(BenchmarkId::new("trunk", batch), |b| b.iter(|| net.trunk(&x, 2).unwrap()));
        for blocks in [2usize, 1] {
            for k in [1u32, 2, 10] {
                let group = ModuleGroup::new(net.clone(), (0..k).map(|c| compact(&model, c, blocks))).unwrap();
                let id = BenchmarkId::new(format!("compact_b{blocks}_k{k}"), batch);
                g.bench_function(id, |b| b.iter(|| group.run_pixels(&pixels).unwrap()));
            }
        }
    }
    g.finish();
}

criterion_group!(benches, compact_group);
criterion_main!(benches);
