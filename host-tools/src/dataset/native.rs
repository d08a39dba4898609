//! [`super::native_shape`]: the geometry a dataset's images have themselves.

use std::path::Path;

use super::detect::{self, Format};
use super::{cifar_binary, decode, idx, image_folder, tar_gz, tiny_imagenet, DatasetError, ImageShape, Split};

pub(super) fn native_shape(path: &Path, split: Split) -> Result<ImageShape, DatasetError> {
    match detect::detect(path)? {
        Format::CifarBinary(_) => Ok(cifar_binary::SHAPE),
        Format::Idx(dir) => {
            let (height, width) = idx::image_size(&dir, split)?;
            Ok(ImageShape::new(1, height, width))
        }
        Format::ImageFolder(dir) => probe_file(&image_folder::first_image(&dir, split)?),
        Format::Archive(file) => {
            let (name, bytes, tiny) = tar_gz::first_image(&file, split)?;
            let shape = decode::probe_shape(&bytes).map_err(|reason| DatasetError::BadImage { path: name, reason })?;
            // Tiny ImageNet is RGB; a few of its images are stored gray, and the first may be one.
            Ok(if tiny { ImageShape { channels: 3, ..shape } } else { shape })
        }
        // RGB, though a few images are stored gray.
        Format::TinyImageNet(root) => {
            Ok(ImageShape { channels: 3, ..probe_file(&tiny_imagenet::first_image(&root)?)? })
        }
    }
}

/// The shape of the image file `file` (from its header).
fn probe_file(file: &Path) -> Result<ImageShape, DatasetError> {
    let bad = |reason| DatasetError::BadImage { path: file.to_path_buf(), reason };
    decode::probe_shape(&decode::read_image_file(file).map_err(bad)?).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{
        cifar_records, gzip, idx_images, idx_labels, png_bytes, rgb_pattern, tar_gz, TempDir,
    };

    #[test]
    fn shapes_of_each_format() {
        let t = TempDir::new("native");
        t.write("cifar/test_batch.bin", &cifar_records(&[1]));
        assert_eq!(native_shape(&t.path("cifar"), Split::Test).unwrap(), ImageShape::new(3, 32, 32));

        t.write("idx/train-images-idx3-ubyte.gz", &gzip(&idx_images(1, 28, 27, &[0; 28 * 27])));
        t.write("idx/train-labels-idx1-ubyte.gz", &gzip(&idx_labels(&[0])));
        assert_eq!(native_shape(&t.path("idx"), Split::Train).unwrap(), ImageShape::new(1, 28, 27));
        assert!(matches!(native_shape(&t.path("idx"), Split::Test), Err(DatasetError::Empty { .. })));

        let gray = image::GrayImage::new(5, 6);
        let mut gray_png = Vec::new();
        gray.write_to(&mut std::io::Cursor::new(&mut gray_png), image::ImageFormat::Png).unwrap();
        t.write("folder/train/a/1.png", &gray_png);
        t.write("folder/test/a/1.png", &png_bytes(&rgb_pattern(7, 3, 0)));
        assert_eq!(native_shape(&t.path("folder"), Split::Train).unwrap(), ImageShape::new(1, 6, 5));
        assert_eq!(native_shape(&t.path("folder"), Split::Test).unwrap(), ImageShape::new(3, 3, 7));

        let archive = t.write(
            "a.tar.gz",
            &tar_gz(&[("x/train/a/1.png", gray_png.clone()), ("x/test/a/1.png", png_bytes(&rgb_pattern(7, 3, 0)))]),
        );
        assert_eq!(native_shape(&archive, Split::Test).unwrap(), ImageShape::new(3, 3, 7));
        assert_eq!(native_shape(&archive, Split::Train).unwrap(), ImageShape::new(1, 6, 5));

        t.write("bad/a/1.png", b"junk");
        assert!(matches!(native_shape(&t.path("bad"), Split::Test), Err(DatasetError::BadImage { .. })));
        t.mkdir("empty");
        assert!(matches!(native_shape(&t.path("empty"), Split::Test), Err(DatasetError::Empty { .. })));
        assert!(matches!(native_shape(&t.path("missing"), Split::Test), Err(DatasetError::Io { .. })));
    }
}
