//! One convolution of the CPU path: NHWC activations, weights packed once at load into panels of
//! [`NR`] output channels, and the output computed in register blocks of output pixels. The input
//! is first copied with its zero padding stored (a few percent of the layer's time), so that every
//! kernel row of every output pixel is one contiguous run of `k*Cin` floats; the micro-kernels of
//! `microkernel.rs` read it in place, start from the bias, and apply the epilogue (residual add,
//! ReLU, node mask) as they store. Stride-1 3x3 convolutions go through Winograd instead
//! (`winograd.rs`: F(4x4, 3x3) on large planes, 4x fewer multiplications, F(2x2, 3x3) on small
//! ones, 2.25x fewer; on the same micro-kernels). For small batches the work is split across
//! the cores (`team.rs`), by tiles of blocks or, where the tiles would be too few rows and the
//! channels are many, by panels of output channels, so a batch of one image still uses every
//! core; large batches arrive here as one slice per core. A call runs panel by panel over
//! chunks of register blocks, so that each panel's weights come from memory once. Where a
//! block's receptive fields would start a multiple of 4 KB apart (a bottleneck ResNet's deep
//! 1x1s, its strided shortcuts and last stage's strided 3x3), they are gathered spread out
//! first, as Winograd leaves a gap after each tile: else a block's rows evict each other in L1.

pub use super::epilogue::{Epilogue, StackedMask};
use super::microkernel::{panel_pairs, BlockOut, Microkernel, Receptive, MAX_MR, NR};
use super::recycled;
use super::team;
use super::winograd::{Form, WinogradWeights};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// A convolution with batch norm folded in, weights packed for the micro-kernels.
#[derive(Debug, Clone)]
pub struct PackedConv {
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// For the direct method: panels of `NR` output channels, `[panel][ky][kx][ci][NR]` (so
    /// kernel row `ky` is one run of `k*Cin` weights per channel, as it is of inputs), channels
    /// past `out_channels` zero. `None` when packed for one plane that Winograd covers.
    direct: Option<Vec<f32>>,
    /// `NR` per panel, padded with zeros.
    bias: Vec<f32>,
    /// The Winograd transforms of the weights, for a convolution they suit: both forms, or when
    /// packed for one plane, the one that plane runs in (`Form::for_plane`).
    winograd: Vec<WinogradWeights>,
}

/// How a convolution is computed. A convolution packed for one plane (`PackedConv::for_plane`)
/// holds one set of weights and uses it whichever method is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Straight from the padded input, on the micro-kernels.
    Direct,
    /// Winograd F(2x2, 3x3) (`winograd.rs`) where it applies: 3x3, stride 1, padding 1, input
    /// channels in whole vectors of 8, an even output; direct elsewhere.
    Winograd2x2,
    /// Winograd F(4x4, 3x3) where it applies (as F(2x2), on an output in multiples of 4); else
    /// F(2x2) where that applies, else direct.
    Winograd4x4,
}

/// Height and width of an NHWC activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Plane {
    /// The output plane of a `k` x `k` convolution of this input plane with `stride` and
    /// `padding` (the input at least `k` with its padding).
    pub fn convolved(self, k: usize, stride: usize, padding: usize) -> Plane {
        let o = |n: usize| (n + 2 * padding - k) / stride + 1;
        Plane { height: o(self.height), width: o(self.width) }
    }
}

/// How one convolution uses the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Tiles of the output (or panels of its channels, `channel_parts`) in parallel (`team.rs`):
    /// for small batches, where the batch itself cannot keep every thread busy.
    Tiles,
    /// Tiles one after the other on the calling thread: the caller runs slices of a large batch
    /// in parallel, each slice's activations staying in that core's cache.
    Caller,
}

/// Register blocks per tile: the unit of work when tiles run in parallel (small enough to give two
/// cores work on one 8x8 image, large enough to amortise a hand-off).
const TILE_BLOCKS: usize = 16;

thread_local! {
    /// The padded copy of the input, reused across calls on a thread.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Floats of a per-thread buffer kept for the next call; a larger one (a whole large batch run
/// in parallel tiles, as decomposition's counting does) is freed instead of held for good.
pub(crate) const KEEP_FLOATS: usize = 1 << 20;

/// A share of `units` (at least one) that gives every thread one: each part streams all of the
/// layer's weights (and Winograd's tiles their halo rows), so finer parts cost more than the
/// balance they buy; ResNet-20 at batch 1 on two cores took 0.34-0.38 ms in one part a thread,
/// 0.39-0.41 ms in two (same minutes, Intel Xeon with AVX-512, 2026-12-05).
fn per_thread_share(units: usize) -> usize {
    units.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Units (rows, tile rows) a part of a call takes: a thread's share when tiles run in parallel,
/// all of them on the calling thread.
fn units_per_part(units: usize, threads: Threads) -> usize {
    match threads {
        Threads::Tiles => per_thread_share(units),
        Threads::Caller => units,
    }
}

/// What a direct call reads: NHWC images of `plane`, `pixel` floats a pixel, at `stride`; a
/// pixel is the input's channels, or where `gathered` an output pixel's whole receptive field
/// (`PackedConv::spread`), then unused floats.
#[derive(Clone, Copy)]
struct Source<'a> {
    x: &'a [f32],
    plane: Plane,
    pixel: usize,
    stride: usize,
    gathered: bool,
}

/// Floats after each receptive field of a spread input (`PackedConv::spread`): one cache line.
const SPREAD: usize = 16;

/// Rows per tile when tiles run in parallel: at most [`TILE_BLOCKS`] blocks of `mr` rows, and
/// the rows divided by a multiple of the threads, so the tiles (the last may be shorter) give
/// each thread the same work. (Tiles in whole blocks left one thread a block more: ResNet-50's
/// 14x14 layers at batch 1 split 108 and 88 rows.) A tile's short last block runs on a lower
/// kernel.
fn balanced_tile(rows: usize, mr: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let tiles = rows.div_ceil(TILE_BLOCKS * mr).div_ceil(threads) * threads;
    rows.div_ceil(tiles).max(1)
}

/// The micro-kernels of a direct call: `main` for whole blocks, and for a tile's short last
/// block `tail`'s lowest that holds it (`Microkernel::for_rows`; a fixed kernel is its own).
#[derive(Clone, Copy)]
struct Blocks<'a> {
    main: &'a Microkernel,
    tail: &'a Microkernel,
}

/// `one(i, chunk)` for each chunk of `len` floats of `out`: in parallel or on this thread.
fn for_each_chunk(out: &mut [f32], len: usize, threads: Threads, one: impl Fn(usize, &mut [f32]) + Sync) {
    match threads {
        Threads::Tiles => {
            let shared = SharedOut { ptr: out.as_mut_ptr(), len: out.len() };
            team::for_each(out.len().div_ceil(len), |i| {
                let (ptr, total) = shared.get();
                let start = i * len;
                // SAFETY: chunk `i` of `out` (held by the caller), the only part that touches it.
                one(i, unsafe { std::slice::from_raw_parts_mut(ptr.add(start), len.min(total - start)) })
            })
        }
        Threads::Caller => out.chunks_mut(len).enumerate().for_each(|(i, c)| one(i, c)),
    }
}

/// `one(r, row)` for each row `r` of `row_len` floats of `out`: a thread's share of the rows a
/// part when tiles run in parallel, all of them on this thread otherwise.
pub(crate) fn for_each_row(out: &mut [f32], row_len: usize, threads: Threads, one: impl Fn(usize, &mut [f32]) + Sync) {
    if out.is_empty() || row_len == 0 {
        return;
    }
    let per = units_per_part(out.len() / row_len, threads);
    for_each_chunk(out, per * row_len, threads, |i, part| {
        for (r, row) in (i * per..).zip(part.chunks_exact_mut(row_len)) {
            one(r, row);
        }
    });
}

/// The first `len` floats of `buf`, grown to hold them where it is shorter. A longer buffer is
/// not shortened: growing it again would write zeros that the caller overwrites anyway.
pub(crate) fn at_least(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Parts to split a call into by output channels instead of by tiles (1: by tiles). Where each
/// thread's share of tiles is under a few register blocks of rows (a small image, as at batch 1),
/// tiles leave the micro-kernel's rows idle and every tile streams all the weights; split by
/// channels, every thread runs all rows against its own panels' weights. Only where every
/// thread gets at least two panels: ResNet-20's 8x8 layers of 64 channels at batch 1, 73 µs by
/// tiles, 40 µs by channels on this 2-core machine; its 16x16 layers of 32 channels (two panels)
/// are faster by tiles.
fn channel_parts(threads: Threads, panels: usize, rows_per_share: usize, mr: usize) -> usize {
    let n = rayon::current_num_threads();
    match threads {
        Threads::Tiles
            if SPLIT_BY_CHANNELS.load(Ordering::Relaxed) && n > 1 && panels >= 2 * n && rows_per_share < 4 * mr =>
        {
            n
        }
        _ => 1,
    }
}

/// Whether small calls may be split by channels (`channel_parts`); off only to measure what the
/// split gives (`benches/resnet_forward.rs`).
static SPLIT_BY_CHANNELS: AtomicBool = AtomicBool::new(true);

/// Lets small calls be split by channels (the default) or only by tiles: for benchmarks.
pub fn split_by_channels(on: bool) {
    SPLIT_BY_CHANNELS.store(on, Ordering::Relaxed);
}

/// `one(panels)` for `parts` contiguous ranges of `0..panels` that do not overlap, in parallel.
fn by_panels(parts: usize, panels: usize, one: impl Fn(Range<usize>) + Sync) {
    team::for_each(parts, |i| one(i * panels / parts..(i + 1) * panels / parts));
}

/// A call's output shared by the parts of a parallel call, each writing its own chunk or channels.
#[derive(Clone, Copy)]
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: only handed to parts that write disjoint chunks (`for_each_chunk`) or the channels of
// disjoint panel ranges (`by_panels`), while the `&mut` it was made from is held by the caller.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer and its length (a method, so that closures capture the whole `SharedOut`).
    fn get(self) -> (*mut f32, usize) {
        (self.ptr, self.len)
    }
}

/// The `op` part of each image of `tiled` (plane `tp`, NHWC, `cout` channels, the bias added)
/// into `out`, through the epilogue: what Winograd's tiles computed past an odd plane dropped.
fn crop(tiled: &[f32], tp: Plane, op: Plane, cout: usize, e: &Epilogue, out: &mut [f32], threads: Threads) {
    let row = op.width * cout;
    for_each_row(out, row, threads, |r, dst| {
        let (image, y) = (r / op.height, r % op.height);
        dst.copy_from_slice(&tiled[(image * tp.height + y) * tp.width * cout..][..row]);
        if let Some(res) = e.residual {
            dst.iter_mut().zip(&res[r * row..][..row]).for_each(|(d, s)| *d += s);
        }
        if e.relu {
            dst.iter_mut().for_each(|d| *d = d.max(0.0));
        }
        if let Some(m) = e.mask {
            let keep = &m.plane(image, op.height * op.width, cout)[y * row..][..row];
            dst.iter_mut().zip(keep).for_each(|(d, &k)| *d *= f32::from(k));
        }
    });
}

fn keep_padded(buf: Vec<f32>) {
    if buf.capacity() <= KEEP_FLOATS {
        PADDED.set(buf);
    }
}

impl PackedConv {
    /// Packs `(out, in, k, k)` weights (row-major, as PyTorch stores them) and a bias of `out`
    /// for every method and input plane.
    pub fn new(weight: &[f32], bias: Vec<f32>, dims: [usize; 4], stride: usize, padding: usize) -> Self {
        Self::pack(weight, bias, dims, stride, padding, None)
    }

    /// [`Self::new`] for input plane `p` only, with one set of weights: Winograd's in the form
    /// that `p` runs in where one applies, the direct method's elsewhere. (A network's planes
    /// are fixed; keeping every set would hold 61/9 of its convolutions' weights.)
    pub fn for_plane(
        weight: &[f32],
        bias: Vec<f32>,
        dims: [usize; 4],
        stride: usize,
        padding: usize,
        p: Plane,
    ) -> Self {
        Self::pack(weight, bias, dims, stride, padding, Some(p))
    }

    /// Floats (weights and bias) that [`Self::for_plane`] holds for `dims`, `stride` and
    /// `padding` on input plane `p`, without packing anything: what a module's resident memory
    /// is estimated from before it is loaded.
    pub fn planned_floats(dims: [usize; 4], stride: usize, padding: usize, p: Plane) -> u64 {
        let [out, inc, k, _] = dims;
        let lanes = (out.div_ceil(NR) * NR) as u64;
        let op = p.convolved(k, stride, padding);
        let form =
            Some(()).filter(|_| WinogradWeights::suits(k, stride, padding, inc)).and_then(|_| Form::for_plane(op));
        let taps = form.map_or(k * k, Form::positions) as u64;
        taps * inc as u64 * lanes + lanes
    }

    fn pack(
        weight: &[f32],
        bias: Vec<f32>,
        dims: [usize; 4],
        stride: usize,
        padding: usize,
        plane: Option<Plane>,
    ) -> Self {
        let [out, inc, k, k2] = dims;
        assert_eq!(k, k2, "square kernels");
        assert!(out > 0 && inc > 0 && k > 0 && stride > 0, "a convolution with nothing to compute: {dims:?}");
        assert_eq!(weight.len(), out * inc * k * k);
        assert_eq!(bias.len(), out);
        let (taps, panels) = (k * k, out.div_ceil(NR));
        let mut weights = vec![0f32; panels * taps * inc * NR];
        let mut padded = vec![0f32; panels * NR];
        for co in 0..out {
            let (panel, j) = (co / NR, co % NR);
            padded[co] = bias[co];
            for ci in 0..inc {
                for t in 0..taps {
                    // Tap t = ky*k + kx.
                    weights[((panel * taps + t) * inc + ci) * NR + j] = weight[((co * inc + ci) * taps) + t];
                }
            }
        }
        let mut conv = PackedConv {
            in_channels: inc,
            out_channels: out,
            kernel: k,
            stride,
            padding,
            direct: Some(weights),
            bias: padded,
            winograd: Vec::new(),
        };
        if WinogradWeights::suits(k, stride, padding, inc) {
            let forms = match plane {
                None => vec![Form::F2x2, Form::F4x4],
                Some(p) => Form::for_plane(conv.out_plane(p)).into_iter().collect(),
            };
            if plane.is_some() && !forms.is_empty() {
                conv.direct = None;
            }
            conv.winograd = forms.into_iter().map(|f| WinogradWeights::new(weight, out, inc, f)).collect();
        }
        conv
    }

    /// Channels the convolution takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Channels it gives.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Bytes of weights and bias this convolution holds (what it adds to a process's memory).
    pub fn weight_bytes(&self) -> u64 {
        let direct = self.direct.as_ref().map_or(0, |w| w.len() as u64 * 4);
        direct + self.winograd.iter().map(WinogradWeights::bytes).sum::<u64>() + self.bias.len() as u64 * 4
    }

    /// The output plane for input plane `p`.
    pub fn out_plane(&self, p: Plane) -> Plane {
        p.convolved(self.kernel, self.stride, self.padding)
    }

    /// Convolves `batch` NHWC images `x` of plane `p` into `out` (NHWC, `batch * Ho*Wo*Cout`),
    /// with the fastest micro-kernel this CPU has, by the Winograd form with the fewest
    /// multiplications that applies.
    pub fn forward(&self, x: &[f32], batch: usize, p: Plane, e: &Epilogue, out: &mut [f32], threads: Threads) {
        self.forward_with(Microkernel::best(), Method::Winograd4x4, x, batch, p, e, out, threads)
    }

    /// The Winograd weights a call with `method` on output plane `op` runs with; `None`: direct.
    /// A convolution packed for one plane has one set and runs it on that plane.
    fn winograd_for(&self, method: Method, op: Plane) -> Option<&WinogradWeights> {
        let form = |f: Form| self.winograd.iter().find(|w| w.form() == f && f.runs(op));
        match method {
            _ if self.direct.is_none() => self.winograd.first().filter(|w| w.form().runs(op)),
            Method::Direct => None,
            Method::Winograd2x2 => form(Form::F2x2),
            Method::Winograd4x4 => form(Form::F4x4).or_else(|| form(Form::F2x2)),
        }
    }

    /// [`Self::forward`] with a given micro-kernel and method (tests run every combination).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self,
        kernel: &Microkernel,
        method: Method,
        x: &[f32],
        batch: usize,
        p: Plane,
        e: &Epilogue,
        out: &mut [f32],
        threads: Threads,
    ) {
        let op = self.out_plane(p);
        let cout = self.out_channels;
        let pixels = op.height * op.width;
        assert_eq!(x.len(), batch * p.height * p.width * self.in_channels, "input size");
        assert_eq!(out.len(), batch * pixels * cout, "output size");
        if let Some(r) = e.residual {
            assert_eq!(r.len(), out.len(), "residual size");
        }
        if let Some(m) = e.mask {
            let modules = (m.first_image + batch).div_ceil(m.images_per_module.max(1));
            assert!(m.masks.len() >= modules * pixels * cout, "mask size");
        }
        if out.is_empty() {
            return;
        }
        // Taken out of the thread-local, not borrowed: a thread that steals another
        // convolution's work while this one runs gets a buffer of its own.
        let mut padded = PADDED.take();
        let panels = cout.div_ceil(NR);
        let wg = self.winograd_for(method, op);
        // Winograd's tiles may run past the plane (F(2x2) on an odd one): they compute the
        // tiled plane, from an input padded with zeros to match, into a buffer of their own.
        let tp = wg.map_or(op, |w| w.form().tiled(op));
        let extra = (tp.height - op.height, tp.width - op.width);
        let src = match wg.is_none() && self.spreads() {
            true => self.spread(x, batch, p, &mut padded, threads),
            false => self.pad(x, batch, p, extra, &mut padded, threads),
        };
        let (input, pp) = (src.x, src.plane);
        match wg {
            Some(wg) => {
                let mut tiled = (tp != op).then(|| recycled::take(batch * tp.height * tp.width * cout));
                let plain = Epilogue { residual: None, relu: false, mask: None };
                let (dst, e_tiles) = match tiled.as_mut() {
                    Some(t) => (&mut t[..], &plain),
                    None => (&mut *out, e),
                };
                let shared = SharedOut { ptr: dst.as_mut_ptr(), len: dst.len() };
                // Work in tile rows: a tile's output rows of one image, contiguous in NHWC.
                let m = wg.form().outputs();
                let per = units_per_part(batch * tp.height / m, threads);
                // Each unit's matrix products pick their block height for its tiles.
                let mr = kernel.for_rows(per * (tp.width / m)).mr();
                match channel_parts(threads, panels, per * (tp.width / m), mr) {
                    1 => for_each_chunk(dst, per * m * tp.width * cout, threads, |i, dst| {
                        wg.tile_rows(kernel, input, pp, &self.bias, e_tiles, i * per, dst)
                    }),
                    // SAFETY: `shared` is `dst`, whole and held here; the parts' panels are disjoint.
                    parts => by_panels(parts, panels, |range| unsafe {
                        let (dst, len) = shared.get();
                        wg.tile_rows_of(kernel, input, pp, &self.bias, e_tiles, 0, dst, len, range)
                    }),
                }
                if let Some(t) = tiled {
                    crop(&t, tp, op, cout, e, out, threads);
                    recycled::give(t);
                }
            }
            None => {
                let shared = SharedOut { ptr: out.as_mut_ptr(), len: out.len() };
                let weights = self.direct.as_deref().expect("a convolution packed for one plane runs on that plane");
                let rows = batch * pixels;
                let share = per_thread_share(rows);
                let family = kernel;
                let kernel = &kernel.for_rows(match threads {
                    Threads::Tiles => share,
                    Threads::Caller => rows,
                });
                let mr = kernel.mr();
                let tile = match threads {
                    Threads::Tiles => balanced_tile(rows, mr),
                    Threads::Caller => TILE_BLOCKS * mr,
                };
                let blocks = Blocks { main: kernel, tail: family };
                match channel_parts(threads, panels, share, mr) {
                    1 => for_each_chunk(out, tile * cout, threads, |t, dst| {
                        let all = 0..panels;
                        // SAFETY: `dst` is this tile's alone, every channel of it.
                        unsafe { self.tile(blocks, weights, src, op, e, t * tile, dst.as_mut_ptr(), dst.len(), all) }
                    }),
                    // SAFETY: as above.
                    parts => by_panels(parts, panels, |range| unsafe {
                        let (dst, len) = shared.get();
                        self.tile(blocks, weights, src, op, e, 0, dst, len, range)
                    }),
                }
            }
        }
        keep_padded(padded);
    }

    /// The input with its zero padding stored, on the padded plane (`x` itself without
    /// padding), pixels packed, at the convolution's stride; `extra` (rows, columns) more zeros
    /// on the bottom and the right. Copied in parallel for small batches (`Threads::Tiles`): at
    /// batch 1 the copy was the largest part of a layer left on one core.
    fn pad<'a>(
        &self,
        x: &'a [f32],
        batch: usize,
        p: Plane,
        extra: (usize, usize),
        buf: &'a mut Vec<f32>,
        threads: Threads,
    ) -> Source<'a> {
        let pad = self.padding;
        let (cin, stride) = (self.in_channels, self.stride);
        if pad == 0 && extra == (0, 0) {
            return Source { x, plane: p, pixel: cin, stride, gathered: false };
        }
        let pp = Plane { height: p.height + 2 * pad + extra.0, width: p.width + 2 * pad + extra.1 };
        let (row, prow) = (p.width * cin, pp.width * cin);
        // Every float is written below (borders zeroed, the rest copied): no need to clear.
        let buf = at_least(buf, batch * pp.height * prow);
        for_each_row(buf, prow, threads, |r, dst| {
            let (image, y) = (r / pp.height, r % pp.height);
            if y < pad || y >= pad + p.height {
                dst.fill(0.0);
                return;
            }
            let src = &x[(image * p.height + y - pad) * row..][..row];
            let (left, rest) = dst.split_at_mut(pad * cin);
            let (inside, right) = rest.split_at_mut(row);
            left.fill(0.0);
            inside.copy_from_slice(src);
            right.fill(0.0);
        });
        Source { x: buf, plane: pp, pixel: cin, stride, gathered: false }
    }

    /// Whether the receptive fields a block reads would start a multiple of 4 KB apart (a 1x1
    /// convolution of a multiple of 1024 input channels; of 512 at stride 2, 1x1 or 3x3): all of a
    /// block's rows then fall into one set of the L1 cache, more than it has ways, and evict
    /// each other at every step. ResNet-50's 1024->256 1x1 at 14x14 ran at 130 GFLOP/s, the same
    /// with 1040 channels at 206. (A larger kernel at stride 1 is left alone: its gathered
    /// fields would take `k*k` times its input.)
    fn spreads(&self) -> bool {
        (self.kernel == 1 || self.stride > 1) && (self.stride * self.in_channels * 4).is_multiple_of(4096)
    }

    /// For a convolution that [`Self::spreads`]: each output pixel's receptive field gathered
    /// (`k` kernel rows of `k*Cin` floats, zeros where it runs over the padding; a 1x1's one
    /// input pixel), followed by [`SPREAD`] floats that are never read, so that consecutive
    /// fields fall into different sets of the L1 cache. The copy is a few percent of the layer.
    fn spread<'a>(&self, x: &[f32], batch: usize, p: Plane, buf: &'a mut Vec<f32>, threads: Threads) -> Source<'a> {
        let (cin, k, s, pad) = (self.in_channels, self.kernel, self.stride, self.padding);
        let op = self.out_plane(p);
        let pixel = k * k * cin + SPREAD;
        let row = op.width * pixel;
        // Every float is written below (fields copied or zeroed, gaps zeroed).
        let buf = at_least(buf, batch * op.height * row);
        for_each_row(buf, row, threads, |r, dst| {
            let (image, oy) = (r / op.height, r % op.height);
            for (ox, field) in dst.chunks_exact_mut(pixel).enumerate() {
                let (taps, gap) = field.split_at_mut(k * k * cin);
                for (t, tap) in taps.chunks_exact_mut(cin).enumerate() {
                    let (iy, ix) = ((oy * s + t / k).checked_sub(pad), (ox * s + t % k).checked_sub(pad));
                    match (iy, ix) {
                        (Some(iy), Some(ix)) if iy < p.height && ix < p.width => {
                            tap.copy_from_slice(&x[((image * p.height + iy) * p.width + ix) * cin..][..cin])
                        }
                        _ => tap.fill(0.0),
                    }
                }
                gap.fill(0.0);
            }
        });
        Source { x: buf, plane: op, pixel, stride: 1, gathered: true }
    }

    /// Output rows `r0..` (pixels in NHWC order over the call), the channels of `panels`, into
    /// the `dst_len` floats at `dst`, finished; `src` is padded or spread. The other channels
    /// there are neither read nor written.
    ///
    /// # Safety
    /// `dst` is valid for writes of `dst_len` floats, and nothing else reads or writes the
    /// channels of `panels` there during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        blocks: Blocks<'_>,
        weights: &[f32],
        src: Source<'_>,
        op: Plane,
        e: &Epilogue,
        r0: usize,
        dst: *mut f32,
        dst_len: usize,
        panels: Range<usize>,
    ) {
        let (cin, cout, k) = (self.in_channels, self.out_channels, self.kernel);
        let Source { x, plane: pp, pixel, stride: s, gathered } = src;
        let mr = blocks.main.mr();
        assert!(dst_len.is_multiple_of(cout) && panels.end <= cout.div_ceil(NR), "output size or panels");
        let m = dst_len / cout;
        let pixels = op.height * op.width;
        let image_len = pp.height * pp.width * pixel;
        // A gathered field is one run, in the order of the weights (kernel row, column, channel).
        let f = match gathered {
            true => Receptive { taps: 1, run: k * k * cin, tap_stride: 0 },
            false => Receptive { taps: k, run: k * cin, tap_stride: pp.width * pixel },
        };
        let panel_len = k * k * cin * NR;
        // The last input a receptive field reads, from its top-left: what each pointer must have.
        let field = (f.taps - 1) * f.tap_stride + f.run;
        let residual = e.residual.map(|r| &r[r0 * cout..][..dst_len]);
        // The next row's image and output pixel, stepped rather than divided out per row.
        let (mut image, mut oy, mut ox) = (r0 / pixels, r0 % pixels / op.width, r0 % op.width);
        // Only the tile's last block may be short: it runs on the lowest kernel that holds it.
        let short = m % mr;
        let tail = Some(blocks.tail.for_rows(short))
            .filter(|t| short > 0 && short <= t.mr() && t.mr() < mr)
            .unwrap_or(*blocks.main);
        let chunk = blocks_per_chunk(mr, f.taps * f.run);
        let mut c0 = 0;
        while c0 < m {
            let n = chunk.min((m - c0).div_ceil(mr));
            let mut a = [[std::ptr::null::<f32>(); MAX_MR]; MAX_CHUNK_BLOCKS];
            let mut masks = [[std::ptr::null::<u8>(); MAX_MR]; MAX_CHUNK_BLOCKS];
            for b in 0..n {
                let rows = mr.min(m - c0 - b * mr);
                for i in 0..rows {
                    a[b][i] = x[image * image_len + (oy * s * pp.width + ox * s) * pixel..][..field].as_ptr();
                    if let Some(m) = e.mask {
                        masks[b][i] = m.keep(image, oy * op.width + ox, pixels, cout).as_ptr();
                    }
                    ox += 1;
                    if ox == op.width {
                        (ox, oy) = (0, oy + 1);
                        if oy == op.height {
                            (oy, image) = (0, image + 1);
                        }
                    }
                }
                // Rows past the tile repeat its last row: computed, never stored.
                for i in rows..MAX_MR {
                    a[b][i] = a[b][rows - 1];
                }
            }
            // Panel by panel over the chunk's blocks: a panel's weights come from memory once and
            // stay in L1/L2 for the other blocks, while the chunk's inputs stay in L2.
            for (panel, count) in panel_pairs(panels.clone()) {
                let cols = (count * NR).min(cout - panel * NR);
                let w = &weights[panel * panel_len..][..count * panel_len];
                let bias = &self.bias[panel * NR..][..count * NR];
                for b in 0..n {
                    let first = c0 + b * mr;
                    let rows = mr.min(m - first);
                    let at = first * cout + panel * NR;
                    let len = (rows - 1) * cout + cols;
                    assert!(at + len <= dst_len);
                    let out = BlockOut {
                        rows,
                        cols,
                        // SAFETY: within the `dst_len` floats at `dst` (asserted above).
                        c: unsafe { dst.add(at) },
                        stride: cout,
                        residual: residual.map_or(std::ptr::null(), |r| r[at..][..len].as_ptr()),
                        relu: e.relu,
                        masks: if e.mask.is_some() { masks[b].map(|p| p.wrapping_add(panel * NR)) } else { masks[b] },
                    };
                    let kernel = if rows < mr { &tail } else { blocks.main };
                    // SAFETY: each of the mr pointers has the `field` floats of its receptive
                    // field, and `out`'s output and residual the `len` floats of `rows` rows of
                    // stride `cout` (sliced or asserted above; the output's channels of this panel
                    // are the caller's to write); each mask row has `cout` bytes from the panel's
                    // start (`StackedMask::keep`); `w` and the bias are `count` whole panels.
                    unsafe { kernel.run_panels(count, f, a[b].as_ptr(), w.as_ptr(), panel_len, bias.as_ptr(), &out) };
                }
            }
            c0 += n * mr;
        }
    }
}

/// The most register blocks a direct call runs panel by panel (`PackedConv::tile`).
pub(crate) const MAX_CHUNK_BLOCKS: usize = 16;

/// Bytes of inputs the blocks of one chunk may read: they are read again for every panel, so
/// they should stay in L2 (1-2 MB on the CPUs measured) beside a panel's weights.
const CHUNK_INPUT_BYTES: usize = 256 << 10;

/// Whether direct calls (and Winograd's products) run panel by panel over chunks of blocks, else
/// block by block over all the panels. By blocks, each block streamed all of the call's
/// weights, and the first one from memory; by panels, a panel comes from memory once and is read
/// from L1/L2 for the chunk's other blocks, and the kernels' prefetch of the next panel
/// (`microkernel.rs`) overlaps its arrival with this panel's work. ResNet-50 at batch 1 on the
/// 2-core Zen 5 EPYC, alternating: 20.2 ms by panels with the prefetch, 23.2-25.8 ms by blocks
/// with it, 23.1 ms by blocks without (2026-12-08). A switch for measuring.
static PANEL_OUTER: AtomicBool = AtomicBool::new(true);

/// Direct calls panel by panel over chunks of blocks (the default), or block by block: for
/// benchmarks.
pub fn panel_outer(on: bool) {
    PANEL_OUTER.store(on, Ordering::Relaxed);
}

/// Register blocks of `mr` rows, each reading `field` floats a row, that one chunk takes.
pub(crate) fn blocks_per_chunk(mr: usize, field: usize) -> usize {
    match PANEL_OUTER.load(Ordering::Relaxed) {
        true => (CHUNK_INPUT_BYTES / (mr * field * 4).max(1)).clamp(1, MAX_CHUNK_BLOCKS),
        false => 1,
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

    /// One case of the convolution against its definition: every micro-kernel this CPU runs,
    /// both thread modes, both methods (Winograd falls back to direct where it does not apply);
    /// with the epilogue, a residual, ReLU and stacked masks (`images_per_module` images a
    /// module, the call's first image being image `first_image` of the stack) against the same
    /// applied by hand.
    #[allow(clippy::too_many_arguments)]
    fn check(
        batch: usize,
        cin: usize,
        cout: usize,
        p: Plane,
        k: usize,
        s: usize,
        pad: usize,
        seed: u64,
        with_epilogue: bool,
        (images_per_module, first_image): (usize, usize),
    ) -> Result<(), TestCaseError> {
        let dims = [cout, cin, k, k];
        let x = values(batch * p.height * p.width * cin, seed);
        let w = values(cout * cin * k * k, seed + 1);
        let bias = values(cout, seed + 2);
        let conv = PackedConv::new(&w, bias.clone(), dims, s, pad);
        // Packed for this plane only: one set of weights, whichever method is asked for.
        let planned = PackedConv::for_plane(&w, bias.clone(), dims, s, pad, p);
        let op = conv.out_plane(p);
        let n = batch * op.height * op.width * cout;
        let mut want = reference(&x, &w, &bias, dims, batch, p, s, pad);
        let residual = values(n, seed + 3);
        let plane = op.height * op.width * cout;
        let modules = (first_image + batch).div_ceil(images_per_module);
        let masks: Vec<u8> = values(modules * plane, seed + 4).iter().map(|v| u8::from(*v > -0.2)).collect();
        let e = if with_epilogue {
            for (i, v) in want.iter_mut().enumerate() {
                let module = (first_image + i / plane) / images_per_module;
                *v = (*v + residual[i]).max(0.0) * f32::from(masks[module * plane + i % plane]);
            }
            Epilogue {
                residual: Some(&residual),
                relu: true,
                mask: Some(StackedMask { masks: &masks, images_per_module, first_image }),
            }
        } else {
            Epilogue { residual: None, relu: false, mask: None }
        };
        // Tiles in parallel on this machine's pool and on pools of 2 and 3 threads, whatever
        // this machine has: how a call is split (by tiles or by channels) depends on it.
        let tiles = [("global", None), ("2 threads", Some(&pools()[0])), ("3 threads", Some(&pools()[1]))]
            .map(|(name, pool)| (Threads::Tiles, name, pool));
        for kernel in Microkernel::available() {
            for method in [Method::Direct, Method::Winograd2x2, Method::Winograd4x4] {
                for (threads, pool_name, pool) in tiles.into_iter().chain([(Threads::Caller, "caller", None)]) {
                    for (packing, conv) in [("new", &conv), ("for_plane", &planned)] {
                        let mut got = vec![f32::NAN; n];
                        let mut run = || conv.forward_with(&kernel, method, &x, batch, p, &e, &mut got, threads);
                        match pool {
                            Some(pool) => pool.install(run),
                            None => run(),
                        }
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            prop_assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{kernel:?} {method:?} {threads:?} ({pool_name}) {packing} element {i}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Thread pools of 2 and 3 threads, made once.
    fn pools() -> &'static [rayon::ThreadPool; 2] {
        static POOLS: std::sync::OnceLock<[rayon::ThreadPool; 2]> = std::sync::OnceLock::new();
        POOLS.get_or_init(|| [2, 3].map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()))
    }

    /// A small call is split by channels where tiles would leave each thread under four register
    /// blocks of rows and the channels give every thread two panels or more; else by tiles.
    #[test]
    fn small_calls_with_many_channels_split_by_channels() {
        let [two, three] = pools();
        two.install(|| {
            assert_eq!(channel_parts(Threads::Tiles, 4, 4, 6), 2, "ResNet-20's 8x8 layers at batch 1");
            assert_eq!(channel_parts(Threads::Tiles, 3, 4, 6), 1, "one panel for one of the threads");
            assert_eq!(channel_parts(Threads::Tiles, 4, 24, 6), 1, "enough rows for tiles");
            assert_eq!(channel_parts(Threads::Caller, 4, 4, 6), 1, "one thread");
        });
        three.install(|| {
            assert_eq!(channel_parts(Threads::Tiles, 6, 4, 6), 3);
            assert_eq!(channel_parts(Threads::Tiles, 5, 4, 6), 1);
        });
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        one.install(|| assert_eq!(channel_parts(Threads::Tiles, 8, 1, 6), 1));
    }

    /// An empty batch computes nothing, on either method, and does not panic.
    #[test]
    fn an_empty_batch_computes_nothing() {
        let conv = PackedConv::new(&values(16 * 8 * 9, 1), values(16, 2), [16, 8, 3, 3], 1, 1);
        let e = Epilogue { residual: None, relu: true, mask: None };
        for kernel in Microkernel::available() {
            for method in [Method::Direct, Method::Winograd2x2, Method::Winograd4x4] {
                for threads in [Threads::Tiles, Threads::Caller] {
                    conv.forward_with(&kernel, method, &[], 0, Plane { height: 8, width: 8 }, &e, &mut [], threads);
                }
            }
        }
    }

    /// A network's convolution keeps one set of weights: F(4x4)'s 36 per input and output
    /// channel on a plane large enough for it, F(2x2)'s 16 on a smaller one (an odd one too,
    /// its last tiles running past it), the direct 9 on a plane too small for that to pay.
    #[test]
    fn packing_for_a_plane_keeps_one_set_of_weights() {
        let (cout, cin) = (32, 16);
        let (w, b) = (values(cout * cin * 9, 1), values(cout, 2));
        let bytes = |p: Option<Plane>| {
            let dims = [cout, cin, 3, 3];
            match p {
                Some(p) => PackedConv::for_plane(&w, b.clone(), dims, 1, 1, p).weight_bytes(),
                None => PackedConv::new(&w, b.clone(), dims, 1, 1).weight_bytes(),
            }
        };
        let bias = (cout * 4) as u64;
        let per = |n: usize| (n * cin * cout * 4) as u64 + bias;
        assert_eq!(bytes(Some(Plane { height: 7, width: 8 })), per(16), "odd: F(2x2) past the plane");
        assert_eq!(bytes(Some(Plane { height: 7, width: 7 })), per(16), "ResNet-50's stage 4 at 224x224");
        assert_eq!(bytes(Some(Plane { height: 3, width: 3 })), per(9), "16 of 4 tiles against 81 of 9: direct");
        assert_eq!(bytes(Some(Plane { height: 1, width: 1 })), per(9));
        assert_eq!(bytes(Some(Plane { height: 8, width: 8 })), per(16));
        assert_eq!(bytes(Some(Plane { height: 16, width: 18 })), per(16), "not in fours: F(2x2)");
        assert_eq!(bytes(Some(Plane { height: 16, width: 16 })), per(36));
        assert_eq!(bytes(Some(Plane { height: 32, width: 32 })), per(36));
        assert_eq!(bytes(None), per(9 + 16 + 36), "packed for every plane: all three");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Convolutions whose receptive fields are gathered spread out first (1x1s of 1024 or
        /// 2048 input channels, 1x1s and 3x3s of 512 or 1024 at stride 2: ResNet-50's deep layers,
        /// its shortcuts and its last stage's first 3x3), with partial panels and the epilogue.
        #[test]
        fn spread_convolutions_match_the_definition(
            batch in 1usize..3,
            (cin, k, s) in prop::sample::select(vec![(1024usize, 1usize, 1usize), (2048, 1, 1), (512, 1, 2), (1024, 1, 2), (512, 3, 2), (1024, 3, 2)]),
            // Up to 99 outputs: seven panels, so small calls are also split by channels.
            cout in 1usize..100, h in 1usize..6, w in 1usize..6, seed in 0u64..1000, with_epilogue in any::<bool>(),
        ) {
            let pad = k / 2;
            let conv = PackedConv::new(&values(cout * cin * k * k, 1), values(cout, 2), [cout, cin, k, k], s, pad);
            prop_assert!(conv.spreads(), "{k}x{k} of {cin} channels at stride {s} is spread");
            check(batch, cin, cout, Plane { height: h, width: w }, k, s, pad, seed, with_epilogue, (1, 0))?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The estimate of a convolution's packed size is what packing it holds.
        #[test]
        fn planned_floats_are_what_packing_holds(
            cin in 1usize..40, cout in 1usize..40, hw in 3usize..34, wider in 0usize..2,
            k in prop::sample::select(vec![1usize, 3]), s in 1usize..3,
        ) {
            let (dims, pad, p) = ([cout, cin, k, k], k / 2, Plane { height: hw, width: hw + wider });
            let conv = PackedConv::for_plane(&values(cout * cin * k * k, 1), values(cout, 2), dims, s, pad, p);
            prop_assert_eq!(conv.weight_bytes(), 4 * PackedConv::planned_floats(dims, s, pad, p));
        }

        /// Random shapes, strides, paddings, kernels, odd channel counts and batch sizes.
        #[test]
        fn conv_matches_the_definition(
            batch in 1usize..5, cin in 1usize..19, cout in 1usize..40, hw in 1usize..12, wider in 0usize..2,
            k in prop::sample::select(vec![1usize, 3, 5]), s in 1usize..3, seed in 0u64..1000,
            pad in 0usize..5, with_epilogue in any::<bool>(), ipm in 1usize..4, first in 0usize..4,
        ) {
            // Any padding a kernel can have: none up to k - 1.
            let pad = pad.min(k - 1);
            prop_assume!(hw + 2 * pad >= k);
            let p = Plane { height: hw, width: hw + wider };
            check(batch, cin, cout, p, k, s, pad, seed, with_epilogue, (ipm, first))?;
        }

        /// The shapes Winograd takes (3x3, stride 1, padding 1, input channels in eights), even
        /// and odd planes (odd ones on F(2x2) tiles run past the plane where that pays, else
        /// direct), partial output panels.
        #[test]
        fn winograd_matches_the_definition(
            batch in 1usize..5, eights in 1usize..5, cout in 1usize..40, h in 1usize..11, w in 1usize..11,
            seed in 0u64..1000, with_epilogue in any::<bool>(), ipm in 1usize..4, first in 0usize..4,
        ) {
            check(batch, 8 * eights, cout, Plane { height: h, width: w }, 3, 1, 1, seed, with_epilogue, (ipm, first))?;
        }

        /// Small planes with four to seven panels of output channels, where the calls of small
        /// batches are split by channels (Winograd and direct, strides 1 and 2, partial panels).
        #[test]
        fn calls_split_by_channels_match_the_definition(
            batch in 1usize..3, eights in 1usize..4, cout in 49usize..112, h in 1usize..9, w in 1usize..9,
            s in 1usize..3, seed in 0u64..1000, with_epilogue in any::<bool>(), ipm in 1usize..3, first in 0usize..3,
        ) {
            check(batch, 8 * eights, cout, Plane { height: h, width: w }, 3, s, 1, seed, with_epilogue, (ipm, first))?;
        }

        /// Planes in fours, where F(4x4) runs (and F(2x2) beside it), from one tile to several
        /// across and down, with the epilogue and slices of stacked masks.
        #[test]
        fn winograd_4x4_matches_the_definition(
            batch in 1usize..4, eights in 1usize..5, cout in 1usize..40, h in 1usize..4, w in 1usize..4,
            seed in 0u64..1000, with_epilogue in any::<bool>(), ipm in 1usize..4, first in 0usize..4,
        ) {
            let p = Plane { height: 4 * h, width: 4 * w };
            check(batch, 8 * eights, cout, p, 3, 1, 1, seed, with_epilogue, (ipm, first))?;
        }
    }
}
