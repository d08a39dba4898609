//! Helpers shared by the integration tests of every package (host-tools' tests include this file
//! too): where the real data is, and how to skip loudly when it is absent.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root: the nearest folder above the package that holds `Cargo.lock`.
fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && dir.pop() {}
    dir
}

/// `dir` if `probe` exists in it. Otherwise the test is skipped with a message on stderr, and
/// under CI (`CI` set) absence is a failure: never a silent pass.
fn require(dir: PathBuf, probe: &str, how: &str) -> Option<PathBuf> {
    if dir.join(probe).exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing but CI is set: {how}", dir.display());
    }
    eprintln!("SKIPPED: {} is absent ({how})", dir.display());
    None
}

/// `../shared` beside the workspace, or `$CLASSMOD_SHARED` (a copy elsewhere, e.g. on a GPU
/// machine the tests were carried to): the pretrained models and CIFAR-10.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("CLASSMOD_SHARED").map_or_else(|| workspace_root().join("../shared"), PathBuf::from);
    require(dir, "README.md", "the real-data tests need the shared models and data")
}

/// Fashion-MNIST from Debian's `dataset-fashion-mnist`.
pub fn fashion_mnist() -> Option<PathBuf> {
    require(
        PathBuf::from("/usr/share/datasets/fashion-mnist"),
        "t10k-images-idx3-ubyte.gz",
        "apt-get install dataset-fashion-mnist",
    )
}

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// A scratch directory unique to this test process and `name`, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("classmod-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A folder of lossless test PNGs with PyTorch's `reference-logits.json`: the JSON, and the
/// images its `images` names, as 8-bit CHW one after another.
pub fn reference_pngs(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference-logits.json")).unwrap()).unwrap();
    let mut pixels = Vec::new();
    for name in reference["images"].as_array().unwrap() {
        let img = image::open(dir.join(name.as_str().unwrap())).unwrap().to_rgb8();
        for c in 0..3 {
            pixels.extend(img.pixels().map(|p| p.0[c])); // HWC -> CHW
        }
    }
    (reference, pixels)
}

/// The numbers of a JSON array, as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}
