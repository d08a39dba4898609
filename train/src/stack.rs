//! Network bodies as both engines' networks are made. A [`Body`] is residual blocks and the pooled
//! linear head, reading whatever comes before it (a stem's output, or a frozen trunk's cached
//! activations when only the last stages train). A [`Stack`] puts an entry convolution with its
//! norm and ReLU in front (a ResNet's stem, with the ImageNet stem's max-pool after it, or a
//! branch's strided entry); its forward and backward are split at the entry convolution's
//! output so that a [`crate::BranchSet`] can run the entry convolutions of many branches as one
//! product.

use crate::layers::{relu, relu_backward, ConvBn, Head, MaxPool, Plane, ResidualBlock, Scratch};
use crate::sgd::{Param, SgdConfig};

/// Blocks and head, with the buffers of the last step.
#[derive(Debug)]
pub(crate) struct Body {
    blocks: Vec<ResidualBlock>,
    pub(crate) head: Head,
    /// Gradients at two consecutive levels' activations; after a backward, `grads[0]` is the
    /// gradient at the body's input.
    grads: [Vec<f32>; 2],
    pub(crate) scratch: Scratch,
}

impl Body {
    pub(crate) fn new(blocks: Vec<ResidualBlock>, head: Head, parallel: bool) -> Self {
        Body { blocks, head, grads: Default::default(), scratch: Scratch::new(parallel) }
    }

    /// The plane the body reads, then the plane after each block.
    fn planes(&self, p: Plane) -> Vec<Plane> {
        std::iter::once(p)
            .chain(self.blocks.iter().scan(p, |p, b| {
                *p = b.out_plane(*p);
                Some(*p)
            }))
            .collect()
    }

    /// The logits (`(B, outputs)`) of channel-major `x` on plane `p`.
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane, train: bool) -> &[f32] {
        let mut plane = p;
        for j in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let input: &[f32] = if j == 0 { x } else { &before[j - 1].out };
            rest[0].forward(input, plane, train, &mut self.scratch);
            plane = rest[0].out_plane(plane);
        }
        let last: &[f32] = self.blocks.last().map_or(x, |b| &b.out);
        self.head.forward(last, plane);
        &self.head.logits
    }

    /// The backward of a training-mode forward of `x` (plane `p`) from the gradient at the
    /// logits: every parameter gradient, and the gradient at `x` (see [`Body::input_grad`]).
    pub(crate) fn backward(&mut self, dlogits: &[f32], x: &[f32], p: Plane) {
        let planes = self.planes(p);
        let [mut d, mut dx] = std::mem::take(&mut self.grads);
        let last = *planes.last().expect("the input's plane at least");
        self.head.backward(dlogits, last, &mut d);
        for j in (0..self.blocks.len()).rev() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let input: &[f32] = if j == 0 { x } else { &before[j - 1].out };
            rest[0].backward(&mut d, input, planes[j], &mut dx, &mut self.scratch);
            std::mem::swap(&mut d, &mut dx);
        }
        self.grads = [d, dx];
    }

    /// The gradient at the input of the last backward.
    pub(crate) fn input_grad(&mut self) -> &mut [f32] {
        &mut self.grads[0]
    }

    /// The blocks' convolutions in forward order.
    pub(crate) fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        self.blocks.iter().flat_map(|b| b.layers())
    }

    /// The parameters in forward order (the head's last).
    pub(crate) fn params(&self) -> impl Iterator<Item = &Param> {
        self.layers().flat_map(|l| l.params()).chain(self.head.params())
    }

    pub(crate) fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.blocks.iter_mut().flat_map(|b| b.layers_mut()).flat_map(|l| l.params_mut()).chain(self.head.params_mut())
    }

    /// One SGD update of every parameter from its gradient.
    pub(crate) fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        for p in self.params_mut() {
            p.sgd(c, lr);
        }
    }

    /// Every parameter's and running statistic's values, by name.
    pub(crate) fn values(&self, out: &mut Vec<(String, Vec<f32>)>) {
        for l in self.layers() {
            l.values(out);
        }
        self.head.values(out);
    }
}

/// Entry, then a body, with the entry's output of the last step.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) entry: ConvBn,
    /// The ImageNet stem's max-pool after the entry's ReLU, where there is one.
    pool: Option<MaxPool>,
    pub(crate) body: Body,
    /// The entry's output `relu(bn(.))`.
    entry_out: Vec<f32>,
    /// The gradient at the entry's output, where a pool lies between it and the body.
    d_entry: Vec<f32>,
}

impl Stack {
    pub(crate) fn new(entry: ConvBn, body: Body) -> Self {
        Stack { entry, pool: None, body, entry_out: Vec::new(), d_entry: Vec::new() }
    }

    /// The same with the ImageNet stem's 3x3 stride-2 max-pool between the entry and the body.
    pub(crate) fn with_max_pool(entry: ConvBn, body: Body) -> Self {
        Stack { pool: Some(MaxPool::default()), ..Self::new(entry, body) }
    }

    /// The plane the entry convolution gives for input plane `p`.
    pub(crate) fn entry_plane(&self, p: Plane) -> Plane {
        self.entry.out_plane(p)
    }

    /// The plane the body reads, from the entry's plane `p0`.
    fn body_plane(&self, p0: Plane) -> Plane {
        match self.pool {
            Some(_) => MaxPool::out_plane(p0),
            None => p0,
        }
    }

    /// The forward of channel-major `x` on plane `p` to the logits ([`Head`]'s, `(B, outputs)`).
    pub(crate) fn forward(&mut self, x: &[f32], p: Plane, train: bool) -> &[f32] {
        self.entry.convolve(x, p, &mut self.body.scratch);
        self.forward_from_entry(self.entry_plane(p), train)
    }

    /// The forward from the entry convolution's output (already in `entry.pre`, on plane `p0`).
    pub(crate) fn forward_from_entry(&mut self, p0: Plane, train: bool) -> &[f32] {
        self.entry.normalise(&mut self.entry_out, train, self.body.scratch.parallel);
        relu(&mut self.entry_out);
        let q = self.body_plane(p0);
        match &mut self.pool {
            Some(pool) => {
                pool.forward(&self.entry_out, p0, self.entry.out);
                self.body.forward(&pool.out, q, train)
            }
            None => self.body.forward(&self.entry_out, q, train),
        }
    }

    /// The backward of a training-mode forward from `x` (plane `p`), given the gradient at the
    /// logits: every parameter gradient.
    pub(crate) fn backward(&mut self, dlogits: &[f32], x: &[f32], p: Plane) {
        self.backward_to_entry(dlogits, self.entry_plane(p));
        self.entry.backward_from_pre(x, p, None, &mut self.body.scratch);
    }

    /// The backward from `dlogits` to the gradient at the entry convolution's output (left in
    /// `entry.dpre`): every parameter gradient but the entry weight's.
    pub(crate) fn backward_to_entry(&mut self, dlogits: &[f32], p0: Plane) {
        let q = self.body_plane(p0);
        let parallel = self.body.scratch.parallel;
        match &self.pool {
            Some(pool) => {
                self.body.backward(dlogits, &pool.out, q);
                pool.backward(self.body.input_grad(), p0, &mut self.d_entry);
                relu_backward(&mut self.d_entry, &self.entry_out);
                self.entry.normalise_backward(&self.d_entry, parallel);
            }
            None => {
                self.body.backward(dlogits, &self.entry_out, q);
                let d = self.body.input_grad();
                relu_backward(d, &self.entry_out);
                self.entry.normalise_backward(d, parallel);
            }
        }
    }

    /// The convolutions in forward order (entry, then each block's).
    pub(crate) fn layers(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.entry).chain(self.body.layers())
    }

    /// One SGD update of every parameter from its gradient.
    pub(crate) fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        for p in self.entry.params_mut() {
            p.sgd(c, lr);
        }
        self.body.sgd(c, lr);
    }

    /// Every parameter's and running statistic's values, by name.
    pub(crate) fn values(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        self.entry.values(&mut out);
        self.body.values(&mut out);
        out
    }
}
