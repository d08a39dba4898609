//! CIFAR-10 binary batches: `data_batch_1.bin` ... `data_batch_5.bin` (train) and
//! `test_batch.bin` (test), each a run of 3073-byte records: one label byte, then the 32x32 image
//! as R, G and B planes. Class names come from `batches.meta.txt` when it is there.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::classes::{self, ModelClasses};
use super::decode::{self, Raw};
use super::detect::{cifar_train_batch_number, file_names};
use super::{io_error, DatasetError, ImageSet, ImageShape, Split};

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + IMAGE_BYTES;
/// The images' own geometry.
pub(super) const SHAPE: ImageShape = ImageShape::new(3, SIDE, SIDE);
/// CIFAR-10's class count, when `batches.meta.txt` does not list the names.
const CLASSES: usize = 10;

pub(super) fn load(
    dir: &Path,
    split: Split,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    let files = batch_files(dir, split)?;
    let natural = meta_names(dir)?.unwrap_or_else(|| classes::numeric_names(CLASSES));

    // Record counts from the files' real sizes.
    let mut counts = Vec::with_capacity(files.len());
    for file in &files {
        let len = fs::metadata(file).map_err(io_error(file))?.len();
        if len % RECORD as u64 != 0 {
            return Err(DatasetError::BadCifar {
                path: file.clone(),
                reason: format!("{len} bytes is not a whole number of {RECORD}-byte records"),
            });
        }
        counts.push((len / RECORD as u64) as usize);
    }
    let total: usize = counts.iter().sum();
    if total == 0 {
        return Err(DatasetError::Empty { path: dir.to_path_buf(), hint: " (its batch files are empty)".to_string() });
    }

    let image_len = decode::image_len(shape);
    let mut pixels = decode::alloc_pixels(dir, total, shape)?;
    let mut labels = Vec::with_capacity(total);
    let mut rest = pixels.as_mut_slice();
    for (file, count) in files.iter().zip(counts) {
        let bytes = read_exact_len(file, count * RECORD)?;
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0];
            if label as usize >= natural.len() {
                return Err(DatasetError::BadCifar {
                    path: file.clone(),
                    reason: format!("record {i} has label {label}, but there are {} classes", natural.len()),
                });
            }
            labels.push(label as u32);
        }
        let (out, tail) = rest.split_at_mut(count * image_len);
        rest = tail;
        out.par_chunks_mut(image_len).zip(bytes.par_chunks_exact(RECORD)).for_each(|(out, record)| {
            decode::raw_into(Raw::RgbPlanes { pixels: &record[1..], height: SIDE, width: SIDE }, shape, out)
        });
    }
    let class_names = classes::resolve_numeric(dir, natural, labels.iter().copied().max(), model)?;
    Ok(ImageSet { class_names, shape, pixels, labels })
}

/// The split's batch files: every `data_batch_N.bin` in order of N, or `test_batch.bin`.
fn batch_files(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DatasetError> {
    let files: Vec<PathBuf> = match split {
        Split::Train => {
            let mut numbered: Vec<(u32, String)> =
                file_names(dir)?.into_iter().filter_map(|n| cifar_train_batch_number(&n).map(|k| (k, n))).collect();
            numbered.sort();
            numbered.into_iter().map(|(_, n)| dir.join(n)).collect()
        }
        Split::Test => Some(dir.join("test_batch.bin")).filter(|p| p.is_file()).into_iter().collect(),
    };
    if files.is_empty() {
        let wanted = match split {
            Split::Train => "data_batch_N.bin",
            Split::Test => "test_batch.bin",
        };
        return Err(DatasetError::Empty {
            path: dir.to_path_buf(),
            hint: format!(" (no {wanted} in this CIFAR-10 folder)"),
        });
    }
    Ok(files)
}

/// Reads a file that must be exactly `len` bytes (its size was checked; it may change meanwhile).
fn read_exact_len(path: &Path, len: usize) -> Result<Vec<u8>, DatasetError> {
    let file = super::open_file(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| DatasetError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{len} bytes do not fit in memory")),
    })?;
    file.take(len as u64 + 1).read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() != len {
        return Err(DatasetError::BadCifar {
            path: path.to_path_buf(),
            reason: "file changed while being read".to_string(),
        });
    }
    Ok(bytes)
}

/// The class names of `batches.meta.txt`, one a line, if the file is there and lists any.
fn meta_names(dir: &Path) -> Result<Option<Vec<String>>, DatasetError> {
    let path = dir.join("batches.meta.txt");
    if !path.is_file() {
        return Ok(None);
    }
    let mut text = String::new();
    super::open_file(&path).and_then(|f| f.take(1 << 20).read_to_string(&mut text)).map_err(io_error(&path))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    Ok(if names.is_empty() { None } else { Some(names) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{cifar_records, TempDir};
    use crate::dataset::load;

    const CIFAR: ImageShape = ImageShape::new(3, 32, 32);

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn loads_train_and_test_in_file_order() {
        let t = TempDir::new("cifar");
        t.write("data_batch_2.bin", &cifar_records(&[3]));
        t.write("data_batch_1.bin", &cifar_records(&[5, 1]));
        t.write("test_batch.bin", &cifar_records(&[9, 0, 4]));
        let train = load(t.root(), Split::Train, CIFAR, None).unwrap();
        assert_eq!(train.labels, vec![5, 1, 3]);
        assert_eq!(train.class_names, classes::numeric_names(10));
        assert_eq!(train.image(0)[0], 50);
        assert_eq!(train.image(0)[1024], 51);
        assert_eq!(train.image(2)[3071], 32);
        let test = load(t.root(), Split::Test, CIFAR, None).unwrap();
        assert_eq!(test.labels, vec![9, 0, 4]);
        assert_eq!(test.image(1)[2048], 2);
    }

    #[test]
    fn meta_names_and_model_names() {
        let t = TempDir::new("cifar-meta");
        t.write("test_batch.bin", &cifar_records(&[1, 2]));
        t.write("batches.meta.txt", b"airplane\nautomobile\nbird\n\n\n");
        let set = load(t.root(), Split::Test, CIFAR, None).unwrap();
        assert_eq!(set.class_names, s(&["airplane", "automobile", "bird"]));
        let generic = s(&["class0", "class1", "class2"]);
        assert_eq!(
            load(t.root(), Split::Test, CIFAR, Some(&generic)).unwrap().class_names,
            s(&["airplane", "automobile", "bird"])
        );
        let model = s(&["x", "y", "z", "w"]);
        let set = load(t.root(), Split::Test, CIFAR, Some(&model)).unwrap();
        assert_eq!(set.class_names, model);
        assert_eq!(set.labels, vec![1, 2]);
        assert!(matches!(
            load(t.root(), Split::Test, CIFAR, Some(&s(&["x", "y"]))),
            Err(DatasetError::ClassMismatch { .. })
        ));
        assert!(matches!(
            load(t.root(), Split::Test, CIFAR, Some(&s(&["class0", "class1"]))),
            Err(DatasetError::ClassMismatch { .. })
        ));
    }

    #[test]
    fn converts_to_gray_and_resizes() {
        let t = TempDir::new("cifar-gray");
        t.write("test_batch.bin", &cifar_records(&[2]));
        let set = load(t.root(), Split::Test, ImageShape::new(1, 8, 8), None).unwrap();
        let want = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([20, 21, 22])))
            .to_luma8()
            .as_raw()[0];
        assert_eq!(set.pixels, vec![want; 64]);
    }

    #[test]
    fn bad_inputs() {
        let t = TempDir::new("cifar-bad");
        let mut bytes = cifar_records(&[1, 2]);
        bytes.pop();
        let bad = t.write("test_batch.bin", &bytes);
        assert!(
            matches!(load(t.root(), Split::Test, CIFAR, None), Err(DatasetError::BadCifar { path, .. }) if path == bad)
        );
        // No train batches.
        assert!(matches!(load(t.root(), Split::Train, CIFAR, None), Err(DatasetError::Empty { .. })));
        // Empty batch.
        t.write("test_batch.bin", b"");
        assert!(matches!(load(t.root(), Split::Test, CIFAR, None), Err(DatasetError::Empty { .. })));
        // Label out of range.
        t.write("test_batch.bin", &cifar_records(&[10]));
        assert!(matches!(load(t.root(), Split::Test, CIFAR, None), Err(DatasetError::BadCifar { .. })));
        // Missing test batch.
        let t2 = TempDir::new("cifar-notest");
        t2.write("data_batch_1.bin", &cifar_records(&[0]));
        assert!(matches!(load(t2.root(), Split::Test, CIFAR, None), Err(DatasetError::Empty { .. })));
        assert_eq!(load(t2.root(), Split::Train, CIFAR, None).unwrap().len(), 1);
    }
}
