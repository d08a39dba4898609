//! One SGD training step (forward in training mode, backward, update) of the ResNet-8 that
//! `classmod demo` trains, on a batch of 64 1x28x28 images, in images/s, on the slice engine
//! (`classmod_train::TrainableResNet`, what `classmod train` runs on CPU) against the same step
//! through candle's autograd (`AutogradResNet`, its reference and the CUDA path); and one step
//! of the ten compact branches `decompose --kind compact` trains by default (ResNet-20's trunk
//! plane, 32x16x16, width 16, two blocks, batch 128) through a `BranchSet` against the same ten
//! steps through candle's autograd (`AutogradBranch`), in branch-images/s.
//! Run: `cargo bench --bench train_step`. Needs nothing from ../shared.

use classmod::runtime::host::{ModelMeta, ResNetConfig, Tensor};
use classmod::runtime::{Device, InputSpec};
use classmod::train::autograd::{AutogradBranch, AutogradResNet, Sgd};
use classmod::train::{Branch, BranchSet, Minibatch, SgdConfig, TrainableResNet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SGD: SgdConfig = SgdConfig { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };

fn train_step(c: &mut Criterion) {
    let dev = Device::Cpu;
    let meta = ModelMeta {
        arch: ResNetConfig::cifar(8, 1, 10).unwrap().into(),
        input: InputSpec::new(1, 28, 28, vec![0.29], vec![0.35]),
        class_names: (0..10).map(|i| i.to_string()).collect(),
    };
    let batch = 64;
    let x = Tensor::randn(0f32, 1., (batch, 1, 28, 28), &dev).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels.clone(), batch, &dev).unwrap();
    let mut group = c.benchmark_group("train_step_resnet8_28x28");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    let mut net = TrainableResNet::init(meta.clone(), 0).unwrap();
    group.bench_function("slices_batch64", |b| b.iter(|| net.step(&xs, &labels, &SGD, SGD.lr).unwrap()));
    let mut twin = AutogradResNet::init(meta, 0, &dev).unwrap();
    let mut sgd = Sgd::new(twin.vars(), SGD);
    group.bench_function("candle_autograd_batch64", |b| {
        b.iter(|| {
            let logits = twin.forward(&x, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            sgd.step(&loss.backward().unwrap()).unwrap();
        })
    });
    group.finish();
}

fn branch_step(c: &mut Criterion) {
    use classmod::runtime::host::BranchSpec;
    let dev = Device::Cpu;
    let spec = BranchSpec::cifar(2, 0, 32, 16, 2);
    let (batch, classes, plane) = (128, 10, 16);
    let x = Tensor::randn(0f32, 1., (batch, 32, plane, plane), &dev).unwrap().relu().unwrap();
    // The set reads channel-major activations, as the trunk cache gathers them.
    let acts = x.transpose(0, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let teacher = Tensor::randn(0f32, 3., (batch, classes), &dev).unwrap();
    let teacher_v = teacher.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
    let labels_t = Tensor::from_vec(labels.clone(), batch, &dev).unwrap();
    let inits: Vec<(usize, Branch)> = (0..classes).map(|c| (c, Branch::init(spec, c as u64).unwrap())).collect();
    let mut set = BranchSet::new(spec, plane, plane, inits).unwrap();
    let mut group = c.benchmark_group("compact_branches_step_10x_batch128");
    group.sample_size(10);
    group.throughput(Throughput::Elements((batch * classes) as u64));
    group.bench_function("branch_set", |b| {
        let mb = Minibatch { activations: &acts, teacher: &teacher_v, labels: &labels };
        b.iter(|| set.step(&mb, &SGD, 0.05, 4.0).unwrap())
    });
    let mut one = AutogradBranch::init(spec, 0, &dev).unwrap();
    let mut opt = Sgd::new(one.vars(), SGD);
    group.bench_function("candle_autograd", |b| {
        b.iter(|| {
            for _ in 0..classes {
                // The same work as one branch's step; the loss's form does not change the cost.
                let z = one.forward(&x, true).unwrap();
                let loss =
                    (candle_nn::loss::cross_entropy(&teacher, &labels_t).unwrap() + z.mean_all().unwrap()).unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, train_step, branch_step);
criterion_main!(benches);
