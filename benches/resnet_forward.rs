//! Eval-mode forward of the ../shared ResNet-20 (CIFAR-10) at batch 1 and batch 64, in images/s.
//! Run: `cargo bench --bench resnet_forward`. Skips (with a message) when ../shared is absent.

use std::path::Path;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::bench::{split_by_channels, Isa, Microkernel, SmallBatch};
use classmod::runtime::host::{ResNet, Tensor};
use classmod::runtime::{Device, InputSpec};
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

/// Whether criterion measures (`cargo bench` passes `--bench`) rather than smoke-tests the
/// benches once (`cargo test --all-targets`): the paired comparisons then run one short round.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Whether criterion's name filter (its first positional argument; a substring here, a regex
/// there) lets the paired comparison `name` run: they are plain functions criterion cannot
/// filter, and a profile of one benchmark should not hold the others' forwards.
fn selected(name: &str) -> bool {
    // Criterion's options that take a value: the argument after them is not the filter.
    const VALUED: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || !VALUED.contains(&args[i - 1].as_str())));
    filter.is_none_or(|(_, f)| name.contains(f.as_str()))
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `variants` (a name and what switches to it) alternately in the same process, `rounds`
/// rounds of `calls` forwards each (this machine's speed wanders by 2x over minutes, more than
/// the differences): per variant the median over the rounds of each round's median forward, in
/// ms, and the median of the rounds' ratios to the first variant.
fn paired(net: &ResNet, batch: usize, rounds: usize, calls: usize, variants: &[(&str, &dyn Fn())]) -> Vec<(f64, f64)> {
    let (rounds, calls) = if measuring() { (rounds, calls) } else { (1, 1) };
    let x: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect();
    let x = Tensor::from_vec(x, (batch, 3, 32, 32), &Device::Cpu).unwrap();
    let time = |(_, switch): &(&str, &dyn Fn())| {
        switch();
        let times: Vec<f64> = (0..calls)
            .map(|_| {
                let t = std::time::Instant::now();
                net.forward(&x).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(times)
    };
    for v in variants {
        time(v);
    }
    let rounds: Vec<Vec<f64>> = (0..rounds).map(|_| variants.iter().map(time).collect()).collect();
    (0..variants.len())
        .map(|i| (median(rounds.iter().map(|r| r[i]).collect()), median(rounds.iter().map(|r| r[i] / r[0]).collect())))
        .collect()
}

/// Batch 1 split by channels or by tiles only (both across the cores), and on one core, paired.
/// Printed, not asserted.
fn split_by_channels_paired(_: &mut Criterion) {
    if !selected("split_by_channels_paired") {
        return;
    }
    let Some(net) = resnet20() else { return };
    let split = || {
        SmallBatch::AllCores.set();
        split_by_channels(true)
    };
    let tiles = || {
        SmallBatch::AllCores.set();
        split_by_channels(false)
    };
    let one = || {
        SmallBatch::OneCore.set();
        split_by_channels(true)
    };
    let r = paired(&net, 1, 30, 100, &[("split", &split), ("tiles", &tiles), ("one", &one)]);
    split_by_channels(true);
    SmallBatch::Auto.set();
    println!(
        "resnet20 batch 1, paired: all cores split by channels {:.3} ms, all cores by tiles only {:.3} ms, \
         one core {:.3} ms (medians of the rounds); tiles / split = {:.3}, one core / split = {:.3} \
         (medians of the rounds' ratios)",
        r[0].0, r[1].0, r[2].0, r[1].1, r[2].1
    );
}

/// Every instruction set's adaptive kernel, and each fixed block height of the fastest set, at
/// batch 1 and 64, paired: what each set and the per-call block height give. Printed, not
/// asserted.
fn kernels_paired(_: &mut Criterion) {
    if !selected("kernels_paired") {
        return;
    }
    let Some(net) = resnet20() else { return };
    let fastest = Microkernel::best().isa();
    let names: Vec<&'static str> = Microkernel::available()
        .iter()
        .filter(|k| k.isa() != Isa::Portable && (k.isa() == fastest || k.is_adaptive()))
        .map(|k| k.name())
        .collect();
    let switches: Vec<Box<dyn Fn()>> =
        names.iter().map(|&n| Box::new(move || assert!(Microkernel::choose(n))) as Box<dyn Fn()>).collect();
    let variants: Vec<(&str, &dyn Fn())> = names.iter().zip(&switches).map(|(n, f)| (*n, f.as_ref())).collect();
    for (batch, rounds, calls) in [(1, 20, 100), (64, 10, 5)] {
        let r = paired(&net, batch, rounds, calls, &variants);
        for (name, (ms, ratio)) in names.iter().zip(r) {
            println!("resnet20 batch {batch:>2}, paired: {name:<14} {ms:>7.3} ms  x{ratio:.3} of {}", names[0]);
        }
    }
    Microkernel::choose(names[0]);
}

criterion_group!(benches, forward, split_by_channels_paired, kernels_paired);
criterion_main!(benches);
