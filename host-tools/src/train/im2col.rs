//! The training convolution's forward on NCHW tensors: im2col written as plain loops, then one
//! batched GEMM (candle's matmul, i.e. the `gemm` crate with run-time SIMD dispatch). candle
//! 0.11's own CPU `conv2d` is a direct tiled loop that reaches about a quarter of the GEMM's
//! throughput on these layer shapes; the backward (`conv.rs`) reuses the same column layout.
//! Inference has its own NHWC path in `classmod_runtime` (`runtime/src/cpu`).

use candle_core::{Device, Tensor};

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

/// NCHW `x` -> columns `(in_channels * k * k, batch * ho * wo)`: row `(c, ky, kx)` holds, for
/// every image and output position, the input pixel that tap multiplies. The rows follow the
/// weight's `(out, in, ky, kx)` layout, so `weight.reshape(out, in*k*k) @ cols` is the whole
/// batch's convolution as one GEMM (output `(out, batch, ho*wo)`).
pub fn im2col(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
    use rayon::prelude::*;
    let (k, s, p) = (g.kernel, g.stride, g.padding as isize);
    let (h, w) = (g.height, g.width);
    let (ho, wo) = g.out_size();
    let n = g.batch * ho * wo;
    let mut cols = vec![0f32; g.in_channels * k * k * n];
    cols.par_chunks_mut(n).enumerate().for_each(|(row_index, row)| {
        let (c, ky, kx) = (row_index / (k * k), row_index / k % k, row_index % k);
        let (ky, kx) = (ky as isize - p, kx as isize - p);
        let ys = valid_range(ho, s, ky, h);
        let xs = valid_range(wo, s, kx, w);
        for b in 0..g.batch {
            let plane = &x[(b * g.in_channels + c) * h * w..][..h * w];
            let out = &mut row[b * ho * wo..][..ho * wo];
            for oy in ys.clone() {
                let iy = (oy * s) as isize + ky;
                let src = &plane[iy as usize * w..][..w];
                let dst = &mut out[oy * wo..][..wo];
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
    });
    cols
}

/// `(out, batch, hw)` -> `(batch, out, hw)`.
pub fn out_to_nchw(y: &Tensor, batch: usize, out: usize, ho: usize, wo: usize) -> candle_core::Result<Tensor> {
    y.reshape((out, batch, ho * wo))?.transpose(0, 1)?.contiguous()?.reshape((batch, out, ho, wo))
}

/// Images per GEMM.
const CHUNK: usize = 16;

/// `x.conv2d(weight, padding, stride, 1, 1)` for NCHW f32 `x` and `(out, in, k, k)` weights.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> candle_core::Result<Tensor> {
    if !matches!(x.device(), Device::Cpu) {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let (batch, in_channels, height, width) = x.dims4()?;
    let (out, wc, kernel, kw) = weight.dims4()?;
    if wc != in_channels || kw != kernel || height + 2 * padding < kernel || width + 2 * padding < kernel {
        candle_core::bail!("conv2d: input {:?} and weight {:?} do not match", x.dims(), weight.dims());
    }
    // Large batches go through in chunks: the column matrix of a chunk stays small enough to be
    // reused from the allocator's cache instead of fresh zeroed pages (measured: batch 64 in one
    // piece ran at 2/3 the throughput of batch 32).
    if batch > CHUNK {
        let parts = (0..batch)
            .step_by(CHUNK)
            .map(|start| conv2d(&x.narrow(0, start, CHUNK.min(batch - start))?, weight, padding, stride))
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 0);
    }
    let g = ConvGeometry { batch, in_channels, height, width, kernel, stride, padding };
    let (ho, wo) = g.out_size();
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let ckk = in_channels * kernel * kernel;
    let cols = Tensor::from_vec(im2col(&xs, &g), (ckk, batch * ho * wo), x.device())?;
    let y = weight.reshape((out, ckk))?.matmul(&cols)?;
    out_to_nchw(&y, batch, out, ho, wo)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (CHUNK + 3, 2, 3, 6, 3, 2, 1), // more than one chunk
        ] {
            let x = Tensor::randn(0f32, 1., (b, c, h, h), &dev)?;
            let w = Tensor::randn(0f32, 1., (o, c, k, k), &dev)?;
            let ours = conv2d(&x, &w, p, s)?;
            let theirs = x.conv2d(&w, p, s, 1, 1)?;
            assert_eq!(ours.dims(), theirs.dims());
            let d = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "{b} {c} {o} {h} {k} {s} {p}: {d}");
        }
        Ok(())
    }
}
