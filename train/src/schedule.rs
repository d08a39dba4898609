//! Learning-rate schedules over a whole run, by step.

use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Linear warm-up over the first 2 % of steps, then cosine decay to zero.
    Cosine,
    /// Smith's one-cycle: linear rise from lr/25 to lr over 30 % of steps, cosine fall to lr/1e4.
    OneCycle,
}

impl Schedule {
    /// Learning rate for `step` (0-based) of `total`, with peak `lr`.
    pub fn lr(self, step: usize, total: usize, lr: f64) -> f64 {
        let total = total.max(1) as f64;
        let t = step as f64;
        match self {
            Schedule::Cosine => {
                let warm = (0.02 * total).max(1.0);
                if t < warm {
                    lr * (t + 1.0) / warm
                } else {
                    0.5 * lr * (1.0 + (PI * (t - warm) / (total - warm).max(1.0)).cos())
                }
            }
            Schedule::OneCycle => {
                let up = (0.3 * total).max(1.0);
                let (start, end) = (lr / 25.0, lr / 1e4);
                if t < up {
                    start + (lr - start) * t / up
                } else {
                    let p = ((t - up) / (total - up).max(1.0)).min(1.0);
                    end + (lr - end) * 0.5 * (1.0 + (PI * p).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_schedules() {
        for s in [Schedule::Cosine, Schedule::OneCycle] {
            let lrs: Vec<f64> = (0..1000).map(|i| s.lr(i, 1000, 0.1)).collect();
            let peak = lrs.iter().cloned().fold(0.0, f64::max);
            assert!((peak - 0.1).abs() < 1e-3, "{s:?} peak {peak}");
            assert!(lrs[0] < 0.05, "{s:?} starts low");
            assert!(*lrs.last().unwrap() < 1e-3, "{s:?} ends near zero");
            assert!(lrs.iter().all(|&l| l > 0.0 && l <= 0.1 + 1e-12));
        }
    }
}
