//! Mask-module execution on the real ResNet-20 of ../shared and the 20 lossless CIFAR-10 PNGs.
//! References: the base network's own forward (all-ones modules must reproduce it) and k
//! separate single-module forwards (the stacked one-pass execution must equal them).

mod common;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::{ClassId, ClassModule, ModuleGroup, ModuleHead, ModuleKind, NodeMask, ResNet, Tensor};
use classmod::runtime::{host::predict, Rule};
use classmod::runtime::{Device, InputSpec};
use rand::{Rng, SeedableRng};

fn base_and_images(shared: &std::path::Path) -> (ResNet, Tensor) {
    let spec = InputSpec::cifar10_imagenet_stats();
    let opts = ImportOptions {
        mean: Some(spec.mean.clone()),
        std: Some(spec.std.clone()),
        class_names: Some(common::CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let model =
        import_bytes(&std::fs::read(shared.join("models/resnet20-cifar10.safetensors")).unwrap(), &opts).unwrap();
    let net = ResNet::new(&model, &Device::Cpu).unwrap();
    let dir = shared.join("data/cifar10-lossless-20");
    let mut pixels = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    names.sort();
    for p in &names {
        let img = image::open(p).unwrap().to_rgb8();
        for c in 0..3 {
            pixels.extend(img.pixels().map(|px| px.0[c]));
        }
    }
    let mut x = vec![0f32; pixels.len()];
    spec.normalize_into(&pixels, &mut x);
    (net, Tensor::from_vec(x, (names.len(), 3, 32, 32), &Device::Cpu).unwrap())
}

fn module(net: &ResNet, class: usize, mask: NodeMask, head: ModuleHead) -> ClassModule {
    ClassModule {
        class_id: ClassId(class as u32),
        class_name: net.class_names()[class].clone(),
        base_key: classmod::runtime::ModelKey([0; 32]),
        input: net.input_spec().clone(),
        kind: ModuleKind::Mask(mask),
        head,
        min_score: None,
    }
}

#[test]
fn all_ones_modules_predict_exactly_what_the_base_predicts() {
    let Some(shared) = common::shared() else { return };
    let (net, x) = base_and_images(&shared);
    let logits = net.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    let sites = net.relu_sites();
    let modules: Vec<_> =
        (0..10).map(|c| module(&net, c, NodeMask::ones(&sites), ModuleHead::Channel { class_index: c })).collect();
    let group = ModuleGroup::new(net.clone(), modules).unwrap();
    let out = group.run(&x).unwrap();
    for (i, row) in logits.iter().enumerate() {
        let base_pred = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let scores: Vec<f32> = (0..10).map(|m| out.score(m, i)).collect();
        let votes: Vec<bool> = (0..10).map(|m| out.votes(m, i)).collect();
        assert_eq!(predict(&scores, &votes, Rule::Max), base_pred, "image {i}");
        for (m, &logit) in row.iter().enumerate() {
            // The positive logit is the base's logit of the class, computed in the same pass.
            assert!((out.pos[m * x.dim(0).unwrap() + i] - logit).abs() < 1e-4);
        }
    }
}

#[test]
fn stacked_execution_equals_separate_masked_forwards() {
    let Some(shared) = common::shared() else { return };
    let (net, x) = base_and_images(&shared);
    let sites = net.relu_sites();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let modules: Vec<_> = (0..4)
        .map(|c| {
            let mut mask = NodeMask::ones(&sites);
            for s in mask.sites.iter_mut() {
                for n in 0..s.len() {
                    if rng.random_bool(0.3) {
                        s.set(n, false);
                    }
                }
            }
            let head = if c % 2 == 0 {
                ModuleHead::Channel { class_index: c }
            } else {
                ModuleHead::Calibrated { weight: (0..64).map(|_| rng.random_range(-0.2..0.2)).collect(), bias: 0.1 }
            };
            module(&net, c, mask, head)
        })
        .collect();
    let stacked = ModuleGroup::new(net.clone(), modules.clone()).unwrap().run(&x).unwrap();
    // The masks matter: module 0's positive logit is no longer the base's logit of class 0.
    let base = net.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    let moved = (0..x.dim(0).unwrap()).map(|i| (stacked.pos[i] - base[i][0]).abs()).fold(0f32, f32::max);
    assert!(moved > 0.1, "masks changed nothing ({moved})");
    let mut max_diff = 0f32;
    for (m, module) in modules.into_iter().enumerate() {
        let single = ModuleGroup::new(net.clone(), vec![module]).unwrap().run(&x).unwrap();
        for i in 0..x.dim(0).unwrap() {
            let j = m * single.batch + i;
            max_diff = max_diff.max((stacked.pos[j] - single.pos[i]).abs()).max((stacked.neg[j] - single.neg[i]).abs());
        }
    }
    eprintln!("stacked vs separate: max abs difference {max_diff:e}");
    assert!(max_diff < 1e-5, "{max_diff}");
}

#[test]
fn modules_that_do_not_fit_the_base_are_refused() {
    let Some(shared) = common::shared() else { return };
    let (net, _) = base_and_images(&shared);
    let sites = net.relu_sites();
    let bad_heads =
        [ModuleHead::Channel { class_index: 10 }, ModuleHead::Calibrated { weight: vec![0.0; 63], bias: 0.0 }];
    for head in bad_heads {
        assert!(ModuleGroup::new(net.clone(), vec![module(&net, 0, NodeMask::ones(&sites), head)]).is_err());
    }
    let mut m = module(&net, 0, NodeMask::ones(&sites), ModuleHead::Channel { class_index: 0 });
    m.class_id = ClassId(99);
    assert!(ModuleGroup::new(net.clone(), vec![m]).is_err());
    let mut short = NodeMask::ones(&sites);
    short.sites.pop();
    assert!(
        ModuleGroup::new(net.clone(), vec![module(&net, 0, short, ModuleHead::Channel { class_index: 0 })]).is_err()
    );
}
