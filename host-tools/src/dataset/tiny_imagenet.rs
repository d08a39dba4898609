//! Tiny ImageNet (Stanford CS231n: 200 classes of 64x64 JPEGs, the seed paper's third dataset),
//! from its unpacked folder or its `.tar.gz` read in place (`tar_gz` hands over what its scan
//! found): `train/<wnid>/images/*.JPEG` is the train split; `val/images/*.JPEG`, labelled by
//! `val/val_annotations.txt`, the test split (the official test images carry no labels). The
//! classes are the wnids that have training images, in wnid order (a copy's `wnids.txt` may name
//! more), each named after `words.txt`: its first synonym and the wnid, `goldfish (n01443537)`.
//! Gray images become RGB like any other when the wanted shape has three channels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::classes::{self, ModelClasses};
use super::decode::{self, Encoded, Item};
use super::{io_error, is_image_name, DatasetError, ImageSet, ImageShape};

/// `words.txt` and `val_annotations.txt` are a few megabytes; more is not this dataset.
pub(super) const MAX_TEXT_BYTES: u64 = 64 << 20;

/// The folder's files that mark the layout.
const WORDS: &str = "words.txt";
const ANNOTATIONS: &str = "val/val_annotations.txt";

/// The Tiny ImageNet folder `dir` is or holds (`tiny-imagenet-200/` inside it), if any.
pub(super) fn root_in(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("tiny-imagenet-200")]
        .into_iter()
        .find(|d| d.join(WORDS).is_file() && d.join(ANNOTATIONS).is_file() && d.join("train").is_dir())
}

/// Whether an archive entry's folders are Tiny ImageNet's (`.../train/<wnid>/images/` or
/// `.../val/images/`): its native shape is RGB even where the first image is gray.
pub(super) fn is_entry_folder(dirs: &[&str]) -> bool {
    match dirs {
        [.., "train", wnid, "images"] => is_wnid(wnid),
        [.., "val", "images"] => true,
        _ => false,
    }
}

/// `n` and eight digits.
pub(super) fn is_wnid(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The first training image of the first class (for the native shape).
pub(super) fn first_image(root: &Path) -> Result<PathBuf, DatasetError> {
    for (_, dir) in sorted_dirs(&root.join("train"))? {
        if let Some(f) = image_files(&dir.join("images"))?.into_iter().next() {
            return Ok(f);
        }
    }
    Err(DatasetError::Empty { path: root.join("train"), hint: " (no train/<wnid>/images/ folder with images)".into() })
}

/// One image of the wanted split: its label's wnid, the name errors give, its bytes or file.
pub(super) struct Image {
    pub wnid: String,
    pub name: PathBuf,
    pub data: Encoded,
}

/// The split from an unpacked folder (see [`root_in`]).
pub(super) fn load_dir(
    root: &Path,
    test: bool,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    let words = read_text(&root.join(WORDS))?;
    let mut wnids = Vec::new();
    let mut images = Vec::new();
    for (wnid, dir) in sorted_dirs(&root.join("train"))? {
        let files = image_files(&dir.join("images"))?;
        if files.is_empty() {
            continue;
        }
        if !test {
            images.extend(files.into_iter().map(|f| Image {
                wnid: wnid.clone(),
                name: f.clone(),
                data: Encoded::File(f),
            }));
        }
        wnids.push(wnid);
    }
    if test {
        let labels = annotations(&root.join(ANNOTATIONS), &read_text(&root.join(ANNOTATIONS))?)?;
        for f in image_files(&root.join("val/images"))? {
            let file_name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            images.push(Image { wnid: label_of(&labels, &file_name, &f)?, name: f.clone(), data: Encoded::File(f) });
        }
    }
    assemble(root, &words, wnids, images, shape, model)
}

/// `val_annotations.txt`: file name -> wnid (lines `val_0.JPEG<TAB>n03444034<TAB>box...`).
pub(super) fn annotations(path: &Path, text: &str) -> Result<HashMap<String, String>, DatasetError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split('\t');
        match (fields.next(), fields.next()) {
            (Some(file), Some(wnid)) if is_wnid(wnid.trim()) => {
                out.insert(file.trim().to_string(), wnid.trim().to_string());
            }
            _ => {
                return Err(DatasetError::Unrecognised {
                    path: path.to_path_buf(),
                    reason: format!("line {}: expected `<file>\\t<wnid>\\t...`, found `{line}`", i + 1),
                })
            }
        }
    }
    Ok(out)
}

/// The wnid `val_annotations.txt` gives the validation image `file_name` (at `name`).
pub(super) fn label_of(labels: &HashMap<String, String>, file_name: &str, name: &Path) -> Result<String, DatasetError> {
    labels.get(file_name).cloned().ok_or_else(|| DatasetError::ClassMismatch {
        path: name.to_path_buf(),
        reason: format!("{ANNOTATIONS} gives no class for `{file_name}`"),
    })
}

/// The image set of `images`, whose classes are `wnids` (those with training images) named after
/// `words` and ordered as the model's classes when it has names.
pub(super) fn assemble(
    path: &Path,
    words: &str,
    mut wnids: Vec<String>,
    images: Vec<Image>,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    wnids.sort();
    wnids.dedup();
    if images.is_empty() || wnids.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_path_buf(),
            hint: " (a Tiny ImageNet folder without images)".into(),
        });
    }
    let synonyms: HashMap<&str, &str> = words
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(w, s)| (w.trim(), s.split(',').next().unwrap_or("").trim()))
        .collect();
    let names: Vec<String> = wnids
        .iter()
        .map(|w| match synonyms.get(w.as_str()) {
            Some(s) if !s.is_empty() => format!("{s} ({w})"),
            _ => w.clone(),
        })
        .collect();
    let (class_names, labels) = classes::resolve_named(path, &names, model)?;
    let items = images
        .into_iter()
        .map(|im| match wnids.binary_search(&im.wnid) {
            Ok(i) => Ok(Item { label: labels[i], name: im.name, data: im.data }),
            Err(_) => Err(DatasetError::ClassMismatch {
                reason: format!("labelled {}, a class without training images", im.wnid),
                path: im.name,
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (pixels, labels) = decode::decode_items(path, items, shape)?;
    Ok(ImageSet { class_names, shape, pixels, labels })
}

fn read_text(path: &Path) -> Result<String, DatasetError> {
    let bytes = classmod_runtime::io::regular::read(path, MAX_TEXT_BYTES)
        .map_err(|e| DatasetError::Io { path: path.to_path_buf(), error: super::regular_error(e) })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// (name, path) of the folders in `dir`, sorted, hidden ones skipped.
fn sorted_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The image files directly in `dir` (none when it does not exist), sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if is_image_name(&entry.file_name().to_string_lossy()) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{png_bytes, solid, tar_gz, TempDir};
    use crate::dataset::{load, native_shape, Split};

    const RGB4: ImageShape = ImageShape::new(3, 4, 4);

    fn gray_png(v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::GrayImage::from_pixel(4, 4, image::Luma([v]))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    /// A miniature of the real layout: two classes with training images (the first stored
    /// gray), a third wnid named by wnids.txt and words.txt without images, three validation
    /// images (file names as the real ones, PNG content).
    fn files(prefix: &str, annotations: &str) -> Vec<(String, Vec<u8>)> {
        let px = |v: u8| png_bytes(&solid(4, 4, [v, v, v]));
        [
            ("train/n00000002/images/n00000002_0.JPEG", gray_png(10)),
            ("train/n00000002/images/n00000002_1.JPEG", px(11)),
            ("train/n00000001/images/n00000001_0.JPEG", px(20)),
            ("val/images/val_0.JPEG", px(30)),
            ("val/images/val_1.JPEG", px(31)),
            ("val/images/val_2.JPEG", px(32)),
            ("val/val_annotations.txt", annotations.as_bytes().to_vec()),
            ("wnids.txt", b"n00000001\nn00000002\nn00000003\n".to_vec()),
            ("words.txt", b"n00000001\tdog, domestic dog\nn00000002\tEgyptian cat\nn00000003\tunused\n".to_vec()),
        ]
        .into_iter()
        .map(|(n, b)| (format!("{prefix}{n}"), b))
        .collect()
    }

    const ANNOTATIONS_OK: &str =
        "val_0.JPEG\tn00000002\t0\t0\t3\t3\nval_1.JPEG\tn00000001\t0\t0\t3\t3\nval_2.JPEG\tn00000002\t1\t1\t2\t2\n";

    /// The same sets from the unpacked folder (itself or its parent) and from the archive:
    /// classes named after words.txt in wnid order, val/ labelled by its annotations, RGB
    /// throughout (the gray image too), native shape RGB although the first image is gray.
    #[test]
    fn folder_and_archive_read_alike() {
        let t = TempDir::new("tiny");
        for (n, b) in files("unpacked/tiny-imagenet-200/", ANNOTATIONS_OK) {
            t.write(&n, &b);
        }
        let refs: Vec<(String, Vec<u8>)> = files("tiny-imagenet-200/", ANNOTATIONS_OK);
        let archive =
            t.write("tiny.tar.gz", &tar_gz(&refs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect::<Vec<_>>()));
        for path in [t.path("unpacked"), t.path("unpacked/tiny-imagenet-200"), archive] {
            let train = load(&path, Split::Train, RGB4, None).unwrap();
            assert_eq!(train.class_names, ["dog (n00000001)", "Egyptian cat (n00000002)"], "{}", path.display());
            assert_eq!(train.labels, [0, 1, 1]);
            assert_eq!([train.image(0)[0], train.image(1)[0], train.image(2)[0]], [20, 10, 11]);
            assert_eq!(train.image(1)[16], 10, "the gray image's green plane");
            let test = load(&path, Split::Test, RGB4, None).unwrap();
            assert_eq!(test.class_names, train.class_names);
            assert_eq!(test.labels, [0, 1, 1]);
            assert_eq!([test.image(0)[0], test.image(1)[0], test.image(2)[0]], [31, 30, 32]);
            for split in [Split::Train, Split::Test] {
                assert_eq!(native_shape(&path, split).unwrap(), RGB4, "{}", path.display());
            }
        }
    }

    /// A validation image without a label, a label without training images, a malformed line:
    /// errors naming the file.
    #[test]
    fn bad_annotations_are_errors() {
        for (annotations, what) in [
            ("val_0.JPEG\tn00000002\nval_1.JPEG\tn00000001\n", "no label for val_2"),
            (
                &*format!("{ANNOTATIONS_OK}val_9.JPEG\tn00000002\n")
                    .replace("val_2.JPEG\tn00000002", "val_2.JPEG\tn00000003"),
                "a class without training images",
            ),
            ("val_0.JPEG n00000002\n", "not tab-separated"),
        ] {
            let t = TempDir::new("tiny-bad");
            let refs = files("", annotations);
            let archive =
                t.write("t.tar.gz", &tar_gz(&refs.iter().map(|(n, b)| (n.as_str(), b.clone())).collect::<Vec<_>>()));
            for (n, b) in &refs {
                t.write(&format!("dir/{n}"), b);
            }
            for path in [t.path("dir"), archive] {
                match load(&path, Split::Test, RGB4, None) {
                    Err(DatasetError::ClassMismatch { .. } | DatasetError::Unrecognised { .. }) => {}
                    other => panic!("{what} ({}): {other:?}", path.display()),
                }
            }
        }
    }
}
