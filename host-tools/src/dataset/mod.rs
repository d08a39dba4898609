//! Real image datasets, read into memory as 8-bit CHW images: ImageFolder directories (optionally
//! with `train/` and `test/`), a `.tar.gz` of one read in place, CIFAR-10 binary batches, IDX
//! files (MNIST / Fashion-MNIST, optionally gzipped) and Tiny ImageNet (its folder or archive).
//!
//! Layout of the module, one concept per file:
//! - `detect`: which of the four formats a path holds;
//! - `image_folder`, `tar_gz`, `cifar_binary`, `idx`, `tiny_imagenet`: one reader per format
//!   (Tiny ImageNet's archive is scanned by `tar_gz`, which hands its finds over);
//! - `classes`: the label order (the model's class names, or sorted folder names, or numeric);
//! - `decode`: JPEG/PNG decoding (in parallel) and conversion to the wanted [`ImageShape`];
//! - `native`: [`native_shape`], the geometry a dataset's images have themselves;
//! - `sampling`: [`ImageSet::select`] and the seeded, class-balanced [`ImageSet::balanced_sample`].
//!
//! Nothing here panics on bad input: every problem is a [`DatasetError`] that names the file (inside
//! an archive `archive.tar.gz:test/cat/0001.jpg`), and sizes read from headers are checked against
//! the data really present before anything is allocated from them.

use std::path::{Path, PathBuf};

use classmod_runtime::{InputSpec, Resize};

mod cifar_binary;
mod classes;
mod decode;
mod detect;
mod idx;
mod image_folder;
mod native;
mod sampling;
mod tar_gz;
mod tiny_imagenet;

#[cfg(test)]
mod fixtures;

/// Which half of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// The image geometry a consumer wants: images are converted to this many channels (RGB <->
/// gray) and brought to this size when they differ, as `resize` says (stretched, or scaled and
/// cut from the centre as torchvision does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub resize: Resize,
}

impl ImageShape {
    /// `channels` x `height` x `width`, other sizes stretched to it.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        ImageShape { channels, height, width, resize: Resize::Stretch }
    }
}

/// The images a model takes, made as its input spec says.
impl From<&InputSpec> for ImageShape {
    fn from(spec: &InputSpec) -> Self {
        ImageShape { channels: spec.channels, height: spec.height, width: spec.width, resize: spec.resize }
    }
}

/// Decoded images of one split, all of one shape.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub class_names: Vec<String>,
    pub shape: ImageShape,
    /// `len() * C * H * W` bytes, image after image, each channel-major (CHW).
    pub pixels: Vec<u8>,
    /// One label per image, an index into `class_names`.
    pub labels: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a dataset: {reason}")]
    Unrecognised { path: PathBuf, reason: String },
    #[error("{path}: no images found{hint}")]
    Empty { path: PathBuf, hint: String },
    #[error("{path}: cannot decode image: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("{path}: bad IDX file: {reason}")]
    BadIdx { path: PathBuf, reason: String },
    #[error("{path}: bad CIFAR-10 binary file: {reason}")]
    BadCifar { path: PathBuf, reason: String },
    #[error("{path}: corrupt or truncated archive: {reason}")]
    BadArchive { path: PathBuf, reason: String },
    #[error("{path}: classes do not match the model's: {reason}")]
    ClassMismatch { path: PathBuf, reason: String },
}

/// Reads one split for a model whose classes are `classes` (generic `class0, class1, ...` names
/// of an unnamed import leave the dataset's own order), optionally a seeded class-balanced
/// sample of `limit` images.
pub fn load_sample(
    path: &Path,
    split: Split,
    shape: ImageShape,
    classes: Option<&[String]>,
    limit: Option<usize>,
    seed: u64,
) -> Result<ImageSet, DatasetError> {
    let classes = classes.filter(|c| !crate::import::are_generic(c));
    let set = load(path, split, shape, classes)?;
    Ok(match limit {
        Some(n) => set.balanced_sample(n, seed),
        None => set,
    })
}

/// Reads one split of the dataset at `path` (format detected from the path and its contents).
///
/// `class_names`: the model's classes, if it has names; they fix the label order (a dataset
/// class that is not among them is an error). Without them (or when they are the generic
/// `class0`, `class1`, ... of an unnamed import) folder names are sorted; IDX and CIFAR binary
/// files have numeric labels whose names are `0`, `1`, ... (CIFAR-10: `batches.meta.txt`).
pub fn load(
    path: &Path,
    split: Split,
    shape: ImageShape,
    class_names: Option<&[String]>,
) -> Result<ImageSet, DatasetError> {
    decode::check_shape(path, shape)?;
    let model = classes::ModelClasses::new(class_names);
    match detect::detect(path)? {
        detect::Format::ImageFolder(dir) => image_folder::load(&dir, split, shape, &model),
        detect::Format::Archive(file) => tar_gz::load(&file, split, shape, &model),
        detect::Format::CifarBinary(dir) => cifar_binary::load(&dir, split, shape, &model),
        detect::Format::Idx(dir) => idx::load(&dir, split, shape, &model),
        detect::Format::TinyImageNet(root) => tiny_imagenet::load_dir(&root, split == Split::Test, shape, &model),
    }
}

/// The geometry the dataset's images have themselves, read from as little of it as possible:
/// IDX `1 x rows x cols`, CIFAR-10 binary `3 x 32 x 32`, an ImageFolder or archive its first
/// image's size with 1 channel if that image is gray, else 3. What a model trained from scratch on
/// the dataset takes.
pub fn native_shape(path: &Path, split: Split) -> Result<ImageShape, DatasetError> {
    native::native_shape(path, split)
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes of one image (C*H*W).
    pub fn image_len(&self) -> usize {
        self.shape.channels * self.shape.height * self.shape.width
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        sampling::select(self, indices)
    }
    /// Adds `other`'s images after these.
    ///
    /// # Panics
    /// If the two differ in image shape or class list (relabel first, as `compose-eval` does).
    pub fn append(&mut self, other: ImageSet) {
        sampling::append(self, other)
    }
    /// The images of the classes `l` with a `map[l]` (each target label once), relabelled to it,
    /// the classes now named `names`.
    pub fn relabelled(&self, map: &[Option<u32>], names: Vec<String>) -> ImageSet {
        sampling::relabelled(self, map, names)
    }
    /// The images of the classes `names` (the set's own names, each once), relabelled in that
    /// order; an error names a class the set (read from `path`) does not have.
    pub fn only_classes(&self, path: &Path, names: &[String]) -> Result<ImageSet, DatasetError> {
        sampling::only_classes(self, names).map_err(|missing| DatasetError::ClassMismatch {
            path: path.to_path_buf(),
            reason: format!(
                "no class `{missing}` (it has {} classes: {} ...)",
                self.class_names.len(),
                self.class_names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
    /// A seeded, class-balanced sample of `n` images (as equal a share per class as the classes
    /// allow, the remainder spread over the first classes), in a seeded shuffled order. `n` at
    /// least `len()` returns everything.
    pub fn balanced_sample(&self, n: usize, seed: u64) -> ImageSet {
        sampling::balanced_sample(self, n, seed)
    }
    /// Two disjoint seeded halves of every class's images (the odd one to the second): one to
    /// choose on, one to report.
    pub fn balanced_halves(&self, seed: u64) -> (ImageSet, ImageSet) {
        sampling::balanced_halves(self, seed)
    }
}

/// Opens a dataset file for reading if it is a regular file (`regular::open`: a FIFO or device
/// is refused at once instead of blocking or streaming without end).
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    use classmod_runtime::io::regular::{self, Symlinks};
    regular::open(path, u64::MAX, Symlinks::Follow).map(|(f, _)| f).map_err(regular_error)
}

/// A refusal of `regular` as an I/O error (kind `InvalidInput` where the OS said nothing) that
/// says what is wrong but not the path, which the dataset error names itself.
fn regular_error(e: classmod_runtime::Error) -> std::io::Error {
    use classmod_runtime::Error;
    match e {
        Error::Io { error, .. } => error,
        Error::NotRegularFile { kind, .. } => {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("is {kind}, not a regular file"))
        }
        other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
    }
}

/// `DatasetError::Io` for `path`, as a `map_err` argument.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |error| DatasetError::Io { path: path.to_path_buf(), error }
}

/// Whether a file name is one of the image files an ImageFolder holds (PNG or JPEG, not hidden).
fn is_image_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|ext| lower.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RGB4: ImageShape = ImageShape::new(3, 4, 4);

    #[test]
    fn missing_path_and_bad_shape_are_errors() {
        let t = fixtures::TempDir::new("load");
        let missing = t.path("no-such-dataset");
        match load(&missing, Split::Test, RGB4, None) {
            Err(e @ DatasetError::Io { .. }) => assert!(e.to_string().contains("no-such-dataset"), "{e}"),
            other => panic!("{other:?}"),
        }
        t.write("a/1.png", &fixtures::png_bytes(&fixtures::solid(4, 4, [1, 2, 3])));
        let shape = ImageShape::new(2, 4, 4);
        assert!(matches!(load(t.root(), Split::Test, shape, None), Err(DatasetError::Unrecognised { .. })));
        let set = load(t.root(), Split::Test, RGB4, None).unwrap();
        assert_eq!((set.len(), set.image_len(), set.is_empty()), (1, 48, false));
    }

    #[test]
    fn error_messages_name_the_file() {
        let e = DatasetError::BadImage { path: PathBuf::from("d.tar.gz:test/cat/0001.jpg"), reason: "x".into() };
        assert_eq!(e.to_string(), "d.tar.gz:test/cat/0001.jpg: cannot decode image: x");
    }
}
