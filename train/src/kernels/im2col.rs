//! im2col and its adjoint col2im, as plain loops over planes in either batch layout: the
//! columns a convolution GEMM multiplies, and the scatter that takes the columns' gradient back
//! to the input. Inference has its own NHWC path in `classmod_runtime` (`runtime/src/cpu`).

use std::ops::Range;

/// Geometry of a square-kernel convolution with symmetric zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn out_size(&self) -> (usize, usize) {
        (
            (self.height + 2 * self.padding - self.kernel) / self.stride + 1,
            (self.width + 2 * self.padding - self.kernel) / self.stride + 1,
        )
    }
}

/// For output row `o` of a kernel tap at offset `k_off` (already minus padding), the range of
/// output positions whose input index `o*s + k_off` falls inside `0..len`.
fn valid_range(out_len: usize, s: usize, k_off: isize, len: usize) -> std::ops::Range<usize> {
    let first = if k_off >= 0 { 0 } else { ((-k_off) as usize).div_ceil(s) };
    let last = if (len as isize - k_off) <= 0 { 0 } else { ((len as isize - k_off - 1) as usize) / s + 1 };
    first.min(out_len)..last.min(out_len).max(first.min(out_len))
}

/// How a batch's planes are laid out: `Nchw` (image-major, candle's) or `Cnhw` (channel-major:
/// `(channels, batch, h, w)`, the layout a convolution GEMM `W (out, in*k*k) @ cols` produces,
/// which the training engine keeps throughout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneOrder {
    Nchw,
    Cnhw,
}

impl PlaneOrder {
    /// Offset of the `h*w` plane of image `b`, channel `c`.
    fn plane(self, g: &ConvGeometry, b: usize, c: usize) -> usize {
        let hw = g.height * g.width;
        match self {
            PlaneOrder::Nchw => (b * g.in_channels + c) * hw,
            PlaneOrder::Cnhw => (c * g.batch + b) * hw,
        }
    }
}

/// NCHW `x` -> columns `(in_channels * k * k, batch * ho * wo)`: row `(c, ky, kx)` holds, for
/// every image and output position, the input pixel that tap multiplies. The rows follow the
/// weight's `(out, in, ky, kx)` layout, so `weight.reshape(out, in*k*k) @ cols` is the whole
/// batch's convolution as one GEMM (output `(out, batch, ho*wo)`).
pub fn im2col(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let n = g.batch * g.out_size().0 * g.out_size().1;
    let mut cols = vec![0f32; g.in_channels * g.kernel * g.kernel * n];
    im2col_into(x, g, PlaneOrder::Nchw, 0..g.batch, &mut cols, true);
    cols
}

/// [`im2col`] of the images `images` of `x` (laid out as `order`) into `cols`, `(c*k*k,
/// images.len()*ho*wo)`, every value written (padding included); over rayon's threads when
/// `parallel`, else on the calling thread. A range of images keeps the columns of a large batch
/// small enough to stay in cache between this and the product that reads them.
pub fn im2col_into(
    x: &[f32],
    g: &ConvGeometry,
    order: PlaneOrder,
    images: Range<usize>,
    cols: &mut [f32],
    parallel: bool,
) {
    use rayon::prelude::*;
    let n = images.len() * g.out_size().0 * g.out_size().1;
    assert_eq!(x.len(), g.batch * g.in_channels * g.height * g.width, "im2col: input size");
    assert!(images.end <= g.batch, "im2col: images {images:?} of {}", g.batch);
    assert_eq!(cols.len(), g.in_channels * g.kernel * g.kernel * n, "im2col: column buffer size");
    if n == 0 {
        return;
    }
    if parallel {
        cols.par_chunks_mut(n).enumerate().for_each(|(r, row)| im2col_row(x, g, order, images.clone(), r, row));
    } else {
        cols.chunks_mut(n).enumerate().for_each(|(r, row)| im2col_row(x, g, order, images.clone(), r, row));
    }
}

/// Row `(c, ky, kx)` of the columns of `images`; positions in the padding get zeros.
fn im2col_row(x: &[f32], g: &ConvGeometry, order: PlaneOrder, images: Range<usize>, row_index: usize, row: &mut [f32]) {
    let (k, s, p) = (g.kernel, g.stride, g.padding as isize);
    let (h, w) = (g.height, g.width);
    let (ho, wo) = g.out_size();
    let (c, ky, kx) = (row_index / (k * k), row_index / k % k, row_index % k);
    let (ky, kx) = (ky as isize - p, kx as isize - p);
    let ys = valid_range(ho, s, ky, h);
    let xs = valid_range(wo, s, kx, w);
    // A "same" stride-1 convolution shifts the whole plane by one offset: one copy per image,
    // then the columns the shift wrapped around (the padding) set to zero. Rows of a few values
    // each would cost a copy call apiece.
    let same = s == 1 && (ho, wo) == (h, w);
    for (i, b) in images.enumerate() {
        let plane = &x[order.plane(g, b, c)..][..h * w];
        let out = &mut row[i * ho * wo..][..ho * wo];
        if same {
            let off = ky * w as isize + kx;
            let (first, end) = (ys.start * w, ys.end * w);
            let lo = first.max((-off).max(0) as usize).min(end);
            let hi = end.min(((h * w) as isize - off).max(0) as usize).max(lo);
            out[..lo].iter_mut().for_each(|v| *v = 0.0);
            out[hi..].iter_mut().for_each(|v| *v = 0.0);
            // Nothing to copy where the tap lies wholly in the padding (a 1x1 plane's corner taps).
            if hi > lo {
                let from = (lo as isize + off) as usize;
                out[lo..hi].copy_from_slice(&plane[from..from + (hi - lo)]);
            }
            if xs.len() < wo {
                for line in out[first..end].chunks_mut(wo) {
                    line[..xs.start].iter_mut().for_each(|v| *v = 0.0);
                    line[xs.end..].iter_mut().for_each(|v| *v = 0.0);
                }
            }
            continue;
        }
        for oy in 0..ho {
            let dst = &mut out[oy * wo..][..wo];
            if !ys.contains(&oy) {
                dst.iter_mut().for_each(|v| *v = 0.0);
                continue;
            }
            let iy = (oy * s) as isize + ky;
            let src = &plane[iy as usize * w..][..w];
            dst[..xs.start].iter_mut().for_each(|v| *v = 0.0);
            dst[xs.end..].iter_mut().for_each(|v| *v = 0.0);
            if s == 1 {
                let ix0 = (xs.start as isize + kx) as usize;
                dst[xs.clone()].copy_from_slice(&src[ix0..ix0 + xs.len()]);
            } else {
                for ox in xs.clone() {
                    dst[ox] = src[((ox * s) as isize + kx) as usize];
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: scatter-adds columns `(c*k*k, batch*ho*wo)` into NCHW.
pub fn col2im(cols: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let mut x = vec![0f32; g.batch * g.in_channels * g.height * g.width];
    col2im_add(cols, g, PlaneOrder::Nchw, 0..g.batch, &mut x);
    x
}

/// The adjoint of [`im2col_into`]: adds the columns of `images` into `x` (laid out as `order`).
pub fn col2im_add(cols: &[f32], g: &ConvGeometry, order: PlaneOrder, images: Range<usize>, x: &mut [f32]) {
    let (k, s, p) = (g.kernel, g.stride, g.padding as isize);
    let (h, w) = (g.height, g.width);
    let (ho, wo) = g.out_size();
    let n = images.len() * ho * wo;
    assert_eq!(x.len(), g.batch * g.in_channels * h * w, "col2im: output size");
    assert!(images.end <= g.batch, "col2im: images {images:?} of {}", g.batch);
    assert_eq!(cols.len(), g.in_channels * k * k * n, "col2im: column buffer size");
    if n == 0 {
        return;
    }
    for (row_index, row) in cols.chunks(n).enumerate() {
        let (c, ky, kx) = (row_index / (k * k), row_index / k % k, row_index % k);
        let (ky, kx) = (ky as isize - p, kx as isize - p);
        let ys = valid_range(ho, s, ky, h);
        let xs = valid_range(wo, s, kx, w);
        for (i, b) in images.clone().enumerate() {
            let plane = &mut x[order.plane(g, b, c)..][..h * w];
            let src = &row[i * ho * wo..][..ho * wo];
            for oy in ys.clone() {
                let iy = ((oy * s) as isize + ky) as usize;
                let dst = &mut plane[iy * w..][..w];
                let from = &src[oy * wo..][..wo];
                if s == 1 {
                    let ix0 = (xs.start as isize + kx) as usize;
                    for (d, &v) in dst[ix0..ix0 + xs.len()].iter_mut().zip(&from[xs.clone()]) {
                        *d += v;
                    }
                } else {
                    for ox in xs.clone() {
                        dst[((ox * s) as isize + kx) as usize] += from[ox];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{matmul, MatRef};
    use candle_core::{Device, Tensor};

    /// im2col then one GEMM, back to NCHW.
    fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> candle_core::Result<Tensor> {
        let (batch, in_channels, height, width) = x.dims4()?;
        let (out, _, kernel, _) = w.dims4()?;
        let g = ConvGeometry { batch, in_channels, height, width, kernel, stride, padding };
        let (ho, wo) = g.out_size();
        let cols = im2col(&x.flatten_all()?.to_vec1::<f32>()?, &g);
        let ckk = in_channels * kernel * kernel;
        let mut y = vec![0f32; out * batch * ho * wo];
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        matmul(&mut y, MatRef::new(&wv, out, ckk), MatRef::new(&cols, ckk, batch * ho * wo), false, false);
        Tensor::from_vec(y, (out, batch, ho, wo), x.device())?.transpose(0, 1)?.contiguous()
    }

    /// Against candle's direct `conv2d` (the reference) on the shapes the ResNets use and odd ones.
    #[test]
    fn im2col_gemm_matches_candle_conv2d() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (b, c, o, h, k, s, p) in [
            (2, 3, 4, 8, 3, 1, 1),
            (1, 5, 7, 9, 3, 2, 1),
            (3, 4, 6, 8, 1, 2, 0),
            (2, 2, 3, 7, 3, 1, 0),
            (2, 3, 2, 7, 3, 2, 1),
            (1, 2, 2, 5, 5, 2, 2),
            (1, 1, 1, 3, 3, 1, 1),
            (2, 3, 2, 6, 5, 1, 2),  // "same" stride 1 with a wider kernel
            (1, 2, 3, 2, 3, 1, 1),  // a plane smaller than the kernel
            (3, 4, 5, 1, 3, 1, 1),  // a 1x1 plane (a branch on a four-stage base's last stage)
            (19, 2, 3, 6, 3, 2, 1), // a larger batch
        ] {
            let x = Tensor::randn(0f32, 1., (b, c, h, h), &dev)?;
            let w = Tensor::randn(0f32, 1., (o, c, k, k), &dev)?;
            let ours = conv2d(&x, &w, p, s)?;
            let theirs = x.conv2d(&w, p, s, 1, 1)?;
            assert_eq!(ours.dims(), theirs.dims());
            // Relative to the outputs' size: sums of up to 75 products of unseeded normal values
            // reach ~20, where f32 rounding in another order differs by ~1e-5 (seen once: 1.3e-5).
            let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
            let d = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d <= 1e-6 * (1.0 + scale), "{b} {c} {o} {h} {k} {s} {p}: {d} (outputs up to {scale})");
        }
        Ok(())
    }

    /// Channel-major columns equal the image-major ones of the same batch, whatever the
    /// buffer held before; col2im is im2col's adjoint (<im2col(x), c> = <x, col2im(c)>), in
    /// both layouts, which is what makes it the gradient.
    #[test]
    fn channel_major_columns_and_the_adjoint() {
        for (b, c, h, k, s) in [(2, 3, 8, 3, 1), (3, 2, 7, 3, 2), (2, 2, 9, 1, 2), (1, 1, 3, 3, 1)] {
            let g =
                ConvGeometry { batch: b, in_channels: c, height: h, width: h, kernel: k, stride: s, padding: k / 2 };
            let hw = h * h;
            let x: Vec<f32> = (0..b * c * hw).map(|i| ((i * 31 % 17) as f32 - 8.0) / 4.0).collect();
            let mut xc = vec![0f32; x.len()];
            for bi in 0..b {
                for ci in 0..c {
                    xc[(ci * b + bi) * hw..][..hw].copy_from_slice(&x[(bi * c + ci) * hw..][..hw]);
                }
            }
            let want = im2col(&x, &g);
            let mut got = vec![f32::NAN; want.len()];
            im2col_into(&xc, &g, PlaneOrder::Cnhw, 0..b, &mut got, false);
            assert_eq!(got, want, "{b} {c} {h} {k} {s}");
            // The columns of the last image alone are that image's part of every row.
            let n1 = want.len() / (c * k * k) / b;
            let mut last = vec![f32::NAN; c * k * k * n1];
            im2col_into(&xc, &g, PlaneOrder::Cnhw, b - 1..b, &mut last, false);
            for (r, row) in last.chunks(n1).enumerate() {
                assert_eq!(row, &want[r * n1 * b + (b - 1) * n1..][..n1]);
            }
            let cols: Vec<f32> = (0..want.len()).map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0).collect();
            let lhs: f64 = want.iter().zip(&cols).map(|(a, b)| (a * b) as f64).sum();
            for (order, input) in [(PlaneOrder::Nchw, &x), (PlaneOrder::Cnhw, &xc)] {
                let mut back = vec![0f32; x.len()];
                col2im_add(&cols, &g, order, 0..b, &mut back);
                let rhs: f64 = input.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
                assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "{order:?} {b} {c} {h} {k} {s}: {lhs} vs {rhs}");
            }
        }
    }
}
