//! Shared helpers of the CLI tests (included with `mod common;` by each test file).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared` from the workspace root; absent -> loud skip, or a failure under CI.
pub fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("../shared is missing but CI is set: the real-data tests cannot run");
    }
    eprintln!("SKIPPED: {} is absent; this test needs the shared models and data", dir.display());
    None
}

pub fn classmod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classmod")).args(args).output().expect("the classmod binary runs")
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("classmod-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const CIFAR10_CLASSES: &str = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck";

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
        CIFAR10_CLASSES,
    ]);
    assert!(o.status.success(), "import failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The JSON object on the last line of stdout.
pub fn last_json(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("no JSON last line ({e}): {out}"))
}
