//! Helpers shared by the integration tests: where `../shared` is, and how to skip loudly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared` seen from the workspace root, if present. When it is absent the test is skipped
/// with a message on stderr; under CI (`CI` set) absence is a failure, never a silent pass.
pub fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("../shared is missing but CI is set: the real-data tests cannot run");
    }
    eprintln!("SKIPPED: {} is absent; this test needs the shared models and data", dir.display());
    None
}

/// Fashion-MNIST from Debian's `dataset-fashion-mnist`, if installed (skips loudly otherwise).
pub fn fashion_mnist() -> Option<PathBuf> {
    let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if dir.join("train-images-idx3-ubyte.gz").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("Fashion-MNIST is missing but CI is set: .ci/run must `apt-get install dataset-fashion-mnist`");
    }
    eprintln!("SKIPPED: {} is absent (apt-get install dataset-fashion-mnist)", dir.display());
    None
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
