//! Real packed directories for the cross-crate tests and the benches: the ../shared ResNet-20
//! imported with its normalisation, some of its classes decomposed on CIFAR-10's training
//! images, packed with golden vectors from the test images.

use std::path::Path;

use anyhow::Result;
use classmod_host::dataset::{self, ImageSet, ImageShape, Split};
use classmod_host::decompose::{DecomposeOptions, HeadKind};
use classmod_host::import::{import_bytes, ImportOptions};
use classmod_host::pack::decompose_and_pack;
use classmod_runtime::host::ModelFile;
use classmod_runtime::InputSpec;
use classmod_runtime::Manifest;

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The shared ResNet-20 as a classmod model (ImageNet statistics, CIFAR-10 class names).
pub fn resnet20(shared: &Path) -> Result<ModelFile> {
    let bytes = std::fs::read(shared.join("models/resnet20-cifar10.safetensors"))?;
    let spec = InputSpec::cifar10_imagenet_stats();
    let opts = ImportOptions {
        mean: Some(spec.mean),
        std: Some(spec.std),
        class_names: Some(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    Ok(import_bytes(&bytes, &opts)?)
}

/// A packed directory and the test images it was packed with.
pub struct Packed {
    pub model: ModelFile,
    pub manifest: Manifest,
    pub test: ImageSet,
}

/// Decomposes `classes` (output indices) of the shared ResNet-20 with `n_pos` positives each
/// (the default rates, channel head) and packs them into `out`, unsigned, with `golden` golden
/// images per module.
pub fn packed_resnet20(shared: &Path, classes: &[usize], n_pos: usize, golden: usize, out: &Path) -> Result<Packed> {
    let model = resnet20(shared)?;
    let spec = &model.meta.input;
    let shape = ImageShape::from(spec);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let names = &model.meta.class_names;
    let train = dataset::load(&data, Split::Train, shape, Some(names))?;
    let test = dataset::load(&data, Split::Test, shape, Some(names))?;
    let opts = DecomposeOptions {
        batch: 64,
        ..DecomposeOptions::with_default_rates(n_pos, HeadKind::Channel, Some(classes.to_vec()), 7)
    };
    let hidden = indicatif::ProgressBar::hidden();
    let manifest = decompose_and_pack(&model, &train, &test, &opts, golden, out, None, &hidden)?;
    Ok(Packed { model, manifest, test })
}
