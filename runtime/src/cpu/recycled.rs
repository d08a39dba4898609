//! Activation buffers recycled per thread. A forward allocates every layer's output and drops
//! it two layers later; each fresh allocation came zeroed (calloc's memset: 2.5 % of a ResNet-20
//! batch-1 forward), though a convolution writes every float of its output anyway. A pass hands
//! the activations it is done with back here and takes the next layer's output from them.
//!
//! Safe code only: a buffer is handed out with floats that were written before (by an earlier
//! layer, or zeroed where it had to grow), never uninitialised memory. In debug builds (every
//! test) a recycled buffer is filled with NaN first, so a float some kernel leaves unwritten
//! shows in the logits instead of passing on an earlier layer's value.

use std::cell::RefCell;

/// Floats a thread keeps in its free buffers (their capacity): a few batch-1 or slice-of-4
/// activations (a stage-1 activation of four 32x32 images is 64 Ki floats); what a whole large
/// batch run at once leaves (decomposition's counting) is freed instead of held for good. Four
/// times as much (a ResNet-50 block's whole working set at 224x224) made no difference
/// above the noise to its batch-1 time, and let each thread of a sliced batch hold 12 MB more.
const KEEP_FLOATS: usize = 1 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats whose values are unspecified: the caller writes every one.
pub(crate) fn take(len: usize) -> Vec<f32> {
    let found = FREE.with_borrow_mut(|free| {
        // The shortest buffer that holds `len` floats already (none to write), else the one of
        // least capacity that holds them (zeros to write, no copy), else the largest (the fewest
        // zeros to write as it grows); of equals the one given back last, the likeliest still in
        // cache (`min_by_key` keeps the first of equals, `max_by_key` the last).
        let by = |fits: &dyn Fn(&Vec<f32>) -> bool, size: &dyn Fn(&Vec<f32>) -> usize| {
            (0..free.len()).rev().filter(|&i| fits(&free[i])).min_by_key(|&i| size(&free[i]))
        };
        let pick = by(&|b| b.len() >= len, &Vec::len)
            .or_else(|| by(&|b| b.capacity() >= len, &Vec::capacity))
            .or_else(|| (0..free.len()).max_by_key(|&i| free[i].capacity()));
        pick.map(|i| free.remove(i))
    });
    match found {
        Some(mut buf) => {
            buf.truncate(len);
            // Exactly: amortised growth would hold up to twice what is asked for.
            buf.reserve_exact(len - buf.len());
            buf.resize(len, 0.0);
            if cfg!(debug_assertions) {
                buf.fill(f32::NAN);
            }
            buf
        }
        None => vec![0.0; len],
    }
}

/// Hands `buf` back for a later [`take`] on this thread (freed if the thread holds enough).
pub(crate) fn give(buf: Vec<f32>) {
    FREE.with_borrow_mut(|free| {
        let held: usize = free.iter().map(Vec::capacity).sum();
        if buf.capacity() > 0 && held + buf.capacity() <= KEEP_FLOATS {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_with_the_length_asked_for() {
        give(vec![1.0; 100]);
        give(vec![2.0; 10]);
        // The shortest that fits: the 10, not the 100.
        let a = take(8);
        assert_eq!(a.len(), 8);
        let b = take(200);
        assert_eq!(b.len(), 200);
        assert_eq!(take(5).len(), 5);
        // Debug builds fill a recycled buffer with NaN, so an unwritten float shows.
        assert!(cfg!(not(debug_assertions)) || a.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn a_thread_keeps_no_more_than_its_share() {
        give(vec![0.0; KEEP_FLOATS]);
        give(vec![0.0; 1]);
        let held: usize = FREE.with_borrow(|f| f.iter().map(Vec::capacity).sum());
        assert_eq!(held, KEEP_FLOATS);
    }
}
