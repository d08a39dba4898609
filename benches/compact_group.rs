//! Where a compact group's time goes, on the ../shared ResNet-20 (CIFAR-10): the base's forward
//! from raw pixels, its trunk alone (stem + stages 1-2, the part every compact class shares), and
//! groups of 1, 2 and 10 compact modules (trunk of 2 stages, branch width 16, one block as
//! ResNet-20's default and two), at batch 64 and 1. The branches' weights are seeded random ones
//! (`classmod_runtime::testing`): a forward's cost does not depend on the values, and a
//! decomposition would take minutes.
//! The same-minute ratios the targets are about come from `classmod experiment serving`
//! (each classification timed against a base forward right after it); this bench is the profile
//! behind them: `cargo bench --bench compact_group`, or under `perf record` with
//! `-- --profile-time 10 <filter>`. Skips (with a message) when ../shared is absent.
//!
//! `compact_group_resnet18_224`: the same on torchvision's ResNet-18 layout at 224x224 (seeded
//! random weights, 10 classes), what serving k of a Jetson user's classes costs against the
//! base: trunk of 2 stages (stem and stages 1-2), branches of 64 channels (the width measured on
//! the classmod-trained ResNet-18, `results/compact-resnet18-tv-cifar10/`) and of 128 (the
//! default width for a 10-class ResNet-18, whose default has one block), two blocks, at batch 1
//! and 8.

use std::path::Path;

use classmod::fixtures;
use classmod::runtime::host::Images;
use classmod::runtime::host::Network;
use classmod::runtime::host::{ModelFile, ModuleGroup, ResNet, Tensor};
use classmod::runtime::testing::tiny_model::{compact_with_blocks, random_model};
use classmod::runtime::{Device, InputSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn resnet20() -> Option<ModelFile> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !shared.join("models/resnet20-cifar10.safetensors").exists() {
        eprintln!("SKIPPED: {} is absent", shared.display());
        return None;
    }
    Some(fixtures::resnet20(&shared).expect("the shared model imports"))
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
        let mut nhwc = vec![0f32; pixels.len()];
        spec.normalize_into_nhwc(&pixels, &mut nhwc);
        let images = Images::Nhwc { values: &nhwc, count: batch };
        g.bench_function(BenchmarkId::new("trunk", batch), |b| b.iter(|| net.trunk(images, 2).unwrap()));
        for blocks in [2usize, 1] {
            for k in [1u32, 2, 10] {
                let modules = (0..k).map(|c| compact_with_blocks(&model, c, 2, 16, blocks, u64::from(c)));
                let group = ModuleGroup::new(net.clone(), modules).unwrap();
                let id = BenchmarkId::new(format!("compact_b{blocks}_k{k}"), batch);
                g.bench_function(id, |b| b.iter(|| group.run_pixels(&pixels).unwrap()));
            }
        }
    }
    g.finish();
}

fn compact_group_224(c: &mut Criterion) {
    let arch = Network::torchvision(18, 64, 10).expect("ResNet-18").into();
    let model = random_model(arch, InputSpec::imagenet(224, 224), 18);
    let net = ResNet::new(&model, &Device::Cpu).expect("the graph builds");
    let spec = net.input_spec().clone();
    let mut g = c.benchmark_group("compact_group_resnet18_224");
    g.sample_size(10);
    for batch in [1usize, 8] {
        let pixels: Vec<u8> = (0..batch * spec.image_len()).map(|i| (i * 7919 % 251) as u8).collect();
        let mut nhwc = vec![0f32; pixels.len()];
        spec.normalize_into_nhwc(&pixels, &mut nhwc);
        let images = Images::Nhwc { values: &nhwc, count: batch };
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("base", batch), |b| b.iter(|| net.logits(images).unwrap()));
        g.bench_function(BenchmarkId::new("trunk", batch), |b| b.iter(|| net.trunk(images, 2).unwrap()));
        for width in [64usize, 128] {
            for k in [1u32, 5, 10] {
                let modules = (0..k).map(|c| compact_with_blocks(&model, c, 2, width, 2, u64::from(c)));
                let group = ModuleGroup::new(net.clone(), modules).unwrap();
                let id = BenchmarkId::new(format!("compact_w{width}_k{k}"), batch);
                g.bench_function(id, |b| b.iter(|| group.run_pixels(&pixels).unwrap()));
            }
        }
    }
    g.finish();
}

criterion_group!(benches, compact_group, compact_group_224);
criterion_main!(benches);
