//! What a model expects as input: image shape and per-channel normalisation. Two modules can only
//! be composed when their input specs are equal, so this type is also a compatibility key.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::Result;

/// Pixels are 8-bit, scaled to [0, 1], then normalised per channel: `(x/255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Channels per image (3 for RGB, 1 for gray).
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Per-channel mean subtracted from the [0, 1] pixels.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the centred pixels are divided by.
    pub std: Vec<f32>,
}

impl InputSpec {
    /// The normalisation of the pretrained CIFAR-10 ResNets in `shared/` (ImageNet statistics).
    pub fn cifar10_imagenet_stats() -> Self {
        InputSpec {
            channels: 3,
            height: 32,
            width: 32,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// torchvision's normalisation of ImageNet models (the same statistics) for `height` x
    /// `width` RGB images.
    pub fn imagenet(height: usize, width: usize) -> Self {
        InputSpec { height, width, ..Self::cifar10_imagenet_stats() }
    }

    /// Checks sizes and statistics (finite means, positive finite standard deviations).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidInputSpec { reason });
        if self.channels == 0 || self.channels > 64 {
            return bad(format!("input channels {} out of range 1..=64", self.channels));
        }
        if self.height == 0 || self.width == 0 || !self.height.is_multiple_of(4) || !self.width.is_multiple_of(4) {
            return bad(format!("input size {}x{} must be non-zero and divisible by 4", self.height, self.width));
        }
        if self.height > 4096 || self.width > 4096 {
            return bad(format!("input size {}x{} is larger than 4096x4096", self.height, self.width));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return bad(format!(
                "mean ({}) and std ({}) need one value per input channel ({})",
                self.mean.len(),
                self.std.len(),
                self.channels
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("mean must be finite and std finite and positive".into());
        }
        Ok(())
    }

    /// Values of one image: channels x height x width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// How many whole images of this spec `pixels` holds (at least one), or the error saying it
    /// does not.
    pub fn images_in(&self, pixels: &[u8]) -> Result<usize> {
        let per = self.image_len();
        if pixels.is_empty() || per == 0 || !pixels.len().is_multiple_of(per) {
            return Err(Error::InputShape {
                expected: (self.channels, self.height, self.width),
                found: vec![pixels.len()],
            });
        }
        Ok(pixels.len() / per)
    }

    /// Normalises CHW 8-bit images (any number, back to back) straight into NHWC order, as the
    /// CPU path computes on: `out[((b * H + y) * W + x) * C + c]`. `out` has the same length.
    pub fn normalize_into_nhwc(&self, pixels: &[u8], out: &mut [f32]) {
        assert_eq!(pixels.len(), out.len(), "normalize_into_nhwc: length mismatch");
        let (c, plane) = (self.channels, self.height * self.width);
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = self.mean.iter().zip(&self.std).map(|(m, s)| -m / s).collect();
        for (image_in, image_out) in pixels.chunks(c * plane).zip(out.chunks_mut(c * plane)) {
            for ch in 0..c {
                for (i, &p) in image_in[ch * plane..][..plane].iter().enumerate() {
                    image_out[i * c + ch] = p as f32 * scale[ch] + shift[ch];
                }
            }
        }
    }

    /// Normalises CHW 8-bit images (any number, back to back) into `out`, which must have the
    /// same length. Allocation-free so callers can reuse batch buffers.
    pub fn normalize_into(&self, pixels: &[u8], out: &mut [f32]) {
        assert_eq!(pixels.len(), out.len(), "normalize_into: length mismatch");
        let plane = self.height * self.width;
        // Fold the two affine steps into one multiply-add per pixel.
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = self.mean.iter().zip(&self.std).map(|(m, s)| -m / s).collect();
        for (i, (chunk_in, chunk_out)) in pixels.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
            let c = i % self.channels;
            for (o, &p) in chunk_out.iter_mut().zip(chunk_in) {
                *o = p as f32 * scale[c] + shift[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_two_step_formula() {
        let spec = InputSpec { channels: 2, height: 4, width: 4, mean: vec![0.5, 0.25], std: vec![0.2, 0.5] };
        let pixels: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect(); // two images
        let mut out = vec![0.0; 64];
        spec.normalize_into(&pixels, &mut out);
        for (i, (&p, &o)) in pixels.iter().zip(&out).enumerate() {
            let c = (i / 16) % 2;
            let want = (p as f32 / 255.0 - spec.mean[c]) / spec.std[c];
            assert!((o - want).abs() < 1e-5, "{i}: {o} vs {want}");
        }
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let mut s = InputSpec::cifar10_imagenet_stats();
        assert!(s.validate().is_ok());
        s.std[1] = 0.0;
        assert!(s.validate().is_err());
        let mut s = InputSpec::cifar10_imagenet_stats();
        s.height = 30;
        assert!(s.validate().is_err());
    }
}
