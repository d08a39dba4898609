//! The imported ../shared ResNet-20 and ResNet-56 against PyTorch, on every micro-kernel this
//! CPU has, as one batch of 20 (sliced across the cores) and image by image (a small batch: on
//! one core and shared with the team).
//! Reference: `shared/data/cifar10-lossless-20/reference-logits.json`, logits computed by PyTorch
//! 1.13 on CPU on the 20 lossless CIFAR-10 test PNGs with the normalisation recorded there.

mod common;

use std::sync::Mutex;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::{Microkernel, SmallBatch};
use classmod::runtime::host::{ResNet, Tensor};
use classmod::runtime::Device;

/// The kernel and the small-batch way are process-wide settings: the tests take turns.
static SETTINGS: Mutex<()> = Mutex::new(());

fn check_model(key: &str, file: &str) {
    let Some(shared) = common::shared() else { return };
    let dir = shared.join("data/cifar10-lossless-20");
    let (reference, pixels) = common::reference_pngs(&dir);
    let floats = common::floats;
    let norm = &reference["normalization"];
    let opts = ImportOptions {
        mean: Some(floats(&norm["mean"])),
        std: Some(floats(&norm["std"])),
        class_names: Some(common::CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let bytes = std::fs::read(shared.join("models").join(file)).unwrap();
    let model = import_bytes(&bytes, &opts).unwrap();
    assert_eq!(model.meta.arch.depth(), if key == "resnet20" { 20 } else { 56 });
    let net = ResNet::new(&model, &Device::Cpu).unwrap();

    let names = reference["images"].as_array().unwrap();
    let spec = net.input_spec();
    let mut x = vec![0f32; pixels.len()];
    spec.normalize_into(&pixels, &mut x);
    let n = names.len();
    let x = Tensor::from_vec(x, (n, 3, 32, 32), &Device::Cpu).unwrap();
    let want = reference["logits"][key].as_array().unwrap();
    let labels = reference["labels"].as_array().unwrap();
    let check = |logits: &[Vec<f32>], what: &str| {
        let mut max_diff = 0f32;
        for ((row, want_row), label) in logits.iter().zip(want).zip(labels) {
            for (a, b) in row.iter().zip(floats(want_row)) {
                max_diff = max_diff.max((a - b).abs());
            }
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            assert_eq!(argmax as u64, label.as_u64().unwrap(), "{key} ({what}): misclassified image");
        }
        eprintln!("{key} ({what}): max |logit - PyTorch| = {max_diff:e}");
        assert!(max_diff < 1e-4, "{key} ({what}): max abs logit difference {max_diff} exceeds 1e-4");
    };

    let _turn = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    let (best, small_batch) = (Microkernel::best().name(), SmallBatch::current());
    for kernel in Microkernel::available() {
        assert!(Microkernel::choose(kernel.name()));
        check(&net.forward(&x).unwrap().to_vec2::<f32>().unwrap(), &format!("{}, batch {n}", kernel.name()));
        for (way, name) in [(SmallBatch::OneCore, "one core"), (SmallBatch::AllCores, "the team")] {
            way.set();
            let one_by_one: Vec<Vec<f32>> = (0..n)
                .map(|i| net.forward(&x.narrow(0, i, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap().remove(0))
                .collect();
            check(&one_by_one, &format!("{}, batch 1 on {name}", kernel.name()));
        }
    }
    small_batch.set();
    assert!(Microkernel::choose(best));
}

#[test]
fn resnet20_matches_pytorch_logits() {
    check_model("resnet20", "resnet20-cifar10.safetensors");
}

#[test]
fn resnet56_matches_pytorch_logits() {
    check_model("resnet56", "resnet56-cifar10.safetensors");
}
