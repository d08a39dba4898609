//! IDX files (MNIST, Fashion-MNIST), plain or gzipped: `train-images-idx3-ubyte[.gz]` and
//! `train-labels-idx1-ubyte[.gz]` are the train split, `t10k-*` the test split. Images: magic
//! 0x00000803, then big-endian u32 count, rows, cols and the gray pixels; labels: magic
//! 0x00000801, then the count and one byte per image. Sizes from the headers are checked against
//! the data really there before anything is allocated from them.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use rayon::prelude::*;

use super::classes::{self, ModelClasses};
use super::decode::{self, Raw};
use super::detect::file_names;
use super::{io_error, DatasetError, ImageSet, ImageShape, Split};

/// Largest image side accepted from a header.
const MAX_SIDE: u64 = 1 << 14;
/// Most pixels accepted in one image.
const MAX_IMAGE_PIXELS: u64 = 1 << 24;
/// Most pixel bytes accepted in one file (a guard against hostile headers of gzipped files,
/// whose real size is only known once they are decompressed).
const MAX_TOTAL_BYTES: u64 = 1 << 34;

pub(super) fn load(
    dir: &Path,
    split: Split,
    shape: ImageShape,
    model: &ModelClasses,
) -> Result<ImageSet, DatasetError> {
    let images_path = find_images(dir, split)?;
    let labels_path = companion_labels(dir, &images_path)?;
    let images = read_idx(&images_path, 3)?;
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    let labels_file = read_idx(&labels_path, 1)?;
    if labels_file.dims[0] != n {
        return Err(bad(
            &labels_path,
            format!("{} labels for the {n} images of {}", labels_file.dims[0], images_path.display()),
        ));
    }
    if n == 0 {
        return Err(DatasetError::Empty { path: images_path, hint: String::new() });
    }
    let labels: Vec<u32> = labels_file.data.iter().map(|&l| l as u32).collect();
    let max_label = labels.iter().copied().max();
    let natural = classes::numeric_names(max_label.map_or(0, |m| m as usize + 1));
    let class_names = classes::resolve_numeric(dir, natural, max_label, model)?;

    let mut pixels = decode::alloc_pixels(dir, n, shape)?;
    pixels
        .par_chunks_mut(decode::image_len(shape))
        .zip(images.data.par_chunks_exact(rows * cols))
        .for_each(|(out, src)| decode::raw_into(Raw::Gray { pixels: src, height: rows, width: cols }, shape, out));
    Ok(ImageSet { class_names, shape, pixels, labels })
}

fn bad(path: &Path, reason: String) -> DatasetError {
    DatasetError::BadIdx { path: path.to_path_buf(), reason }
}

/// The split's images file; a plain one before a gzipped one.
fn find_images(dir: &Path, split: Split) -> Result<PathBuf, DatasetError> {
    let prefixes: &[&str] = match split {
        Split::Train => &["train-images"],
        Split::Test => &["t10k-images", "test-images"],
    };
    let mut candidates: Vec<String> = file_names(dir)?
        .into_iter()
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            prefixes.iter().any(|p| lower.starts_with(p)) && lower.contains("idx3-ubyte")
        })
        .collect();
    candidates.sort_by_key(|n| (n.to_ascii_lowercase().ends_with(".gz"), n.clone()));
    match candidates.into_iter().next() {
        Some(name) => Ok(dir.join(name)),
        None => Err(DatasetError::Empty {
            path: dir.to_path_buf(),
            hint: format!(" (no {}-idx3-ubyte[.gz] file for the {split:?} split)", prefixes[0]).to_lowercase(),
        }),
    }
}

/// `t10k-labels-idx1-ubyte.gz` for `t10k-images-idx3-ubyte.gz`, and so on.
fn companion_labels(dir: &Path, images: &Path) -> Result<PathBuf, DatasetError> {
    let name = images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let (Some(i), Some(j)) = (lower.find("images"), lower.find("idx3")) else {
        return Err(bad(images, "unexpected file name".to_string()));
    };
    let mut labels = name.clone();
    labels.replace_range(j..j + 4, "idx1");
    labels.replace_range(i..i + 6, "labels");
    let path = dir.join(&labels);
    if path.is_file() {
        return Ok(path);
    }
    // The other compression of the same name.
    let other = match labels.strip_suffix(".gz") {
        Some(plain) => plain.to_string(),
        None => format!("{labels}.gz"),
    };
    let other = dir.join(other);
    if other.is_file() {
        return Ok(other);
    }
    Err(DatasetError::Io { path, error: io::Error::new(io::ErrorKind::NotFound, "labels file not found") })
}

struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// An IDX file opened past its header.
struct Header {
    dims: Vec<u64>,
    /// Data bytes the dimensions call for.
    total: u64,
    is_gzip: bool,
    stream: Box<dyn Read>,
}

/// Reads an unsigned-byte IDX file of `ndims` dimensions, checking its size against its header.
fn read_idx(path: &Path, ndims: u8) -> Result<Idx, DatasetError> {
    let Header { dims, total, is_gzip, stream } = read_header(path, ndims)?;
    // Plain files were checked against their real size; gzipped ones grow only as data arrives.
    let mut data = Vec::new();
    if !is_gzip {
        data.try_reserve_exact(total as usize).map_err(|_| bad(path, format!("{total} bytes do not fit in memory")))?;
    }
    stream.take(total + 1).read_to_end(&mut data).map_err(|e| {
        if is_gzip {
            bad(path, format!("corrupt or truncated gzip data: {e}"))
        } else {
            DatasetError::Io { path: path.to_path_buf(), error: e }
        }
    })?;
    match (data.len() as u64).cmp(&total) {
        std::cmp::Ordering::Less => {
            return Err(bad(path, format!("truncated: {} of {total} data bytes", data.len())));
        }
        std::cmp::Ordering::Greater => return Err(bad(path, "data after the last item".to_string())),
        std::cmp::Ordering::Equal => {}
    }
    Ok(Idx { dims: dims.into_iter().map(|d| d as usize).collect(), data })
}

/// Opens an unsigned-byte IDX file of `ndims` dimensions and reads and checks its header (a plain
/// file's size must match it exactly).
fn read_header(path: &Path, ndims: u8) -> Result<Header, DatasetError> {
    let file = super::open_file(path).map_err(io_error(path))?;
    let file_len = fs::metadata(path).map_err(io_error(path))?.len();
    let mut reader = BufReader::new(file);
    let is_gzip = reader.fill_buf().map_err(io_error(path))?.starts_with(&[0x1f, 0x8b]);
    let mut stream: Box<dyn Read> = if is_gzip { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) };
    let read_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(path, "truncated header".to_string())
        } else if is_gzip {
            bad(path, format!("corrupt or truncated gzip data: {e}"))
        } else {
            DatasetError::Io { path: path.to_path_buf(), error: e }
        }
    };

    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).map_err(read_err)?;
    let want = [0, 0, 0x08, ndims];
    if magic != want {
        return Err(bad(
            path,
            format!("magic 0x{:08x}, expected 0x{:08x}", u32::from_be_bytes(magic), u32::from_be_bytes(want)),
        ));
    }
    let mut dims = Vec::with_capacity(ndims as usize);
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        stream.read_exact(&mut d).map_err(read_err)?;
        dims.push(u32::from_be_bytes(d) as u64);
    }
    if ndims == 3 {
        let (rows, cols) = (dims[1], dims[2]);
        if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
            return Err(bad(path, format!("absurd image size {rows}x{cols}")));
        }
    }
    let per_item: u64 = dims[1..].iter().product();
    if per_item > MAX_IMAGE_PIXELS {
        return Err(bad(path, format!("absurd dimensions {dims:?}")));
    }
    let total = dims[0]
        .checked_mul(per_item)
        .filter(|&t| t <= MAX_TOTAL_BYTES)
        .ok_or_else(|| bad(path, format!("absurd dimensions {dims:?}")))?;
    let header = 4 + 4 * ndims as u64;
    if !is_gzip && file_len != header + total {
        return Err(bad(
            path,
            format!("the header's dimensions {dims:?} need {} bytes, the file has {file_len}", header + total),
        ));
    }
    Ok(Header { dims, total, is_gzip, stream })
}

/// Rows and columns of the split's images, from the images file's header.
pub(super) fn image_size(dir: &Path, split: Split) -> Result<(usize, usize), DatasetError> {
    let path = find_images(dir, split)?;
    let header = read_header(&path, 3)?;
    Ok((header.dims[1] as usize, header.dims[2] as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{gzip, idx_images, idx_labels, TempDir};
    use crate::dataset::load;

    const GRAY: ImageShape = ImageShape::new(1, 2, 3);

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// 3 images of 2x3, image i all `10 * i + pixel index`.
    fn pixels3() -> Vec<u8> {
        (0..3u8).flat_map(|i| (0..6u8).map(move |p| 10 * i + p)).collect()
    }

    fn write_set(t: &TempDir, prefix: &str, gz: bool, labels: &[u8]) {
        let n = labels.len() as u32;
        let pix: Vec<u8> = (0..n as u8).flat_map(|i| (0..6u8).map(move |p| 10 * i + p)).collect();
        let (img, lab) = (idx_images(n, 2, 3, &pix), idx_labels(labels));
        if gz {
            t.write(&format!("{prefix}-images-idx3-ubyte.gz"), &gzip(&img));
            t.write(&format!("{prefix}-labels-idx1-ubyte.gz"), &gzip(&lab));
        } else {
            t.write(&format!("{prefix}-images-idx3-ubyte"), &img);
            t.write(&format!("{prefix}-labels-idx1-ubyte"), &lab);
        }
    }

    #[test]
    fn loads_plain_and_gzipped() {
        for gz in [false, true] {
            let t = TempDir::new("idx");
            write_set(&t, "train", gz, &[4, 0, 2]);
            write_set(&t, "t10k", gz, &[1, 1]);
            let train = load(t.root(), Split::Train, GRAY, None).unwrap();
            assert_eq!(train.labels, vec![4, 0, 2]);
            assert_eq!(train.class_names, s(&["0", "1", "2", "3", "4"]));
            assert_eq!(train.pixels, pixels3());
            let test = load(t.root(), Split::Test, GRAY, None).unwrap();
            assert_eq!(test.labels, vec![1, 1]);
            assert_eq!(test.image(1), &[10, 11, 12, 13, 14, 15]);
        }
    }

    #[test]
    fn converts_gray_to_rgb_and_resizes() {
        let t = TempDir::new("idx-rgb");
        write_set(&t, "t10k", true, &[0, 1]);
        let set = load(t.root(), Split::Test, ImageShape::new(3, 2, 3), None).unwrap();
        assert_eq!(set.image(1), &[[10u8, 11, 12, 13, 14, 15]; 3].concat()[..]);
        let uniform = idx_images(1, 4, 4, &[77; 16]);
        t.write("t10k-images-idx3-ubyte.gz", &gzip(&uniform));
        t.write("t10k-labels-idx1-ubyte.gz", &gzip(&idx_labels(&[0])));
        let set = load(t.root(), Split::Test, ImageShape::new(3, 7, 5), None).unwrap();
        assert_eq!(set.pixels, vec![77; 105]);
    }

    #[test]
    fn model_names() {
        let t = TempDir::new("idx-model");
        write_set(&t, "t10k", false, &[0, 2]);
        let model = s(&["a", "b", "c"]);
        let set = load(t.root(), Split::Test, GRAY, Some(&model)).unwrap();
        assert_eq!(set.class_names, model);
        assert!(matches!(
            load(t.root(), Split::Test, GRAY, Some(&s(&["a", "b"]))),
            Err(DatasetError::ClassMismatch { .. })
        ));
        let generic = s(&["class0", "class1", "class2", "class3"]);
        assert_eq!(load(t.root(), Split::Test, GRAY, Some(&generic)).unwrap().class_names, s(&["0", "1", "2"]));
    }

    fn expect_bad_idx(t: &TempDir, what: &str) {
        match load(t.root(), Split::Test, GRAY, None) {
            Err(DatasetError::BadIdx { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }

    #[test]
    fn bad_headers() {
        let t = TempDir::new("idx-bad");
        write_set(&t, "t10k", false, &[0, 1]);
        // Wrong magic.
        let mut img = idx_images(2, 2, 3, &[0; 12]);
        img[3] = 1;
        t.write("t10k-images-idx3-ubyte", &img);
        expect_bad_idx(&t, "magic");
        // Absurd dims, huge count: no allocation, no overflow.
        t.write("t10k-images-idx3-ubyte", &idx_images(u32::MAX, u32::MAX, u32::MAX, &[0; 12]));
        expect_bad_idx(&t, "overflow");
        t.write("t10k-images-idx3-ubyte", &idx_images(u32::MAX, 2, 3, &[0; 12]));
        expect_bad_idx(&t, "huge count");
        t.write("t10k-images-idx3-ubyte.gz", &gzip(&idx_images(u32::MAX, 2, 3, &[0; 12])));
        std::fs::remove_file(t.path("t10k-images-idx3-ubyte")).unwrap();
        expect_bad_idx(&t, "huge count gz");
        t.write("t10k-images-idx3-ubyte", &idx_images(2, 0, 3, &[]));
        expect_bad_idx(&t, "zero rows");
        // Trailing data.
        t.write("t10k-images-idx3-ubyte", &idx_images(2, 2, 3, &[0; 13]));
        expect_bad_idx(&t, "trailing");
        // Count mismatch.
        t.write("t10k-images-idx3-ubyte", &idx_images(2, 2, 3, &[0; 12]));
        t.write("t10k-labels-idx1-ubyte", &idx_labels(&[0, 1, 2]));
        expect_bad_idx(&t, "count mismatch");
        // Labels file with the images magic.
        let mut lab = idx_labels(&[0, 1]);
        lab[3] = 3;
        t.write("t10k-labels-idx1-ubyte", &lab);
        expect_bad_idx(&t, "labels magic");
        // Missing labels file.
        std::fs::remove_file(t.path("t10k-labels-idx1-ubyte")).unwrap();
        assert!(matches!(load(t.root(), Split::Test, GRAY, None), Err(DatasetError::Io { .. })));
        // Missing split.
        assert!(matches!(load(t.root(), Split::Train, GRAY, None), Err(DatasetError::Empty { .. })));
        // Zero images.
        t.write("t10k-images-idx3-ubyte", &idx_images(0, 2, 3, &[]));
        t.write("t10k-labels-idx1-ubyte", &idx_labels(&[]));
        assert!(matches!(load(t.root(), Split::Test, GRAY, None), Err(DatasetError::Empty { .. })));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for gz in [false, true] {
            let t = TempDir::new("idx-cut");
            write_set(&t, "t10k", gz, &[0, 1, 2]);
            let suffix = if gz { ".gz" } else { "" };
            for file in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
                let path = t.path(&format!("{file}{suffix}"));
                let full = std::fs::read(&path).unwrap();
                for cut in 0..full.len() {
                    std::fs::write(&path, &full[..cut]).unwrap();
                    expect_bad_idx(&t, &format!("{file}{suffix} cut at {cut}"));
                }
                std::fs::write(&path, &full).unwrap();
                assert_eq!(load(t.root(), Split::Test, GRAY, None).unwrap().len(), 3);
            }
        }
    }
}
