//! What a convolution does to its output after the sums (which start from the bias): `+ residual`,
//! ReLU, `* node mask`. The micro-kernels apply it as they store each register block; Winograd
//! tiles as they store their output transform.

/// The operations after the convolution, in this order: `+ residual`, ReLU, `* mask`.
pub struct Epilogue<'a> {
    /// Same shape as the output (NHWC), added before the ReLU.
    pub residual: Option<&'a [f32]>,
    /// Whether a ReLU follows.
    pub relu: bool,
    /// The stacked modules' node masks, applied last.
    pub mask: Option<StackedMask<'a>>,
}

/// 0/1 node masks of k modules for one site, NHWC order per image (`k * Ho*Wo*Cout` bytes); the
/// stacked batch is k groups of `images_per_module` images, group m masked by module m. A call
/// may convolve a slice of that batch starting at image `first_image`.
#[derive(Clone, Copy)]
pub struct StackedMask<'a> {
    pub masks: &'a [u8],
    pub images_per_module: usize,
    pub first_image: usize,
}

impl StackedMask<'_> {
    /// The masks of the call's image `image` (`pixels * cout` bytes, NHWC): its module's.
    pub fn plane(&self, image: usize, pixels: usize, cout: usize) -> &[u8] {
        let module = (self.first_image + image) / self.images_per_module.max(1);
        &self.masks[module * pixels * cout..][..pixels * cout]
    }

    /// The `cout` mask bytes of output pixel `yx` (of `pixels`) of the call's image `image`.
    pub fn keep(&self, image: usize, yx: usize, pixels: usize, cout: usize) -> &[u8] {
        &self.plane(image, pixels, cout)[yx * cout..][..cout]
    }
}
