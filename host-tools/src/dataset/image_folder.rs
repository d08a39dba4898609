//! ImageFolder directories: `<class>/<images>`, optionally under `train/` and `test/` (without
//! them both splits are the whole folder). Class folders may nest images in sub-folders; hidden
//! files and folders are skipped, and so are files that are not `.png`, `.jpg` or `.jpeg`.

use std::fs;
use std::path::{Path, PathBuf};

use super::classes::{self, ModelClasses};
use super::decode::{self, Encoded, Item};
use super::{io_error, is_image_name, DatasetError, ImageSet, ImageShape, Split};

/// Deepest folder nesting followed inside a class folder (a guard against symlink loops).
const MAX_DEPTH: usize = 32;

pub(super) fn load(
    root: &Path,
    split: Split,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    let dir = split_dir(root, split)?;
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let mut loose_images = false;
    for (name, path) in sorted_entries(&dir)? {
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let mut files = Vec::new();
            collect_images(&path, 0, &mut files)?;
            if !files.is_empty() {
                classes.push((name, files));
            }
        } else if is_image_name(&name) {
            loose_images = true;
        }
    }
    if classes.is_empty() {
        let hint = if loose_images {
            " (images must be in one folder per class: <class>/<image>)".to_string()
        } else {
            " (expected <class>/<image>.png|jpg folders, optionally under train/ and test/)".to_string()
        };
        return Err(DatasetError::Empty { path: dir, hint });
    }
    let found: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
    let (class_names, labels) = classes::resolve_named(&dir, &found, model)?;
    let items = classes
        .into_iter()
        .zip(labels)
        .flat_map(|((_, files), label)| {
            files.into_iter().map(move |f| Item { label, name: f.clone(), data: Encoded::File(f) })
        })
        .collect();
    let (pixels, labels) = decode::decode_items(&dir, items, shape)?;
    Ok(ImageSet { class_names, shape, pixels, labels })
}

/// The split's first image file, in class folder then path order.
pub(super) fn first_image(root: &Path, split: Split) -> Result<PathBuf, DatasetError> {
    let dir = split_dir(root, split)?;
    for (name, path) in sorted_entries(&dir)? {
        if !name.starts_with('.') && path.is_dir() {
            let mut files = Vec::new();
            collect_images(&path, 0, &mut files)?;
            if let Some(first) = files.into_iter().next() {
                return Ok(first);
            }
        }
    }
    Err(DatasetError::Empty { path: dir, hint: " (expected <class>/<image>.png|jpg folders)".to_string() })
}

/// The folder that holds the split's class folders.
fn split_dir(root: &Path, split: Split) -> Result<PathBuf, DatasetError> {
    let train = root.join("train");
    let test = root.join("test");
    let (has_train, has_test) = (train.is_dir(), test.is_dir());
    if !has_train && !has_test {
        return Ok(root.to_path_buf());
    }
    match split {
        Split::Train if has_train => Ok(train),
        Split::Test if has_test => Ok(test),
        Split::Train => Err(DatasetError::Empty {
            path: root.to_path_buf(),
            hint: " for the train split (it has a test/ folder but no train/)".to_string(),
        }),
        Split::Test => Err(DatasetError::Empty {
            path: root.to_path_buf(),
            hint: " for the test split (it has a train/ folder but no test/)".to_string(),
        }),
    }
}

/// (name, path) of a directory's entries, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    entries.sort();
    Ok(entries)
}

/// The image files under `dir`, recursively, in sorted order.
fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DatasetError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for (name, path) in sorted_entries(dir)? {
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, depth + 1, out)?;
        } else if is_image_name(&name) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{png_bytes, rgb_pattern, solid, TempDir};
    use crate::dataset::load;

    const RGB4: ImageShape = ImageShape::new(3, 4, 4);

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// `<prefix><class>/<k>.png` with a solid colour `[label*50, k, 7]`.
    fn make(t: &TempDir, prefix: &str, classes: &[&str], per_class: u8) {
        for (ci, c) in classes.iter().enumerate() {
            for k in 0..per_class {
                t.write(&format!("{prefix}{c}/{k}.png"), &png_bytes(&solid(4, 4, [ci as u8 * 50, k, 7])));
            }
        }
    }

    #[test]
    fn loads_plain_folder_with_sorted_classes() {
        let t = TempDir::new("if-plain");
        make(&t, "", &["dog", "cat"], 2);
        t.write("readme.txt", b"not an image");
        t.write("cat/.hidden.png", b"junk");
        t.write(".git/x.png", b"junk");
        for split in [Split::Train, Split::Test] {
            let set = load(t.root(), split, RGB4, None).unwrap();
            assert_eq!(set.class_names, s(&["cat", "dog"]));
            assert_eq!(set.labels, vec![0, 0, 1, 1]);
            assert_eq!(set.len(), 4);
            // cat was written second (colour index 1), dog first.
            assert_eq!(set.image(0)[0], 50);
            assert_eq!(set.image(1)[16], 1);
            assert_eq!(set.image(2)[0], 0);
            assert_eq!(set.image(3)[32], 7);
        }
    }

    #[test]
    fn splits_and_nested_images() {
        let t = TempDir::new("if-split");
        make(&t, "train/", &["a", "b"], 3);
        make(&t, "test/", &["a", "b"], 1);
        t.write("test/b/deeper/z.png", &png_bytes(&rgb_pattern(4, 4, 0)));
        let train = load(t.root(), Split::Train, RGB4, None).unwrap();
        assert_eq!(train.labels, vec![0, 0, 0, 1, 1, 1]);
        let test = load(t.root(), Split::Test, RGB4, None).unwrap();
        assert_eq!(test.labels, vec![0, 1, 1]);
        assert_eq!(test.image(2), {
            let mut v = vec![0; 48];
            decode::decode_into(&png_bytes(&rgb_pattern(4, 4, 0)), RGB4, &mut v).unwrap();
            v
        });
    }

    #[test]
    fn missing_split_is_empty() {
        let t = TempDir::new("if-nosplit");
        make(&t, "train/", &["a"], 1);
        assert!(matches!(load(t.root(), Split::Test, RGB4, None), Err(DatasetError::Empty { .. })));
    }

    #[test]
    fn model_names_fix_the_order() {
        let t = TempDir::new("if-model");
        make(&t, "", &["cat", "dog"], 1);
        let model = s(&["dog", "bird", "cat"]);
        let set = load(t.root(), Split::Test, RGB4, Some(&model)).unwrap();
        assert_eq!(set.class_names, model);
        // Sorted by label: dog (0) first, then cat (2).
        assert_eq!(set.labels, vec![0, 2]);
        assert_eq!(set.image(0)[0], 50);
        assert_eq!(set.image(1)[0], 0);
        // Generic names: folder names sorted.
        let generic = s(&["class0", "class1", "class2"]);
        let set = load(t.root(), Split::Test, RGB4, Some(&generic)).unwrap();
        assert_eq!(set.class_names, s(&["cat", "dog"]));
        assert_eq!(set.labels, vec![0, 1]);
        // Unknown classes.
        let err = load(t.root(), Split::Test, RGB4, Some(&s(&["cat", "emu"]))).unwrap_err();
        assert!(matches!(&err, DatasetError::ClassMismatch { reason, .. } if reason.contains("dog")), "{err}");
        let err = load(t.root(), Split::Test, RGB4, Some(&s(&["class0"]))).unwrap_err();
        assert!(matches!(err, DatasetError::ClassMismatch { .. }));
    }

    #[test]
    fn converts_channels_and_size() {
        let t = TempDir::new("if-convert");
        t.write("c/x.png", &png_bytes(&solid(8, 6, [90, 90, 90])));
        let set = load(t.root(), Split::Test, ImageShape::new(1, 3, 5), None).unwrap();
        assert_eq!(set.pixels, vec![90; 15]);
    }

    #[test]
    fn bad_inputs() {
        let t = TempDir::new("if-bad");
        t.mkdir("empty");
        assert!(matches!(load(&t.path("empty"), Split::Test, RGB4, None), Err(DatasetError::Empty { .. })));
        t.write("loose2/a.png", &png_bytes(&solid(4, 4, [0; 3])));
        match load(&t.path("loose2"), Split::Test, RGB4, None) {
            Err(DatasetError::Empty { hint, .. }) => assert!(hint.contains("one folder per class")),
            other => panic!("{other:?}"),
        }
        make(&t, "corrupt/", &["a"], 2);
        let bad = t.write("corrupt/a/1.png", b"\x89PNG\r\n\x1a\n garbage");
        match load(&t.path("corrupt"), Split::Test, RGB4, None) {
            Err(DatasetError::BadImage { path, .. }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
        t.write("corrupt2/a/x.jpg", b"not a jpeg at all");
        assert!(matches!(load(&t.path("corrupt2"), Split::Test, RGB4, None), Err(DatasetError::BadImage { .. })));
        t.write("corrupt3/a/x.png", b"");
        assert!(matches!(load(&t.path("corrupt3"), Split::Test, RGB4, None), Err(DatasetError::BadImage { .. })));
    }
}
