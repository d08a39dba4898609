//! Decomposition of the ../shared ResNet-20 on CIFAR-10 training images: deterministic for a seed,
//! and monotone in `keep_rate` (a higher keep rate never keeps more nodes), with TI restoring
//! nodes on top of CI (a lower tangle rate never keeps fewer).

mod common;

use classmod::host::dataset::{self, ImageShape, Split};
use classmod::host::decompose::{decompose, DecomposeOptions, HeadKind};
use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::NodeMask;
use classmod::runtime::InputSpec;
use indicatif::ProgressBar;

#[test]
fn masks_are_deterministic_and_monotone_in_the_rates() {
    let Some(shared) = common::shared() else { return };
    let spec = InputSpec::cifar10_imagenet_stats();
    let names: Vec<String> = common::CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    let opts = ImportOptions {
        mean: Some(spec.mean.clone()),
        std: Some(spec.std.clone()),
        class_names: Some(names.clone()),
        ..Default::default()
    };
    let model =
        import_bytes(&std::fs::read(shared.join("models/resnet20-cifar10.safetensors")).unwrap(), &opts).unwrap();
    let shape = ImageShape::new(3, 32, 32);
    // 60 training images per class keep this test quick; positives come from them.
    let train = dataset::load(&shared.join("data/cifar10-jpeg.tar.gz"), Split::Train, shape, Some(&names))
        .unwrap()
        .balanced_sample(600, 3);
    let run = |keep_rate: f64, tangle_rate: f64, seed: u64| -> Vec<NodeMask> {
        let o = DecomposeOptions {
            n_pos: 20,
            pos_conf: 0.9,
            keep_rate,
            tangle_rate,
            head: HeadKind::Channel,
            classes: Some(vec![3, 5]),
            seed,
            batch: 32,
        };
        let d = decompose(&model, &train, &o, &ProgressBar::hidden()).unwrap();
        assert_eq!(d.reports.len(), 2);
        assert!(d.reports.iter().all(|r| r.positives > 0 && r.negatives > 0));
        d.modules.iter().map(|m| m.as_mask().expect("a mask module").clone()).collect()
    };
    let a = run(0.5, 0.5, 1);
    assert_eq!(a, run(0.5, 0.5, 1), "same inputs and seed -> identical masks");
    assert_ne!(a, run(0.5, 0.5, 2), "another seed draws other samples");
    let kept = |ms: &[NodeMask]| ms.iter().map(NodeMask::kept_nodes).collect::<Vec<_>>();
    let mut previous: Option<Vec<usize>> = None;
    for keep in [0.2, 0.5, 0.8, 1.0] {
        let k = kept(&run(keep, 2.0, 1)); // tangle rate > 1 switches TI off
        if let Some(p) = &previous {
            assert!(k.iter().zip(p).all(|(now, before)| now <= before), "keep {keep}: {k:?} > {p:?}");
        }
        previous = Some(k);
    }
    let strict = kept(&run(1.0, 2.0, 1));
    let restored = kept(&run(1.0, 0.0, 1));
    assert!(restored.iter().zip(&strict).all(|(r, s)| r > s), "TI restores nodes: {restored:?} vs {strict:?}");
    let total = a[0].total_nodes();
    assert!(strict.iter().all(|&k| k < total), "strict CI keeps fewer nodes than the model has");
}
