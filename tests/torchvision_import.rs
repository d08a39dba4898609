//! torchvision's ResNets imported from their own state dicts and run on both engines, against
//! PyTorch. Reference: `tools/torchvision_reference.py` builds each model with torchvision 0.14
//! (Debian's `python3-torchvision`; `.ci/run` installs it), draws seeded random weights and
//! batch-norm statistics, and records PyTorch 1.13's CPU logits of seeded random pixels.
//! Logits must agree within 1e-4 of the largest reference logit, on every micro-kernel this CPU
//! has (a batch, and image by image), and on candle's operations.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::{Microkernel, ResNet, Tensor};
use classmod::runtime::{Device, InputSpec};

/// The kernel is a process-wide setting: the tests take turns.
static SETTINGS: Mutex<()> = Mutex::new(());

const PYTHON: &str = "/usr/bin/python3";

/// Whether PyTorch and torchvision can be imported; under CI their absence is a failure.
fn torchvision() -> bool {
    let ok = Command::new(PYTHON).args(["-c", "import torch, torchvision"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        let how = "apt-get install -y python3-torch python3-torchvision";
        if std::env::var_os("CI").is_some() {
            panic!("PyTorch and torchvision are missing but CI is set: {how}");
        }
        eprintln!("SKIPPED: PyTorch and torchvision are missing ({how})");
    }
    ok
}

/// `(pixels, logits, classes)` of a reference run's `-io.safetensors`.
fn reference_io(path: &Path) -> (Vec<u8>, Vec<f32>, usize) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let pixels = st.tensor("pixels").unwrap().data().to_vec();
    let logits = st.tensor("logits").unwrap();
    let classes = logits.shape()[1];
    let logits = logits.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (pixels, logits, classes)
}

/// Runs the reference for `arch` at `size` x `size` and checks the import and both engines.
fn check(arch: &str, size: usize, classes: usize) {
    if !torchvision() {
        return;
    }
    let dir = common::scratch(&format!("torchvision-{arch}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/torchvision_reference.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args(["--out", dir.to_str().unwrap(), "--arch", arch, "--size", &size.to_string()])
        .args(["--classes", &classes.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let opts = ImportOptions {
        arch: Some(arch.to_string()),
        input_size: (size != 224).then_some((size, size)),
        ..Default::default()
    };
    let model = import_bytes(&std::fs::read(dir.join(format!("{arch}.safetensors"))).unwrap(), &opts).unwrap();
    assert_eq!(model.meta.arch.name(), arch);
    // torchvision's defaults where the options leave them: ImageNet's statistics, 224x224.
    assert_eq!(model.meta.input, InputSpec::imagenet(size, size));
    let (pixels, want, n_classes) = reference_io(&dir.join(format!("{arch}-io.safetensors")));
    assert_eq!(n_classes, classes);
    let _ = std::fs::remove_dir_all(&dir);

    let images = pixels.len() / model.meta.input.image_len();
    let mut x = vec![0f32; pixels.len()];
    model.meta.input.normalize_into(&pixels, &mut x);
    let x = Tensor::from_vec(x, (images, 3, size, size), &Device::Cpu).unwrap();
    let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let check = |got: Vec<f32>, what: &str| {
        let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{arch} ({what}): max |logit - PyTorch| = {diff:.2e}, largest logit {largest:.3}");
        assert!(diff <= 1e-4 * largest, "{arch} ({what}): {diff:e} > 1e-4 x {largest}");
    };
    let logits = |net: &ResNet, x: &Tensor| net.forward(x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();

    let candle = ResNet::new_on_candle(&model, &Device::Cpu).unwrap();
    check(logits(&candle, &x), "candle's operations");
    drop(candle);
    let net = ResNet::new(&model, &Device::Cpu).unwrap();
    let _turn = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    let best = Microkernel::best().name();
    for kernel in Microkernel::available() {
        assert!(Microkernel::choose(kernel.name()));
        check(logits(&net, &x), &format!("CPU path, {}, batch {images}", kernel.name()));
        let one_by_one = (0..images).flat_map(|i| logits(&net, &x.narrow(0, i, 1).unwrap())).collect();
        check(one_by_one, &format!("CPU path, {}, image by image", kernel.name()));
    }
    assert!(Microkernel::choose(best));
}

/// The whole ResNet-18 at torchvision's 224x224, 1000 classes.
#[test]
fn resnet18_at_224_matches_pytorch() {
    check("resnet18", 224, 1000);
}

#[test]
fn resnet34_matches_pytorch() {
    check("resnet34", 64, 10);
}

#[test]
fn resnet50_matches_pytorch() {
    check("resnet50", 64, 10);
}

#[test]
fn resnet101_matches_pytorch() {
    check("resnet101", 64, 10);
}

#[test]
fn resnet152_matches_pytorch() {
    check("resnet152", 64, 10);
}

#[test]
fn wide_resnet50_2_matches_pytorch() {
    check("wide_resnet50_2", 64, 10);
}

/// At 32x32 (its 127M weights dominate the time, not the input).
#[test]
fn wide_resnet101_2_matches_pytorch() {
    check("wide_resnet101_2", 32, 10);
}
