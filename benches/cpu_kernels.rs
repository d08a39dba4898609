//! The CPU path's convolution on every layer shape of ResNet-20 at batch 64, with each
//! micro-kernel this CPU runs (the SIMD one and the portable fallback), direct and (where it
//! applies) Winograd in both forms, F(2x2) and F(4x4), in GFLOP/s of the direct convolution's work (criterion reports "elements"
//! per second; one element here is one floating-point operation of `2*k*k*Cin*Cout` per output
//! pixel, whichever way it is computed, so Winograd's figures are effective ones), beside the
//! machine's GEMM peak measured the same way: a large square f32 GEMM through the `gemm` crate
//! (candle's matmul) on all threads, the figure the "60 % of the FMA peak" is taken
//! against.
//! `conv3x3_b1`: the same layers at batch 1, on two cores and on one. `fma_peak`: the CPU's
//! f32 FMA peak on all threads, what `resnet50_b1`'s layers are reported against.
//! Run: `cargo bench --bench cpu_kernels`.

use classmod::runtime::bench::{panel_outer, split_by_channels, Epilogue, Method, PackedConv, Plane, Threads};
use classmod::runtime::bench::{prefetch_weights, Microkernel};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect()
}

fn gemm_peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_peak");
    g.sample_size(10);
    for n in [256usize, 1024] {
        let (a, b) = (values(n * n), values(n * n));
        let mut d = vec![0f32; n * n];
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| {
                // SAFETY: three n x n row-major matrices, each exactly n*n elements.
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        n,
                        d.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        n as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(0),
                    )
                }
            })
        });
    }
    g.finish();
}

/// The CPU's f32 FMA peak on every thread of the pool: twelve independent chains of vector FMAs
/// in registers, nothing loaded (the widest vectors the CPU has: AVX-512, else AVX2). What the
/// GFLOP/s of the layers below are measured against (`results/engines-224/README.md`).
fn fma_peak(c: &mut Criterion) {
    // Nothing to measure it with elsewhere yet (aarch64's peak is argued in docs/architecture.md).
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const CHAINS: usize = 12;
        const STEPS: usize = 1 << 16;
        #[target_feature(enable = "avx512f")]
        unsafe fn zmm() -> f32 {
            let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            let mut a = [_mm512_set1_ps(1.0); CHAINS];
            for _ in 0..STEPS {
                for a in a.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, b, c);
                }
            }
            _mm512_reduce_add_ps(a.into_iter().fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, a)))
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn ymm() -> f32 {
            let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            let mut a = [_mm256_set1_ps(1.0); CHAINS];
            for _ in 0..STEPS {
                for a in a.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, b, c);
                }
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), a.into_iter().fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, a)));
            lanes.iter().sum()
        }
        let (name, lanes, run): (&str, usize, unsafe fn() -> f32) = if is_x86_feature_detected!("avx512f") {
            ("avx512", 16, zmm)
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            ("avx2-fma", 8, ymm)
        } else {
            return;
        };
        let threads = rayon::current_num_threads();
        let mut g = c.benchmark_group("fma_peak");
        g.sample_size(10);
        g.throughput(Throughput::Elements((threads * STEPS * CHAINS * lanes * 2) as u64));
        g.bench_function(BenchmarkId::new(name, threads), |b| {
            b.iter(|| {
                // SAFETY: the instruction set was detected above.
                rayon::broadcast(|_| unsafe { run() }).into_iter().sum::<f32>()
            })
        });
        g.finish();
    }
}

/// ResNet-20's convolutions: (name, in, out, input size, stride).
const LAYERS: [(&str, usize, usize, usize, usize); 6] = [
    ("stem_3x16_32", 3, 16, 32, 1),
    ("s1_16x16_32", 16, 16, 32, 1),
    ("s2in_16x32_32s2", 16, 32, 32, 2),
    ("s2_32x32_16", 32, 32, 16, 1),
    ("s3in_32x64_16s2", 32, 64, 16, 2),
    ("s3_64x64_8", 64, 64, 8, 1),
];

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv3x3_b64");
    g.sample_size(10);
    let batch = 64;
    for (name, cin, cout, hw, s) in LAYERS {
        let conv = PackedConv::new(&values(cout * cin * 9), values(cout), [cout, cin, 3, 3], s, 1);
        let p = Plane { height: hw, width: hw };
        let op = conv.out_plane(p);
        let x = values(batch * hw * hw * cin);
        let mut out = vec![0f32; batch * op.height * op.width * cout];
        let flops = 2 * batch * op.height * op.width * cout * cin * 9;
        g.throughput(Throughput::Elements(flops as u64));
        let e = Epilogue { residual: None, relu: true, mask: None };
        // As `CpuNet` runs a batch of 64: slices of 4 images in parallel, each on one core.
        let (xs, os) = (x.len() / (batch / 4), out.len() / (batch / 4));
        for kernel in Microkernel::available() {
            for method in [Method::Direct, Method::Winograd2x2, Method::Winograd4x4] {
                // Every plane here is in fours, so both Winograd forms run where one applies.
                if method != Method::Direct && !(s == 1 && cin % 8 == 0) {
                    continue;
                }
                let id = BenchmarkId::new(name, format!("{}-{method:?}", kernel.name()).to_lowercase());
                g.bench_function(id, |b| {
                    b.iter(|| {
                        x.par_chunks(xs)
                            .zip(out.par_chunks_mut(os))
                            .for_each(|(x, o)| conv.forward_with(&kernel, method, x, 4, p, &e, o, Threads::Caller))
                    })
                });
            }
        }
    }
    g.finish();
}

/// Each layer at batch 1 as a forward runs it (the fastest kernel and Winograd form, the call
/// shared with the team's helpers by tiles or, for the 64-channel layers, by channels), beside
/// the same split by tiles only and on one core: `one_core` time / `two_cores` time is what the
/// second core gives a single image's layer.
fn layers_batch1(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv3x3_b1");
    g.sample_size(20);
    let kernel = Microkernel::best();
    for (name, cin, cout, hw, s) in LAYERS {
        let conv = PackedConv::new(&values(cout * cin * 9), values(cout), [cout, cin, 3, 3], s, 1);
        let p = Plane { height: hw, width: hw };
        let op = conv.out_plane(p);
        let x = values(hw * hw * cin);
        let mut out = vec![0f32; op.height * op.width * cout];
        g.throughput(Throughput::Elements((2 * op.height * op.width * cout * cin * 9) as u64));
        let e = Epilogue { residual: None, relu: true, mask: None };
        for (label, threads, split) in [
            ("two_cores", Threads::Tiles, true),
            ("two_cores_tiles_only", Threads::Tiles, false),
            ("one_core", Threads::Caller, true),
        ] {
            split_by_channels(split);
            g.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| conv.forward_with(kernel, Method::Winograd4x4, &x, 1, p, &e, &mut out, threads))
            });
        }
        split_by_channels(true);
    }
    g.finish();
}

/// ResNet-50's distinct convolutions at 224x224 (torchvision's layout): (name, in, out, kernel,
/// input size, stride). The 1x1s are nearly half its work; the 3x3s run Winograd where they can.
const RESNET50_LAYERS: [(&str, usize, usize, usize, usize, usize); 23] = [
    ("stem_7x7_3x64_224s2", 3, 64, 7, 224, 2),
    ("l1_1x1_64x64_56", 64, 64, 1, 56, 1),
    ("l1_3x3_64x64_56", 64, 64, 3, 56, 1),
    ("l1_1x1_64x256_56", 64, 256, 1, 56, 1),
    ("l1_1x1_256x64_56", 256, 64, 1, 56, 1),
    ("l2_1x1_256x128_56", 256, 128, 1, 56, 1),
    ("l2_3x3_128x128_56s2", 128, 128, 3, 56, 2),
    ("l2_1x1_256x512_56s2", 256, 512, 1, 56, 2),
    ("l2_3x3_128x128_28", 128, 128, 3, 28, 1),
    ("l2_1x1_128x512_28", 128, 512, 1, 28, 1),
    ("l2_1x1_512x128_28", 512, 128, 1, 28, 1),
    ("l3_1x1_512x256_28", 512, 256, 1, 28, 1),
    ("l3_3x3_256x256_28s2", 256, 256, 3, 28, 2),
    ("l3_1x1_512x1024_28s2", 512, 1024, 1, 28, 2),
    ("l3_3x3_256x256_14", 256, 256, 3, 14, 1),
    ("l3_1x1_256x1024_14", 256, 1024, 1, 14, 1),
    ("l3_1x1_1024x256_14", 1024, 256, 1, 14, 1),
    ("l4_1x1_1024x512_14", 1024, 512, 1, 14, 1),
    ("l4_3x3_512x512_14s2", 512, 512, 3, 14, 2),
    ("l4_1x1_1024x2048_14s2", 1024, 2048, 1, 14, 2),
    ("l4_3x3_512x512_7", 512, 512, 3, 7, 1),
    ("l4_1x1_512x2048_7", 512, 2048, 1, 7, 1),
    ("l4_1x1_2048x512_7", 2048, 512, 1, 7, 1),
];

/// One of [`RESNET50_LAYERS`] packed for its plane, with an input, an output and its work in
/// FLOP of the direct convolution.
struct Layer {
    p: Plane,
    conv: PackedConv,
    x: Vec<f32>,
    out: Vec<f32>,
    flops: u64,
}

impl Layer {
    fn new(cin: usize, cout: usize, k: usize, hw: usize, s: usize) -> Layer {
        let p = Plane { height: hw, width: hw };
        let conv = PackedConv::for_plane(&values(cout * cin * k * k), values(cout), [cout, cin, k, k], s, k / 2, p);
        let op = conv.out_plane(p);
        let flops = (2 * op.height * op.width * cout * cin * k * k) as u64;
        Layer { p, conv, x: values(hw * hw * cin), out: vec![0f32; op.height * op.width * cout], flops }
    }
}

/// Each of ResNet-50's distinct layers at batch 1 as a forward runs it (the fastest kernel and
/// method, shared with the team's helpers), in GFLOP/s of the direct convolution's work: where
/// the time of a 224x224 image goes, against `gemm_peak`.
fn resnet50_batch1(c: &mut Criterion) {
    let mut g = c.benchmark_group("resnet50_b1");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(2));
    let kernel = Microkernel::best();
    for (name, cin, cout, k, hw, s) in RESNET50_LAYERS {
        let Layer { p, conv, x, mut out, flops } = Layer::new(cin, cout, k, hw, s);
        g.throughput(Throughput::Elements(flops));
        let e = Epilogue { residual: None, relu: true, mask: None };
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| conv.forward_with(kernel, Method::Winograd4x4, &x, 1, p, &e, &mut out, Threads::Tiles))
        });
    }
    g.finish();
}

/// Bytes of weights a cold layer cycles through: three times this CPU's L3 (32 MB), as a
/// forward of ResNet-50 (about 130 MB packed) meets each layer's weights after the rest.
const COLD_BYTES: u64 = 96 << 20;

/// [`resnet50_batch1`] with the weights cold: each iteration runs the next of enough copies of
/// the layer that their weights pass [`COLD_BYTES`], so every call reads its weights from memory,
/// as a forward at batch 1 does; the input stays warm, as the previous layer left it. The gap to
/// `resnet50_b1` is what streaming the weights costs each layer.
fn resnet50_batch1_cold(c: &mut Criterion) {
    let mut g = c.benchmark_group("resnet50_b1_cold");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(2));
    let kernel = Microkernel::best();
    for (name, cin, cout, k, hw, s) in RESNET50_LAYERS {
        let Layer { p, conv, x, mut out, flops } = Layer::new(cin, cout, k, hw, s);
        let copies = COLD_BYTES.div_ceil(conv.weight_bytes()).max(2) as usize;
        let convs = vec![conv; copies];
        g.throughput(Throughput::Elements(flops));
        let e = Epilogue { residual: None, relu: true, mask: None };
        let mut next = 0;
        // As a forward runs it; without the prefetch; and the block-by-block order before both.
        for (way, panels, ahead) in [("default", true, 1024), ("no_prefetch", true, 0), ("by_blocks", false, 0)] {
            panel_outer(panels);
            prefetch_weights(ahead);
            g.bench_function(BenchmarkId::new(way, name), |b| {
                b.iter(|| {
                    next = (next + 1) % copies;
                    convs[next].forward_with(kernel, Method::Winograd4x4, &x, 1, p, &e, &mut out, Threads::Tiles)
                })
            });
        }
        panel_outer(true);
        prefetch_weights(1024);
    }
    g.finish();
}

criterion_group!(benches, fma_peak, gemm_peak, layers, layers_batch1, resnet50_batch1, resnet50_batch1_cold);
criterion_main!(benches);
