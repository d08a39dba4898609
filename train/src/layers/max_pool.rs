//! The ImageNet stem's 3x3 stride-2 max-pool (padding 1, as PyTorch's `MaxPool2d(3, 2, 1)`) on
//! channel-major `(C, B, H, W)` activations: the forward keeps, for every output, the input it
//! took, and the backward sends each output's gradient there (ties to the first in the window,
//! as PyTorch's CPU kernel does).

use super::Plane;

/// The pool and what its backward needs of the last forward.
#[derive(Debug, Default)]
pub struct MaxPool {
    /// The output of the last forward.
    pub out: Vec<f32>,
    /// For each output, the index of the input it took within its `(c, b)` plane.
    argmax: Vec<u32>,
}

impl MaxPool {
    /// The plane a 3x3 stride-2 pool with padding 1 gives: `ceil(n / 2)` each way.
    pub fn out_plane(p: Plane) -> Plane {
        Plane { batch: p.batch, height: p.height.div_ceil(2), width: p.width.div_ceil(2) }
    }

    /// Pools `x` (`channels` planes of `p`, channel-major) into `self.out`.
    pub fn forward(&mut self, x: &[f32], p: Plane, channels: usize) {
        let q = Self::out_plane(p);
        let (hw, ohw) = (p.height * p.width, q.height * q.width);
        let planes = channels * p.batch;
        assert_eq!(x.len(), planes * hw, "max-pool input size");
        self.out.resize(planes * ohw, 0.0);
        self.argmax.resize(planes * ohw, 0);
        for ((src, out), arg) in
            x.chunks_exact(hw).zip(self.out.chunks_exact_mut(ohw)).zip(self.argmax.chunks_exact_mut(ohw))
        {
            for oy in 0..q.height {
                for ox in 0..q.width {
                    let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                    for y in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(p.height) {
                        for xx in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(p.width) {
                            let v = src[y * p.width + xx];
                            if v > best {
                                (best, at) = (v, y * p.width + xx);
                            }
                        }
                    }
                    out[oy * q.width + ox] = best;
                    arg[oy * q.width + ox] = at as u32;
                }
            }
        }
    }

    /// The gradient at the last forward's input (`dx`, resized and overwritten) from the one at
    /// its output (`d`).
    pub fn backward(&self, d: &[f32], p: Plane, dx: &mut Vec<f32>) {
        let q = Self::out_plane(p);
        let (hw, ohw) = (p.height * p.width, q.height * q.width);
        assert_eq!(d.len(), self.argmax.len(), "max-pool gradient size");
        dx.clear();
        dx.resize(d.len() / ohw * hw, 0.0);
        for ((dd, arg), dst) in d.chunks_exact(ohw).zip(self.argmax.chunks_exact(ohw)).zip(dx.chunks_exact_mut(hw)) {
            for (&g, &i) in dd.iter().zip(arg) {
                dst[i as usize] += g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward against the definition (odd and even planes, negative values), and the
    /// backward as its adjoint: <pool'(x) d, e> = <d, pool'(x)^T e> for the pool's linearisation,
    /// i.e. the gradient lands where the maximum was.
    #[test]
    fn pools_like_pytorch_and_sends_gradients_to_the_maxima() {
        for (h, w) in [(5, 4), (4, 4), (7, 3), (1, 1)] {
            let p = Plane { batch: 2, height: h, width: w };
            let c = 3;
            let x: Vec<f32> = (0..c * p.len()).map(|i| ((i * 37 % 29) as f32) - 14.0).collect();
            let mut pool = MaxPool::default();
            pool.forward(&x, p, c);
            let q = MaxPool::out_plane(p);
            for plane in 0..c * p.batch {
                for oy in 0..q.height {
                    for ox in 0..q.width {
                        let mut m = f32::NEG_INFINITY;
                        for y in (2 * oy as i64 - 1)..=(2 * oy as i64 + 1) {
                            for xx in (2 * ox as i64 - 1)..=(2 * ox as i64 + 1) {
                                if (0..h as i64).contains(&y) && (0..w as i64).contains(&xx) {
                                    m = m.max(x[plane * h * w + y as usize * w + xx as usize]);
                                }
                            }
                        }
                        assert_eq!(pool.out[plane * q.height * q.width + oy * q.width + ox], m);
                    }
                }
            }
            // A gradient of one at output o lands on the input holding o's maximum.
            let d: Vec<f32> = (0..pool.out.len()).map(|i| (i % 5) as f32 + 1.0).collect();
            let mut dx = Vec::new();
            pool.backward(&d, p, &mut dx);
            assert_eq!(dx.len(), x.len());
            let total: f32 = d.iter().sum();
            assert!((dx.iter().sum::<f32>() - total).abs() < 1e-3, "every gradient lands once");
            for (i, &g) in dx.iter().enumerate() {
                if g != 0.0 {
                    let plane = i / (h * w);
                    let outs = &pool.out[plane * q.height * q.width..][..q.height * q.width];
                    assert!(outs.contains(&x[i]), "input {i} took a gradient but is no window's maximum");
                }
            }
        }
    }
}
