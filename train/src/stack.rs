//! A network body as both engines' networks are made: an entry convolution with its norm and
//! ReLU (a ResNet's stem, a branch's strided entry), basic blocks, and the pooled linear head.
//! The forward and backward are split at the entry convolution's output so that a
//! [`crate::BranchSet`] can run the entry convolutions of many branches as one product.

use crate::layers::{relu, relu_backward, BasicBlock, ConvBn, Head, Plane, Scratch};
use crate::sgd::{Param, SgdConfig};

/// Entry, blocks and head, with the buffers of the last step.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) entry: ConvBn,
    blocks: Vec<BasicBlock>,
    pub(crate) head: Head,
    /// The entry's output `relu(bn(.))`.
    entry_out: Vec<f32>,
    /// Gradients at two consecutive levels' activations (scratch).
    grads: [Vec<f32>; 2],
    pub(crate) scratch: Scratch,
}

impl Stack {
    pub(crate) fn new(entry: ConvBn, blocks: Vec<BasicBlock>, head: Head, parallel: bool) -> Self {
        Stack { entry, blocks, head, entry_out: Vec::new(), grads: Default::default(), scratch: Scratch::new(parallel) }
    }

    /// The plane after the entry (`input` the plane it reads), then after each block.
    fn planes(&self, p0: Plane) -> impl Iterator<Item = Plane> + '_ {
        std::iter::once(p0).chain(self.blocks.iter().scan(p0, |p, b| {
            *p = b.out_plane(*p);
            Some(*p)
        }))
    }

    /// The plane the entry gives for input plane `p`.
    pub(crate) fn entry_plane(&self, p: Plane) -> Plane {
        self.entry.out_plane(p)
    }

    /// The forward of channel-major `x` on plane `p` to the logits ([`Head`]'s, `(B, outputs)`).
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane, train: bool) -> &[f32] {
        self.entry.convolve(x, p, &mut self.scratch);
        self.forward_from_entry(self.entry_plane(p), train);
        &self.head.logits
    }

    /// The forward from the entry convolution's output (already in `entry.pre`, on plane `p0`).
    pub(crate) fn forward_from_entry(&mut self, p0: Plane, train: bool) {
        let par = self.scratch.parallel;
        self.entry.normalise(&mut self.entry_out, train, par);
        relu(&mut self.entry_out);
        let mut plane = p0;
        for j in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let x: &[f32] = if j == 0 { &self.entry_out } else { &before[j - 1].out };
            rest[0].forward(x, plane, train, &mut self.scratch);
            plane = rest[0].out_plane(plane);
        }
        let last: &[f32] = self.blocks.last().map_or(&self.entry_out, |b| &b.out);
        self.head.forward(last, plane);
    }

    /// The backward of a training-mode forward from `x` (plane `p`), given the gradient at the
    /// logits: every parameter gradient.
    pub(crate) fn backward(&mut self, dlogits: &[f32], x: &[f32], p: Plane) {
        self.backward_to_entry(dlogits, self.entry_plane(p));
        self.entry.backward_from_pre(x, p, None, &mut self.scratch);
    }

    /// The backward from `dlogits` to the gradient at the entry convolution's output (left in
    /// `entry.dpre`): every parameter gradient but the entry weight's.
    pub(crate) fn backward_to_entry(&mut self, dlogits: &[f32], p0: Plane) {
        let planes: Vec<Plane> = self.planes(p0).collect();
        let [mut d, mut dx] = std::mem::take(&mut self.grads);
        let last = *planes.last().expect("the entry's plane at least");
        self.head.backward(dlogits, last, &mut d);
        for j in (0..self.blocks.len()).rev() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let x: &[f32] = if j == 0 { &self.entry_out } else { &before[j - 1].out };
            rest[0].backward(&mut d, x, planes[j], &mut dx, &mut self.scratch);
            std::mem::swap(&mut d, &mut dx);
        }
        relu_backward(&mut d, &self.entry_out);
        self.entry.normalise_backward(&d, self.scratch.parallel);
        self.grads = [d, dx];
    }

    /// The convolutions in forward order (entry, then each block's).
    pub(crate) fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.entry).chain(self.blocks.iter().flat_map(|b| b.layers()))
    }

    fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        std::iter::once(&mut self.entry)
            .chain(self.blocks.iter_mut().flat_map(|b| b.layers_mut()))
            .flat_map(|l| l.params_mut())
            .chain(self.head.params_mut())
    }

    /// One SGD update of every parameter from its gradient.
    pub(crate) fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        for p in self.params_mut() {
            p.sgd(c, lr);
        }
    }

    /// Every parameter's and running statistic's values, by name.
    pub(crate) fn values(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        for l in self.layers() {
            l.values(&mut out);
        }
        self.head.values(&mut out);
        out
    }
}
