//! A `.tar.gz` / `.tgz` (or plain `.tar`) of an ImageFolder, read in place by streaming: nothing is
//! unpacked to disk. Entries may sit under any top-level folder prefix (`cifar10/train/cat/1.jpg`,
//! `./test/cat/1.jpg`). Only the wanted split's encoded images are kept in memory; they are then
//! decoded in parallel.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::classes::{self, ModelClasses};
use super::decode::{self, Encoded, Item, MAX_ENCODED_BYTES};
use super::detect::{is_cifar_batch_name, is_idx_images_name};
use super::tiny_imagenet::{self, MAX_TEXT_BYTES};
use super::{io_error, is_image_name, DatasetError, ImageSet, ImageShape, Split};

/// Tiny ImageNet's text files the walk hands over besides images.
const TEXTS: [&str; 2] = ["words.txt", "val_annotations.txt"];

/// An image entry kept from the archive.
struct Entry {
    /// The entry's path as the archive spells it.
    name: String,
    class: String,
    bytes: Vec<u8>,
}

pub(super) fn load(
    archive: &Path,
    split: Split,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    let mut scan = scan(archive, split)?;
    if !scan.saw_split_layout && (scan.tiny.words.is_none() || scan.tiny.annotations.is_none()) {
        // Not Tiny ImageNet after all: `val/images/` folders are an ImageFolder's like any other.
        for e in std::mem::take(&mut scan.tiny.val_entries) {
            let mut dirs: Vec<String> =
                e.name.split('/').filter(|c| !c.is_empty() && *c != ".").map(String::from).collect();
            dirs.pop();
            scan.unsplit_entries.0.push((dirs, e));
        }
    }
    if let (Some(words), Some(annotations)) = (&scan.tiny.words, &scan.tiny.annotations) {
        return tiny_imagenet_set(
            archive,
            split,
            shape,
            model,
            words,
            annotations,
            scan.tiny.train_classes,
            scan.split_entries,
            scan.tiny.val_entries,
        );
    }
    let entries = if scan.saw_split_layout { scan.split_entries } else { scan.unsplit_entries.into_classes() };
    if entries.is_empty() {
        let hint = if scan.saw_split_layout {
            format!(
                " for the {} split (the archive has no {} folder with images)",
                split_name(split),
                split_name(split)
            )
        } else if scan.saw_other_dataset {
            " (it holds CIFAR-10 binary or IDX files: unpack it and pass the folder)".to_string()
        } else {
            " (expected <class>/<image>.png|jpg entries, optionally under train/ and test/)".to_string()
        };
        return Err(DatasetError::Empty { path: archive.to_path_buf(), hint });
    }
    let mut found: Vec<String> = entries.iter().map(|e| e.class.clone()).collect();
    found.sort();
    found.dedup();
    let (class_names, labels) = classes::resolve_named(archive, &found, model)?;
    let items = entries
        .into_iter()
        .map(|e| {
            let label = labels[found.binary_search(&e.class).unwrap_or(0)];
            Item { label, name: entry_path(archive, &e.name), data: Encoded::Bytes(e.bytes) }
        })
        .collect();
    let (pixels, labels) = decode::decode_items(archive, items, shape)?;
    Ok(ImageSet { class_names, shape, pixels, labels })
}

/// A Tiny ImageNet archive's split: the train split's entries are its class folders' images,
/// the test split's the validation images labelled by `val_annotations.txt`.
#[allow(clippy::too_many_arguments)]
fn tiny_imagenet_set(
    archive: &Path,
    split: Split,
    shape: ImageShape,
    model: &ModelClasses,
    words: &str,
    annotations: &str,
    mut wnids: Vec<String>,
    train: Vec<Entry>,
    val: Vec<Entry>,
) -> Result<ImageSet, DatasetError> {
    let images = match split {
        Split::Train => {
            wnids.extend(train.iter().map(|e| e.class.clone()));
            train
                .into_iter()
                .map(|e| tiny_imagenet::Image {
                    wnid: e.class,
                    name: entry_path(archive, &e.name),
                    data: Encoded::Bytes(e.bytes),
                })
                .collect()
        }
        Split::Test => {
            let labels = tiny_imagenet::annotations(&entry_path(archive, "val/val_annotations.txt"), annotations)?;
            val.into_iter()
                .map(|e| {
                    let name = entry_path(archive, &e.name);
                    let file_name = e.name.rsplit('/').next().unwrap_or_default();
                    Ok(tiny_imagenet::Image {
                        wnid: tiny_imagenet::label_of(&labels, file_name, &name)?,
                        name,
                        data: Encoded::Bytes(e.bytes),
                    })
                })
                .collect::<Result<Vec<_>, DatasetError>>()?
        }
    };
    tiny_imagenet::assemble(archive, words, wnids, images, shape, model)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// `archive.tar.gz:test/cat/0001.jpg`, the name errors give for an entry.
fn entry_path(archive: &Path, name: &str) -> PathBuf {
    PathBuf::from(format!("{}:{name}", archive.display()))
}

struct Scan {
    /// Whether any image sits under a `train/` or `test/` folder.
    saw_split_layout: bool,
    /// The wanted split's images (class = the folder after `train/` or `test/`).
    split_entries: Vec<Entry>,
    /// Images outside any split folder, kept until a split folder shows up.
    unsplit_entries: Unsplit,
    /// Whether the archive holds CIFAR-10 binary or IDX files (for the error hint).
    saw_other_dataset: bool,
    /// What a Tiny ImageNet archive adds.
    tiny: TinyScan,
}

/// A Tiny ImageNet archive's texts, the class folders of the other split, and (for the test
/// split) its validation images.
#[derive(Default)]
struct TinyScan {
    words: Option<String>,
    annotations: Option<String>,
    train_classes: Vec<String>,
    val_entries: Vec<Entry>,
}

/// Images outside split folders, with their folder components; their class folder is the first
/// component after the prefix all of them share.
#[derive(Default)]
struct Unsplit(Vec<(Vec<String>, Entry)>);

impl Unsplit {
    fn into_classes(self) -> Vec<Entry> {
        let Some(min_dirs) = self.0.iter().map(|(dirs, _)| dirs.len()).min() else { return Vec::new() };
        // The shared prefix, leaving at least the class folder.
        let first = &self.0[0].0;
        let mut prefix = 0;
        while prefix + 1 < min_dirs && self.0.iter().all(|(dirs, _)| dirs[prefix] == first[prefix]) {
            prefix += 1;
        }
        self.0
            .into_iter()
            .map(|(dirs, mut e)| {
                e.class = dirs[prefix].clone();
                e
            })
            .collect()
    }
}

fn scan(archive: &Path, split: Split) -> Result<Scan, DatasetError> {
    let wanted = split_name(split);
    let mut scan = Scan {
        saw_split_layout: false,
        split_entries: Vec::new(),
        unsplit_entries: Unsplit::default(),
        saw_other_dataset: false,
        tiny: TinyScan::default(),
    };
    scan.saw_other_dataset = walk(archive, true, |name, dirs, entry| {
        match name.rsplit('/').next() {
            Some("words.txt") => scan.tiny.words = Some(read_text(archive, name, entry)?),
            Some("val_annotations.txt") => scan.tiny.annotations = Some(read_text(archive, name, entry)?),
            _ => {}
        }
        if !is_image_name(name.rsplit('/').next().unwrap_or_default()) {
            return Ok(true);
        }
        if split == Split::Test && tiny_imagenet::is_entry_folder(dirs) && dirs.ends_with(&["val", "images"]) {
            let bytes = read_entry(archive, name, entry)?;
            scan.tiny.val_entries.push(Entry { name: name.to_string(), class: String::new(), bytes });
            return Ok(true);
        }
        let class = match split_marker(dirs) {
            Some(i) => {
                scan.saw_split_layout = true;
                scan.unsplit_entries.0.clear();
                if dirs[i] != wanted {
                    if dirs[i] == "train" && tiny_imagenet::is_entry_folder(dirs) {
                        let class = dirs[i + 1].to_string();
                        if scan.tiny.train_classes.last() != Some(&class) {
                            scan.tiny.train_classes.push(class);
                        }
                    }
                    return Ok(true);
                }
                Some(dirs[i + 1].to_string())
            }
            None if scan.saw_split_layout => return Ok(true),
            None => None,
        };
        let bytes = read_entry(archive, name, entry)?;
        match class {
            Some(class) => scan.split_entries.push(Entry { name: name.to_string(), class, bytes }),
            None => {
                let dirs = dirs.iter().map(|d| d.to_string()).collect();
                scan.unsplit_entries.0.push((dirs, Entry { name: name.to_string(), class: String::new(), bytes }));
            }
        }
        Ok(true)
    })?;
    Ok(scan)
}

/// The first image of the split (or outside any split folder) in archive order, with its
/// `archive:entry` name and whether it sits where Tiny ImageNet keeps its images.
pub(super) fn first_image(archive: &Path, split: Split) -> Result<(PathBuf, Vec<u8>, bool), DatasetError> {
    let wanted = split_name(split);
    let mut first = None;
    walk(archive, false, |name, dirs, entry| {
        if !is_image_name(name.rsplit('/').next().unwrap_or_default())
            || split_marker(dirs).is_some_and(|i| dirs[i] != wanted)
        {
            return Ok(true);
        }
        first =
            Some((entry_path(archive, name), read_entry(archive, name, entry)?, tiny_imagenet::is_entry_folder(dirs)));
        Ok(false)
    })?;
    first.ok_or_else(|| DatasetError::Empty {
        path: archive.to_path_buf(),
        hint: format!(" for the {wanted} split (expected <class>/<image>.png|jpg entries)"),
    })
}

/// The position of the split folder (`train` or `test`) among an image's folders; it needs a
/// class folder after it.
fn split_marker(dirs: &[&str]) -> Option<usize> {
    dirs[..dirs.len().saturating_sub(1)].iter().position(|d| *d == "train" || *d == "test")
}

/// A text entry (Tiny ImageNet's `words.txt`, `val_annotations.txt`), refusing hostile sizes.
fn read_text(archive: &Path, name: &str, entry: &mut dyn Read) -> Result<String, DatasetError> {
    let bytes = read_at_most(archive, entry, MAX_TEXT_BYTES)?.ok_or_else(|| DatasetError::Unrecognised {
        path: entry_path(archive, name),
        reason: format!("a text file larger than {MAX_TEXT_BYTES} bytes"),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// An image entry's bytes, refusing hostile sizes.
fn read_entry(archive: &Path, name: &str, entry: &mut dyn Read) -> Result<Vec<u8>, DatasetError> {
    read_at_most(archive, entry, MAX_ENCODED_BYTES)?.ok_or_else(|| DatasetError::BadImage {
        path: entry_path(archive, name),
        reason: format!("entry larger than {MAX_ENCODED_BYTES} bytes"),
    })
}

/// An entry's bytes, or `None` when it holds more than `max`.
fn read_at_most(archive: &Path, entry: &mut dyn Read, max: u64) -> Result<Option<Vec<u8>>, DatasetError> {
    let mut bytes = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| DatasetError::BadArchive { path: archive.to_path_buf(), reason: e.to_string() })?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Streams the archive's image entries (regular files named `.png`, `.jpg` or `.jpeg` inside at
/// least one folder, none of them hidden), and Tiny ImageNet's two text files, to `visit` with
/// the entry's name and folders; `visit`
/// returns false to stop. Unless stopped early, with `check_tail` the stream is read to its end,
/// so that a cut or corrupt tail (after the tar's end-of-archive blocks, or in the gzip trailer
/// and its checksum) is an error too. Returns whether the archive holds CIFAR-10 binary or IDX
/// files (for error hints).
fn walk(
    archive: &Path,
    check_tail: bool,
    mut visit: impl FnMut(&str, &[&str], &mut dyn Read) -> Result<bool, DatasetError>,
) -> Result<bool, DatasetError> {
    let bad = |e: io::Error| DatasetError::BadArchive { path: archive.to_path_buf(), reason: e.to_string() };
    let file = super::open_file(archive).map_err(io_error(archive))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let is_gzip = reader.fill_buf().map_err(io_error(archive))?.starts_with(&[0x1f, 0x8b]);
    let lower = archive.to_string_lossy().to_ascii_lowercase();
    if !is_gzip && !lower.ends_with(".tar") {
        return Err(DatasetError::BadArchive { path: archive.to_path_buf(), reason: "not gzip data".to_string() });
    }
    let stream: Box<dyn Read> = if is_gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let mut tar = tar::Archive::new(stream);
    let mut saw_other_dataset = false;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let Some((file_name, dirs)) = parts.split_last() else { continue };
        if is_idx_images_name(file_name) || is_cifar_batch_name(file_name) {
            saw_other_dataset = true;
        }
        // Images sit in a folder; Tiny ImageNet's words.txt may sit at the archive's top.
        let text = TEXTS.contains(file_name);
        let wanted = text || is_image_name(file_name) && !dirs.is_empty();
        if !wanted || dirs.iter().any(|d| d.starts_with('.') || *d == "__MACOSX") {
            continue;
        }
        if !visit(&name, dirs, &mut entry)? {
            return Ok(saw_other_dataset);
        }
    }
    if check_tail {
        io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(bad)?;
    }
    Ok(saw_other_dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{png_bytes, rgb_pattern, solid, tar_gz, TempDir};
    use crate::dataset::load;

    const RGB4: ImageShape = ImageShape::new(3, 4, 4);

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn px(v: u8) -> Vec<u8> {
        png_bytes(&solid(4, 4, [v, v, v]))
    }

    fn split_archive(prefix: &str) -> Vec<u8> {
        tar_gz(&[
            (&format!("{prefix}test/dog/0001.png"), px(11)),
            (&format!("{prefix}test/cat/0002.png"), px(22)),
            (&format!("{prefix}test/cat/0001.png"), px(21)),
            (&format!("{prefix}train/cat/0001.png"), px(31)),
            (&format!("{prefix}train/dog/0001.png"), px(41)),
            (&format!("{prefix}train/dog/0002.png"), px(42)),
            (&format!("{prefix}train/dog/notes.txt"), b"hello".to_vec()),
        ])
    }

    #[test]
    fn loads_split_archive_with_and_without_prefix() {
        for prefix in ["", "cifar/", "./", "a/b/"] {
            let t = TempDir::new("tgz");
            let path = t.write("data.tar.gz", &split_archive(prefix));
            let test = load(&path, Split::Test, RGB4, None).unwrap();
            assert_eq!(test.class_names, s(&["cat", "dog"]), "{prefix}");
            assert_eq!(test.labels, vec![0, 0, 1]);
            assert_eq!([test.image(0)[0], test.image(1)[0], test.image(2)[0]], [21, 22, 11]);
            let train = load(&path, Split::Train, RGB4, None).unwrap();
            assert_eq!(train.labels, vec![0, 1, 1]);
            assert_eq!([train.image(0)[0], train.image(1)[0], train.image(2)[0]], [31, 41, 42]);
        }
    }

    #[test]
    fn loads_unsplit_archive_for_both_splits() {
        for prefix in ["", "top/"] {
            let t = TempDir::new("tgz-unsplit");
            let path = t.write(
                "d.tgz",
                &tar_gz(&[
                    (&format!("{prefix}b/1.png"), px(2)),
                    (&format!("{prefix}a/1.png"), px(1)),
                    (&format!("{prefix}a/sub/2.png"), px(3)),
                ]),
            );
            for split in [Split::Train, Split::Test] {
                let set = load(&path, split, RGB4, None).unwrap();
                assert_eq!(set.class_names, s(&["a", "b"]));
                assert_eq!(set.labels, vec![0, 0, 1]);
                assert_eq!([set.image(0)[0], set.image(1)[0], set.image(2)[0]], [1, 3, 2]);
            }
        }
    }

    /// A `val/images/` folder in an ImageFolder archive without Tiny ImageNet's texts is a class
    /// folder like any other.
    #[test]
    fn val_images_folders_are_classes_outside_tiny_imagenet() {
        let t = TempDir::new("tgz-val");
        let path = t.write("d.tgz", &tar_gz(&[("top/val/images/1.png", px(5)), ("top/cat/1.png", px(6))]));
        let set = load(&path, Split::Test, RGB4, None).unwrap();
        assert_eq!(set.class_names, s(&["cat", "val"]));
        assert_eq!([set.image(0)[0], set.image(1)[0]], [6, 5]);
    }

    #[test]
    fn model_names_and_conversion() {
        let t = TempDir::new("tgz-model");
        let path = t.write("d.tar.gz", &split_archive(""));
        let model = s(&["dog", "cat"]);
        let set = load(&path, Split::Test, ImageShape::new(1, 2, 2), Some(&model)).unwrap();
        assert_eq!(set.class_names, model);
        assert_eq!(set.labels, vec![0, 1, 1]);
        assert_eq!(set.pixels, [vec![11; 4], vec![21; 4], vec![22; 4]].concat());
        let err = load(&path, Split::Test, RGB4, Some(&s(&["dog", "emu"]))).unwrap_err();
        assert!(matches!(&err, DatasetError::ClassMismatch { reason, .. } if reason.contains("cat")), "{err}");
    }

    #[test]
    fn bad_image_names_the_entry() {
        let t = TempDir::new("tgz-badimg");
        let path = t.write(
            "d.tar.gz",
            &tar_gz(&[("test/cat/0001.png", px(1)), ("test/cat/0002.jpg", b"\xff\xd8\xff garbage".to_vec())]),
        );
        match load(&path, Split::Test, RGB4, None) {
            Err(DatasetError::BadImage { path: p, .. }) => {
                assert_eq!(p, PathBuf::from(format!("{}:test/cat/0002.jpg", path.display())))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_and_missing_split() {
        let t = TempDir::new("tgz-empty");
        let path = t.write("d.tar.gz", &tar_gz(&[("readme.txt", b"x".to_vec())]));
        assert!(matches!(load(&path, Split::Test, RGB4, None), Err(DatasetError::Empty { .. })));
        let path = t.write("e.tar.gz", &tar_gz(&[("train/a/1.png", px(1))]));
        assert!(matches!(load(&path, Split::Test, RGB4, None), Err(DatasetError::Empty { .. })));
        let path = t.write("f.tar.gz", &tar_gz(&[("cifar-10-batches-bin/data_batch_1.bin", vec![0; 3073])]));
        match load(&path, Split::Test, RGB4, None) {
            Err(DatasetError::Empty { hint, .. }) => assert!(hint.contains("unpack")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let t = TempDir::new("tgz-cut");
        let full = tar_gz(&[("test/cat/1.png", png_bytes(&rgb_pattern(4, 4, 1))), ("test/dog/1.png", px(9))]);
        let path = t.path("cut.tar.gz");
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            match load(&path, Split::Test, RGB4, None) {
                Err(DatasetError::BadArchive { .. }) => {}
                other => panic!("cut at {cut} of {}: {other:?}", full.len()),
            }
        }
        std::fs::write(&path, &full).unwrap();
        assert_eq!(load(&path, Split::Test, RGB4, None).unwrap().len(), 2);
    }

    #[test]
    fn corrupt_archive_is_bad_archive() {
        let t = TempDir::new("tgz-corrupt");
        let mut bytes = tar_gz(&[("test/cat/1.png", px(1))]);
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let path = t.write("c.tar.gz", &bytes);
        assert!(matches!(load(&path, Split::Test, RGB4, None), Err(DatasetError::BadArchive { .. })));
        // Not gzip and not tar.
        let path = t.write("junk.tar.gz", &[7u8; 1500]);
        assert!(matches!(load(&path, Split::Test, RGB4, None), Err(DatasetError::BadArchive { .. })));
    }
}
