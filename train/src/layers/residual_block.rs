//! A residual block: convolutions in a chain, each with its batch norm and all but the last with
//! a ReLU, the shortcut added, a ReLU. Two 3x3s make a basic block (the first strided where a
//! stage halves the plane); a 1x1, a strided 3x3 and a 1x1 make torchvision's bottleneck. The
//! shortcut is the identity, option A (subsample, then zero channels on both sides) or option B
//! (a 1x1 convolution and a norm).

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

/// A residual block's layers and its last forward's activations.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    convs: Vec<ConvBn>,
    shortcut: Shortcut,
    /// `relu(bn(conv(...)))` after each convolution but the last, and the block's output.
    mids: Vec<Vec<f32>>,
    pub(crate) out: Vec<f32>,
    /// Scratch: the projection's normalised output, the gradients at `mids`.
    short: Vec<f32>,
    dmids: Vec<Vec<f32>>,
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

impl ResidualBlock {
    /// A block of `convs` (at least one) in forward order and `shortcut`.
    pub(crate) fn new(convs: Vec<ConvBn>, shortcut: Shortcut) -> Self {
        assert!(!convs.is_empty(), "a residual block has convolutions");
        let inner = convs.len() - 1;
        ResidualBlock {
            convs,
            shortcut,
            mids: vec![Vec::new(); inner],
            out: Vec::new(),
            short: Vec::new(),
            dmids: vec![Vec::new(); inner],
        }
    }

    /// The plane convolution `i` reads for input plane `p` (`i` = the count: the block's output).
    fn plane_before(&self, i: usize, p: Plane) -> Plane {
        self.convs[..i].iter().fold(p, |p, c| c.out_plane(p))
    }

    /// The output plane for input plane `p`.
    pub(crate) fn out_plane(&self, p: Plane) -> Plane {
        self.plane_before(self.convs.len(), p)
    }

    /// The output channels.
    pub(crate) fn channels(&self) -> usize {
        self.convs.last().expect("a block has convolutions").out
    }

    /// The forward of channel-major `x` on plane `p` into `self.out`.
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane, train: bool, scratch: &mut Scratch) {
        let par = scratch.parallel;
        let q = self.out_plane(p);
        let inner = self.mids.len();
        let mut plane = p;
        for (i, conv) in self.convs.iter_mut().enumerate() {
            let (before, rest) = self.mids.split_at_mut(i.min(inner));
            let input: &[f32] = if i == 0 { x } else { &before[i - 1] };
            conv.convolve(input, plane, scratch);
            plane = conv.out_plane(plane);
            match rest.first_mut() {
                Some(mid) => {
                    conv.normalise(mid, train, par);
                    relu(mid);
                }
                None => conv.normalise(&mut self.out, train, par),
            }
        }
        match &mut self.shortcut {
            Shortcut::Identity => self.out.iter_mut().zip(x).for_each(|(o, s)| *o += s),
            Shortcut::Pad { pad, stride } => {
                let out = &mut self.out;
                pad_pairs(self.convs[0].inp, p, q, *pad, *stride, |i, o| out[o] += x[i]);
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
            Shortcut::Pad { pad, stride } => pad_pairs(self.convs[0].inp, p, q, *pad, *stride, |i, o| dx[i] += d[o]),
            Shortcut::Projection(sc) => sc.backward(d, x, p, Some(dx), scratch),
        }
        // Down the chain: each convolution's gradient at its input, through the ReLU before it.
        let last = self.convs.len() - 1;
        for i in (0..=last).rev() {
            // `dmids[i]` is the gradient at convolution i's output (the last one's is `d`),
            // `dmids[i - 1]` the one it writes.
            let plane = self.plane_before(i, p);
            let upper = &mut self.dmids[i.saturating_sub(1)..];
            if i == 0 {
                let dy: &[f32] = if last == 0 { d } else { &upper[0] };
                self.convs[0].backward(dy, x, p, Some(dx), scratch);
                continue;
            }
            let (target, above) = upper.split_first_mut().expect("a gradient below convolution i");
            let dy: &[f32] = if i == last { d } else { &above[0] };
            let mid = &self.mids[i - 1];
            target.clear();
            target.resize(mid.len(), 0.0);
            self.convs[i].backward(dy, mid, plane, Some(target), scratch);
            relu_backward(target, mid);
        }
    }

    /// The convolutions in forward order, then the projection if any.
    pub(crate) fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        let sc = match &self.shortcut {
            Shortcut::Projection(sc) => Some(&**sc),
            _ => None,
        };
        self.convs.iter().chain(sc)
    }

    pub(crate) fn layers_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        let sc = match &mut self.shortcut {
            Shortcut::Projection(sc) => Some(&mut **sc),
            _ => None,
        };
        self.convs.iter_mut().chain(sc)
    }
}
