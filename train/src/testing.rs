//! Test inputs: seeded streams and the layout change of a batch.

/// A seeded stream of values in [-1, 1).
pub(crate) fn stream(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// `(B, C, hw)` -> `(C, B, hw)`.
pub(crate) fn channel_major(x: &[f32], batch: usize, channels: usize, hw: usize) -> Vec<f32> {
    let mut out = Vec::new();
    crate::layers::channel_major_into(x, batch, channels, hw, &mut out);
    out
}
