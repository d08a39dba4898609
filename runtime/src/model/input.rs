//! What a model expects as input: image shape and per-channel normalisation. Two modules can only
//! be composed when their input specs are equal, so this type is also a compatibility key.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::Result;

/// How an image of another size becomes the network's input. The runtime takes pixels of the
/// input's size; this is for what makes them (the host's datasets, the device program's image
/// files), and it is part of the input's identity: modules of bases whose images are made
/// differently do not compose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Resize {
    /// Scaled to the input's height and width, the aspect not kept: the CIFAR models, whose
    /// images have their size already.
    #[default]
    Stretch,
    /// torchvision's evaluation transform (`Resize(shorter_side)`, `CenterCrop(H, W)`): the
    /// shorter side scaled to `shorter_side`, the aspect kept, then the input's height and width
    /// cut from the centre.
    CentreCrop {
        /// The shorter side after scaling (256 for a 224x224 input).
        shorter_side: usize,
    },
}

impl Resize {
    /// torchvision's ImageNet transform for an input of `height` x `width`: the shorter side to
    /// 256/224 of the crop's (256 for 224, as its models are evaluated).
    pub fn torchvision(height: usize, width: usize) -> Self {
        let side = height.max(width);
        Resize::CentreCrop { shorter_side: (side * 256 + 112) / 224 }
    }

    fn is_stretch(&self) -> bool {
        *self == Resize::Stretch
    }

    /// For a `src_w` x `src_h` image and an input of `width` x `height`: the size to scale the
    /// image to, and the top-left corner of the part kept (torchvision's rounding: the size by
    /// `int(shorter_side * longer / shorter)`, the corner by Python's `round((scaled - input) / 2)`,
    /// halves to even).
    pub fn plan(&self, (src_w, src_h): (usize, usize), (width, height): (usize, usize)) -> ResizePlan {
        match *self {
            Resize::CentreCrop { shorter_side } if src_w > 0 && src_h > 0 => {
                let scaled = if src_w <= src_h {
                    (shorter_side, shorter_side * src_h / src_w)
                } else {
                    (shorter_side * src_w / src_h, shorter_side)
                };
                // Python's round: halves to even.
                let corner = |scaled: usize, want: usize| {
                    let diff = scaled.saturating_sub(want);
                    diff / 2 + usize::from(diff % 2 == 1 && (diff / 2) % 2 == 1)
                };
                ResizePlan { scaled, crop: (corner(scaled.0, width), corner(scaled.1, height)) }
            }
            _ => ResizePlan { scaled: (width, height), crop: (0, 0) },
        }
    }
}

/// What [`Resize::plan`] gives: scale the image to `scaled` (width, height), then keep the
/// input's size from `crop` (x, y).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePlan {
    /// Width and height to scale to.
    pub scaled: (usize, usize),
    /// Left and top of the part kept.
    pub crop: (usize, usize),
}

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
    /// How images of another size are made this size. Absent from the JSON when it stretches,
    /// as every input spec was before it existed (so their keys stay).
    #[serde(default, skip_serializing_if = "Resize::is_stretch")]
    pub resize: Resize,
}

impl InputSpec {
    /// `channels` x `height` x `width` images normalised by `mean` and `std`, other sizes
    /// stretched to it.
    pub fn new(channels: usize, height: usize, width: usize, mean: Vec<f32>, std: Vec<f32>) -> Self {
        InputSpec { channels, height, width, mean, std, resize: Resize::Stretch }
    }

    /// The normalisation of the pretrained CIFAR-10 ResNets in `shared/` (ImageNet statistics).
    pub fn cifar10_imagenet_stats() -> Self {
        InputSpec::new(3, 32, 32, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    }

    /// torchvision's input for its ImageNet models at `height` x `width` RGB: ImageNet's
    /// statistics, the shorter side scaled to 256/224 of the input's and the centre cut
    /// ([`Resize::torchvision`]).
    pub fn imagenet(height: usize, width: usize) -> Self {
        InputSpec { height, width, resize: Resize::torchvision(height, width), ..Self::cifar10_imagenet_stats() }
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
        if let Resize::CentreCrop { shorter_side } = self.resize {
            if shorter_side < self.height.max(self.width) || shorter_side > 4 * 4096 {
                return bad(format!(
                    "a centre crop of {}x{} from a shorter side of {shorter_side}: it needs {} to {}",
                    self.height,
                    self.width,
                    self.height.max(self.width),
                    4 * 4096
                ));
            }
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
        let spec = InputSpec::new(2, 4, 4, vec![0.5, 0.25], vec![0.2, 0.5]);
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

    /// torchvision's `Resize(256)` + `CenterCrop(224)` sizes and corners (computed by hand from
    /// its code: `int(256 * long / short)`, `int(round((scaled - 224) / 2))`); a stretch keeps
    /// nothing out; the JSON of a stretching spec is what it was before the field.
    #[test]
    fn resize_plans_are_torchvisions() {
        let crop = Resize::torchvision(224, 224);
        assert_eq!(crop, Resize::CentreCrop { shorter_side: 256 });
        assert_eq!(Resize::torchvision(64, 64), Resize::CentreCrop { shorter_side: 73 });
        let p = crop.plan((500, 375), (224, 224));
        assert_eq!((p.scaled, p.crop), ((341, 256), (58, 16)));
        let p = crop.plan((64, 64), (224, 224));
        assert_eq!((p.scaled, p.crop), ((256, 256), (16, 16)));
        let p = crop.plan((300, 1000), (224, 224));
        assert_eq!((p.scaled, p.crop), ((256, 853), (16, 314)));
        let p = Resize::Stretch.plan((500, 375), (32, 32));
        assert_eq!((p.scaled, p.crop), ((32, 32), (0, 0)));
        let json = serde_json::to_string(&InputSpec::cifar10_imagenet_stats()).unwrap();
        assert!(!json.contains("resize"), "{json}");
        let tv = InputSpec::imagenet(224, 224);
        assert_eq!(serde_json::from_str::<InputSpec>(&serde_json::to_string(&tv).unwrap()).unwrap(), tv);
        let mut bad = tv.clone();
        bad.resize = Resize::CentreCrop { shorter_side: 200 };
        assert!(bad.validate().unwrap_err().to_string().contains("shorter side of 200"));
    }
}
