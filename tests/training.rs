//! `classmod train`'s core on real data (Fashion-MNIST from Debian's `dataset-fashion-mnist`):
//! a seeded run of a few hundred steps learns, checkpoints reload to identical logits, and the
//! same seed gives the same weights. Reference for "learns": chance is 10 % on 10 balanced classes.

mod common;

use classmod::host::dataset::{self, ImageSet, ImageShape, Split};
use classmod::host::eval;
use classmod::host::train::{self, Schedule, SgdConfig, TrainOptions, Trainer};
use classmod::runtime::host::{BlockKind, ModelFile, Network, ResNet, ResNetConfig, Stem, Tensor};
use classmod::runtime::Device;
use classmod::train::TrainableResNet;
use indicatif::ProgressBar;

const SHAPE: ImageShape = ImageShape::new(1, 28, 28);

fn options(steps: usize, checkpoint: Option<std::path::PathBuf>) -> TrainOptions {
    let mut arch = ResNetConfig::cifar(8, 1, 10).unwrap();
    arch.widths = [8, 16, 32];
    TrainOptions {
        arch: arch.into(),
        mean_std: None,
        steps,
        batch: 32,
        sgd: SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5e-4 },
        schedule: Schedule::OneCycle,
        seed: 3,
        flip: true,
        checkpoint,
        time_limit: None,
        settings: serde_json::Value::Null,
    }
}

fn run(set: &ImageSet, opts: &TrainOptions) -> (ModelFile, train::TrainReport) {
    let mut net = Trainer::init(train::meta_for(set, opts), opts.seed, &Device::Cpu).unwrap();
    assert_eq!(net.engine(), "slices", "the CPU trains on the slice engine");
    let (model, report) =
        train::train(&mut net, train::TrainData::Images(set), opts, None, &ProgressBar::hidden()).unwrap();
    (model, report)
}

#[test]
fn a_seeded_run_learns_and_its_checkpoint_reloads_exactly() {
    let Some(dir) = common::fashion_mnist() else { return };
    let train_set = dataset::load(&dir, Split::Train, SHAPE, None).unwrap().balanced_sample(6000, 1);
    let test_set = dataset::load(&dir, Split::Test, SHAPE, None).unwrap().balanced_sample(1000, 2);
    let ckpt = common::scratch("train").join("model.safetensors");
    let opts = options(300, Some(ckpt.clone()));
    let (model, report) = run(&train_set, &opts);
    eprintln!("loss {:.3} -> {:.3} in {:.1} s", report.first_loss, report.last_loss, report.seconds);
    assert!(report.last_loss < 0.6 * report.first_loss, "loss fell: {report:?}");

    let runtime = ResNet::new(&model, &Device::Cpu).unwrap();
    let r = eval::evaluate(&runtime, &test_set, 250, &ProgressBar::hidden()).unwrap();
    eprintln!("held-out top-1 {:.3} on {} images", r.top1, r.n);
    assert!(r.top1 > 0.6, "clearly better than chance (0.1): {}", r.top1);

    // The checkpoint on disk reloads, without import, to bit-identical logits.
    let reloaded = ResNet::load(&ckpt, &Device::Cpu).unwrap();
    let sample = test_set.select(&(0..64).collect::<Vec<_>>());
    let a = eval::logits(&runtime, &sample, 64, &ProgressBar::hidden()).unwrap();
    let b = eval::logits(&reloaded, &sample, 64, &ProgressBar::hidden()).unwrap();
    assert_eq!(a, b, "checkpoint -> reload changes no logit");

    // The training network in eval mode (BN unfolded) agrees with the runtime's folded graph.
    let spec = runtime.input_spec();
    let mut x = vec![0f32; sample.pixels.len()];
    spec.normalize_into(&sample.pixels, &mut x);
    let mut net = TrainableResNet::from_model(&model).unwrap();
    let t = net.logits(&x, 64).unwrap();
    let diff = t.iter().zip(&a).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-4, "training graph (eval mode) vs runtime graph: {diff}");
}

#[test]
fn the_same_seed_gives_the_same_weights() {
    let Some(dir) = common::fashion_mnist() else { return };
    let set = dataset::load(&dir, Split::Test, SHAPE, None).unwrap().balanced_sample(320, 5);
    let opts = options(10, None);
    // Every tensor, value by value (the file's metadata map has no fixed key order).
    let same = |a: &ModelFile, b: &ModelFile| {
        a.tensors.iter().all(|(name, t)| {
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v(t) == v(&b.tensors[name])
        })
    };
    let (a, _) = run(&set, &opts);
    let (b, _) = run(&set, &opts);
    assert!(same(&a, &b), "same seed, same data -> identical weights");
    let mut other = opts.clone();
    other.seed = 4;
    let (c, _) = run(&set, &other);
    assert!(!same(&a, &c), "another seed -> other weights");
}

/// A four-stage bottleneck ResNet (ResNet-50's layout: the 7x7 stride-2 stem, its max-pool,
/// 1x1-3x3-1x1 blocks with the stride on the 3x3, projections) at a sixteenth of its widths
/// learns on the same data; the runtime runs what it saved and agrees with the training graph.
#[test]
fn a_bottleneck_resnet_learns() {
    let Some(dir) = common::fashion_mnist() else { return };
    let train_set = dataset::load(&dir, Split::Train, SHAPE, None).unwrap().balanced_sample(6000, 1);
    let test_set = dataset::load(&dir, Split::Test, SHAPE, None).unwrap().balanced_sample(1000, 2);
    let mut net = Network::torchvision(50, 64, 10).unwrap();
    net.in_channels = 1;
    net.stem = Stem::ImageNet7x7 { channels: 16 };
    for (s, stage) in net.stages.iter_mut().enumerate() {
        (stage.block, stage.channels, stage.blocks) =
            (BlockKind::Bottleneck { width: 8 << s }, 32 << s, 1 + (s == 1) as usize);
    }
    let mut opts = options(300, None);
    opts.arch = net.into();
    let (model, report) = run(&train_set, &opts);
    eprintln!("bottlenecks: loss {:.3} -> {:.3} in {:.1} s", report.first_loss, report.last_loss, report.seconds);
    assert!(report.last_loss < 0.6 * report.first_loss, "loss fell: {report:?}");
    let runtime = ResNet::new(&model, &Device::Cpu).unwrap();
    let r = eval::evaluate(&runtime, &test_set, 250, &ProgressBar::hidden()).unwrap();
    eprintln!("bottlenecks: held-out top-1 {:.3} on {} images", r.top1, r.n);
    assert!(r.top1 > 0.6, "clearly better than chance (0.1): {}", r.top1);

    let sample = test_set.select(&(0..64).collect::<Vec<_>>());
    let a = eval::logits(&runtime, &sample, 64, &ProgressBar::hidden()).unwrap();
    let mut x = vec![0f32; sample.pixels.len()];
    runtime.input_spec().normalize_into(&sample.pixels, &mut x);
    let t = TrainableResNet::from_model(&model).unwrap().logits(&x, 64).unwrap();
    let diff = t.iter().zip(&a).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-4, "training graph (eval mode) vs runtime graph: {diff}");
}
