//! The classifier layer after the global average pool, as plain rows: every engine's pooled
//! features come back to the host (a few values an image), so the logits are computed here once
//! for all engines, with no tensor in between.

use candle_core::Tensor;

use crate::Result;

/// `logits = features · Wᵀ + b`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Linear {
    /// `(classes, features)`, row-major.
    weight: Vec<f32>,
    /// `(classes)`.
    bias: Vec<f32>,
}

impl Linear {
    /// From PyTorch's `linear.weight` `(classes, features)` and `linear.bias` `(classes)`.
    pub(crate) fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let weight = weight.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Linear { weight, bias })
    }

    /// Outputs.
    pub(crate) fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        4 * (self.weight.len() + self.bias.len()) as u64
    }

    /// Logits `(batch, classes)` of `batch` rows of pooled features. The classes are shared
    /// among the CPU team's threads where there are many (ResNet-50's 1000 x 2048 is 8 MB of
    /// weights an image: 0.8 ms on one core in a 45 ms forward when it was a plain loop), each
    /// weight row read once for every image of the batch.
    pub(crate) fn apply(&self, features: &[f32], batch: usize) -> Vec<f32> {
        let f = (features.len() / batch.max(1)).max(1);
        let classes = self.classes();
        let rows: Vec<&[f32]> = features.chunks_exact(f).collect();
        let class_logits = |range: std::ops::Range<usize>| {
            let mut part = Vec::with_capacity(range.len() * rows.len());
            for c in range {
                let w = &self.weight[c * f..][..f];
                part.extend(rows.iter().map(|x| dot(w, x) + self.bias[c]));
            }
            part
        };
        let parts = match classes * f * rows.len() >= PARALLEL_MACS {
            true => rayon::current_num_threads().clamp(1, classes),
            false => 1,
        };
        let range = |i: usize| i * classes / parts..(i + 1) * classes / parts;
        let done: Vec<std::sync::OnceLock<Vec<f32>>> = (0..parts).map(|_| std::sync::OnceLock::new()).collect();
        crate::cpu::team::for_each(parts, |i| {
            let _ = done[i].set(class_logits(range(i)));
        });
        // Each part holds its classes' logits class-major; the rows are image-major.
        let mut out = vec![0f32; rows.len() * classes];
        for (i, part) in done.into_iter().enumerate() {
            let part = part.into_inner().expect("every part ran");
            for (c, logits) in range(i).zip(part.chunks_exact(rows.len().max(1))) {
                for (b, &v) in logits.iter().enumerate() {
                    out[b * classes + c] = v;
                }
            }
        }
        out
    }
}

/// Multiply-adds from which the classifier is split among the threads: below it a hand-off
/// costs more than it saves (ResNet-20's 64 x 10 is 640).
const PARALLEL_MACS: usize = 1 << 16;

/// `a · b` in sixteen independent sums, so the compiler keeps them in vector registers (a single
/// running sum is one long chain of dependent additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (a16, a_rest) = a.split_at(a.len() / LANES * LANES);
    let (b16, b_rest) = b.split_at(a16.len());
    for (x, y) in a16.chunks_exact(LANES).zip(b16.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0).collect()
    }

    /// The logits against the definition in f64: a large layer split among the threads
    /// (ResNet-50's 1000 x 2048 at batch 2, on pools of 1, 2 and 3), fewer classes than threads,
    /// features not in sixteens, and an empty batch.
    #[test]
    fn logits_are_the_definitions_however_the_classes_are_split() {
        for (classes, features, batch) in [(1000, 2048, 2), (2, 40_000, 3), (10, 21, 4), (7, 64, 0), (1, 1, 1)] {
            let linear = Linear { weight: values(classes * features, 1), bias: values(classes, 2) };
            let x = values(batch * features, 3);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = pool.install(|| linear.apply(&x, batch));
                assert_eq!(got.len(), batch * classes);
                for b in 0..batch {
                    for c in 0..classes {
                        let terms =
                            (0..features).map(|i| linear.weight[c * features + i] as f64 * x[b * features + i] as f64);
                        let want = linear.bias[c] as f64 + terms.clone().sum::<f64>();
                        // f32 rounding, relative to the size of the terms summed.
                        let tol = 1e-6 * (1.0 + terms.map(f64::abs).sum::<f64>());
                        assert!(
                            (got[b * classes + c] as f64 - want).abs() <= tol,
                            "{classes}x{features} batch {batch} on {threads} threads: ({b}, {c}) {} vs {want}",
                            got[b * classes + c]
                        );
                    }
                }
            }
        }
    }
}
