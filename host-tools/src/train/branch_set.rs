//! Compact branches trained the fast way: the branches of several classes (one spec), trained
//! together on the same minibatches of cached trunk activations, with forward and backward
//! written out on plain slices. Everything stays channel-major (`(C, B, H, W)`, the layout a
//! convolution GEMM produces, so no transposes), every buffer lives across steps, and the
//! branches' entry convolutions, which all read the same trunk activations, run as one GEMM.
//!
//! Built through candle's autograd ([`TrainableBranch`]), a step was a few dozen tensor ops per
//! layer, each allocating; this is the same arithmetic without them. [`TrainableBranch`] stays
//! the reference: a set starts from branches it initialised, a step here is held to a step
//! there (loss, gradients and SGD update), and a trained set hands each branch back as one for
//! folding and evaluation.

use classmod_runtime::host::BranchSpec;
use classmod_runtime::host::BN_EPS;
use rayon::prelude::*;

use super::branch::TrainableBranch;
use super::im2col::{col2im_add, im2col_into, ConvGeometry, PlaneOrder};
use super::matmul::{matmul, matmul_columns, MatRef};
use super::net::BN_MOMENTUM;
use super::SgdConfig;
use crate::HostError;

/// One minibatch: trunk activations and what the branches learn from.
pub struct Minibatch<'a> {
    /// `(B, C, H, W)` activations, image-major as cached.
    pub activations: &'a [f32],
    /// `(B, classes)` logits of the base (the teacher).
    pub teacher: &'a [f32],
    pub labels: &'a [u32],
}

/// Images per convolution product: their columns (a few hundred KB) stay in cache between the
/// im2col that writes them and the GEMM that reads them; the whole batch's did not.
const CHUNK_IMAGES: usize = 16;

fn image_chunks(batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..batch).step_by(CHUNK_IMAGES).map(move |s| s..(s + CHUNK_IMAGES).min(batch))
}

/// A parameter with its gradient and momentum buffer.
struct Param {
    value: Vec<f32>,
    grad: Vec<f32>,
    momentum: Vec<f32>,
}

impl Param {
    fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Param { value, grad: vec![0.0; n], momentum: vec![0.0; n] }
    }

    /// PyTorch's SGD rule, as [`super::Sgd`] applies it.
    fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        let (mu, wd) = (c.momentum as f32, c.weight_decay as f32);
        for ((p, &g), m) in self.value.iter_mut().zip(&self.grad).zip(&mut self.momentum) {
            let g = g + wd * *p;
            *m = mu * *m + g;
            let step = if c.nesterov { g + mu * *m } else { *m };
            *p -= lr * step;
        }
    }
}

/// Plane geometry of a layer's input.
#[derive(Debug, Clone, Copy)]
struct Plane {
    batch: usize,
    height: usize,
    width: usize,
}

impl Plane {
    fn len(&self) -> usize {
        self.batch * self.height * self.width
    }
}

/// A convolution (no bias) and a training-mode batch norm, with what its backward needs.
struct ConvBnLayer {
    name: String,
    out: usize,
    inp: usize,
    kernel: usize,
    stride: usize,
    weight: Param,
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    /// The last forward's convolution output (before the norm), `(out, B*Ho*Wo)`.
    pre: Vec<f32>,
    /// ... its per-channel batch mean and `1/sqrt(var + eps)`.
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// Scratch: the gradient at `pre`.
    dpre: Vec<f32>,
}

/// Scratch columns shared by the layers of one branch.
#[derive(Default)]
struct Columns {
    cols: Vec<f32>,
    dcols: Vec<f32>,
}

impl ConvBnLayer {
    fn geometry(&self, p: Plane) -> ConvGeometry {
        ConvGeometry {
            batch: p.batch,
            in_channels: self.inp,
            height: p.height,
            width: p.width,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.kernel / 2,
        }
    }

    fn out_plane(&self, p: Plane) -> Plane {
        let (height, width) = self.geometry(p).out_size();
        Plane { batch: p.batch, height, width }
    }

    fn ckk(&self) -> usize {
        self.inp * self.kernel * self.kernel
    }

    /// `pre = conv(x)` for channel-major `x` on plane `p`.
    fn convolve(&mut self, x: &[f32], p: Plane, scratch: &mut Columns) {
        let (g, ckk) = (self.geometry(p), self.ckk());
        let per = self.out_plane(p).height * self.out_plane(p).width;
        let n = p.batch * per;
        self.pre.resize(self.out * n, 0.0);
        let w = MatRef::new(&self.weight.value, self.out, ckk);
        for images in image_chunks(p.batch) {
            let nc = images.len() * per;
            scratch.cols.resize(ckk * nc, 0.0);
            let cols = &mut scratch.cols[..ckk * nc];
            im2col_into(x, &g, PlaneOrder::Cnhw, images.clone(), cols, false);
            matmul_columns(&mut self.pre[images.start * per..], n, w, MatRef::new(cols, ckk, nc), false, false);
        }
    }

    /// `y = batch_norm(pre)` with the batch's statistics; updates the running statistics as
    /// PyTorch does (momentum 0.1, the unbiased variance).
    fn normalise(&mut self, y: &mut Vec<f32>) {
        let m = self.pre.len() / self.out;
        self.mean.resize(self.out, 0.0);
        self.inv_std.resize(self.out, 0.0);
        y.resize(self.pre.len(), 0.0);
        let mom = BN_MOMENTUM as f32;
        for (ch, (x, out)) in self.pre.chunks(m).zip(y.chunks_mut(m)).enumerate() {
            let mu = x.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
            let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / m as f64;
            let inv = 1.0 / (var + BN_EPS).sqrt();
            (self.mean[ch], self.inv_std[ch]) = (mu, inv);
            let scale = self.gamma.value[ch] as f64 * inv;
            let (scale, shift) = (scale as f32, (self.beta.value[ch] as f64 - mu * scale) as f32);
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
            let unbiased = (var * m as f64 / (m as f64 - 1.0).max(1.0)) as f32;
            self.running_mean[ch] = self.running_mean[ch] * (1.0 - mom) + mu as f32 * mom;
            self.running_var[ch] = self.running_var[ch] * (1.0 - mom) + unbiased * mom;
        }
    }

    /// From the gradient `dy` at the norm's output: the norm's parameter gradients and `dpre`.
    fn normalise_backward(&mut self, dy: &[f32]) {
        let m = self.pre.len() / self.out;
        self.dpre.resize(self.pre.len(), 0.0);
        for ch in 0..self.out {
            let r = ch * m..(ch + 1) * m;
            let (x, dy, dx) = (&self.pre[r.clone()], &dy[r.clone()], &mut self.dpre[r]);
            let (mu, inv) = (self.mean[ch], self.inv_std[ch]);
            let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
            for (&d, &v) in dy.iter().zip(x) {
                sum_dy += d as f64;
                sum_dy_xhat += d as f64 * (v as f64 - mu) * inv;
            }
            self.gamma.grad[ch] = sum_dy_xhat as f32;
            self.beta.grad[ch] = sum_dy as f32;
            let k = self.gamma.value[ch] as f64 * inv / m as f64;
            for ((o, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
                let xhat = (v as f64 - mu) * inv;
                *o = (k * (m as f64 * d as f64 - sum_dy - xhat * sum_dy_xhat)) as f32;
            }
        }
    }

    /// The whole backward from `dy` (at the norm's output): parameter gradients, and the input
    /// gradient added into `dx` (channel-major, plane `p`).
    fn backward(&mut self, dy: &[f32], x: &[f32], p: Plane, dx: &mut [f32], scratch: &mut Columns) {
        self.normalise_backward(dy);
        let (g, ckk) = (self.geometry(p), self.ckk());
        let per = self.out_plane(p).height * self.out_plane(p).width;
        let n = p.batch * per;
        let w = MatRef::new(&self.weight.value, self.out, ckk);
        for images in image_chunks(p.batch) {
            let nc = images.len() * per;
            scratch.cols.resize(ckk * nc, 0.0);
            scratch.dcols.resize(ckk * nc, 0.0);
            let (cols, dcols) = (&mut scratch.cols[..ckk * nc], &mut scratch.dcols[..ckk * nc]);
            im2col_into(x, &g, PlaneOrder::Cnhw, images.clone(), cols, false);
            let dpre = MatRef::columns(&self.dpre, self.out, n, images.start * per..images.end * per);
            let first = images.start == 0;
            matmul(&mut self.weight.grad, dpre, MatRef::new(cols, ckk, nc).t(), !first, false);
            matmul(dcols, w.t(), dpre, false, false);
            col2im_add(dcols, &g, PlaneOrder::Cnhw, images, dx);
        }
    }

    fn params_mut(&mut self) -> [&mut Param; 3] {
        [&mut self.weight, &mut self.gamma, &mut self.beta]
    }
}

/// A basic block's layers and its last forward's activations.
struct BlockLayers {
    conv1: ConvBnLayer,
    conv2: ConvBnLayer,
    shortcut: Option<ConvBnLayer>,
    /// `relu(bn(conv1(x)))`, and the block's output `relu(bn(conv2(.)) + shortcut)`.
    mid: Vec<f32>,
    out: Vec<f32>,
    /// Scratch: the shortcut's normalised output, the gradient at `mid`.
    short: Vec<f32>,
    dmid: Vec<f32>,
}

/// One class's branch: its layers, its head and its buffers.
struct BranchState {
    class: usize,
    entry: ConvBnLayer,
    blocks: Vec<BlockLayers>,
    linear_w: Param,
    linear_b: Param,
    /// The entry's output `relu(bn(.))`.
    entry_out: Vec<f32>,
    /// Pooled features `(width, B)`, logits `(B,)`, their gradient.
    feats: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    /// Gradients at each level's activations (scratch).
    grads: [Vec<f32>; 2],
    scratch: Columns,
}

fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `d *= (a > 0)`: the gradient through a ReLU whose output was `a`.
fn relu_backward(d: &mut [f32], a: &[f32]) {
    for (d, &a) in d.iter_mut().zip(a) {
        if a <= 0.0 {
            *d = 0.0;
        }
    }
}

impl BranchState {
    /// The forward from the entry convolution's output (already in `entry.pre`) to the logits.
    fn forward(&mut self, p0: Plane) {
        let mut out = std::mem::take(&mut self.entry_out);
        self.entry.normalise(&mut out);
        relu(&mut out);
        self.entry_out = out;
        let mut plane = p0;
        for j in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let block = &mut rest[0];
            let x: &[f32] = if j == 0 { &self.entry_out } else { &before[j - 1].out };
            block.conv1.convolve(x, plane, &mut self.scratch);
            block.conv1.normalise(&mut block.mid);
            relu(&mut block.mid);
            let mid_plane = block.conv1.out_plane(plane);
            block.conv2.convolve(&block.mid, mid_plane, &mut self.scratch);
            block.conv2.normalise(&mut block.out);
            match block.shortcut.as_mut() {
                Some(sc) => {
                    sc.convolve(x, plane, &mut self.scratch);
                    sc.normalise(&mut block.short);
                    block.out.iter_mut().zip(&block.short).for_each(|(o, s)| *o += s);
                }
                None => block.out.iter_mut().zip(x).for_each(|(o, s)| *o += s),
            }
            relu(&mut block.out);
            plane = mid_plane;
        }
        let last: &[f32] = self.blocks.last().map_or(&self.entry_out, |b| &b.out);
        let (hw, batch) = (plane.height * plane.width, plane.batch);
        let width = self.linear_w.value.len();
        self.feats.resize(width * batch, 0.0);
        for (f, plane) in self.feats.iter_mut().zip(last.chunks(hw)) {
            *f = plane.iter().sum::<f32>() / hw as f32;
        }
        self.logits.resize(batch, 0.0);
        for (b, z) in self.logits.iter_mut().enumerate() {
            *z = self.linear_b.value[0]
                + (0..width).map(|c| self.linear_w.value[c] * self.feats[c * batch + b]).sum::<f32>();
        }
    }

    /// The backward from `dlogits` to the gradient at the entry convolution's output, left in
    /// `entry.dpre`; every parameter gradient but the entry weight's.
    fn backward(&mut self, p0: Plane) {
        let planes: Vec<Plane> = std::iter::once(p0)
            .chain(self.blocks.iter().scan(p0, |p, b| {
                *p = b.conv1.out_plane(*p);
                Some(*p)
            }))
            .collect();
        let last_plane = *planes.last().expect("the entry's plane at least");
        let (hw, batch) = (last_plane.height * last_plane.width, last_plane.batch);
        let width = self.linear_w.value.len();
        self.linear_b.grad[0] = self.dlogits.iter().sum();
        for c in 0..width {
            self.linear_w.grad[c] = (0..batch).map(|b| self.dlogits[b] * self.feats[c * batch + b]).sum();
        }
        let [mut d, mut dx] = std::mem::take(&mut self.grads);
        d.resize(width * last_plane.len(), 0.0);
        for (i, chunk) in d.chunks_mut(hw).enumerate() {
            chunk.fill(self.dlogits[i % batch] * self.linear_w.value[i / batch] / hw as f32);
        }
        for j in (0..self.blocks.len()).rev() {
            let (before, rest) = self.blocks.split_at_mut(j);
            let block = &mut rest[0];
            let x: &[f32] = if j == 0 { &self.entry_out } else { &before[j - 1].out };
            let plane = planes[j];
            relu_backward(&mut d, &block.out);
            dx.clear();
            dx.resize(width * plane.len(), 0.0);
            match block.shortcut.as_mut() {
                Some(sc) => sc.backward(&d, x, plane, &mut dx, &mut self.scratch),
                None => dx.iter_mut().zip(&d).for_each(|(g, d)| *g += d),
            }
            block.dmid.clear();
            block.dmid.resize(block.mid.len(), 0.0);
            let mid_plane = planes[j + 1];
            block.conv2.backward(&d, &block.mid, mid_plane, &mut block.dmid, &mut self.scratch);
            relu_backward(&mut block.dmid, &block.mid);
            block.conv1.backward(&block.dmid, x, plane, &mut dx, &mut self.scratch);
            std::mem::swap(&mut d, &mut dx);
        }
        relu_backward(&mut d, &self.entry_out);
        self.entry.normalise_backward(&d);
        self.grads = [d, dx];
    }

    /// The convolutions in forward order (entry, then each block's conv1, conv2, shortcut).
    fn layers(&self) -> impl Iterator<Item = &ConvBnLayer> {
        std::iter::once(&self.entry)
            .chain(self.blocks.iter().flat_map(|b| [Some(&b.conv1), Some(&b.conv2), b.shortcut.as_ref()]).flatten())
    }

    fn layers_mut(&mut self) -> impl Iterator<Item = &mut ConvBnLayer> {
        std::iter::once(&mut self.entry).chain(
            self.blocks
                .iter_mut()
                .flat_map(|b| [Some(&mut b.conv1), Some(&mut b.conv2), b.shortcut.as_mut()])
                .flatten(),
        )
    }

    fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        for layer in self.layers_mut() {
            for p in layer.params_mut() {
                p.sgd(c, lr);
            }
        }
        self.linear_w.sgd(c, lr);
        self.linear_b.sgd(c, lr);
    }
}

/// Class `c`'s distillation loss on a minibatch and its gradient at the branch's logits `z`:
/// the branch's logit replaces the base's logit of `c`, and the softmax of the result is
/// distilled to the base's: `T^2 KL(softmax(L/T) || softmax(S/T)) + CE(S, label)`, batch means.
fn distillation(z: &[f32], teacher: &[f32], labels: &[u32], c: usize, t: f64, dz: &mut Vec<f32>) -> f64 {
    let batch = z.len();
    let classes = teacher.len() / batch.max(1);
    dz.resize(batch, 0.0);
    let mut loss = 0f64;
    let log_softmax = |v: &[f64]| -> Vec<f64> {
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        v.iter().map(|x| x - lse).collect()
    };
    for (i, (&zi, row)) in z.iter().zip(teacher.chunks(classes)).enumerate() {
        let l: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let mut s = l.clone();
        s[c] = zi as f64;
        let lp = log_softmax(&l.iter().map(|v| v / t).collect::<Vec<_>>());
        let lq = log_softmax(&s.iter().map(|v| v / t).collect::<Vec<_>>());
        let lr = log_softmax(&s);
        let kd: f64 = lp.iter().zip(&lq).map(|(p, q)| p.exp() * (p - q)).sum();
        let y = labels[i] as usize;
        loss += t * t * kd - lr[y];
        let onehot = if y == c { 1.0 } else { 0.0 };
        dz[i] = ((t * (lq[c].exp() - lp[c].exp()) + lr[c].exp() - onehot) / batch as f64) as f32;
    }
    loss / batch as f64
}

/// The branches of several classes, trained together.
pub struct BranchSet {
    spec: BranchSpec,
    /// The trunk activations' plane.
    height: usize,
    width: usize,
    branches: Vec<BranchState>,
    /// Shared per step: the minibatch channel-major, its entry columns, the entry weights of
    /// every branch stacked `(K*W, C*9)`, their outputs `(K*W, N)` and weight gradients.
    input: Vec<f32>,
    cols: Vec<f32>,
    entry_w: Vec<f32>,
    entry_pre: Vec<f32>,
    entry_dw: Vec<f32>,
}

impl BranchSet {
    /// A set over trunk activations of plane `height x width`, starting from `branches`
    /// (`(class, branch)`, all of `spec`).
    pub fn new(
        spec: BranchSpec,
        height: usize,
        width: usize,
        branches: &[(usize, TrainableBranch)],
    ) -> Result<Self, HostError> {
        let states = branches
            .iter()
            .map(|(class, b)| BranchState::from_trainable(spec, *class, b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BranchSet {
            spec,
            height,
            width,
            branches: states,
            input: Vec::new(),
            cols: Vec::new(),
            entry_w: Vec::new(),
            entry_pre: Vec::new(),
            entry_dw: Vec::new(),
        })
    }

    /// One SGD step of every branch on `batch`, at learning rate `lr`; each branch's loss.
    pub fn step(&mut self, batch: &Minibatch, sgd: &SgdConfig, lr: f64, temperature: f64) -> Vec<f64> {
        let c = self.spec.in_channels;
        let hw = self.height * self.width;
        let b = batch.labels.len();
        assert_eq!(batch.activations.len(), b * c * hw, "minibatch activations");
        // Image-major as cached -> channel-major.
        self.input.resize(b * c * hw, 0.0);
        for (i, image) in batch.activations.chunks(c * hw).enumerate() {
            for (ch, plane) in image.chunks(hw).enumerate() {
                self.input[(ch * b + i) * hw..][..hw].copy_from_slice(plane);
            }
        }
        let plane = Plane { batch: b, height: self.height, width: self.width };
        let w = self.spec.width;
        let k = self.branches.len();
        let (geo, ckk) = {
            let e = &self.branches[0].entry;
            (e.geometry(plane), e.ckk())
        };
        let p0 = self.branches[0].entry.out_plane(plane);
        let n = p0.len();
        // The columns of every chunk of images, kept for the weight gradient; each chunk's
        // product of all K branches' entry weights straight after its im2col.
        self.cols.resize(ckk * n, 0.0);
        self.entry_w.clear();
        for br in &self.branches {
            self.entry_w.extend_from_slice(&br.entry.weight.value);
        }
        self.entry_pre.resize(k * w * n, 0.0);
        let per = p0.height * p0.width;
        for images in image_chunks(b) {
            let cols = &mut self.cols[ckk * images.start * per..ckk * images.end * per];
            im2col_into(&self.input, &geo, PlaneOrder::Cnhw, images.clone(), cols, true);
            let wm = MatRef::new(&self.entry_w, k * w, ckk);
            let nc = images.len() * per;
            matmul_columns(&mut self.entry_pre[images.start * per..], n, wm, MatRef::new(cols, ckk, nc), false, true);
        }
        let losses: Vec<f64> = self
            .branches
            .par_iter_mut()
            .zip(self.entry_pre.par_chunks_mut(w * n))
            .map(|(br, pre)| {
                br.entry.pre.clear();
                br.entry.pre.extend_from_slice(pre);
                br.forward(p0);
                let mut dz = std::mem::take(&mut br.dlogits);
                let loss = distillation(&br.logits, batch.teacher, batch.labels, br.class, temperature, &mut dz);
                br.dlogits = dz;
                br.backward(p0);
                pre.copy_from_slice(&br.entry.dpre);
                loss
            })
            .collect();
        // Every branch's entry weight gradient in one product per chunk: dW += dPre cols^T.
        self.entry_dw.resize(k * w * ckk, 0.0);
        for images in image_chunks(b) {
            let cols =
                MatRef::new(&self.cols[ckk * images.start * per..ckk * images.end * per], ckk, images.len() * per);
            let dpre = MatRef::columns(&self.entry_pre, k * w, n, images.start * per..images.end * per);
            matmul(&mut self.entry_dw, dpre, cols.t(), images.start != 0, true);
        }
        let lr = lr as f32;
        self.branches.par_iter_mut().zip(self.entry_dw.par_chunks(w * ckk)).for_each(|(br, dw)| {
            br.entry.weight.grad.copy_from_slice(dw);
            br.sgd(sgd, lr);
        });
        losses
    }

    /// The classes, in order.
    pub fn classes(&self) -> Vec<usize> {
        self.branches.iter().map(|b| b.class).collect()
    }

    /// Branch `i` as a [`TrainableBranch`] (its parameters and running statistics).
    pub fn branch(&self, i: usize) -> Result<TrainableBranch, HostError> {
        let br = &self.branches[i];
        let mut values = Vec::new();
        for layer in br.layers() {
            let l = &layer.name;
            values.push((format!("{l}.weight"), layer.weight.value.clone()));
            values.push((format!("{l}.bn.weight"), layer.gamma.value.clone()));
            values.push((format!("{l}.bn.bias"), layer.beta.value.clone()));
            values.push((format!("{l}.bn.running_mean"), layer.running_mean.clone()));
            values.push((format!("{l}.bn.running_var"), layer.running_var.clone()));
        }
        values.push(("linear.weight".into(), br.linear_w.value.clone()));
        values.push(("linear.bias".into(), br.linear_b.value.clone()));
        TrainableBranch::from_values(self.spec, values.into_iter().collect(), &candle_core::Device::Cpu)
    }
}

impl BranchState {
    fn from_trainable(spec: BranchSpec, class: usize, b: &TrainableBranch) -> Result<Self, HostError> {
        let values = b.values()?;
        let get = |name: &str| -> Result<Vec<f32>, HostError> {
            values.get(name).cloned().ok_or_else(|| HostError::BranchValues { name: name.into() })
        };
        let layer =
            |name: String, out: usize, inp: usize, kernel: usize, stride: usize| -> Result<ConvBnLayer, HostError> {
                Ok(ConvBnLayer {
                    out,
                    inp,
                    kernel,
                    stride,
                    weight: Param::new(get(&format!("{name}.weight"))?),
                    gamma: Param::new(get(&format!("{name}.bn.weight"))?),
                    beta: Param::new(get(&format!("{name}.bn.bias"))?),
                    running_mean: get(&format!("{name}.bn.running_mean"))?,
                    running_var: get(&format!("{name}.bn.running_var"))?,
                    name,
                    pre: Vec::new(),
                    mean: Vec::new(),
                    inv_std: Vec::new(),
                    dpre: Vec::new(),
                })
            };
        let w = spec.width;
        let blocks = (0..spec.blocks)
            .map(|j| {
                let s = spec.block_stride(j);
                Ok(BlockLayers {
                    conv1: layer(format!("block{j}.conv1"), w, w, 3, s)?,
                    conv2: layer(format!("block{j}.conv2"), w, w, 3, 1)?,
                    shortcut: if s == 1 { None } else { Some(layer(format!("block{j}.shortcut"), w, w, 1, s)?) },
                    mid: Vec::new(),
                    out: Vec::new(),
                    short: Vec::new(),
                    dmid: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, HostError>>()?;
        Ok(BranchState {
            class,
            entry: layer("entry".into(), w, spec.in_channels, 3, 2)?,
            blocks,
            linear_w: Param::new(get("linear.weight")?),
            linear_b: Param::new(get("linear.bias")?),
            entry_out: Vec::new(),
            feats: Vec::new(),
            logits: Vec::new(),
            dlogits: Vec::new(),
            grads: [Vec::new(), Vec::new()],
            scratch: Columns::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Sgd;
    use candle_core::{Device, Tensor, D};

    /// The loss as compact decomposition wrote it with candle's differentiable ops (the
    /// reference for [`distillation`] and its gradient).
    fn candle_distillation(
        z: &Tensor,
        teacher: &Tensor,
        labels: &Tensor,
        c: usize,
        t: f64,
    ) -> candle_core::Result<Tensor> {
        let classes = teacher.dim(1)?;
        let mut onehot = vec![0f32; classes];
        onehot[c] = 1.0;
        let onehot = Tensor::from_vec(onehot, (1, classes), z.device())?;
        let student = (teacher.broadcast_mul(&(1.0 - &onehot)?)? + z.unsqueeze(1)?.broadcast_mul(&onehot)?)?;
        let soft = candle_nn::ops::softmax(&(teacher / t)?, D::Minus1)?;
        let log_soft = candle_nn::ops::log_softmax(&(teacher / t)?, D::Minus1)?;
        let log_student = candle_nn::ops::log_softmax(&(&student / t)?, D::Minus1)?;
        let kd = ((soft * (log_soft - log_student)?)?.sum(D::Minus1)?.mean_all()? * (t * t))?;
        kd + candle_nn::loss::cross_entropy(&student, labels)?
    }

    fn stream(n: usize, seed: u32) -> Vec<f32> {
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

    /// Two SGD steps of two branches here against the same two steps of each branch through
    /// candle's autograd and [`Sgd`] (the reference): the losses, then every parameter and
    /// running statistic after the steps, for the default trunk (T = 2) and the shallow one
    /// (T = 1, whose first block halves the plane through a projection shortcut); and a branch
    /// trained alone ends where it ends beside another.
    #[test]
    fn steps_match_candle_autograd_and_sgd() -> Result<(), HostError> {
        let dev = Device::Cpu;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        for (trunk_stages, plane, blocks) in [(2, 8, 2), (1, 9, 2)] {
            let spec = BranchSpec { trunk_stages, in_channels: 3, width: 4, blocks };
            let (batch, classes, t) = (CHUNK_IMAGES + 4, 5, 4.0); // two chunks of images
            let acts: Vec<f32> = stream(batch * 3 * plane * plane, 7).iter().map(|v| v.max(0.0) * 2.0).collect();
            let teacher: Vec<f32> = stream(batch * classes, 11).iter().map(|v| v * 4.0).collect();
            let labels: Vec<u32> = (0..batch as u32).map(|i| i * 7 % classes as u32).collect();
            let inits: Vec<(usize, TrainableBranch)> = [(1usize, 21u64), (3, 22)]
                .iter()
                .map(|&(c, seed)| Ok((c, TrainableBranch::init(spec, seed, &dev)?)))
                .collect::<Result<_, HostError>>()?;
            let mut set = BranchSet::new(spec, plane, plane, &inits)?;
            let x = Tensor::from_vec(acts.clone(), (batch, 3, plane, plane), &dev)?;
            let teacher_t = Tensor::from_vec(teacher.clone(), (batch, classes), &dev)?;
            let labels_t = Tensor::from_vec(labels.clone(), batch, &dev)?;
            let mb = Minibatch { activations: &acts, teacher: &teacher, labels: &labels };
            let mut references = Vec::new();
            for (c, seed) in [(1usize, 21u64), (3, 22)] {
                let mut b = TrainableBranch::init(spec, seed, &dev)?;
                let mut opt = Sgd::new(b.vars(), sgd);
                let mut losses = Vec::new();
                for lr in [0.1, 0.05] {
                    let loss = candle_distillation(&b.forward(&x, true)?, &teacher_t, &labels_t, c, t)?;
                    losses.push(loss.to_scalar::<f32>()? as f64);
                    opt.set_lr(lr);
                    opt.step(&loss.backward()?)?;
                }
                references.push((losses, b.values()?));
            }
            let ours: Vec<Vec<f64>> = [0.1, 0.05].iter().map(|&lr| set.step(&mb, &sgd, lr, t)).collect();
            for (i, (want_losses, want)) in references.iter().enumerate() {
                for (step, want_loss) in want_losses.iter().enumerate() {
                    let got = ours[step][i];
                    assert!(
                        (got - want_loss).abs() < 1e-4 * want_loss.abs().max(1.0),
                        "T{trunk_stages} branch {i} step {step}: loss {got} vs {want_loss}"
                    );
                }
                let got = set.branch(i)?.values()?;
                assert_eq!(got.len(), want.len());
                for (name, w) in want {
                    let d = got[name].iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(d < 1e-4, "T{trunk_stages} branch {i} `{name}` differs by {d} after two steps");
                }
            }
            assert_eq!(set.classes(), vec![1, 3]);
            // Each branch's loss is its own: class 3 trained alone ends where it ended beside 1.
            let mut alone = BranchSet::new(spec, plane, plane, &inits[1..])?;
            for lr in [0.1, 0.05] {
                alone.step(&mb, &sgd, lr, t);
            }
            let (a, b) = (alone.branch(0)?.values()?, set.branch(1)?.values()?);
            for (name, v) in &a {
                let d = v.iter().zip(&b[name]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(d < 1e-6, "T{trunk_stages} `{name}`: alone and beside another differ by {d}");
            }
        }
        Ok(())
    }
}
