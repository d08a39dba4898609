//! Eval-mode forward of the ../shared ResNet-20 (CIFAR-10) at batch 1 and batch 64, in images/s.
//! Run: `cargo bench --bench resnet_forward`. Skips (with a message) when ../shared is absent.

use std::path::Path;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::bench::split_by_channels;
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
        if batch == 1 {
            // What splitting the small layers by channels gives (only batch 1 has calls to split).
            split_by_channels(false);
            group.bench_with_input(BenchmarkId::new("split_by_tiles_only", batch), &x, |b, x| {
                b.iter(|| net.forward(x).unwrap())
            });
            split_by_channels(true);
        }
    }
    group.finish();
}

/// Batch 1 with and without the split by channels, timed alternately in the same process (this
/// machine's speed wanders by 2x over minutes, more than the difference): the median of each
/// over 30 rounds of 100 forwards, and the median of the rounds' ratios. Printed, not asserted.
fn split_by_channels_paired(_: &mut Criterion) {
    let Some(net) = resnet20() else { return };
    let x: Vec<f32> = (0..3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect();
    let x = Tensor::from_vec(x, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |on: bool| {
        split_by_channels(on);
        let times: Vec<f64> = (0..100)
            .map(|_| {
                let t = std::time::Instant::now();
                net.forward(&x).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(times)
    };
    time(true);
    let rounds: Vec<(f64, f64)> = (0..30).map(|_| (time(true), time(false))).collect();
    split_by_channels(true);
    let (split, tiles): (Vec<f64>, Vec<f64>) = rounds.iter().copied().unzip();
    let ratio = median(rounds.iter().map(|(s, t)| t / s).collect());
    println!(
        "resnet20 batch 1, paired: split by channels {:.3} ms, by tiles only {:.3} ms (medians of 30 rounds); \
         tiles / split = {ratio:.3} (median of the rounds' ratios)",
        median(split),
        median(tiles)
    );
}

criterion_group!(benches, forward, split_by_channels_paired);
criterion_main!(benches);
