//! Winograd F(2x2, 3x3) for the stride-1 3x3 convolutions (most of a ResNet's work): each 2x2
//! block of outputs ("tile") comes from a 4x4 input patch with 16 multiplications per input and
//! output channel instead of 36, i.e. 2.25x fewer FMAs than the direct convolution, which is
//! already at the machine's FMA peak. Per unit of tiles:
//! 1. input transform `V = Bᵀ d B` of every tile's 4x4 patch, vectorised over the channels
//!    (contiguous in NHWC);
//! 2. 16 matrix products `M[ξ] = V[ξ] U[ξ]` (tiles x Cin times Cin x Cout), on the same
//!    micro-kernels as the direct convolution (one "tap", a run of Cin);
//! 3. output transform `Y = Aᵀ M A`, the bias, then the epilogue (residual, ReLU, node mask).
//!
//! `U = G g Gᵀ` is computed once at load, in f64. The transforms' constants are 0, ±1 and ½: the
//! ResNet-20/56 logits stay within 1.2e-5 of PyTorch's (`tests/golden_logits.rs`). The transforms
//! are written once over [`Lanes`] and compiled for AVX2, NEON and one lane, following the
//! micro-kernel's instruction set.

use super::conv::Plane;
use super::epilogue::Epilogue;
use super::lanes::Lanes;
use super::microkernel::{BlockOut, Isa, Microkernel, Receptive, MAX_MR, NR};

/// Positions of a transformed tile (4x4).
const XI: usize = 16;

/// Tiles a unit transforms and multiplies at a time: `V` and `M` (`16 x tiles x channels` each)
/// stay in L2 (192 KiB each at 64 channels).
const UNIT_TILES: usize = 48;

/// The transformed weights of one 3x3 convolution, `[ξ][panel][ci][NR]` (channels past `cout`
/// zero), and what the tiles need to know.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    cin: usize,
    cout: usize,
    weights: Vec<f32>,
}

thread_local! {
    /// `V` then `M` of the unit in progress, reused across calls on a thread.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl WinogradWeights {
    /// Whether a convolution suits Winograd here: 3x3, stride 1, padding 1, input channels in
    /// whole vectors of 8 (the transforms' width). It also needs an even output, so that tiles
    /// cover it exactly; the caller checks that per call.
    pub fn suits(kernel: usize, stride: usize, padding: usize, cin: usize) -> bool {
        kernel == 3 && stride == 1 && padding == 1 && cin >= 8 && cin.is_multiple_of(8)
    }

    /// Transforms `(out, in, 3, 3)` weights (row-major, as PyTorch stores them).
    pub fn new(weight: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(weight.len(), cout * cin * 9);
        const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let panels = cout.div_ceil(NR);
        let mut weights = vec![0f32; XI * panels * cin * NR];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &weight[(co * cin + ci) * 9..][..9];
                // G g Gᵀ: 4x3 times 3x3 times 3x4.
                let mut gg = [[0f64; 3]; 4];
                for (r, row) in gg.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[r][k] * g[k * 3 + c] as f64).sum();
                    }
                }
                for r in 0..4 {
                    for c in 0..4 {
                        let u: f64 = (0..3).map(|k| gg[r][k] * G[c][k]).sum();
                        let (panel, j) = (co / NR, co % NR);
                        weights[(((r * 4 + c) * panels + panel) * cin + ci) * NR + j] = u as f32;
                    }
                }
            }
        }
        WinogradWeights { cin, cout, weights }
    }

    /// Bytes of transformed weights held.
    pub fn bytes(&self) -> u64 {
        self.weights.len() as u64 * 4
    }

    /// Tile rows `first_tile_row..` of the call (a tile row is two output rows of one image;
    /// `dst` holds whole ones, NHWC) from the padded input `x` (plane `pp`, padding 1), plus
    /// `bias` (`NR` per panel) and the epilogue.
    #[allow(clippy::too_many_arguments)]
    pub fn tile_rows(
        &self,
        kernel: &Microkernel,
        x: &[f32],
        pp: Plane,
        bias: &[f32],
        e: &Epilogue,
        first_tile_row: usize,
        dst: &mut [f32],
    ) {
        let (cin, cout) = (self.cin, self.cout);
        assert!(
            pp.height >= 4 && pp.width >= 4 && pp.height.is_multiple_of(2) && pp.width.is_multiple_of(2),
            "plane {pp:?}"
        );
        let op = Plane { height: pp.height - 2, width: pp.width - 2 };
        let tiles_across = op.width / 2;
        let row_len = 2 * op.width * cout;
        let image_len = pp.height * pp.width * cin;
        assert!(x.len().is_multiple_of(image_len) && dst.len().is_multiple_of(row_len), "input or output size");
        let tile_rows = x.len() / image_len * (op.height / 2);
        assert!(first_tile_row + dst.len() / row_len <= tile_rows, "tile rows past the input");
        // Whole tile rows per unit, at least one.
        let rows_per_unit = (UNIT_TILES / tiles_across).max(1);
        let mut scratch = SCRATCH.take();
        let unit_tiles = rows_per_unit * tiles_across;
        let (v_len, m_len) = (XI * unit_tiles * cin, XI * unit_tiles * cout);
        scratch.resize(v_len + m_len, 0.0);
        let (v, m) = scratch.split_at_mut(v_len);
        for (i, out) in dst.chunks_mut(rows_per_unit * row_len).enumerate() {
            let u = UnitTiles {
                first: first_tile_row + i * rows_per_unit,
                rows: out.len() / row_len,
                across: tiles_across,
                per_image: op.height / 2,
            };
            let tiles = u.rows * u.across;
            transform_input(kernel.isa(), x, pp, cin, u, &mut v[..XI * tiles * cin]);
            self.multiply(kernel, &v[..XI * tiles * cin], tiles, &mut m[..XI * tiles * cout]);
            transform_output(kernel.isa(), &m[..XI * tiles * cout], op, cout, bias, e, u, out);
        }
        if scratch.capacity() <= super::conv::KEEP_FLOATS {
            SCRATCH.set(scratch);
        }
    }

    /// `M[t][ξ] = V[t][ξ] U[ξ]` for the unit's tiles.
    fn multiply(&self, kernel: &Microkernel, v: &[f32], tiles: usize, m: &mut [f32]) {
        let (cin, cout, mr) = (self.cin, self.cout, kernel.mr());
        let panels = cout.div_ceil(NR);
        let f = Receptive { taps: 1, run: cin, tap_stride: 0 };
        let zeros = [0f32; NR];
        for xi in 0..XI {
            for t0 in (0..tiles).step_by(mr) {
                let rows = mr.min(tiles - t0);
                let mut a = [std::ptr::null::<f32>(); MAX_MR];
                for (i, p) in a.iter_mut().enumerate() {
                    // Rows past the unit repeat its last tile: computed, never stored.
                    *p = v[((t0 + i.min(rows - 1)) * XI + xi) * cin..][..cin].as_ptr();
                }
                for panel in 0..panels {
                    let cols = NR.min(cout - panel * NR);
                    let at = (t0 * XI + xi) * cout + panel * NR;
                    let len = (rows - 1) * XI * cout + cols;
                    let out = BlockOut {
                        rows,
                        cols,
                        c: m[at..][..len].as_mut_ptr(),
                        stride: XI * cout,
                        residual: std::ptr::null(),
                        relu: false,
                        masks: [std::ptr::null(); MAX_MR],
                    };
                    let w = &self.weights[((xi * panels + panel) * cin) * NR..][..cin * NR];
                    // SAFETY: each pointer has the `cin` floats of one tile's position ξ (sliced
                    // above); `out` spans `rows` rows of stride 16*Cout with `cols` floats in the
                    // last (sliced above); `w` is one panel of U[ξ], `zeros` NR floats.
                    unsafe { kernel.run(f, a.as_ptr(), w.as_ptr(), zeros.as_ptr(), &out) };
                }
            }
        }
    }
}

/// A unit's tiles: tile rows `first..first + rows` of the call (`per_image` to an image), `across`
/// tiles each.
#[derive(Clone, Copy)]
struct UnitTiles {
    first: usize,
    rows: usize,
    across: usize,
    per_image: usize,
}

impl UnitTiles {
    /// Each tile row's image and row within it, and the index of its first tile in the unit.
    fn rows(self) -> impl Iterator<Item = (usize, usize, usize)> {
        (0..self.rows).map(move |i| {
            let row = self.first + i;
            (row / self.per_image, row % self.per_image, i * self.across)
        })
    }
}

/// `V[t][ξ][ci]` of the unit's tiles.
fn transform_input(isa: Isa, x: &[f32], pp: Plane, cin: usize, u: UnitTiles, v: &mut [f32]) {
    let v = &mut v[..u.rows * u.across * XI * cin];
    // The four padded input rows a tile row reads; every tile's 4x4 patch is 4 runs of 4*Cin
    // floats in them, one padded row apart.
    let band = |b: usize, ty: usize| &x[(b * pp.height + 2 * ty) * pp.width * cin..][..4 * pp.width * cin];
    // SAFETY (all three): `band` has every patch of the tile row; `v` has 16*Cin per tile; Cin is
    // a multiple of 8, so of every lane count; AVX2 runs only where the CPU has it
    // (`Microkernel::available`).
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { input_avx2(&band, pp.width * cin, cin, u, v) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { input_tiles::<super::lanes::Neon>(&band, pp.width * cin, cin, u, v) },
        _ => unsafe { input_tiles::<f32>(&band, pp.width * cin, cin, u, v) },
    }
}

/// A tile row's four input rows, by image and tile row.
type Band<'a> = dyn Fn(usize, usize) -> &'a [f32] + 'a;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2(band: &Band, row: usize, cin: usize, u: UnitTiles, v: &mut [f32]) {
    input_tiles::<super::lanes::Avx2>(band, row, cin, u, v)
}

/// Every tile's `Bᵀ d B`, `V::N` channels at a time; `row` floats from one padded row to the next.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `col` indexes four rows of the patch at once
unsafe fn input_tiles<V: Lanes>(band: &Band, row: usize, cin: usize, u: UnitTiles, v: &mut [f32]) {
    let v = v.as_mut_ptr();
    for (b, ty, t0) in u.rows() {
        let rows = band(b, ty).as_ptr();
        for tx in 0..u.across {
            let d = rows.add(2 * tx * cin);
            let vt = v.add((t0 + tx) * XI * cin);
            for c0 in (0..cin).step_by(V::N) {
                let x = |r: usize, col: usize| V::load(d.add(r * row + col * cin + c0));
                // Bᵀ d: rows d0-d2, d1+d2, d2-d1, d1-d3 ...
                let mut t = [[x(0, 0); 4]; 4];
                for col in 0..4 {
                    let (d0, d1, d2, d3) = (x(0, col), x(1, col), x(2, col), x(3, col));
                    t[0][col] = d0.sub(d2);
                    t[1][col] = d1.add(d2);
                    t[2][col] = d2.sub(d1);
                    t[3][col] = d1.sub(d3);
                }
                // ... then the same on the columns.
                for (r, t) in t.iter().enumerate() {
                    let at = |col: usize| vt.add((r * 4 + col) * cin + c0);
                    t[0].sub(t[2]).store(at(0));
                    t[1].add(t[2]).store(at(1));
                    t[2].sub(t[1]).store(at(2));
                    t[1].sub(t[3]).store(at(3));
                }
            }
        }
    }
}

/// Where one tile's four output pixels go, (0,0) (0,1) (1,0) (1,1), with their epilogue's inputs.
struct TileOut {
    y: [*mut f32; 4],
    residual: Option<[*const f32; 4]>,
    relu: bool,
    keep: Option<[*const u8; 4]>,
}

/// A unit's output: its tile rows in `out`, and the epilogue's inputs for the whole call.
struct UnitOut<'a> {
    out: *mut f32,
    /// Where `out` starts in the call's output.
    base: usize,
    op: Plane,
    cout: usize,
    e: &'a Epilogue<'a>,
}

impl UnitOut<'_> {
    /// The tile at column `tx` of tile row `ty` of image `b`.
    ///
    /// # Safety
    /// The tile row lies within `out`.
    #[inline(always)]
    unsafe fn tile(&self, b: usize, ty: usize, tx: usize) -> TileOut {
        let (w, cout) = (self.op.width, self.cout);
        let pixels = self.op.height * w;
        let yx = [0, 1, w, w + 1].map(|d| 2 * ty * w + 2 * tx + d);
        let at = yx.map(|yx| (b * pixels + yx) * cout);
        TileOut {
            y: at.map(|a| self.out.add(a - self.base)),
            residual: self.e.residual.map(|r| at.map(|a| r.as_ptr().add(a))),
            relu: self.e.relu,
            keep: self.e.mask.map(|m| {
                // From the module's whole plane, so that the pointers stay within it.
                let plane = m.plane(b, pixels, cout).as_ptr();
                yx.map(|yx| plane.add(yx * cout))
            }),
        }
    }
}

/// `Aᵀ M A + bias` of the unit's tiles into their output tile rows `out` (NHWC), then the
/// epilogue.
#[allow(clippy::too_many_arguments)]
fn transform_output(
    isa: Isa,
    m: &[f32],
    op: Plane,
    cout: usize,
    bias: &[f32],
    e: &Epilogue,
    u: UnitTiles,
    out: &mut [f32],
) {
    let row_len = 2 * op.width * cout;
    assert_eq!(out.len(), u.rows * row_len);
    assert!(m.len() >= u.rows * u.across * XI * cout && bias.len() >= cout);
    if let Some(r) = e.residual {
        assert!(r.len() >= (u.first + u.rows) * row_len, "residual size");
    }
    let o = UnitOut { out: out.as_mut_ptr(), base: u.first * row_len, op, cout, e };
    // SAFETY (all three): `out` holds the unit's tile rows whole, the residual (checked above)
    // and the masks (checked by the caller: every module's whole plane) cover the call; `m` has
    // 16*Cout per tile, `bias` Cout; AVX2 runs only where the CPU has it.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { output_avx2(m, bias, u, &o) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { output_tiles::<super::lanes::Neon>(m, bias, u, &o) },
        _ => unsafe { output_tiles::<f32>(m, bias, u, &o) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_avx2(m: &[f32], bias: &[f32], u: UnitTiles, o: &UnitOut) {
    output_tiles::<super::lanes::Avx2>(m, bias, u, o)
}

/// Every tile's output, `V::N` channels at a time and the rest one by one.
#[inline(always)]
unsafe fn output_tiles<V: Lanes>(m: &[f32], bias: &[f32], u: UnitTiles, o: &UnitOut) {
    let cout = o.cout;
    let whole = cout / V::N * V::N;
    for (b, ty, t0) in u.rows() {
        for tx in 0..u.across {
            let t = o.tile(b, ty, tx);
            let mt = m.as_ptr().add((t0 + tx) * XI * cout);
            output_tile::<V>(mt, cout, 0..whole, bias.as_ptr(), &t);
            output_tile::<f32>(mt, cout, whole..cout, bias.as_ptr(), &t);
        }
    }
}

/// Channels `range` of one tile: `Aᵀ M A + bias`, `+ residual`, ReLU, `* mask`, stored.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `col` indexes both rows of `u` and four of `M` at once
unsafe fn output_tile<V: Lanes>(
    mt: *const f32,
    cout: usize,
    range: std::ops::Range<usize>,
    bias: *const f32,
    o: &TileOut,
) {
    for c0 in range.step_by(V::N) {
        let m = |xi: usize| V::load(mt.add(xi * cout + c0));
        // Aᵀ M: rows 0+1+2 and 1-2-3 of each column ...
        let mut u = [[m(0); 4]; 2];
        for col in 0..4 {
            let (m0, m1, m2, m3) = (m(col), m(4 + col), m(8 + col), m(12 + col));
            u[0][col] = m0.add(m1).add(m2);
            u[1][col] = m1.sub(m2).sub(m3);
        }
        // ... then the same on the columns.
        let b = V::load(bias.add(c0));
        let y = [
            u[0][0].add(u[0][1]).add(u[0][2]).add(b),
            u[0][1].sub(u[0][2]).sub(u[0][3]).add(b),
            u[1][0].add(u[1][1]).add(u[1][2]).add(b),
            u[1][1].sub(u[1][2]).sub(u[1][3]).add(b),
        ];
        for (k, mut v) in y.into_iter().enumerate() {
            if let Some(r) = o.residual {
                v = v.add(V::load(r[k].add(c0)));
            }
            if o.relu {
                v = v.relu();
            }
            if let Some(keep) = o.keep {
                v = v.keep(keep[k].add(c0));
            }
            v.store(o.y[k].add(c0));
        }
    }
}
