//! One convolution of the CPU path: NHWC activations, weights packed once at load into the GEMM's
//! right-hand matrix `(k*k*Cin, Cout)`, and the output computed in tiles of output pixels. Each
//! tile gathers its input patches into a small thread-local matrix (`tile x k*k*Cin`: a row is
//! `k*k` contiguous runs of `Cin` channels, cheap in NHWC), multiplies it by the packed weights
//! with the `gemm` crate (run-time SIMD dispatch: AVX-512, AVX2+FMA, NEON, scalar), and finishes
//! the tile while it is still in cache: bias (folded batch norm), residual add, ReLU, node mask.
//! Tiles run in parallel (rayon); a batch of one image still splits into tiles of rows.

use rayon::prelude::*;

/// A convolution with batch norm folded in, weights packed for the tiled GEMM.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// `(kernel*kernel*in_channels, out_channels)` row-major; row `(ky*kernel + kx)*in + ci`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// Height and width of an NHWC activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    pub height: usize,
    pub width: usize,
}

/// What the output tile gets after the GEMM, in this order: `+ bias`, `+ residual`, ReLU, `* mask`.
pub struct Epilogue<'a> {
    /// Same shape as the output (NHWC), added before the ReLU.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
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

/// How one convolution uses the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Tiles of the output in parallel (rayon): for small batches, where the batch itself cannot
    /// keep every thread busy.
    Tiles,
    /// Tiles one after the other on the calling thread: the caller runs slices of a large batch
    /// in parallel, each slice's activations staying in that core's cache.
    Caller,
}

/// Largest patch matrix a tile gathers, in floats: 64 KiB, so that it, the weights' panel the GEMM
/// is working on and the output tile share the L2 cache.
const TILE_FLOATS: usize = 16 * 1024;

thread_local! {
    static PATCHES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PackedConv {
    /// Packs `(out, in, k, k)` weights (row-major, as PyTorch stores them) and a bias of `out`.
    pub fn new(weight: &[f32], bias: Vec<f32>, dims: [usize; 4], stride: usize, padding: usize) -> Self {
        let [out, inc, k, k2] = dims;
        assert_eq!(k, k2, "square kernels");
        assert_eq!(weight.len(), out * inc * k * k);
        assert_eq!(bias.len(), out);
        let mut weights = vec![0f32; k * k * inc * out];
        for co in 0..out {
            for ci in 0..inc {
                for t in 0..k * k {
                    weights[(t * inc + ci) * out + co] = weight[((co * inc + ci) * k * k) + t];
                }
            }
        }
        PackedConv { in_channels: inc, out_channels: out, kernel: k, stride, padding, weights, bias }
    }

    pub fn out_plane(&self, p: Plane) -> Plane {
        let o = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        Plane { height: o(p.height), width: o(p.width) }
    }

    /// Convolves `batch` NHWC images `x` of plane `p` into `out` (NHWC, `batch * Ho*Wo*Cout`).
    pub fn forward(&self, x: &[f32], batch: usize, p: Plane, e: &Epilogue, out: &mut [f32], threads: Threads) {
        let op = self.out_plane(p);
        let (cin, cout, k) = (self.in_channels, self.out_channels, self.kernel);
        let pixels = op.height * op.width;
        assert_eq!(x.len(), batch * p.height * p.width * cin, "input size");
        assert_eq!(out.len(), batch * pixels * cout, "output size");
        if let Some(r) = e.residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        if let Some(m) = e.mask {
            let modules = (m.first_image + batch).div_ceil(m.images_per_module.max(1));
            assert!(m.masks.len() >= modules * pixels * cout, "mask size");
        }
        let depth = k * k * cin;
        let rows = batch * pixels;
        // Rows per tile: the patch matrix within TILE_FLOATS, at least 8 rows, and (in parallel)
        // enough tiles for every thread even for one small image.
        let by_cache = (TILE_FLOATS / depth).max(8);
        let tile = match threads {
            Threads::Tiles => by_cache.min(rows.div_ceil(2 * rayon::current_num_threads().max(1)).max(8)),
            Threads::Caller => by_cache,
        };
        let one = |(t, dst): (usize, &mut [f32])| {
            let r0 = t * tile;
            let m = dst.len() / cout;
            PATCHES.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < m * depth {
                    buf.resize(m * depth, 0.0);
                }
                let patches = &mut buf[..m * depth];
                self.gather(x, p, op, r0, m, patches);
                // SAFETY: the three matrices are row-major with the strides given, and each slice
                // holds exactly the elements those dimensions and strides address.
                unsafe {
                    gemm::gemm(
                        m,
                        cout,
                        depth,
                        dst.as_mut_ptr(),
                        1,
                        cout as isize,
                        false,
                        patches.as_ptr(),
                        1,
                        depth as isize,
                        self.weights.as_ptr(),
                        1,
                        cout as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
            self.finish(dst, r0, pixels, e);
        };
        match threads {
            Threads::Tiles => out.par_chunks_mut(tile * cout).enumerate().for_each(one),
            Threads::Caller => out.chunks_mut(tile * cout).enumerate().for_each(one),
        }
    }

    /// Patch rows `r0..r0+m` (output pixels in NHWC order) into `patches` (`m x k*k*Cin`).
    fn gather(&self, x: &[f32], p: Plane, op: Plane, r0: usize, m: usize, patches: &mut [f32]) {
        let (cin, k, s, pad) = (self.in_channels, self.kernel, self.stride, self.padding as isize);
        let depth = k * k * cin;
        let pixels = op.height * op.width;
        for (i, row) in patches.chunks_exact_mut(depth).take(m).enumerate() {
            let r = r0 + i;
            let (b, yx) = (r / pixels, r % pixels);
            let (oy, ox) = (yx / op.width, yx % op.width);
            let image = &x[b * p.height * p.width * cin..][..p.height * p.width * cin];
            for ky in 0..k {
                let iy = (oy * s) as isize + ky as isize - pad;
                let dst = &mut row[ky * k * cin..][..k * cin];
                if iy < 0 || iy >= p.height as isize {
                    dst.fill(0.0);
                    continue;
                }
                let line = &image[iy as usize * p.width * cin..][..p.width * cin];
                let ix0 = (ox * s) as isize - pad;
                if ix0 >= 0 && ix0 as usize + k <= p.width {
                    // The whole kernel row is inside: one contiguous run of k*Cin floats.
                    dst.copy_from_slice(&line[ix0 as usize * cin..][..k * cin]);
                } else {
                    for kx in 0..k {
                        let ix = ix0 + kx as isize;
                        let d = &mut dst[kx * cin..][..cin];
                        if ix < 0 || ix >= p.width as isize {
                            d.fill(0.0);
                        } else {
                            d.copy_from_slice(&line[ix as usize * cin..][..cin]);
                        }
                    }
                }
            }
        }
    }

    /// The epilogue over output rows `r0..` held in `dst`.
    fn finish(&self, dst: &mut [f32], r0: usize, pixels: usize, e: &Epilogue) {
        let cout = self.out_channels;
        for (i, row) in dst.chunks_exact_mut(cout).enumerate() {
            let r = r0 + i;
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
            if let Some(res) = e.residual {
                for (v, a) in row.iter_mut().zip(&res[r * cout..][..cout]) {
                    *v += a;
                }
            }
            if e.relu {
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            if let Some(m) = e.mask {
                let (b, yx) = (m.first_image + r / pixels, r % pixels);
                let module = b / m.images_per_module.max(1);
                let keep = &m.masks[(module * pixels + yx) * cout..][..cout];
                // Branch-free (masks are mostly ones, but not predictably): vectorises.
                for (v, &k) in row.iter_mut().zip(keep) {
                    *v *= f32::from(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, in f64: `out[b,oy,ox,co] = bias[co] + sum w[co,ci,ky,kx] * x[b,iy,ix,ci]`.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        dims: [usize; 4],
        batch: usize,
        p: Plane,
        s: usize,
        pad: usize,
    ) -> Vec<f32> {
        let [cout, cin, k, _] = dims;
        let (ho, wo) = ((p.height + 2 * pad - k) / s + 1, (p.width + 2 * pad - k) / s + 1);
        let mut out = vec![0f32; batch * ho * wo * cout];
        for b in 0..batch {
            for oy in 0..ho {
                for ox in 0..wo {
                    for co in 0..cout {
                        let mut acc = bias[co] as f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy * s + ky) as isize - pad as isize, (ox * s + kx) as isize - pad as isize);
                                if iy < 0 || ix < 0 || iy >= p.height as isize || ix >= p.width as isize {
                                    continue;
                                }
                                for ci in 0..cin {
                                    let xv = x[((b * p.height + iy as usize) * p.width + ix as usize) * cin + ci];
                                    acc += w[((co * cin + ci) * k + ky) * k + kx] as f64 * xv as f64;
                                }
                            }
                        }
                        out[((b * ho + oy) * wo + ox) * cout + co] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Random shapes, strides, paddings, odd channel counts and batch sizes against the
        /// definition; with a residual, ReLU and stacked masks against the same applied by hand.
        #[test]
        fn tiled_conv_matches_the_definition(
            batch in 1usize..5, cin in 1usize..19, cout in 1usize..21, hw in 1usize..12,
            k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..3, seed in 0u64..1000,
            with_epilogue in any::<bool>(),
        ) {
            let pad = k / 2;
            prop_assume!(hw + 2 * pad >= k);
            let p = Plane { height: hw, width: hw + 1 };
            let dims = [cout, cin, k, k];
            let x = values(batch * p.height * p.width * cin, seed);
            let w = values(cout * cin * k * k, seed + 1);
            let bias = values(cout, seed + 2);
            let conv = PackedConv::new(&w, bias.clone(), dims, s, pad);
            let op = conv.out_plane(p);
            let n = batch * op.height * op.width * cout;
            let mut want = reference(&x, &w, &bias, dims, batch, p, s, pad);
            let residual = values(n, seed + 3);
            let masks: Vec<u8> = values(n, seed + 4).iter().map(|v| u8::from(*v > -0.2)).collect();
            let e = if with_epilogue {
                // One module per image: the masks cover the whole batch.
                for (i, v) in want.iter_mut().enumerate() {
                    *v = (*v + residual[i]).max(0.0) * f32::from(masks[i]);
                }
                Epilogue {
                    residual: Some(&residual),
                    relu: true,
                    mask: Some(StackedMask { masks: &masks, images_per_module: 1, first_image: 0 }),
                }
            } else {
                Epilogue { residual: None, relu: false, mask: None }
            };
            for threads in [Threads::Tiles, Threads::Caller] {
                let mut got = vec![f32::NAN; n];
                conv.forward(&x, batch, p, &e, &mut got, threads);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{threads:?} element {i}: {a} vs {b}");
                }
            }
        }
    }
}
