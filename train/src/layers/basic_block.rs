//! A basic residual block: `relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))`, the first
//! convolution strided where a stage halves the plane. The shortcut is the identity, option A
//! (subsample, then zero channels on both sides) or option B (a 1x1 convolution and a norm).

use super::{relu, relu_backward, ConvBn, Plane, Scratch};

/// How a block's input reaches its sum.
#[derive(Debug, Clone)]
pub enum Shortcut {
    /// The input itself (same shape).
    Identity,
    /// Option A: every `stride`-th pixel, with `pad` zero channels before and after.
    Pad { pad: usize, stride: usize },
    /// Option B: a 1x1 convolution (strided) and a batch norm.
    Projection(Box<ConvBn>),
}

/// A basic block's layers and its last forward's activations.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    shortcut: Shortcut,
    /// `relu(bn(conv1(x)))`, and the block's output.
    mid: Vec<f32>,
    pub(crate) out: Vec<f32>,
    /// Scratch: the projection's normalised output, the gradient at `mid`.
    short: Vec<f32>,
    dmid: Vec<f32>,
}

/// Calls `f(input index, output index)` for every pixel option A's shortcut carries from an
/// input of `inp` channels on plane `p` to an output on plane `q` with `pad` channels before.
fn pad_pairs(inp: usize, p: Plane, q: Plane, pad: usize, stride: usize, mut f: impl FnMut(usize, usize)) {
    let (hw, qhw) = (p.height * p.width, q.height * q.width);
    for c in 0..inp {
        for b in 0..p.batch {
            let src = (c * p.batch + b) * hw;
            let dst = ((c + pad) * q.batch + b) * qhw;
            for y in 0..q.height {
                for x in 0..q.width {
                    f(src + y * stride * p.width + x * stride, dst + y * q.width + x);
                }
            }
        }
    }
}

impl BasicBlock {
    pub(crate) fn new(conv1: ConvBn, conv2: ConvBn, shortcut: Shortcut) -> Self {
        BasicBlock { conv1, conv2, shortcut, mid: Vec::new(), out: Vec::new(), short: Vec::new(), dmid: Vec::new() }
    }

    /// The output plane for input plane `p`.
    pub(crate) fn out_plane(&self, p: Plane) -> Plane {
        self.conv1.out_plane(p)
    }

    /// The output channels.
    pub(crate) fn channels(&self) -> usize {
        self.conv2.out
    }

    /// The forward of channel-major `x` on plane `p` into `self.out`.
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane, train: bool, scratch: &mut Scratch) {
        let par = scratch.parallel;
        self.conv1.convolve(x, p, scratch);
        self.conv1.normalise(&mut self.mid, train, par);
        relu(&mut self.mid);
        let q = self.out_plane(p);
        self.conv2.convolve(&self.mid, q, scratch);
        self.conv2.normalise(&mut self.out, train, par);
        match &mut self.shortcut {
            Shortcut::Identity => self.out.iter_mut().zip(x).for_each(|(o, s)| *o += s),
            Shortcut::Pad { pad, stride } => {
                let out = &mut self.out;
                pad_pairs(self.conv1.inp, p, q, *pad, *stride, |i, o| out[o] += x[i]);
            }
            Shortcut::Projection(sc) => {
                sc.convolve(x, p, scratch);
                sc.normalise(&mut self.short, train, par);
                self.out.iter_mut().zip(&self.short).for_each(|(o, s)| *o += s);
            }
        }
        relu(&mut self.out);
    }

    /// The backward from `d`, the gradient at the block's output (overwritten), to the gradient
    /// at its input `x` (plane `p`), written into `dx`; every parameter gradient.
    pub(crate) fn backward(&mut self, d: &mut [f32], x: &[f32], p: Plane, dx: &mut Vec<f32>, scratch: &mut Scratch) {
        relu_backward(d, &self.out);
        dx.clear();
        dx.resize(x.len(), 0.0);
        let q = self.out_plane(p);
        match &mut self.shortcut {
            Shortcut::Identity => dx.iter_mut().zip(d.iter()).for_each(|(g, d)| *g += d),
            Shortcut::Pad { pad, stride } => pad_pairs(self.conv1.inp, p, q, *pad, *stride, |i, o| dx[i] += d[o]),
            Shortcut::Projection(sc) => sc.backward(d, x, p, Some(dx), scratch),
        }
        self.dmid.clear();
        self.dmid.resize(self.mid.len(), 0.0);
        self.conv2.backward(d, &self.mid, q, Some(&mut self.dmid), scratch);
        relu_backward(&mut self.dmid, &self.mid);
        self.conv1.backward(&self.dmid, x, p, Some(dx), scratch);
    }

    /// The convolutions in forward order: conv1, conv2, the projection if any.
    pub(crate) fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        let sc = match &self.shortcut {
            Shortcut::Projection(sc) => Some(&**sc),
            _ => None,
        };
        [Some(&self.conv1), Some(&self.conv2), sc].into_iter().flatten()
    }

    pub(crate) fn layers_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        let sc = match &mut self.shortcut {
            Shortcut::Projection(sc) => Some(&mut **sc),
            _ => None,
        };
        [Some(&mut self.conv1), Some(&mut self.conv2), sc].into_iter().flatten()
    }
}
