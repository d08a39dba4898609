//! One SGD training step (forward in training mode, backward, update) of the ResNet-8 that
//! `classmod demo` trains, on a batch of 64 1x28x28 images, in images/s.
//! Run: `cargo bench --bench train_step`. Needs nothing from ../shared.

use classmod::host::train::{Sgd, SgdConfig, TrainableResNet};
use classmod::runtime::{Device, InputSpec, ModelMeta, ResNetConfig, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn train_step(c: &mut Criterion) {
    let dev = Device::Cpu;
    let meta = ModelMeta {
        arch: ResNetConfig::cifar(8, 1, 10).unwrap(),
        input: InputSpec { channels: 1, height: 28, width: 28, mean: vec![0.29], std: vec![0.35] },
        class_names: (0..10).map(|i| i.to_string()).collect(),
    };
    let mut net = TrainableResNet::init(meta, 0, &dev).unwrap();
    let mut sgd = Sgd::new(net.vars(), SgdConfig { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 5e-4 });
    let batch = 64;
    let x = Tensor::randn(0f32, 1., (batch, 1, 28, 28), &dev).unwrap();
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &dev).unwrap();
    let mut group = c.benchmark_group("train_step_resnet8_28x28");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("batch64", |b| {
        b.iter(|| {
            let logits = net.forward(&x, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            sgd.step(&loss.backward().unwrap()).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
