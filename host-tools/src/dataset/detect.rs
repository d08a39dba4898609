//! Which format a dataset path holds, from the path and its contents.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{io_error, DatasetError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Format {
    /// `<class>/<images>`, optionally under `train/` and `test/`.
    ImageFolder(PathBuf),
    /// A `.tar.gz` / `.tgz` (or plain `.tar`) of an ImageFolder.
    Archive(PathBuf),
    /// A directory of `data_batch_N.bin` / `test_batch.bin`.
    CifarBinary(PathBuf),
    /// A directory of `train-*` / `t10k-*` IDX files.
    Idx(PathBuf),
    /// Tiny ImageNet unpacked (`words.txt`, `train/<wnid>/images/`, `val/`): the folder itself.
    TinyImageNet(PathBuf),
}

/// The official CIFAR-10 binary tarball unpacks into this folder.
const CIFAR_SUBDIR: &str = "cifar-10-batches-bin";

pub(super) fn detect(path: &Path) -> Result<Format, DatasetError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return detect_dir(path);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar") {
        return Ok(Format::Archive(path.to_path_buf()));
    }
    let unrecognised =
        |reason: &str| DatasetError::Unrecognised { path: path.to_path_buf(), reason: reason.to_string() };
    if name.contains("idx") && name.contains("ubyte") {
        return Err(unrecognised("an IDX file: pass the directory that holds the train-* and t10k-* files"));
    }
    if name.ends_with(".bin") {
        return Err(unrecognised(
            "a single file: pass the CIFAR-10 directory that holds data_batch_N.bin and test_batch.bin",
        ));
    }
    // A gzip file with an unusual name may still be a tar.gz.
    let mut magic = [0u8; 2];
    let is_gzip = super::open_file(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b];
    if is_gzip {
        return Ok(Format::Archive(path.to_path_buf()));
    }
    Err(unrecognised(
        "expected an ImageFolder directory, a .tar.gz of one, a CIFAR-10 binary directory or an IDX directory",
    ))
}

fn detect_dir(dir: &Path) -> Result<Format, DatasetError> {
    let names = file_names(dir)?;
    if names.iter().any(|n| is_idx_images_name(n)) {
        return Ok(Format::Idx(dir.to_path_buf()));
    }
    if names.iter().any(|n| is_cifar_batch_name(n)) {
        return Ok(Format::CifarBinary(dir.to_path_buf()));
    }
    if let Some(root) = super::tiny_imagenet::root_in(dir) {
        return Ok(Format::TinyImageNet(root));
    }
    let sub = dir.join(CIFAR_SUBDIR);
    if sub.is_dir() && file_names(&sub)?.iter().any(|n| is_cifar_batch_name(n)) {
        return Ok(Format::CifarBinary(sub));
    }
    Ok(Format::ImageFolder(dir.to_path_buf()))
}

/// The names in a directory (lossy UTF-8), sorted.
pub(super) fn file_names(dir: &Path) -> Result<Vec<String>, DatasetError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// `train-images-idx3-ubyte`, `t10k-images.idx3-ubyte.gz`, ...
pub(super) fn is_idx_images_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["train-images", "t10k-images", "test-images"].iter().any(|p| lower.starts_with(p)) && lower.contains("idx3-ubyte")
}

/// `data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`.
pub(super) fn is_cifar_batch_name(name: &str) -> bool {
    name == "test_batch.bin" || cifar_train_batch_number(name).is_some()
}

/// `N` of `data_batch_N.bin`.
pub(super) fn cifar_train_batch_number(name: &str) -> Option<u32> {
    name.strip_prefix("data_batch_")?.strip_suffix(".bin")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::TempDir;

    #[test]
    fn detects_each_format() {
        let t = TempDir::new("detect");
        t.mkdir("folder/cat");
        assert_eq!(detect(&t.path("folder")).unwrap(), Format::ImageFolder(t.path("folder")));

        t.write("idx/train-images-idx3-ubyte.gz", b"x");
        assert_eq!(detect(&t.path("idx")).unwrap(), Format::Idx(t.path("idx")));

        t.write("cifar/test_batch.bin", b"");
        assert_eq!(detect(&t.path("cifar")).unwrap(), Format::CifarBinary(t.path("cifar")));
        t.write("cifar2/cifar-10-batches-bin/data_batch_1.bin", b"");
        assert_eq!(detect(&t.path("cifar2")).unwrap(), Format::CifarBinary(t.path("cifar2/cifar-10-batches-bin")));

        t.write("a.tar.gz", b"x");
        assert_eq!(detect(&t.path("a.tar.gz")).unwrap(), Format::Archive(t.path("a.tar.gz")));
        t.write("a.tgz", b"x");
        assert_eq!(detect(&t.path("a.tgz")).unwrap(), Format::Archive(t.path("a.tgz")));
        t.write("oddname", &[0x1f, 0x8b, 0]);
        assert_eq!(detect(&t.path("oddname")).unwrap(), Format::Archive(t.path("oddname")));
    }

    #[test]
    fn rejects_missing_and_unknown_files() {
        let t = TempDir::new("detect-bad");
        assert!(matches!(detect(&t.path("nope")), Err(DatasetError::Io { path, .. }) if path == t.path("nope")));
        t.write("notes.txt", b"hello");
        assert!(matches!(detect(&t.path("notes.txt")), Err(DatasetError::Unrecognised { .. })));
        t.write("train-images-idx3-ubyte", b"hello");
        assert!(matches!(detect(&t.path("train-images-idx3-ubyte")), Err(DatasetError::Unrecognised { .. })));
        t.write("data_batch_1.bin", b"");
        assert!(matches!(detect(&t.path("data_batch_1.bin")), Err(DatasetError::Unrecognised { .. })));
    }

    #[test]
    fn batch_names() {
        assert_eq!(cifar_train_batch_number("data_batch_3.bin"), Some(3));
        assert_eq!(cifar_train_batch_number("data_batch_x.bin"), None);
        assert!(is_idx_images_name("t10k-images.idx3-ubyte"));
        assert!(!is_idx_images_name("t10k-labels-idx1-ubyte"));
    }
}
