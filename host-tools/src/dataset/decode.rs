//! JPEG/PNG decoding (in parallel) and conversion to the wanted [`ImageShape`]: channels (RGB to
//! gray by the `image` crate's luma conversion, gray to RGB by replication), then size (bilinear
//! `Triangle` resize) when they differ, written channel-major (CHW).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageBuffer, ImageReader, Limits, Pixel, RgbImage};
use rayon::prelude::*;

use super::{DatasetError, ImageShape};

/// Largest encoded image file read (a guard against hostile sizes; real images are far smaller).
pub(super) const MAX_ENCODED_BYTES: u64 = 256 << 20;
/// Largest side of a decoded image, and of a wanted shape.
const MAX_SIDE: usize = 1 << 15;
/// Most bytes a decoder may allocate for one image.
const MAX_DECODE_ALLOC: u64 = 512 << 20;

/// Refuses shapes this module cannot produce.
pub(super) fn check_shape(path: &Path, shape: ImageShape) -> Result<(), DatasetError> {
    let reason = if !matches!(shape.channels, 1 | 3 | 4) {
        format!("cannot convert images to {} channels (only 1, 3 or 4)", shape.channels)
    } else if shape.height == 0 || shape.width == 0 || shape.height > MAX_SIDE || shape.width > MAX_SIDE {
        format!("cannot resize images to {}x{}", shape.height, shape.width)
    } else {
        return Ok(());
    };
    Err(DatasetError::Unrecognised { path: path.to_path_buf(), reason })
}

pub(super) fn image_len(shape: ImageShape) -> usize {
    shape.channels * shape.height * shape.width
}

/// A zeroed buffer for `n` images of `shape`, or an error (not an abort) when it cannot exist.
pub(super) fn alloc_pixels(path: &Path, n: usize, shape: ImageShape) -> Result<Vec<u8>, DatasetError> {
    let oom = || DatasetError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("{n} images of {}x{}x{} bytes do not fit in memory", shape.channels, shape.height, shape.width),
        ),
    };
    let total = n.checked_mul(image_len(shape)).ok_or_else(oom)?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(total).map_err(|_| oom())?;
    pixels.resize(total, 0);
    Ok(pixels)
}

/// Where an encoded image's bytes are.
pub(super) enum Encoded {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// One encoded image of a dataset.
pub(super) struct Item {
    pub label: u32,
    /// The name errors give and images are sorted by: a file path, or `archive:entry`.
    pub name: PathBuf,
    pub data: Encoded,
}

/// Sorts `items` by class then name and decodes them in parallel into one [`super::ImageSet`]'s
/// pixels and labels. The error of the first bad image (in that order) wins.
pub(super) fn decode_items(
    dataset: &Path,
    mut items: Vec<Item>,
    shape: ImageShape,
) -> Result<(Vec<u8>, Vec<u32>), DatasetError> {
    items.sort_by(|a, b| (a.label, &a.name).cmp(&(b.label, &b.name)));
    let mut pixels = alloc_pixels(dataset, items.len(), shape)?;
    let results: Vec<Result<(), DatasetError>> = pixels
        .par_chunks_mut(image_len(shape))
        .zip(items.par_iter())
        .map(|(out, item)| {
            let bad = |reason: String| DatasetError::BadImage { path: item.name.clone(), reason };
            let bytes = match &item.data {
                Encoded::Bytes(b) => Cow::Borrowed(b.as_slice()),
                Encoded::File(p) => Cow::Owned(read_image_file(p).map_err(bad)?),
            };
            decode_into(&bytes, shape, out).map_err(bad)
        })
        .collect();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok((pixels, items.iter().map(|i| i.label).collect()))
}

pub(super) fn read_image_file(path: &Path) -> Result<Vec<u8>, String> {
    classmod_runtime::io::regular::read(path, MAX_ENCODED_BYTES).map_err(|e| match e {
        classmod_runtime::Error::FileTooLarge { .. } => format!("file larger than {MAX_ENCODED_BYTES} bytes"),
        other => format!("cannot read: {}", super::regular_error(other)),
    })
}

/// Decodes one PNG or JPEG file's bytes into `out` (`image_len(shape)` bytes, CHW).
pub(super) fn decode_into(bytes: &[u8], shape: ImageShape, out: &mut [u8]) -> Result<(), String> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err("not a PNG or JPEG image".to_string()),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| e.to_string())?;
    write_chw(image, shape, out);
    Ok(())
}

/// The size of an encoded PNG or JPEG (from its header) and 1 channel if it is gray, else 3.
pub(super) fn probe_shape(bytes: &[u8]) -> Result<ImageShape, String> {
    use image::ImageDecoder;
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        _ => return Err("not a PNG or JPEG image".to_string()),
    }
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions();
    let channels = if decoder.color_type().has_color() { 3 } else { 1 };
    Ok(ImageShape::new(channels, height as usize, width as usize))
}

/// Raw pixels of a numeric-label format, converted to `shape` into `out`.
pub(super) enum Raw<'a> {
    /// One gray `height x width` plane (IDX).
    Gray { pixels: &'a [u8], height: usize, width: usize },
    /// Three `height x width` planes R, G, B (CIFAR-10 binary).
    RgbPlanes { pixels: &'a [u8], height: usize, width: usize },
}

pub(super) fn raw_into(raw: Raw<'_>, shape: ImageShape, out: &mut [u8]) {
    let same_size = |h: usize, w: usize| h == shape.height && w == shape.width;
    match raw {
        Raw::Gray { pixels, height, width } if shape.channels == 1 && same_size(height, width) => {
            out.copy_from_slice(pixels)
        }
        Raw::RgbPlanes { pixels, height, width } if shape.channels == 3 && same_size(height, width) => {
            out.copy_from_slice(pixels)
        }
        Raw::Gray { pixels, height, width } => {
            let image = GrayImage::from_raw(width as u32, height as u32, pixels.to_vec()).expect("gray plane size");
            write_chw(DynamicImage::ImageLuma8(image), shape, out)
        }
        Raw::RgbPlanes { pixels, height, width } => {
            let plane = height * width;
            let mut interleaved = Vec::with_capacity(3 * plane);
            for i in 0..plane {
                interleaved.extend_from_slice(&[pixels[i], pixels[plane + i], pixels[2 * plane + i]]);
            }
            let image = RgbImage::from_raw(width as u32, height as u32, interleaved).expect("rgb plane size");
            write_chw(DynamicImage::ImageRgb8(image), shape, out)
        }
    }
}

/// Converts channels, then resizes, then writes CHW. `shape` was checked by [`check_shape`].
fn write_chw(image: DynamicImage, shape: ImageShape, out: &mut [u8]) {
    match shape.channels {
        1 => planar(image.to_luma8(), shape, out),
        3 => planar(image.to_rgb8(), shape, out),
        _ => planar(image.to_rgba8(), shape, out),
    }
}

fn planar<P: Pixel<Subpixel = u8> + 'static>(image: ImageBuffer<P, Vec<u8>>, shape: ImageShape, out: &mut [u8]) {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let (iw, ih) = image.dimensions();
    let plan = shape.resize.plan((iw as usize, ih as usize), (shape.width, shape.height));
    let (sw, sh) = (plan.scaled.0 as u32, plan.scaled.1 as u32);
    let image = if (iw, ih) != (sw, sh) { imageops::resize(&image, sw, sh, FilterType::Triangle) } else { image };
    let image = match (sw, sh) == (w, h) {
        true => image,
        false => imageops::crop_imm(&image, plan.crop.0 as u32, plan.crop.1 as u32, w, h).to_image(),
    };
    let c = shape.channels;
    let plane = shape.height * shape.width;
    let raw = image.as_raw();
    if c == 1 {
        out.copy_from_slice(raw);
        return;
    }
    for (i, px) in raw.chunks_exact(c).enumerate() {
        for (ch, v) in px.iter().enumerate() {
            out[ch * plane + i] = *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{png_bytes, rgb_pattern};
    use classmod_runtime::Resize;

    const RGB4: ImageShape = ImageShape::new(3, 4, 4);

    #[test]
    fn rgb_png_to_chw() {
        let img = rgb_pattern(4, 4, 7);
        let mut out = vec![0; 48];
        decode_into(&png_bytes(&img), RGB4, &mut out).unwrap();
        for y in 0..4 {
            for x in 0..4 {
                let p = img.get_pixel(x, y).0;
                for c in 0..3 {
                    assert_eq!(out[c * 16 + (y * 4 + x) as usize], p[c]);
                }
            }
        }
    }

    #[test]
    fn rgb_to_gray_uses_luma() {
        let img = rgb_pattern(4, 4, 3);
        let mut out = vec![0; 16];
        decode_into(&png_bytes(&img), ImageShape::new(1, 4, 4), &mut out).unwrap();
        let luma = DynamicImage::ImageRgb8(img).to_luma8();
        assert_eq!(out, luma.as_raw().as_slice());
    }

    #[test]
    fn gray_to_rgb_replicates() {
        let gray = GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 40 + y) as u8]));
        let mut bytes = Vec::new();
        gray.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        let mut out = vec![0; 48];
        decode_into(&bytes, RGB4, &mut out).unwrap();
        for c in 0..3 {
            assert_eq!(&out[c * 16..(c + 1) * 16], gray.as_raw().as_slice());
        }
    }

    #[test]
    fn resizes_when_sizes_differ() {
        // A uniform image stays uniform at any size.
        let img = RgbImage::from_pixel(9, 5, image::Rgb([10, 200, 30]));
        let mut out = vec![0; 3 * 2 * 3];
        decode_into(&png_bytes(&img), ImageShape::new(3, 2, 3), &mut out).unwrap();
        assert_eq!(out, [vec![10; 6], vec![200; 6], vec![30; 6]].concat());
        // And matches imageops::resize with Triangle.
        let img = rgb_pattern(8, 8, 1);
        let mut out = vec![0; 48];
        decode_into(&png_bytes(&img), RGB4, &mut out).unwrap();
        let small = imageops::resize(&img, 4, 4, FilterType::Triangle);
        assert_eq!(out[0], small.get_pixel(0, 0).0[0]);
        assert_eq!(out[16 + 5], small.get_pixel(1, 1).0[1]);
    }

    /// torchvision's resize and centre crop: a 12x6 image for a 4x4 input from a shorter side
    /// of 5 is scaled to 10x5 (`int(5 * 12 / 6)`) and cut at (3, 0) (`round(6 / 2)`,
    /// `round(1 / 2)` = 0, halves to even); every pixel is that of imageops' own resize, cut.
    #[test]
    fn a_centre_crop_scales_the_shorter_side_and_cuts_the_middle() {
        let img = rgb_pattern(12, 6, 3);
        let shape = ImageShape { resize: Resize::CentreCrop { shorter_side: 5 }, ..RGB4 };
        let mut out = vec![0; 48];
        decode_into(&png_bytes(&img), shape, &mut out).unwrap();
        let scaled = imageops::resize(&img, 10, 5, FilterType::Triangle);
        for (c, plane) in out.chunks_exact(16).enumerate() {
            for (i, &v) in plane.iter().enumerate() {
                assert_eq!(v, scaled.get_pixel(3 + (i % 4) as u32, (i / 4) as u32).0[c], "channel {c}, pixel {i}");
            }
        }
    }

    #[test]
    fn jpeg_decodes() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([120, 60, 200]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        let mut out = vec![0; 3 * 64];
        decode_into(&bytes, ImageShape::new(3, 8, 8), &mut out).unwrap();
        assert!(
            (out[0] as i32 - 120).abs() <= 3 && (out[64] as i32 - 60).abs() <= 3 && (out[128] as i32 - 200).abs() <= 3
        );
    }

    #[test]
    fn bad_bytes_are_errors() {
        let mut out = vec![0; 48];
        assert!(decode_into(b"", RGB4, &mut out).is_err());
        assert!(decode_into(b"hello, not an image", RGB4, &mut out).is_err());
        let png = png_bytes(&rgb_pattern(4, 4, 0));
        for cut in 0..png.len() - 1 {
            // Must not panic; a cut PNG is an error (or at worst decodes).
            let _ = decode_into(&png[..cut], RGB4, &mut out);
        }
        assert!(decode_into(&png[..png.len() / 2], RGB4, &mut out).is_err());
    }

    #[test]
    fn raw_conversions() {
        let shape = ImageShape::new(3, 2, 2);
        let planes: Vec<u8> = (0..12).collect();
        let mut out = vec![0; 12];
        raw_into(Raw::RgbPlanes { pixels: &planes, height: 2, width: 2 }, shape, &mut out);
        assert_eq!(out, planes);
        let gray = [1u8, 2, 3, 4];
        raw_into(Raw::Gray { pixels: &gray, height: 2, width: 2 }, shape, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
        let mut out1 = vec![0; 4];
        raw_into(Raw::Gray { pixels: &gray, height: 2, width: 2 }, ImageShape::new(1, 2, 2), &mut out1);
        assert_eq!(out1, gray);
        let mut big = vec![0; 3 * 16];
        let flat = [9u8; 12];
        raw_into(Raw::RgbPlanes { pixels: &flat, height: 2, width: 2 }, RGB4, &mut big);
        assert!(big.iter().all(|&v| v == 9));
    }

    #[test]
    fn shape_checks() {
        let p = Path::new("x");
        assert!(check_shape(p, RGB4).is_ok());
        assert!(check_shape(p, ImageShape::new(2, 4, 4)).is_err());
        assert!(check_shape(p, ImageShape::new(3, 0, 4)).is_err());
        assert!(alloc_pixels(p, usize::MAX / 2, RGB4).is_err());
    }
}
