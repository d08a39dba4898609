//! The pools of the CPU path, on NHWC activations: the ImageNet stem's 3x3 stride-2 max-pool
//! and the global average pool before the classifier. Both run along the channels, contiguous in
//! NHWC, so the compiler vectorises the inner loops.

use super::conv::{for_each_row, Plane, Threads};
use super::recycled;

/// The plane a 3x3 stride-2 max-pool with padding 1 gives: `ceil(n / 2)` each way, as PyTorch's
/// `MaxPool2d(3, 2, 1)`.
pub fn max_pooled(p: Plane) -> Plane {
    Plane { height: p.height.div_ceil(2), width: p.width.div_ceil(2) }
}

/// `MaxPool2d(kernel 3, stride 2, padding 1)` of `batch` NHWC images of plane `p` and `c`
/// channels: each output pixel the maximum over the input pixels of its window that exist
/// (PyTorch pads with -inf, so a padded position never wins). Rows of the output shared among
/// the threads as a convolution's are (`threads`): on one core it was the serial part of
/// ResNet-50's batch-1 forward (0.4 %).
pub fn max_pool_3x3_s2(x: &[f32], batch: usize, p: Plane, c: usize, threads: Threads) -> Vec<f32> {
    let op = max_pooled(p);
    // Every float is written below.
    let mut out = recycled::take(batch * op.height * op.width * c);
    for_each_row(&mut out, op.width * c, threads, |r, dst| {
        let (b, oy) = (r / op.height, r % op.height);
        let image = &x[b * p.height * p.width * c..][..p.height * p.width * c];
        let rows = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(p.height);
        for (ox, dst) in dst.chunks_exact_mut(c).enumerate() {
            let cols = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(p.width);
            dst.fill(f32::NEG_INFINITY);
            for y in rows.clone() {
                for xx in cols.clone() {
                    let src = &image[(y * p.width + xx) * c..][..c];
                    dst.iter_mut().zip(src).for_each(|(o, &v)| *o = o.max(v));
                }
            }
        }
    });
    out
}

/// Mean over the pixels of each image and channel: `(batch, c)`.
pub(crate) fn average_pool(x: &[f32], batch: usize, pixels: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; batch * c];
    for (b, o) in out.chunks_exact_mut(c).enumerate() {
        for px in x[b * pixels * c..][..pixels * c].chunks_exact(c) {
            o.iter_mut().zip(px).for_each(|(a, v)| *a += v);
        }
        o.iter_mut().for_each(|a| *a /= pixels as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition written out one output at a time, on odd and even planes (a
    /// window at each edge loses its padded row or column), with negative values (a padded
    /// zero would win over them; PyTorch's -inf does not).
    #[test]
    fn the_max_pool_is_pytorchs_on_every_plane() {
        for (h, w) in [(1, 1), (2, 3), (5, 4), (7, 7), (8, 6)] {
            let (batch, c) = (2, 3);
            let x: Vec<f32> = (0..batch * h * w * c).map(|i| ((i * 37 % 23) as f32) - 15.0).collect();
            let p = Plane { height: h, width: w };
            let out = max_pool_3x3_s2(&x, batch, p, c, Threads::Caller);
            // An empty batch pools to nothing, either way.
            for threads in [Threads::Caller, Threads::Tiles] {
                assert!(max_pool_3x3_s2(&[], 0, p, c, threads).is_empty());
            }
            // Shared among the threads: the same values.
            assert_eq!(max_pool_3x3_s2(&x, batch, p, c, Threads::Tiles), out);
            let op = max_pooled(p);
            assert_eq!(out.len(), batch * op.height * op.width * c);
            for b in 0..batch {
                for oy in 0..op.height {
                    for ox in 0..op.width {
                        for ch in 0..c {
                            let mut m = f32::NEG_INFINITY;
                            for dy in -1i64..=1 {
                                for dx in -1i64..=1 {
                                    let (y, xx) = (2 * oy as i64 + dy, 2 * ox as i64 + dx);
                                    if (0..h as i64).contains(&y) && (0..w as i64).contains(&xx) {
                                        m = m.max(x[((b * h + y as usize) * w + xx as usize) * c + ch]);
                                    }
                                }
                            }
                            assert_eq!(out[((b * op.height + oy) * op.width + ox) * c + ch], m, "{h}x{w}");
                        }
                    }
                }
            }
        }
    }
}
