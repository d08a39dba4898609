//! Image files to the raw pixels an input spec wants (channels, size): decoded with `image`,
//! converted to gray or RGB, brought to the input's size as its spec says (stretched, or scaled
//! and cut from the centre as torchvision does), laid out channel-major.

use std::path::Path;

use anyhow::{anyhow, Result};
use classmod_boards::BoardProfile;
use classmod_runtime::io::regular;
use classmod_runtime::InputSpec;
use image::imageops::FilterType;
use image::{ImageReader, Limits};
use std::io::Cursor;

/// What an image may cost a device: its file's bytes, and its width and height (a board
/// profile's `max_image_mib` and `max_image_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: u64,
    pub max_side: u32,
}

impl ImageLimits {
    pub fn of(board: &BoardProfile) -> ImageLimits {
        ImageLimits { max_bytes: u64::from(board.max_image_mib) << 20, max_side: board.max_image_side }
    }
}

/// Memory a decoder may allocate beyond the image's own pixels (its tables and buffers).
const DECODER_SLACK: u64 = 4 << 20;

/// The pixels of the image file at `path` for `spec`; a file larger than `limits.max_bytes` is
/// refused unread, an image wider or taller than `limits.max_side` from its header, before
/// anything is decoded.
pub fn pixels(path: &Path, spec: &InputSpec, limits: ImageLimits) -> Result<Vec<u8>> {
    // A regular file of bounded size first: a FIFO or device named like an image cannot hang or
    // flood the device.
    decode(&regular::read(path, limits.max_bytes)?, path, spec, limits)
}

/// [`pixels`] of an image file's bytes, read before (`path` names it in errors).
pub fn decode(bytes: &[u8], path: &Path, spec: &InputSpec, limits: ImageLimits) -> Result<Vec<u8>> {
    let max_side = limits.max_side;
    let undecodable = |e: &dyn std::fmt::Display| anyhow!("{}: cannot decode image: {e}", path.display());
    let reader = || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| undecodable(&e));
    let (width, height) = reader()?.into_dimensions().map_err(|e| undecodable(&e))?;
    if width > max_side || height > max_side {
        return Err(anyhow!(
            "{}: image is {width} x {height} pixels, larger than this board decodes ({max_side} x {max_side})",
            path.display()
        ));
    }
    // The header's size was checked; the limits hold the decoder to it, and its allocations to
    // that image's pixels (RGBA, 16 bits a channel at most) and some slack: a small image's
    // file cannot make it allocate what its text chunks say.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(max_side);
    decoder_limits.max_image_height = Some(max_side);
    decoder_limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + DECODER_SLACK);
    let mut decoder = reader()?;
    decoder.limits(decoder_limits);
    let img = decoder.decode().map_err(|e| undecodable(&e))?;
    let (w, h) = (spec.width as u32, spec.height as u32);
    // The model's own way to its size (stretched, or torchvision's scale and centre crop).
    let plan = spec.resize.plan((img.width() as usize, img.height() as usize), (spec.width, spec.height));
    let (sw, sh) = (plan.scaled.0 as u32, plan.scaled.1 as u32);
    let img =
        if img.width() != sw || img.height() != sh { img.resize_exact(sw, sh, FilterType::Triangle) } else { img };
    let img = if (sw, sh) != (w, h) { img.crop_imm(plan.crop.0 as u32, plan.crop.1 as u32, w, h) } else { img };
    Ok(match spec.channels {
        1 => img.to_luma8().into_raw(),
        3 => {
            let rgb = img.to_rgb8();
            (0..3).flat_map(|c| rgb.pixels().map(move |p| p.0[c])).collect()
        }
        c => return Err(anyhow!("input spec has {c} channels; images give 1 or 3")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits { max_bytes: 64 << 20, max_side: 4096 };

    fn spec(channels: usize, size: usize) -> InputSpec {
        InputSpec::new(channels, size, size, vec![0.5; channels], vec![0.5; channels])
    }

    #[test]
    fn gray_rgb_resize_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("classmod-edge-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.png");
        let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([(10 * x) as u8, (10 * y) as u8, 200]));
        img.save(&p).unwrap();
        let rgb = pixels(&p, &spec(3, 4), LIMITS).unwrap();
        assert_eq!(rgb.len(), 48);
        assert_eq!((rgb[1], rgb[16 + 4], rgb[32]), (10, 10, 200), "channel-major");
        assert_eq!(pixels(&p, &spec(1, 4), LIMITS).unwrap().len(), 16);
        assert_eq!(pixels(&p, &spec(3, 8), LIMITS).unwrap().len(), 3 * 64, "resized");
        // torchvision's way for its models: 12x6 to a shorter side of 5 (10x5), cut at (3, 0).
        let wide = image::RgbImage::from_fn(12, 6, |x, y| image::Rgb([(20 * x) as u8, (40 * y) as u8, (x * y) as u8]));
        wide.save(&p).unwrap();
        let crop = InputSpec { resize: classmod_runtime::Resize::CentreCrop { shorter_side: 5 }, ..spec(3, 4) };
        let got = pixels(&p, &crop, LIMITS).unwrap();
        let want = image::DynamicImage::ImageRgb8(wide).resize_exact(10, 5, FilterType::Triangle).crop_imm(3, 0, 4, 4);
        let want = want.to_rgb8();
        assert_eq!(
            (got[0], got[16 + 5], got[32 + 15]),
            (want.get_pixel(0, 0).0[0], want.get_pixel(1, 1).0[1], want.get_pixel(3, 3).0[2])
        );
        std::fs::write(&p, b"not a png").unwrap();
        assert!(pixels(&p, &spec(1, 4), LIMITS).unwrap_err().to_string().contains("x.png"));
        assert!(pixels(&dir.join("missing.png"), &spec(1, 4), LIMITS).is_err());
        // Issue 13, item 5: a 12000 x 12000 PNG (a few hundred KB) is refused from its header,
        // before 432 MB of pixels are decoded.
        let big = dir.join("big.png");
        image::GrayImage::new(12000, 12000).save(&big).unwrap();
        assert!(std::fs::metadata(&big).unwrap().len() < 1 << 20);
        let e = pixels(&big, &spec(1, 4), LIMITS).unwrap_err().to_string();
        assert!(
            e.contains("big.png: image is 12000 x 12000 pixels, larger than this board decodes (4096 x 4096)"),
            "{e}"
        );
        // A header within the limit over data cut short is the decoder's to refuse.
        image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * y) as u8])).save(&big).unwrap();
        let bytes = std::fs::read(&big).unwrap();
        std::fs::write(&big, &bytes[..bytes.len() / 2]).unwrap();
        assert!(pixels(&big, &spec(1, 4), LIMITS).unwrap_err().to_string().contains("cannot decode image"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// CRC-32 of PNG chunks (ISO 3309), bit by bit: enough for a test.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// Issue 36, item 9: a 1 x 1 PNG carrying a 20 MB text chunk cost the device three times the
    /// file in memory. A board that reads at most 16 MiB refuses the file unread; one that reads
    /// it holds the decoder to the image's own pixels, so the chunk is refused, not kept.
    #[test]
    fn a_small_image_with_a_huge_text_chunk_costs_nothing() {
        let dir = std::env::temp_dir().join(format!("classmod-edge-img-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tiny.png");
        image::GrayImage::from_pixel(1, 1, image::Luma([7])).save(&p).unwrap();
        let png = std::fs::read(&p).unwrap();
        // Signature (8) and IHDR (25), then the text chunk, then the rest.
        let mut chunk = b"tEXt".to_vec();
        chunk.extend(b"Comment\0");
        chunk.extend(std::iter::repeat_n(b'x', 20 << 20));
        let mut out = png[..33].to_vec();
        out.extend(((chunk.len() - 4) as u32).to_be_bytes());
        out.extend(&chunk);
        out.extend(crc32(&chunk).to_be_bytes());
        out.extend(&png[33..]);
        std::fs::write(&p, &out).unwrap();
        // A well-formed PNG: the decoder's default limits (512 MiB) take it.
        assert!(ImageReader::open(&p).unwrap().decode().is_ok(), "the crafted chunk is valid");
        let nano = ImageLimits { max_bytes: 16 << 20, max_side: 4096 };
        let e = pixels(&p, &spec(1, 1), nano).unwrap_err().to_string();
        assert!(e.contains("tiny.png"), "{e}");
        let e = pixels(&p, &spec(1, 1), LIMITS).unwrap_err().to_string();
        assert!(e.contains("tiny.png") && e.contains("cannot decode image"), "{e}");
        // Without the chunk it is an image.
        std::fs::write(&p, &png).unwrap();
        assert_eq!(pixels(&p, &spec(1, 1), nano).unwrap(), [7]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
