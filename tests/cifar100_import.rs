//! The pretrained CIFAR-100 ResNets of ../shared (chenyaofo/pytorch-cifar-models: 3x3 stem,
//! 1x1-conv + BN shortcuts, head `fc`, 100 classes) imported with nothing but the file: the
//! normalisation and the class names come from its metadata, the architecture from its tensors.
//! Reference: `shared/data/cifar100-lossless-94/reference-logits.json`, PyTorch 1.13 (CPU) logits
//! of both models on the 94 lossless CIFAR-100 test PNGs with the normalisation recorded there,
//! and how many of them PyTorch classifies right (ResNet-20 78, ResNet-56 82).

mod common;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::{ResNet, Shortcut, Tensor};
use classmod::runtime::Device;

fn check_model(key: &str, depth: usize) {
    let Some(shared) = common::shared() else { return };
    let dir = shared.join("data/cifar100-lossless-94");
    let (reference, pixels) = common::reference_pngs(&dir);
    let floats = common::floats;
    let r = &reference["models"][key];
    let bytes = std::fs::read(shared.join("models").join(r["file"].as_str().unwrap())).unwrap();
    let model = import_bytes(&bytes, &ImportOptions::default()).unwrap();
    let (arch, input) = (&model.meta.arch, &model.meta.input);
    assert_eq!((arch.depth(), arch.network().shortcut, arch.num_classes()), (depth, Shortcut::B, 100), "{key}");
    assert_eq!(input.mean, floats(&r["mean"]), "{key}: the file's mean");
    assert_eq!(input.std, floats(&r["std"]), "{key}: the file's std");
    assert_eq!(model.meta.class_names.len(), 100);
    assert_eq!((model.meta.class_names[0].as_str(), model.meta.class_names[99].as_str()), ("apple", "worm"));

    let net = ResNet::new(&model, &Device::Cpu).unwrap();
    let n = reference["images"].as_array().unwrap().len();
    let mut x = vec![0f32; pixels.len()];
    net.input_spec().normalize_into(&pixels, &mut x);
    let logits = net.forward(&Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap()).unwrap();
    let argmax = |row: &[f32]| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let (mut max_diff, mut correct) = (0f32, 0);
    for ((row, want), label) in logits
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .zip(r["logits"].as_array().unwrap())
        .zip(reference["labels"].as_array().unwrap())
    {
        let want = floats(want);
        max_diff = row.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(max_diff, f32::max);
        assert_eq!(argmax(row), argmax(&want), "{key}: another class than PyTorch's");
        correct += usize::from(argmax(row) as u64 == label.as_u64().unwrap());
    }
    eprintln!("{key}: max |logit - PyTorch| = {max_diff:e}, {correct} of {n} right");
    assert!(max_diff < 1e-4, "{key}: max abs logit difference {max_diff} exceeds 1e-4");
    assert_eq!(correct as u64, r["correct"].as_u64().unwrap(), "{key}: PyTorch's count of right answers");
}

#[test]
fn resnet20_cifar100_imports_exactly() {
    check_model("resnet20", 20);
}

#[test]
fn resnet56_cifar100_imports_exactly() {
    check_model("resnet56", 56);
}
