//! Image files to the raw pixels an input spec wants (channels, size): decoded with `image`,
//! converted to gray or RGB, resized when their size differs, laid out channel-major.

use std::path::Path;

use anyhow::{anyhow, Result};
use classmod_runtime::host::regular;
use classmod_runtime::InputSpec;
use image::imageops::FilterType;

/// The largest image file read: a camera frame of several megapixels, compressed.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

pub fn pixels(path: &Path, spec: &InputSpec) -> Result<Vec<u8>> {
    // A regular file of bounded size first: a FIFO or device named like an image cannot hang or
    // flood the device.
    let bytes = regular::read(path, MAX_IMAGE_BYTES)?;
    let img = image::load_from_memory(&bytes).map_err(|e| anyhow!("{}: cannot decode image: {e}", path.display()))?;
    let (w, h) = (spec.width as u32, spec.height as u32);
    let img = if img.width() != w || img.height() != h { img.resize_exact(w, h, FilterType::Triangle) } else { img };
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

    fn spec(channels: usize, size: usize) -> InputSpec {
        InputSpec { channels, height: size, width: size, mean: vec![0.5; channels], std: vec![0.5; channels] }
    }

    #[test]
    fn gray_rgb_resize_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("classmod-edge-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.png");
        let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([(10 * x) as u8, (10 * y) as u8, 200]));
        img.save(&p).unwrap();
        let rgb = pixels(&p, &spec(3, 4)).unwrap();
        assert_eq!(rgb.len(), 48);
        assert_eq!((rgb[1], rgb[16 + 4], rgb[32]), (10, 10, 200), "channel-major");
        assert_eq!(pixels(&p, &spec(1, 4)).unwrap().len(), 16);
        assert_eq!(pixels(&p, &spec(3, 8)).unwrap().len(), 3 * 64, "resized");
        std::fs::write(&p, b"not a png").unwrap();
        assert!(pixels(&p, &spec(1, 4)).unwrap_err().to_string().contains("x.png"));
        assert!(pixels(&dir.join("missing.png"), &spec(1, 4)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
