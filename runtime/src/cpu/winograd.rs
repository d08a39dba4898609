//! Winograd F(m x m, 3x3) for the stride-1 3x3 convolutions (most of a ResNet's work): each m x m
//! block of outputs ("tile") comes from an (m+2) x (m+2) input patch, with `(m+2)²` multiplications
//! per input and output channel instead of `9 m²`: F(2x2) does 2.25x fewer FMAs than the direct
//! convolution (which is already at the machine's FMA peak), F(4x4) 4x fewer. Per unit of tiles:
//! 1. input transform `V = Bᵀ d B` of every tile's patch, vectorised over the channels
//!    (contiguous in NHWC);
//! 2. one matrix product `M[ξ] = V[ξ] U[ξ]` (tiles x Cin times Cin x Cout) per patch position ξ,
//!    on the same micro-kernels as the direct convolution (one "tap", a run of Cin);
//! 3. output transform `Y = Aᵀ M A`, the bias, then the epilogue (residual, ReLU, node mask).
//!
//! F(4x4) also does fewer transform operations and stores per output, which is what the narrow
//! 16-channel layers of stage 1 spend their time on; its weights are 36/9 of the direct ones
//! (F(2x2)'s: 16/9), and its constants (up to 8 and 1/24) round more. `Form::for_plane` says
//! which a network's layer gets; on an odd plane F(2x2)'s last tiles run past it (the caller
//! pads the input and cuts the plane out, `conv.rs`). `U = G g Gᵀ` is computed once at load, in
//! f64. The ResNet-20/56 logits stay within the golden tests' bound of PyTorch's
//! (`tests/golden_logits.rs`). The transforms are written once over [`Lanes`] and compiled for
//! AVX-512, AVX2, NEON and one lane, following the micro-kernel's instruction set.

use std::ops::Range;

use super::conv::{Plane, MAX_CHUNK_BLOCKS};
use super::epilogue::Epilogue;
use super::lanes::Lanes;
use super::microkernel::{panel_pairs, BlockOut, Isa, Microkernel, Receptive, MAX_MR, NR};

/// A Winograd form: the output tile it computes from one input patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// F(2x2, 3x3): 4x4 patches, constants 0, ±1 and ½.
    F2x2,
    /// F(4x4, 3x3): 6x6 patches, interpolation points 0, ±1, ±2 and ∞.
    F4x4,
}

/// Output pixels of a plane from which F(4x4) pays for its larger weights: measured per layer of
/// ResNet-20 at batch 64 (`benches/cpu_kernels.rs`, in `docs/architecture.md`).
const F4X4_MIN_PIXELS: usize = 16 * 16;

impl Form {
    /// Output rows (and columns) of a tile.
    pub fn outputs(self) -> usize {
        match self {
            Form::F2x2 => 2,
            Form::F4x4 => 4,
        }
    }

    /// Rows (and columns) of a tile's input patch.
    fn patch(self) -> usize {
        self.outputs() + 2
    }

    /// Positions ξ of a transformed patch: one matrix product each (and one weight per input and
    /// output channel).
    pub fn positions(self) -> usize {
        self.patch() * self.patch()
    }

    /// Tiles a unit transforms and multiplies at a time: whole register blocks of 6 at every
    /// plane width of a CIFAR ResNet; `V` and `M` (`positions x tiles x channels` each) stay in
    /// L2 (192 KiB and 216 KiB each at 64 channels).
    fn unit_tiles(self) -> usize {
        match self {
            Form::F2x2 => 48,
            Form::F4x4 => 24,
        }
    }

    /// Whether tiles of this form cover output plane `op` exactly.
    pub fn covers(self, op: Plane) -> bool {
        op.height.is_multiple_of(self.outputs()) && op.width.is_multiple_of(self.outputs())
    }

    /// The plane its tiles compute for output plane `op`: `op` rounded up to whole tiles.
    pub fn tiled(self, op: Plane) -> Plane {
        let m = self.outputs();
        Plane { height: op.height.next_multiple_of(m), width: op.width.next_multiple_of(m) }
    }

    /// Whether a convolution with output plane `op` runs in this form: where its tiles cover
    /// the plane exactly, or (F(2x2)) where the tiles that run past it still do at most 3/4 of
    /// the direct convolution's multiplications: the 7x7 planes of a ResNet at 224x224 (16
    /// tiles of 16 against 49 pixels of 9), not a 3x3 or smaller plane.
    pub fn runs(self, op: Plane) -> bool {
        let tiles = |p: Plane| p.height * p.width / (self.outputs() * self.outputs());
        self.covers(op)
            || self == Form::F2x2 && 4 * self.positions() * tiles(self.tiled(op)) <= 3 * 9 * op.height * op.width
    }

    /// The form a convolution with output plane `op` runs in, if any: F(4x4) on large planes
    /// its tiles cover, F(2x2) on smaller ones.
    pub fn for_plane(op: Plane) -> Option<Form> {
        if Form::F4x4.covers(op) && op.height * op.width >= F4X4_MIN_PIXELS {
            Some(Form::F4x4)
        } else {
            Some(Form::F2x2).filter(|f| f.runs(op))
        }
    }

    /// The weight transform's `G` (`patch x 3`).
    fn g(self) -> &'static [[f64; 3]] {
        const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        const G4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            Form::F2x2 => &G2,
            Form::F4x4 => &G4,
        }
    }
}

/// The transformed weights of one 3x3 convolution in one form, `[ξ][panel][ci][NR]` (channels
/// past `cout` zero), and what the tiles need to know.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    form: Form,
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
    /// whole vectors of 8 (the transforms' width). It also needs an output that its form's tiles
    /// cover exactly; the caller checks that per call.
    pub fn suits(kernel: usize, stride: usize, padding: usize, cin: usize) -> bool {
        kernel == 3 && stride == 1 && padding == 1 && cin >= 8 && cin.is_multiple_of(8)
    }

    /// Transforms `(out, in, 3, 3)` weights (row-major, as PyTorch stores them) into `form`.
    pub fn new(weight: &[f32], cout: usize, cin: usize, form: Form) -> Self {
        assert_eq!(weight.len(), cout * cin * 9);
        let (g, a) = (form.g(), form.patch());
        let panels = cout.div_ceil(NR);
        let mut weights = vec![0f32; a * a * panels * cin * NR];
        for co in 0..cout {
            for ci in 0..cin {
                let w = &weight[(co * cin + ci) * 9..][..9];
                // G w Gᵀ: patch x 3 times 3x3 times 3 x patch.
                let gw: Vec<[f64; 3]> = g
                    .iter()
                    .map(|gr| std::array::from_fn(|c| (0..3).map(|k| gr[k] * w[k * 3 + c] as f64).sum()))
                    .collect();
                for (r, gw) in gw.iter().enumerate() {
                    for (c, gc) in g.iter().enumerate() {
                        let u: f64 = (0..3).map(|k| gw[k] * gc[k]).sum();
                        let (panel, j) = (co / NR, co % NR);
                        weights[(((r * a + c) * panels + panel) * cin + ci) * NR + j] = u as f32;
                    }
                }
            }
        }
        WinogradWeights { form, cin, cout, weights }
    }

    /// The form the weights are in.
    pub fn form(&self) -> Form {
        self.form
    }

    /// Bytes of transformed weights held.
    pub fn bytes(&self) -> u64 {
        self.weights.len() as u64 * 4
    }

    /// Tile rows `first_tile_row..` of the call (a tile row is `m` output rows of one image;
    /// `dst` holds whole ones, NHWC) from the padded input `x` (plane `pp`, padding 1, and on
    /// the bottom and right whatever more the tiles need to cover the plane), plus
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
        let panels = 0..self.cout.div_ceil(NR);
        // SAFETY: `dst` is this call's alone, every channel of it.
        unsafe { self.tile_rows_of(kernel, x, pp, bias, e, first_tile_row, dst.as_mut_ptr(), dst.len(), panels) }
    }

    /// [`Self::tile_rows`] for the output channels of `panels` only (`NR` each; the last may be
    /// partial), into the `dst_len` floats at `dst`: the other channels there are neither read
    /// nor written, so calls for disjoint panels may run at once on the same output.
    ///
    /// # Safety
    /// `dst` is valid for writes of `dst_len` floats, and nothing else reads or writes the
    /// channels of `panels` there during the call.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_rows_of(
        &self,
        kernel: &Microkernel,
        x: &[f32],
        pp: Plane,
        bias: &[f32],
        e: &Epilogue,
        first_tile_row: usize,
        dst: *mut f32,
        dst_len: usize,
        panels: Range<usize>,
    ) {
        let (cin, cout, form) = (self.cin, self.cout, self.form);
        let m = form.outputs();
        assert!(pp.height >= 3 && pp.width >= 3, "plane {pp:?}");
        let op = Plane { height: pp.height - 2, width: pp.width - 2 };
        assert!(form.covers(op), "{form:?} tiles on a {op:?} output");
        assert!(panels.end <= cout.div_ceil(NR), "panels {panels:?} of {cout} channels");
        let channels = (panels.start * NR).min(cout)..(panels.end * NR).min(cout);
        let tiles_across = op.width / m;
        let row_len = m * op.width * cout;
        let image_len = pp.height * pp.width * cin;
        assert!(x.len().is_multiple_of(image_len) && dst_len.is_multiple_of(row_len), "input or output size");
        let tile_rows = x.len() / image_len * (op.height / m);
        assert!(first_tile_row + dst_len / row_len <= tile_rows, "tile rows past the input");
        // Whole tile rows per unit, at least one.
        let rows_per_unit = (form.unit_tiles() / tiles_across).max(1);
        let mut scratch = SCRATCH.take();
        let unit_tiles = rows_per_unit * tiles_across;
        let (v_len, m_len) = (unit_tiles * tile_len(form, cin), unit_tiles * tile_len(form, cout));
        let (v, mm) = super::conv::at_least(&mut scratch, v_len + m_len).split_at_mut(v_len);
        for (i, start) in (0..dst_len).step_by(rows_per_unit * row_len).enumerate() {
            let len = (rows_per_unit * row_len).min(dst_len - start);
            let u = UnitTiles {
                first: first_tile_row + i * rows_per_unit,
                rows: len / row_len,
                across: tiles_across,
                per_image: op.height / m,
            };
            let tiles = u.rows * u.across;
            let (vt, mt) = (tiles * tile_len(form, cin), tiles * tile_len(form, cout));
            transform_input(kernel.isa(), form, x, pp, cin, u, &mut v[..vt]);
            self.multiply(kernel, &v[..vt], tiles, &mut mm[..mt], panels.clone());
            // SAFETY: the unit's tile rows are the `len` floats from `start` of `dst` (the
            // caller's), of which this call writes `channels` only.
            unsafe {
                transform_output(
                    kernel.isa(),
                    form,
                    &mm[..mt],
                    op,
                    cout,
                    bias,
                    e,
                    u,
                    dst.add(start),
                    len,
                    channels.clone(),
                )
            };
        }
        if scratch.capacity() <= super::conv::KEEP_FLOATS {
            SCRATCH.set(scratch);
        }
    }

    /// `M[t][ξ] = V[t][ξ] U[ξ]` for the unit's tiles, the output channels of `panels`.
    fn multiply(&self, kernel: &Microkernel, v: &[f32], tiles: usize, m: &mut [f32], panels: Range<usize>) {
        let kernel = kernel.for_rows(tiles);
        let (cin, cout, mr, xis) = (self.cin, self.cout, kernel.mr(), self.form.positions());
        let (v_tile, m_tile) = (tile_len(self.form, cin), tile_len(self.form, cout));
        let all = cout.div_ceil(NR);
        let f = Receptive { taps: 1, run: cin, tap_stride: 0 };
        let zeros = [0f32; 2 * NR];
        let chunk = super::conv::blocks_per_chunk(mr, cin) * mr;
        for xi in 0..xis {
            for c0 in (0..tiles).step_by(chunk) {
                let n = chunk.min(tiles - c0).div_ceil(mr);
                let mut a = [[std::ptr::null::<f32>(); MAX_MR]; MAX_CHUNK_BLOCKS];
                for (b, a) in a.iter_mut().enumerate().take(n) {
                    let (t0, rows) = (c0 + b * mr, mr.min(tiles - c0 - b * mr));
                    for (i, p) in a.iter_mut().enumerate() {
                        // Rows past the unit repeat its last tile: computed, never stored.
                        *p = v[(t0 + i.min(rows - 1)) * v_tile + xi * cin..][..cin].as_ptr();
                    }
                }
                // Panel by panel over the chunk's blocks, as `PackedConv::tile` does.
                for (panel, count) in panel_pairs(panels.clone()) {
                    let cols = (count * NR).min(cout - panel * NR);
                    let w = &self.weights[((xi * all + panel) * cin) * NR..][..count * cin * NR];
                    for (b, a) in a.iter().enumerate().take(n) {
                        let (t0, rows) = (c0 + b * mr, mr.min(tiles - c0 - b * mr));
                        let at = t0 * m_tile + xi * cout + panel * NR;
                        let len = (rows - 1) * m_tile + cols;
                        let out = BlockOut {
                            rows,
                            cols,
                            c: m[at..][..len].as_mut_ptr(),
                            stride: m_tile,
                            residual: std::ptr::null(),
                            relu: false,
                            masks: [std::ptr::null(); MAX_MR],
                        };
                        // SAFETY: each pointer has the `cin` floats of one tile's position ξ
                        // (sliced above); `out` spans `rows` rows of stride positions*Cout with
                        // `cols` floats in the last (sliced above); `w` is `count` panels of
                        // U[ξ], `zeros` two panels' floats.
                        unsafe { kernel.run_panels(count, f, a.as_ptr(), w.as_ptr(), cin * NR, zeros.as_ptr(), &out) };
                    }
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

/// Unused floats after each tile's `positions x channels` in `V` and `M`. Without them a
/// block's rows (one position of consecutive tiles, `16 * Cin` floats apart for F(2x2): a
/// multiple of 4 KB) all fall into one set of the L1 cache, more than it has ways, and evict
/// each other at every step: ResNet-50's 3x3 at 14x14 (F(2x2), 256 channels) ran at 263-284
/// effective GFLOP/s, 406 with the gap.
const TILE_GAP: usize = 16;

/// Floats of one tile's `V` or `M` (`channels` per position) and the gap after it.
fn tile_len(form: Form, channels: usize) -> usize {
    form.positions() * channels + TILE_GAP
}

/// `V[t][ξ][ci]` of the unit's tiles (tile `t` at `t * tile_len(form, Cin)`).
fn transform_input(isa: Isa, form: Form, x: &[f32], pp: Plane, cin: usize, u: UnitTiles, v: &mut [f32]) {
    let (m, a) = (form.outputs(), form.patch());
    let v = &mut v[..u.rows * u.across * tile_len(form, cin)];
    // The `a` padded input rows a tile row reads; every tile's patch is `a` runs of `a*Cin`
    // floats in them, one padded row apart.
    let band = |b: usize, ty: usize| &x[(b * pp.height + m * ty) * pp.width * cin..][..a * pp.width * cin];
    // SAFETY (all four): `band` has every patch of the tile row; `v` has positions*Cin per tile;
    // Cin is a multiple of 8, so of 4 and 8 (of 16 where AVX-512 runs); AVX2 and AVX-512 run
    // only where the CPU has them (`Microkernel::available`).
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cin.is_multiple_of(16) => unsafe { input_avx512(form, &band, pp.width * cin, cin, u, v) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => unsafe { input_avx2(form, &band, pp.width * cin, cin, u, v) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { input_form::<super::lanes::Neon>(form, &band, pp.width * cin, cin, u, v) },
        _ => unsafe { input_form::<f32>(form, &band, pp.width * cin, cin, u, v) },
    }
}

/// A tile row's input rows, by image and tile row.
type Band<'a> = dyn Fn(usize, usize) -> &'a [f32] + 'a;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2(form: Form, band: &Band, row: usize, cin: usize, u: UnitTiles, v: &mut [f32]) {
    input_form::<super::lanes::Avx2>(form, band, row, cin, u, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn input_avx512(form: Form, band: &Band, row: usize, cin: usize, u: UnitTiles, v: &mut [f32]) {
    input_form::<super::lanes::Avx512>(form, band, row, cin, u, v)
}

#[inline(always)]
unsafe fn input_form<V: Lanes>(form: Form, band: &Band, row: usize, cin: usize, u: UnitTiles, v: &mut [f32]) {
    match form {
        Form::F2x2 => input_tiles::<V, Tiles2, 4, 2>(band, row, cin, u, v),
        Form::F4x4 => input_tiles::<V, Tiles4, 6, 4>(band, row, cin, u, v),
    }
}

/// One form's transforms along one axis of a patch (`A = M + 2` values), applied to the columns
/// and then to the rows: `Bᵀ` for the input, `Aᵀ` for the output.
trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ d` for one column `d` of a patch.
    unsafe fn input<V: Lanes>(d: [V; A]) -> [V; A];
    /// `Aᵀ m` for one column `m` of a transformed tile's products.
    unsafe fn output<V: Lanes>(m: [V; A]) -> [V; M];
}

/// F(2x2, 3x3)'s transforms.
struct Tiles2;

impl Transforms<4, 2> for Tiles2 {
    #[inline(always)]
    unsafe fn input<V: Lanes>([d0, d1, d2, d3]: [V; 4]) -> [V; 4] {
        [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
    }
    #[inline(always)]
    unsafe fn output<V: Lanes>([m0, m1, m2, m3]: [V; 4]) -> [V; 2] {
        [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
    }
}

/// F(4x4, 3x3)'s transforms, factored so that each output row takes two or three operations.
struct Tiles4;

impl Transforms<6, 4> for Tiles4 {
    #[inline(always)]
    unsafe fn input<V: Lanes>([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 6] {
        let (four, minus_four, minus_five) = (V::splat(4.0), V::splat(-4.0), V::splat(-5.0));
        let (two, minus_two) = (V::splat(2.0), V::splat(-2.0));
        let (d31, d42) = (d3.sub(d1), d4.sub(d2));
        [
            d2.mul_add(minus_five, d0.mul_add(four, d4)),
            d1.add(d2).mul_add(minus_four, d3.add(d4)),
            d1.sub(d2).mul_add(four, d4.sub(d3)),
            d31.mul_add(two, d42),
            d31.mul_add(minus_two, d42),
            d3.mul_add(minus_five, d1.mul_add(four, d5)),
        ]
    }
    #[inline(always)]
    unsafe fn output<V: Lanes>([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 4] {
        let (s12, d12, s34, d34) = (m1.add(m2), m1.sub(m2), m3.add(m4), m3.sub(m4));
        [
            m0.add(s12).add(s34),
            d34.mul_add(V::splat(2.0), d12),
            s34.mul_add(V::splat(4.0), s12),
            d34.mul_add(V::splat(8.0), d12).add(m5),
        ]
    }
}

/// Every tile's `Bᵀ d B`, `V::N` channels at a time; `row` floats from one padded row to the next.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `r` picks row r out of every column of `t`
unsafe fn input_tiles<V: Lanes, T: Transforms<A, M>, const A: usize, const M: usize>(
    band: &Band,
    row: usize,
    cin: usize,
    u: UnitTiles,
    v: &mut [f32],
) {
    let v = v.as_mut_ptr();
    for (b, ty, t0) in u.rows() {
        let rows = band(b, ty).as_ptr();
        for tx in 0..u.across {
            let d = rows.add(M * tx * cin);
            let vt = v.add((t0 + tx) * (A * A * cin + TILE_GAP));
            for c0 in (0..cin).step_by(V::N) {
                // Bᵀ d on every column (`t[col][r]` is row r of column col) ...
                // (Plain loops, not `std::array::from_fn` closures: a closure does not get this
                // function's target features, and when LLVM left it out of line every lane
                // operation inside became a call.)
                let zero = V::splat(0.0);
                let mut t = [[zero; A]; A];
                for col in 0..A {
                    let mut column = [zero; A];
                    for r in 0..A {
                        column[r] = V::load(d.add(r * row + col * cin + c0));
                    }
                    t[col] = T::input(column);
                }
                // ... then on every row.
                for r in 0..A {
                    let mut line = [zero; A];
                    for col in 0..A {
                        line[col] = t[col][r];
                    }
                    let x = T::input(line);
                    for col in 0..A {
                        x[col].store(vt.add((r * A + col) * cin + c0));
                    }
                }
            }
        }
    }
}

/// Where one tile's `M x M` output pixels go, with their epilogue's inputs.
struct TileOut<const M: usize> {
    y: [[*mut f32; M]; M],
    residual: Option<[[*const f32; M]; M]>,
    relu: bool,
    keep: Option<[[*const u8; M]; M]>,
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
    unsafe fn tile<const M: usize>(&self, b: usize, ty: usize, tx: usize) -> TileOut<M> {
        use std::array::from_fn;
        let (w, cout) = (self.op.width, self.cout);
        let pixels = self.op.height * w;
        let yx = |r: usize, c: usize| (M * ty + r) * w + M * tx + c;
        let at = |r: usize, c: usize| (b * pixels + yx(r, c)) * cout;
        TileOut {
            y: from_fn(|r| from_fn(|c| self.out.add(at(r, c) - self.base))),
            residual: self.e.residual.map(|res| from_fn(|r| from_fn(|c| res.as_ptr().add(at(r, c))))),
            relu: self.e.relu,
            keep: self.e.mask.map(|m| {
                // From the module's whole plane, so that the pointers stay within it.
                let plane = m.plane(b, pixels, cout).as_ptr();
                from_fn(|r| from_fn(|c| plane.add(yx(r, c) * cout)))
            }),
        }
    }
}

/// `Aᵀ M A + bias` of the unit's tiles, output channels `channels`, into their output tile rows
/// at `out` (`out_len` floats, NHWC), then the epilogue.
///
/// # Safety
/// `out` is valid for writes of `out_len` floats, and nothing else touches its `channels`.
#[allow(clippy::too_many_arguments)]
unsafe fn transform_output(
    isa: Isa,
    form: Form,
    m: &[f32],
    op: Plane,
    cout: usize,
    bias: &[f32],
    e: &Epilogue,
    u: UnitTiles,
    out: *mut f32,
    out_len: usize,
    channels: Range<usize>,
) {
    let row_len = form.outputs() * op.width * cout;
    assert_eq!(out_len, u.rows * row_len);
    assert!(m.len() >= u.rows * u.across * tile_len(form, cout) && bias.len() >= cout && channels.end <= cout);
    if let Some(r) = e.residual {
        assert!(r.len() >= (u.first + u.rows) * row_len, "residual size");
    }
    let o = UnitOut { out, base: u.first * row_len, op, cout, e };
    // SAFETY (all four): `out` holds the unit's tile rows whole (the caller's word), the
    // residual (checked above) and the masks (checked by the caller: every module's whole
    // plane) cover the call; `m` has positions*Cout per tile, `bias` Cout; AVX2 and AVX-512 run
    // only where the CPU has them; AVX-512 where the channels come in sixteens, as in
    // `transform_input` (AVX2's eights otherwise). Channels past whole vectors go one lane at a
    // time.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if channels.len().is_multiple_of(16) => unsafe { output_avx512(form, m, bias, u, &o, channels) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => unsafe { output_avx2(form, m, bias, u, &o, channels) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { output_form::<super::lanes::Neon>(form, m, bias, u, &o, channels) },
        _ => unsafe { output_form::<f32>(form, m, bias, u, &o, channels) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_avx2(form: Form, m: &[f32], bias: &[f32], u: UnitTiles, o: &UnitOut, channels: Range<usize>) {
    output_form::<super::lanes::Avx2>(form, m, bias, u, o, channels)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn output_avx512(form: Form, m: &[f32], bias: &[f32], u: UnitTiles, o: &UnitOut, channels: Range<usize>) {
    output_form::<super::lanes::Avx512>(form, m, bias, u, o, channels)
}

#[inline(always)]
unsafe fn output_form<V: Lanes>(
    form: Form,
    m: &[f32],
    bias: &[f32],
    u: UnitTiles,
    o: &UnitOut,
    channels: Range<usize>,
) {
    match form {
        Form::F2x2 => output_tiles::<V, Tiles2, 4, 2>(m, bias, u, o, channels),
        Form::F4x4 => output_tiles::<V, Tiles4, 6, 4>(m, bias, u, o, channels),
    }
}

/// Every tile's output channels `channels`, `V::N` at a time and the rest one by one.
#[inline(always)]
unsafe fn output_tiles<V: Lanes, T: Transforms<A, M>, const A: usize, const M: usize>(
    m: &[f32],
    bias: &[f32],
    u: UnitTiles,
    o: &UnitOut,
    channels: Range<usize>,
) {
    let cout = o.cout;
    let whole = channels.start + channels.len() / V::N * V::N;
    for (b, ty, t0) in u.rows() {
        for tx in 0..u.across {
            let t = o.tile::<M>(b, ty, tx);
            let mt = m.as_ptr().add((t0 + tx) * (A * A * cout + TILE_GAP));
            output_tile::<V, T, A, M>(mt, cout, channels.start..whole, bias.as_ptr(), &t);
            output_tile::<f32, T, A, M>(mt, cout, whole..channels.end, bias.as_ptr(), &t);
        }
    }
}

/// Channels `range` of one tile: `Aᵀ M A + bias`, `+ residual`, ReLU, `* mask`, stored.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `col` picks column col of `u` and of `mt`
unsafe fn output_tile<V: Lanes, T: Transforms<A, M>, const A: usize, const M: usize>(
    mt: *const f32,
    cout: usize,
    range: Range<usize>,
    bias: *const f32,
    o: &TileOut<M>,
) {
    for c0 in range.step_by(V::N) {
        // Aᵀ M on every column (`u[col][r]` is row r of column col) ...
        // (Plain loops: see `input_tiles`.)
        let zero = V::splat(0.0);
        let mut u = [[zero; M]; A];
        for col in 0..A {
            let mut column = [zero; A];
            for r in 0..A {
                column[r] = V::load(mt.add((r * A + col) * cout + c0));
            }
            u[col] = T::output(column);
        }
        // ... then on every row.
        let b = V::load(bias.add(c0));
        for r in 0..M {
            let mut line = [zero; A];
            for col in 0..A {
                line[col] = u[col][r];
            }
            let ys = T::output(line);
            for c in 0..M {
                let y = ys[c];
                let mut v = y.add(b);
                if let Some(res) = &o.residual {
                    v = v.add(V::load(res[r][c].add(c0)));
                }
                if o.relu {
                    v = v.relu();
                }
                if let Some(keep) = &o.keep {
                    v = v.keep(keep[r][c].add(c0));
                }
                v.store(o.y[r][c].add(c0));
            }
        }
    }
}
