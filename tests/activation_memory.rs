//! Activation memory of the CPU path at 224x224 is bounded by the threads, not by the batch: a
//! Jetson Nano (four Cortex-A57 cores, 4 GiB shared, a 512 MiB budget for modules, CPU only)
//! classifying batches of 8 with torchvision's ResNet-50 must not need a multiple of what one
//! image needs. Measured with a counting global allocator around each forward, on a pool of
//! four threads (the Nano's cores), against the bytes the images' activations would take if
//! the batch ran whole (the reference: what candle's and PyTorch's eager graphs hold).
//!
//! One test in this file: the allocator counts the whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use classmod::runtime::host::{Images, Network, ResNet};
use classmod::runtime::testing::tiny_model::random_model;
use classmod::runtime::{Device, InputSpec};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the new block before the old one goes: both are live while it copies.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, beyond what was live before the first measurement.
fn peak_of(since: usize, f: impl FnOnce()) -> usize {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - since
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn resnet50_at_224_needs_the_threads_activations_not_the_batchs() {
    let model = random_model(Network::torchvision(50, 64, 1000).unwrap().into(), InputSpec::imagenet(224, 224), 5);
    let net = ResNet::new(&model, &Device::Cpu).unwrap();
    drop(model);
    let per_image = 3 * 224 * 224;
    let images: Vec<f32> = (0..32 * per_image).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    let threads = 4;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let since = LIVE.load(Ordering::Relaxed);
    let mut first_logits: Vec<Vec<f32>> = Vec::new();
    let mut peak = |batch: usize| {
        let mut logits = Vec::new();
        let bytes = peak_of(since, || {
            pool.install(|| {
                let x = Images::Nhwc { values: &images[..batch * per_image], count: batch };
                logits = net.logits(x).unwrap();
            })
        });
        first_logits.push(logits[..1000].to_vec());
        bytes
    };
    let one = peak(1);
    // Each thread keeps some buffers for its next slice (recycled activations, the padded copy,
    // Winograd's scratch: a few MiB each, `cpu/recycled.rs`); a first batch of 8 leaves every
    // thread's at its steady size, so that 8 and 32 are compared as a serving device runs them.
    // (Measured cold, batch 8 ran 55.3-58.3 MiB and batch 32 64.1-64.4.)
    peak(8);
    let eight = peak(8);
    let thirty_two = peak(32);
    // The first image's logits whichever way its batch ran: whole (batch 1) or in slices.
    let largest = first_logits[0].iter().fold(0f32, |m, v| m.max(v.abs()));
    for (batch, logits) in [8, 8, 32].iter().zip(&first_logits[1..]) {
        let diff = logits.iter().zip(&first_logits[0]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * largest.max(1.0), "batch {batch}: first image's logits differ by {diff}");
    }
    // What one image's activations take if every layer's output were kept (an eager graph's
    // upper bound), and the largest single activation.
    let outputs: usize = net.network().relu_sites(224, 224).iter().map(|s| s.channels * s.height * s.width * 4).sum();
    eprintln!(
        "ResNet-50 at 224x224 on {threads} threads: peak beyond the weights {:.1} MiB at batch 1, {:.1} MiB at \
         batch 8, {:.1} MiB at batch 32; every layer's output of one image {:.1} MiB",
        one as f64 / MIB,
        eight as f64 / MIB,
        thirty_two as f64 / MIB,
        outputs as f64 / MIB
    );
    // Batch 8 on four threads runs four images at a time: at most four single-image working
    // sets, well under the Nano's module budget, and far under eight images' outputs.
    assert!(eight <= threads * one + (8 << 20), "batch 8: {eight} bytes, batch 1: {one}");
    assert!((eight as f64) < 0.5 * (8 * outputs) as f64, "batch 8: {eight} bytes");
    assert!(
        eight < 128 << 20,
        "batch 8 needs {:.1} MiB: a quarter of the Nano's 512 MiB module budget",
        eight as f64 / MIB
    );
    // And a larger batch costs no more: the threads bound it, not the batch.
    assert!(thirty_two <= eight + (8 << 20), "batch 32: {thirty_two} bytes, batch 8: {eight}");
}
