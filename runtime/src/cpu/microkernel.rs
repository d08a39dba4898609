//! The convolution's micro-kernels. A kernel computes one register block of `MR` output pixels x
//! `NR` output channels straight from a zero-padded NHWC input: it is handed one pointer per output
//! pixel, to the top-left input of its receptive field, and walks the `k` kernel rows from there,
//! each a contiguous run of `k*Cin` floats (NHWC with the padding stored), broadcasting those
//! inputs against a panel of packed weights. Nothing is gathered, copied or looked up per tap,
//! which is what the small-channel layers of a CIFAR ResNet need: there, gathering patches for a
//! GEMM cost a third of the time. (Only where a block's rows would evict each other from L1 does
//! `conv.rs` gather each receptive field into one run first.)
//!
//! The instruction set is chosen once at run time: AVX-512 or AVX2+FMA on x86-64 where the CPU
//! has it, NEON on aarch64 (every AArch64 CPU has it), and a portable scalar kernel everywhere
//! else; the block height per call, among the set's kernels (`Microkernel::for_rows`). All of
//! them accumulate in the same order (kernel row, then column, then input channel), so they
//! agree to rounding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Output channels per register block and per packed weight panel.
pub const NR: usize = 16;

/// The largest `MR` of any kernel.
pub const MAX_MR: usize = 12;

/// Where one register block reads its input: for each of `mr` output pixels a pointer to its
/// receptive field's top-left input; `taps` runs of `run` floats, the run `t` at `t * tap_stride`
/// from that pointer (a convolution: `taps = k` kernel rows, `run = k*Cin`, `tap_stride` one
/// padded input row).
#[derive(Clone, Copy)]
pub struct Receptive {
    pub taps: usize,
    pub run: usize,
    pub tap_stride: usize,
}

/// Where a register block goes, and what happens to it on the way (the convolution's epilogue,
/// fused into the store): `+ residual`, ReLU, `* mask`.
#[derive(Clone, Copy)]
pub struct BlockOut {
    /// Output pixels (`1..=mr`) and channels (`1..=NR`) stored.
    pub rows: usize,
    pub cols: usize,
    /// The block's first output; row `i` starts at `c + i*stride`.
    pub c: *mut f32,
    pub stride: usize,
    /// Laid out as `c`, added before the ReLU; null for none.
    pub residual: *const f32,
    pub relu: bool,
    /// Row `i`'s `cols` 0/1 bytes at `masks[i]`; all null for no mask.
    pub masks: [*const u8; MAX_MR],
}

/// One block of `out.rows` output pixels x `out.cols` channels of one panel:
/// - `a`: `mr` input pointers as [`Receptive`] says; pixels past `rows` repeat a valid pointer;
/// - `w`: the panel, `taps * run * NR` floats (`[tap][run][co]`, `co` padded to `NR` with zeros);
/// - `bias`: `NR` floats, the accumulators' start.
type KernelFn = unsafe fn(f: Receptive, a: *const *const f32, w: *const f32, bias: *const f32, out: &BlockOut);

/// Two panels at once (`2 * NR` channels): as [`KernelFn`], the second panel's weights at `w2`,
/// `bias` `2 * NR` floats (both panels'), `out.cols` up to `2 * NR`.
type PairFn =
    unsafe fn(f: Receptive, a: *const *const f32, w: *const f32, w2: *const f32, bias: *const f32, out: &BlockOut);

/// The panels of `panels` two at a time (the last alone where they are odd): `(first, count)`,
/// for [`Microkernel::run_pair`] and [`Microkernel::run`].
pub(crate) fn panel_pairs(panels: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    panels.clone().step_by(2).map(move |p| (p, (panels.end - p).min(2)))
}

/// An instruction set the CPU path has code for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512 (the foundation, 16 lanes; AVX2 and FMA with it).
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
    /// AArch64's Advanced SIMD.
    Neon,
    /// Whatever the compiler makes of plain Rust for the baseline of the target.
    Portable,
}

/// One micro-kernel and the register block it computes. Only [`Microkernel::available`] makes
/// them, so a kernel's instruction set is one the CPU has and its block fits `MAX_MR`.
///
/// A kernel is fixed (one block height) or adaptive: an instruction set's kernels of every
/// height, one picked per call by [`Microkernel::for_rows`] for the rows the call has. Tall
/// blocks load less per FMA, but a call of a few rows (a small image at batch 1, a Winograd unit
/// of four tiles) computes the rows past its end for nothing: ResNet-20's 8x8 layers by F(4x4)
/// have 4 tiles an image, a third of a 12-row block's rows.
#[derive(Clone, Copy)]
pub struct Microkernel {
    name: &'static str,
    isa: Isa,
    mr: usize,
    run: KernelFn,
    /// Its two-panel kernel of the same height, where the instruction set has registers for one.
    pair: Option<PairFn>,
    adaptive: bool,
}

impl std::fmt::Debug for Microkernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.adaptive {
            true => write!(f, "{} (up to {}x{NR})", self.name, self.mr),
            false => write!(f, "{} ({}x{NR})", self.name, self.mr),
        }
    }
}

/// What a block costs beyond its rows, in rows: entering the kernel, its pointers, bias and
/// epilogue, and the load per FMA that short blocks pay. Fits the AVX-512 kernels' times on
/// ResNet-20's direct layers at batch 64 (12 rows 1.09-1.21x faster a row than 8).
const BLOCK_OVERHEAD_ROWS: usize = 4;

/// The environment variable that picks the CPU kernel: an instruction set's adaptive kernel
/// (`avx512`, `avx2-fma`, `neon`, `scalar`) or one fixed block (`avx512-8x16`, ...), as
/// `classmod bench` names them; unset, the fastest the CPU has.
pub const KERNEL_ENV: &str = "CLASSMOD_CPU_KERNEL";

/// Floats ahead of the weights it reads that an x86 kernel prefetches, one cache line an input
/// channel (0: none). A forward at batch 1 meets each layer's weights cold (ResNet-50's are
/// about 130 MB packed, four times the L3): without it, the first block of each panel waited on
/// memory, and ResNet-50's layers summed to 24.0 ms cold against 17.8 ms warm; 4 KB ahead (the
/// next panel, read by the next call, is on its way while this one runs) made them 20.0 ms and
/// the forward 23.1 -> 20.1 ms (2-core Zen 5 EPYC, 2026-12-08, `benches/cpu_kernels.rs`
/// `resnet50_b1_cold`). Between 1 and 4 KB ahead measured the same.
static PREFETCH_AHEAD: AtomicUsize = AtomicUsize::new(1024);

/// Sets how far ahead the kernels prefetch weights (floats; 0 for not at all): for benchmarks.
pub fn prefetch_weights(floats: usize) {
    PREFETCH_AHEAD.store(floats, Ordering::Relaxed);
}

/// The kernel [`Microkernel::best`] returns: an index into `all()`.
static CHOSEN: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Every kernel this CPU runs, detected once (`available()`'s order).
fn all() -> &'static [Microkernel] {
    static ALL: OnceLock<Vec<Microkernel>> = OnceLock::new();
    ALL.get_or_init(detect)
}

fn detect() -> Vec<Microkernel> {
    let mut ks = Vec::new();
    // An instruction set's adaptive kernel, then its fixed ones, tallest first.
    let mut family = |name: &'static str, isa: Isa, fixed: &[(&'static str, usize, KernelFn, Option<PairFn>)]| {
        let (_, mr, run, pair) = fixed[0];
        ks.push(Microkernel { name, isa, mr, run, pair, adaptive: true });
        ks.extend(fixed.iter().map(|&(name, mr, run, pair)| Microkernel { name, isa, mr, run, pair, adaptive: false }));
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        if std::arch::is_x86_feature_detected!("avx512f") {
            family(
                "avx512",
                Isa::Avx512,
                &[
                    ("avx512-12x16", 12, x86::avx512::<12>, Some(x86::avx512_pair::<12>)),
                    ("avx512-8x16", 8, x86::avx512::<8>, Some(x86::avx512_pair::<8>)),
                    ("avx512-4x16", 4, x86::avx512::<4>, Some(x86::avx512_pair::<4>)),
                ],
            );
        }
        family(
            "avx2-fma",
            Isa::Avx2Fma,
            &[("avx2-fma-6x16", 6, x86::avx2::<6>, None), ("avx2-fma-4x16", 4, x86::avx2::<4>, None)],
        );
    }
    #[cfg(target_arch = "aarch64")]
    family("neon", Isa::Neon, &[("neon-6x16", 6, arm::neon_6x16, None)]);
    family("scalar", Isa::Portable, &[("scalar-4x16", 4, scalar_4x16, None)]);
    ks
}

/// `CLASSMOD_CPU_KERNEL`'s kernel, or the fastest.
fn chosen_from_env() -> usize {
    let Ok(want) = std::env::var(KERNEL_ENV) else { return 0 };
    all().iter().position(|k| k.name == want).unwrap_or_else(|| {
        let names: Vec<&str> = all().iter().map(|k| k.name).collect();
        eprintln!(
            "{KERNEL_ENV}={want}: no such CPU kernel on this machine (it has {}); using {}",
            names.join(", "),
            names[0]
        );
        0
    })
}

impl Microkernel {
    /// The kernel's name, e.g. `avx2-fma` (adaptive) or `avx2-fma-6x16` (fixed).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What it runs on; the code around it (Winograd's transforms) uses the same.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Whether it picks its block height per call ([`Microkernel::for_rows`]).
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// Output pixels per block (at most `MAX_MR`); an adaptive kernel's tallest.
    pub fn mr(&self) -> usize {
        self.mr
    }

    /// The kernel for a call of `rows` rows: itself when fixed; when adaptive, the kernel of its
    /// instruction set with the least work for them (blocks x (height + overhead); the taller
    /// of equals).
    pub fn for_rows(&self, rows: usize) -> Microkernel {
        if !self.adaptive {
            return *self;
        }
        let cost = |k: &Microkernel| rows.max(1).div_ceil(k.mr) * (k.mr + BLOCK_OVERHEAD_ROWS);
        all()
            .iter()
            .filter(|k| k.isa == self.isa && !k.adaptive)
            .fold(None::<&Microkernel>, |best, k| match best {
                Some(b) if cost(b) <= cost(k) => Some(b),
                _ => Some(k),
            })
            .map_or(*self, |k| *k)
    }

    /// One block; see `KernelFn` for what each pointer must address (an adaptive kernel runs
    /// its tallest block).
    ///
    /// # Safety
    /// `a` holds `self.mr` pointers, from each of which the `f.taps` runs of `f.run` floats are
    /// readable; `w` holds `taps * run * NR` floats and `bias` `NR`; `1 <= out.rows <= self.mr`,
    /// `1 <= out.cols <= NR`; rows `0..out.rows` of `out.c` have `cols` writable floats, and
    /// of `out.residual` (unless null) `cols` readable ones (stride `out.stride`); unless
    /// `out.masks[0]` is null, `out.masks[i]` has `cols` readable bytes for every row.
    #[inline]
    pub unsafe fn run(&self, f: Receptive, a: *const *const f32, w: *const f32, bias: *const f32, out: &BlockOut) {
        debug_assert!(out.rows >= 1 && out.rows <= self.mr && out.cols >= 1 && out.cols <= NR);
        (self.run)(f, a, w, bias, out)
    }

    /// [`Self::run`] for the `out.cols` (up to `2 * NR`) channels of two consecutive panels,
    /// the second's weights at `w2`, `bias` both panels' (`2 * NR` floats): on the two-panel
    /// kernel where the instruction set has one, else as two blocks.
    ///
    /// # Safety
    /// As [`Self::run`], with `w2` a panel like `w`, `bias` `2 * NR` floats and `out.cols` up
    /// to `2 * NR` (masks `cols` bytes a row).
    #[inline]
    pub unsafe fn run_pair(
        &self,
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        w2: *const f32,
        bias: *const f32,
        out: &BlockOut,
    ) {
        debug_assert!(out.rows >= 1 && out.rows <= self.mr && out.cols > NR && out.cols <= 2 * NR);
        match self.pair {
            Some(pair) => pair(f, a, w, w2, bias, out),
            None => {
                (self.run)(f, a, w, bias, &BlockOut { cols: NR, ..*out });
                let second = BlockOut {
                    cols: out.cols - NR,
                    c: out.c.add(NR),
                    residual: if out.residual.is_null() { out.residual } else { out.residual.add(NR) },
                    masks: if out.masks[0].is_null() { out.masks } else { out.masks.map(|m| m.wrapping_add(NR)) },
                    ..*out
                };
                (self.run)(f, a, w2, bias.add(NR), &second)
            }
        }
    }

    /// One block of `count` (1 or 2) consecutive panels, as `panel_pairs` gives them, the
    /// second's weights `panel_len` floats after the first's: [`Self::run`] or
    /// [`Self::run_pair`].
    ///
    /// # Safety
    /// As [`Self::run`] for one panel, [`Self::run_pair`] for two (`w` holds `count` panels).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub unsafe fn run_panels(
        &self,
        count: usize,
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        panel_len: usize,
        bias: *const f32,
        out: &BlockOut,
    ) {
        match count {
            2 => self.run_pair(f, a, w, w.add(panel_len), bias, out),
            _ => self.run(f, a, w, bias, out),
        }
    }

    /// The kernel the CPU path runs: the fastest this CPU has (adaptive), unless
    /// `CLASSMOD_CPU_KERNEL` or [`Microkernel::choose`] names another.
    pub fn best() -> &'static Microkernel {
        let mut i = CHOSEN.load(Ordering::Relaxed);
        if i == usize::MAX {
            i = chosen_from_env();
            CHOSEN.store(i, Ordering::Relaxed);
        }
        &all()[i]
    }

    /// Makes [`Microkernel::best`] the kernel named `name` from now on (benchmarks compare them
    /// in one process); `false`, and nothing changed, when this CPU has none of that name.
    pub fn choose(name: &str) -> bool {
        match all().iter().position(|k| k.name == name) {
            Some(i) => {
                CHOSEN.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Every kernel this CPU can run, fastest instruction set first, each set's adaptive kernel
    /// before its fixed ones (tests compare them all).
    pub fn available() -> Vec<Microkernel> {
        all().to_vec()
    }
}

/// Finishes and stores an accumulator block held in `acc` (row-major, `NR` per row): the
/// portable epilogue, for partial blocks and kernels without their own.
///
/// # Safety
/// As [`Microkernel::run`] for `out`.
#[inline(always)]
unsafe fn store_rows(acc: &[[f32; NR]], out: &BlockOut) {
    for (i, row) in acc.iter().enumerate().take(out.rows) {
        let o = out.c.add(i * out.stride);
        for (j, &v) in row.iter().enumerate().take(out.cols) {
            let mut x = v;
            if !out.residual.is_null() {
                x += *out.residual.add(i * out.stride + j);
            }
            if out.relu {
                x = x.max(0.0);
            }
            if !out.masks[0].is_null() {
                x *= f32::from(*out.masks[i].add(j));
            }
            *o.add(j) = x;
        }
    }
}

/// The portable kernel: 4 x 16, one pixel at a time (a row of 16 accumulators is four SSE or
/// NEON registers, a loop the compiler vectorises for the baseline ISA; all four rows at once
/// would not fit the baseline's 16 registers, and spill).
unsafe fn scalar_4x16(f: Receptive, a: *const *const f32, w: *const f32, bias: *const f32, out: &BlockOut) {
    const MR: usize = 4;
    let mut acc = [[0f32; NR]; MR];
    for (i, row) in acc.iter_mut().enumerate().take(out.rows) {
        // A local, not `row`: the compiler cannot tell `w` from `acc`, and would store the
        // accumulators back on every step.
        let mut sum = *(bias as *const [f32; NR]);
        let mut w = w;
        for t in 0..f.taps {
            let p = (*a.add(i)).add(t * f.tap_stride);
            for ci in 0..f.run {
                let x = *p.add(ci);
                let wv = &*(w as *const [f32; NR]);
                for (o, &wj) in sum.iter_mut().zip(wv) {
                    *o += x * wj;
                }
                w = w.add(NR);
            }
        }
        *row = sum;
    }
    store_rows(&acc, out);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{store_rows, BlockOut, Receptive, NR};
    use std::arch::x86_64::*;

    /// `R` x 16 with AVX2 and FMA (`R` up to 6: 12 accumulators, 2 weight vectors and 1
    /// broadcast of the 16 YMM registers); per input channel `R` broadcasts and 2 loads feed
    /// `2R` FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const R: usize>(
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        bias: *const f32,
        out: &BlockOut,
    ) {
        let (b0, b1) = (_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8)));
        let mut acc = [[b0, b1]; R];
        let mut w = w;
        let ahead = super::PREFETCH_AHEAD.load(std::sync::atomic::Ordering::Relaxed);
        for t in 0..f.taps {
            let p: [*const f32; R] = std::array::from_fn(|i| (*a.add(i)).add(t * f.tap_stride));
            for ci in 0..f.run {
                if ahead != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(ahead) as *const i8);
                }
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                for i in 0..R {
                    let x = _mm256_broadcast_ss(&*p[i].add(ci));
                    acc[i][0] = _mm256_fmadd_ps(x, w0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(x, w1, acc[i][1]);
                }
                w = w.add(NR);
            }
        }
        if out.cols == NR {
            let zero = _mm256_setzero_ps();
            for (i, row) in acc.iter().enumerate().take(out.rows) {
                let [mut v0, mut v1] = *row;
                if !out.residual.is_null() {
                    let r = out.residual.add(i * out.stride);
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(r));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(r.add(8)));
                }
                if out.relu {
                    v0 = _mm256_max_ps(v0, zero);
                    v1 = _mm256_max_ps(v1, zero);
                }
                if !out.masks[0].is_null() {
                    let keep = _mm_loadu_si128(out.masks[i] as *const __m128i);
                    v0 = _mm256_mul_ps(v0, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(keep)));
                    v1 = _mm256_mul_ps(v1, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(keep))));
                }
                let o = out.c.add(i * out.stride);
                _mm256_storeu_ps(o, v0);
                _mm256_storeu_ps(o.add(8), v1);
            }
        } else {
            let mut tmp = [[0f32; NR]; R];
            for (t, row) in tmp.iter_mut().zip(&acc) {
                _mm256_storeu_ps(t.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), row[1]);
            }
            store_rows(&tmp, out);
        }
    }

    /// `R` x 16 with AVX-512: one ZMM register a row, `R` accumulators and 1 weight vector of
    /// the 32; per input channel 1 load and `R` FMAs, each broadcasting its input from memory
    /// (`vfmadd231ps zmm, zmm, [p]{1to16}`): `R + 1` loads feed `R` FMAs, with `R` independent
    /// chains hiding the FMA latency. Enough where a 512-bit FMA takes two halves (Zen 4); where
    /// two full-width FMAs issue a cycle (Zen 5), the loads bind, and a call's panels run in pairs
    /// on [`avx512_pair`] instead (this one takes an odd last panel). The epilogue stores partial
    /// blocks under a lane mask.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn avx512<const R: usize>(
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        bias: *const f32,
        out: &BlockOut,
    ) {
        let mut acc = [_mm512_loadu_ps(bias); R];
        let mut w = w;
        let ahead = super::PREFETCH_AHEAD.load(std::sync::atomic::Ordering::Relaxed);
        for t in 0..f.taps {
            let p: [*const f32; R] = std::array::from_fn(|i| (*a.add(i)).add(t * f.tap_stride));
            for ci in 0..f.run {
                if ahead != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(ahead) as *const i8);
                }
                let wv = _mm512_loadu_ps(w);
                for i in 0..R {
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*p[i].add(ci)), wv, acc[i]);
                }
                w = w.add(NR);
            }
        }
        let lanes: __mmask16 = if out.cols == NR { !0 } else { (1u16 << out.cols) - 1 };
        let zero = _mm512_setzero_ps();
        for (i, &row) in acc.iter().enumerate().take(out.rows) {
            let mut v = row;
            if !out.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, out.residual.add(i * out.stride)));
            }
            if out.relu {
                v = _mm512_max_ps(v, zero);
            }
            if !out.masks[0].is_null() {
                // The row's `cols` mask bytes, widened: no byte past them is read.
                let mut keep = [0u8; NR];
                std::ptr::copy_nonoverlapping(out.masks[i], keep.as_mut_ptr(), out.cols);
                let bytes = _mm_loadu_si128(keep.as_ptr() as *const __m128i);
                v = _mm512_mul_ps(v, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)));
            }
            _mm512_mask_storeu_ps(out.c.add(i * out.stride), lanes, v);
        }
    }

    /// `R` x 32 with AVX-512: two panels, two ZMM registers a row (`2R` accumulators and 2
    /// weight vectors of the 32). Per input channel `R + 2` loads feed `2R` FMAs, against `R + 1`
    /// for `R` in [`avx512`]: where the two FMA ports are 512 bits wide (Zen 5), the single-panel
    /// kernel is bound by its loads, this one by its FMAs. On the 2-core Zen 5 EPYC, ResNet-50 at
    /// 224x224: batch 1 19.2-21.9 -> 18.0-19.3 ms, batch 8 146-148 -> 129-133 ms (alternating
    /// binaries, three rounds, 2026-12-08). At `R = 12` four of the input pointers live on the
    /// stack (x86-64 has too few general registers); measured faster all the same.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn avx512_pair<const R: usize>(
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        w2: *const f32,
        bias: *const f32,
        out: &BlockOut,
    ) {
        let mut acc = [[_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(NR))]; R];
        let (mut w, mut w2) = (w, w2);
        let ahead = super::PREFETCH_AHEAD.load(std::sync::atomic::Ordering::Relaxed);
        for t in 0..f.taps {
            let p: [*const f32; R] = std::array::from_fn(|i| (*a.add(i)).add(t * f.tap_stride));
            for ci in 0..f.run {
                if ahead != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(ahead) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(w2.wrapping_add(ahead) as *const i8);
                }
                let (wv, wv2) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w2));
                for i in 0..R {
                    let x = _mm512_set1_ps(*p[i].add(ci));
                    acc[i][0] = _mm512_fmadd_ps(x, wv, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(x, wv2, acc[i][1]);
                }
                w = w.add(NR);
                w2 = w2.add(NR);
            }
        }
        let lanes = |cols: usize| -> __mmask16 {
            match cols {
                0 => 0,
                c if c >= NR => !0,
                c => (1u16 << c) - 1,
            }
        };
        let (first, second) = (lanes(out.cols), lanes(out.cols.saturating_sub(NR)));
        let zero = _mm512_setzero_ps();
        // By value, half by half: iterating the accumulators by reference here made the compiler
        // keep them in memory, storing all of them on every step of the loop above.
        let store = |mut v: __m512, at: usize, m: __mmask16, keep: *const u8| {
            if !out.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, out.residual.add(at)));
            }
            if out.relu {
                v = _mm512_max_ps(v, zero);
            }
            if !keep.is_null() {
                let bytes = _mm_loadu_si128(keep as *const __m128i);
                v = _mm512_mul_ps(v, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)));
            }
            _mm512_mask_storeu_ps(out.c.add(at), m, v);
        };
        for (i, [lo, hi]) in acc.into_iter().enumerate().take(out.rows) {
            let mut keep = [0u8; 2 * NR];
            let masked = !out.masks[0].is_null();
            if masked {
                // The row's `cols` mask bytes: no byte past them is read.
                std::ptr::copy_nonoverlapping(out.masks[i], keep.as_mut_ptr(), out.cols);
            }
            let keep_at = |h: usize| if masked { keep.as_ptr().add(h * NR) } else { std::ptr::null() };
            store(lo, i * out.stride, first, keep_at(0));
            store(hi, i * out.stride + NR, second, keep_at(1));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{store_rows, BlockOut, Receptive, NR};
    use std::arch::aarch64::*;

    const MR: usize = 6;

    /// 6 x 16 with NEON: 24 accumulators, 4 weight vectors and 1 broadcast of the 32 Q registers.
    pub(super) unsafe fn neon_6x16(
        f: Receptive,
        a: *const *const f32,
        w: *const f32,
        bias: *const f32,
        out: &BlockOut,
    ) {
        let b = [vld1q_f32(bias), vld1q_f32(bias.add(4)), vld1q_f32(bias.add(8)), vld1q_f32(bias.add(12))];
        let mut acc = [b; MR];
        let mut w = w;
        for t in 0..f.taps {
            let p: [*const f32; MR] = std::array::from_fn(|i| (*a.add(i)).add(t * f.tap_stride));
            for ci in 0..f.run {
                let wv = [vld1q_f32(w), vld1q_f32(w.add(4)), vld1q_f32(w.add(8)), vld1q_f32(w.add(12))];
                for i in 0..MR {
                    let x = vld1q_dup_f32(p[i].add(ci));
                    for j in 0..4 {
                        acc[i][j] = vfmaq_f32(acc[i][j], x, wv[j]);
                    }
                }
                w = w.add(NR);
            }
        }
        // The portable epilogue: the compiler vectorises it with NEON.
        let mut tmp = [[0f32; NR]; MR];
        for (t, row) in tmp.iter_mut().zip(&acc) {
            for (j, v) in row.iter().enumerate() {
                vst1q_f32(t.as_mut_ptr().add(4 * j), *v);
            }
        }
        store_rows(&tmp, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An adaptive kernel runs its own instruction set's fixed kernels: the shortest for a call
    /// shorter than every block, the tallest for a call that fills every height, and never one
    /// that does more block work than a sibling would.
    #[test]
    fn adaptive_kernels_pick_a_block_height_per_call() {
        let all = Microkernel::available();
        for k in all.iter().filter(|k| k.is_adaptive()) {
            let siblings: Vec<&Microkernel> = all.iter().filter(|s| s.isa() == k.isa() && !s.is_adaptive()).collect();
            assert!(!siblings.is_empty(), "{k:?} has fixed kernels");
            assert_eq!(k.mr(), siblings.iter().map(|s| s.mr()).max().unwrap(), "{k:?} runs its tallest block");
            let shortest = siblings.iter().map(|s| s.mr()).min().unwrap();
            let work = |mr: usize, rows: usize| rows.div_ceil(mr) * (mr + BLOCK_OVERHEAD_ROWS);
            for rows in 1..=300 {
                let c = k.for_rows(rows);
                assert!(!c.is_adaptive() && c.isa() == k.isa(), "{k:?} for {rows} rows picked {c:?}");
                assert!(siblings.iter().all(|s| work(c.mr(), rows) <= work(s.mr(), rows)), "{rows} rows: {c:?}");
                if rows <= shortest {
                    assert_eq!(c.mr(), shortest, "{rows} rows");
                }
            }
            // Every height divides 240 (12, 8, 6, 4): the tallest does the least work a row.
            assert_eq!(k.for_rows(240).mr(), k.mr());
        }
        for k in all.iter().filter(|k| !k.is_adaptive()) {
            assert_eq!(k.for_rows(3).name(), k.name(), "a fixed kernel stays itself");
        }
    }

    /// A two-panel block is the same bits as its two panels' blocks one after the other (the
    /// same sums in the same order), for every kernel, height and width of the second panel,
    /// with and without the epilogue's residual, ReLU and mask: checked against `run` itself,
    /// whose kernels the convolution tests check against the definition.
    #[test]
    fn a_pair_of_panels_is_the_same_as_each_panel() {
        let (taps, run, tap_stride) = (2, 37, 41);
        let input: Vec<f32> =
            (0..MAX_MR * 100 + taps * tap_stride + run).map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5).collect();
        let w: Vec<f32> = (0..2 * taps * run * NR).map(|i| ((i * 11) % 19) as f32 / 9.0 - 1.0).collect();
        let (w1, w2) = w.split_at(taps * run * NR);
        let bias: Vec<f32> = (0..2 * NR).map(|i| i as f32 / 4.0 - 3.0).collect();
        let stride = 2 * NR + 3;
        let residual: Vec<f32> = (0..MAX_MR * stride).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let mask: Vec<u8> = (0..MAX_MR * stride).map(|i| u8::from(i % 3 != 0)).collect();
        let f = Receptive { taps, run, tap_stride };
        for k in Microkernel::available().iter().filter(|k| !k.is_adaptive()) {
            for rows in 1..=k.mr() {
                let a: Vec<*const f32> = (0..MAX_MR).map(|i| input[i.min(rows - 1) * 100..].as_ptr()).collect();
                for cols in NR + 1..=2 * NR {
                    for epilogue in [false, true] {
                        let (mut pair, mut apart) = (vec![f32::NAN; MAX_MR * stride], vec![f32::NAN; MAX_MR * stride]);
                        let masks: [*const u8; MAX_MR] = std::array::from_fn(|i| match epilogue {
                            true => mask[i * stride..].as_ptr(),
                            false => std::ptr::null(),
                        });
                        let block = |c: *mut f32| BlockOut {
                            rows,
                            cols,
                            c,
                            stride,
                            residual: if epilogue { residual.as_ptr() } else { std::ptr::null() },
                            relu: epilogue,
                            masks,
                        };
                        // SAFETY: every pointer addresses what `run_pair` and `run` read or
                        // write: `rows` rows of `stride >= cols` floats (and mask bytes), inputs
                        // of `taps` runs, two panels of weights and their bias.
                        unsafe {
                            k.run_pair(
                                f,
                                a.as_ptr(),
                                w1.as_ptr(),
                                w2.as_ptr(),
                                bias.as_ptr(),
                                &block(pair.as_mut_ptr()),
                            );
                            let whole = block(apart.as_mut_ptr());
                            k.run(f, a.as_ptr(), w1.as_ptr(), bias.as_ptr(), &BlockOut { cols: NR, ..whole });
                            let second = BlockOut {
                                cols: cols - NR,
                                c: apart.as_mut_ptr().add(NR),
                                residual: if epilogue { residual.as_ptr().add(NR) } else { std::ptr::null() },
                                masks: if epilogue { masks.map(|m| m.wrapping_add(NR)) } else { masks },
                                ..whole
                            };
                            k.run(f, a.as_ptr(), w2.as_ptr(), bias[NR..].as_ptr(), &second);
                        }
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&pair),
                            bits(&apart),
                            "{k:?}, {rows} rows, {cols} columns, epilogue {epilogue}"
                        );
                    }
                }
            }
        }
    }

    /// `choose` switches what `best` returns, by name, and refuses names this CPU lacks.
    #[test]
    fn a_kernel_is_chosen_by_name() {
        let before = Microkernel::best();
        assert!(!Microkernel::choose("avx1024"));
        assert_eq!(Microkernel::best().name(), before.name());
        // A fixed height of the same instruction set: it computes the same bits (the same sums
        // in the same order), so tests running meanwhile that compare results bit for bit (one
        // core against all in `model/graph.rs`) are unaffected by the switch.
        let fixed = Microkernel::available().into_iter().find(|k| k.isa() == before.isa() && !k.is_adaptive()).unwrap();
        assert!(Microkernel::choose(fixed.name()));
        assert_eq!(Microkernel::best().name(), fixed.name());
        assert!(Microkernel::choose(before.name()));
        assert_eq!(Microkernel::best().name(), before.name());
    }

    /// Every kernel against a plain sum, for full and partial blocks, odd runs and strides, with
    /// and without the fused epilogue.
    #[test]
    fn every_kernel_computes_the_block_sum() {
        for k in Microkernel::available() {
            let cases = [(k.mr, NR, 3, 48, 5), (1, 3, 1, 1, 0), (k.mr - 1, NR - 1, 4, 7, 2), (2, NR, 5, 15, 1)];
            for ((rows, cols, taps, run, gap), epilogue) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
                let mr = k.mr;
                let f = Receptive { taps, run, tap_stride: run + gap };
                let inputs: Vec<Vec<f32>> = (0..mr)
                    .map(|p| (0..taps * f.tap_stride).map(|j| ((p * 31 + j * 7) % 13) as f32 - 6.0).collect())
                    .collect();
                let a: Vec<*const f32> = inputs.iter().map(|v| v.as_ptr()).collect();
                let w: Vec<f32> = (0..taps * run * NR).map(|i| ((i * 17) % 11) as f32 * 0.25 - 1.0).collect();
                let bias: Vec<f32> = (0..NR).map(|j| j as f32 - 8.0).collect();
                let stride = NR + 3;
                let residual: Vec<f32> = (0..mr * stride).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
                let keep: Vec<Vec<u8>> =
                    (0..mr).map(|i| (0..NR).map(|j| u8::from((i + j) % 3 != 0)).collect()).collect();
                let mut c = vec![f32::NAN; mr * stride];
                let mut masks = [std::ptr::null(); MAX_MR];
                if epilogue {
                    for (m, row) in masks.iter_mut().zip(&keep) {
                        *m = row.as_ptr();
                    }
                }
                let out = BlockOut {
                    rows,
                    cols,
                    c: c.as_mut_ptr(),
                    stride,
                    residual: if epilogue { residual.as_ptr() } else { std::ptr::null() },
                    relu: epilogue,
                    masks,
                };
                // SAFETY: the buffers above have the sizes `run` asks for.
                unsafe { k.run(f, a.as_ptr(), w.as_ptr(), bias.as_ptr(), &out) };
                for i in 0..mr {
                    for j in 0..stride {
                        let got = c[i * stride + j];
                        if i < rows && j < cols {
                            let mut want = bias[j];
                            for t in 0..taps {
                                for x in 0..run {
                                    want += inputs[i][t * f.tap_stride + x] * w[(t * run + x) * NR + j];
                                }
                            }
                            if epilogue {
                                want = (want + residual[i * stride + j]).max(0.0) * f32::from(keep[i][j]);
                            }
                            assert_eq!(got, want, "{k:?} rows {rows} cols {cols} epilogue {epilogue}: ({i}, {j})");
                        } else {
                            assert!(got.is_nan(), "{k:?} wrote outside the block at ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}
