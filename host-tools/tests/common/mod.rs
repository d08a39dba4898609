//! Helpers of the CLI tests (included with `mod common;` by each test file): the workspace's
//! test helpers plus running the `classmod` binary.
#![allow(dead_code, unused_imports)]

#[path = "../../../tests/common/mod.rs"]
mod workspace;
pub use workspace::{fashion_mnist, scratch, shared, CIFAR10_CLASSES};

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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

/// `classes` classes of the archive in its own layout under `dir`: every `200 / classes`-th wnid, their training
/// images, their validation images and annotation lines, `wnids.txt` and `words.txt`.
pub fn tiny_subset(archive: &Path, dir: &Path, classes: usize) -> (PathBuf, Vec<String>) {
    let read = |f: &mut dyn FnMut(&str, &[u8])| {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(archive).unwrap());
        let mut tar = tar::Archive::new(gz);
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            f(&path, &bytes);
        }
    };
    // First pass: the texts, to pick the classes and their validation images.
    let (mut wnids, mut annotations, mut words) = (String::new(), String::new(), Vec::new());
    let mut trained = HashSet::new(); // the wnids with training images (../shared names two more)
    read(&mut |path, bytes| match path {
        "tiny-imagenet-200/wnids.txt" => wnids = String::from_utf8(bytes.to_vec()).unwrap(),
        "tiny-imagenet-200/val/val_annotations.txt" => annotations = String::from_utf8(bytes.to_vec()).unwrap(),
        "tiny-imagenet-200/words.txt" => words = bytes.to_vec(),
        p if p.starts_with("tiny-imagenet-200/train/") => {
            trained.insert(p.split('/').nth(2).unwrap_or("").to_string());
        }
        _ => {}
    });
    let mut all: Vec<&str> = wnids.lines().map(str::trim).filter(|l| !l.is_empty() && trained.contains(*l)).collect();
    all.sort();
    let step = (all.len() / classes.max(1)).max(1);
    let picked: Vec<String> = all.iter().step_by(step).take(classes).map(|s| s.to_string()).collect();
    let keep: HashSet<&str> = picked.iter().map(String::as_str).collect();
    let val_lines: Vec<&str> =
        annotations.lines().filter(|l| l.split('\t').nth(1).is_some_and(|w| keep.contains(w))).collect();
    let val_images: HashSet<String> =
        val_lines.iter().map(|l| format!("tiny-imagenet-200/val/images/{}", l.split('\t').next().unwrap())).collect();
    let root = dir.join("tiny-imagenet-200");
    let write = |rel: &str, bytes: &[u8]| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    };
    write("tiny-imagenet-200/wnids.txt", (picked.join("\n") + "\n").as_bytes());
    write("tiny-imagenet-200/words.txt", &words);
    write("tiny-imagenet-200/val/val_annotations.txt", (val_lines.join("\n") + "\n").as_bytes());
    // Second pass: the images.
    read(&mut |path, bytes| {
        let train_image = path.split('/').nth(2).is_some_and(|w| keep.contains(w)) && path.contains("/train/");
        if (train_image || val_images.contains(path)) && path.ends_with(".JPEG") {
            write(path, bytes);
        }
    });
    (root, picked)
}
