//! Eval-mode forward of the ../shared ResNet-20 (CIFAR-10) at batch 1 and batch 64, in images/s.
//! Run: `cargo bench --bench resnet_forward`. Skips (with a message) when ../shared is absent.

use std::path::Path;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::{Device, InputSpec, ResNet, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn resnet20() -> Option<ResNet> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/resnet20-cifar10.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("SKIPPED: {} is absent", path.display());
        return None;
    };
    let spec = InputSpec::cifar10_imagenet_stats();
    let opts = ImportOptions { mean: Some(spec.mean), std: Some(spec.std), ..Default::default() };
    let model = import_bytes(&bytes, &opts).expect("the shared model imports");
    Some(ResNet::new(&model, &Device::Cpu).expect("the graph builds"))
}

fn forward(c: &mut Criterion) {
    let Some(net) = resnet20() else { return };
    let mut group = c.benchmark_group("resnet20_forward");
    group.sample_size(10);
    for batch in [1usize, 64] {
        // Deterministic pseudo-images; the cost of a forward does not depend on the values.
        let x: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect();
        let x = Tensor::from_vec(x, (batch, 3, 32, 32), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &x, |b, x| b.iter(|| net.forward(x).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
