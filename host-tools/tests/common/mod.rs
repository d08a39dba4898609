//! Helpers of the CLI tests (included with `mod common;` by each test file): the workspace's
//! test helpers plus running the `classmod` binary.
#![allow(dead_code, unused_imports)]

#[path = "../../../tests/common/mod.rs"]
mod workspace;
pub use workspace::{fashion_mnist, scratch, shared, CIFAR10_CLASSES};

use std::path::Path;
use std::process::{Command, Output};

pub fn classmod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classmod")).args(args).output().expect("the classmod binary runs")
}

/// Imports a ../shared CIFAR-10 model with the normalisation it was trained with.
pub fn import_shared(shared: &Path, file: &str, out: &Path) {
    let o = classmod(&[
        "import",
        shared.join("models").join(file).to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--mean",
        "0.485,0.456,0.406",
        "--std",
        "0.229,0.224,0.225",
        "--class-names",
        &workspace::CIFAR10_CLASSES.join(","),
    ]);
    assert!(o.status.success(), "import failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The JSON object on the last line of stdout.
pub fn last_json(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("no JSON last line ({e}): {out}"))
}
