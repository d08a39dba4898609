//! A convolution (square kernel, padding k/2, no bias) followed by a batch norm: the unit every
//! network here is made of. In training mode the norm uses the batch's statistics (the biased
//! variance, as PyTorch) and updates the running ones (momentum 0.1, the unbiased variance); in
//! eval mode it uses the running ones. Its backward is one pass per channel in closed form:
//! `dx = g/(m*s) * (m*dy - sum(dy) - xhat*sum(dy*xhat))`, `dg = sum(dy*xhat)`, `db = sum(dy)`,
//! with `s = sqrt(var + eps)`.

use classmod_runtime::host::BN_EPS;
use rayon::prelude::*;

use super::{image_chunks, Plane, Scratch, Values};
use crate::kernels::{col2im_add, im2col_into, matmul, matmul_columns, ConvGeometry, MatRef, PlaneOrder};
use crate::sgd::Param;
use crate::{TrainError, BN_MOMENTUM};

/// The columns of the images `images` of channel-major `x` (geometry `g`), in `buf` (grown as
/// needed, kept across steps).
fn chunk_columns<'a>(
    x: &[f32],
    g: &ConvGeometry,
    images: std::ops::Range<usize>,
    buf: &'a mut Vec<f32>,
    parallel: bool,
) -> &'a mut [f32] {
    let (ho, wo) = g.out_size();
    let len = g.in_channels * g.kernel * g.kernel * images.len() * ho * wo;
    buf.resize(len, 0.0);
    let cols = &mut buf[..len];
    im2col_into(x, g, PlaneOrder::Cnhw, images, cols, parallel);
    cols
}

/// One channel's `(index, ((dpre, pre), dy))` in the norm's backward.
type ChannelSlices<'a> = (usize, ((&'a mut [f32], &'a [f32]), &'a [f32]));

/// A convolution and its batch norm, with what the backward needs from the last forward.
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// Name prefixes of the convolution's weight and of the norm's tensors.
    conv: String,
    bn: String,
    pub(crate) out: usize,
    pub(crate) inp: usize,
    kernel: usize,
    stride: usize,
    pub(crate) weight: Param,
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    /// The last forward's convolution output (before the norm), `(out, B*Ho*Wo)`.
    pub(crate) pre: Vec<f32>,
    /// ... its per-channel batch mean and `1/sqrt(var + eps)`.
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// The gradient at `pre` (left by [`ConvBn::normalise_backward`]).
    pub(crate) dpre: Vec<f32>,
}

impl ConvBn {
    /// The layer named `conv` (weight `{conv}.weight`, `(out, inp, kernel, kernel)`) and `bn`
    /// (`{bn}.weight`, `.bias`, `.running_mean`, `.running_var`), its values taken from `values`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_values(
        conv: String,
        bn: String,
        out: usize,
        inp: usize,
        kernel: usize,
        stride: usize,
        values: &mut Values,
    ) -> Result<Self, TrainError> {
        Ok(ConvBn {
            weight: Param::new(values.take(&format!("{conv}.weight"), out * inp * kernel * kernel)?),
            gamma: Param::new(values.take(&format!("{bn}.weight"), out)?),
            beta: Param::new(values.take(&format!("{bn}.bias"), out)?),
            running_mean: values.take(&format!("{bn}.running_mean"), out)?,
            running_var: values.take(&format!("{bn}.running_var"), out)?,
            conv,
            bn,
            out,
            inp,
            kernel,
            stride,
            pre: Vec::new(),
            mean: Vec::new(),
            inv_std: Vec::new(),
            dpre: Vec::new(),
        })
    }

    /// The convolution's name.
    pub(crate) fn name(&self) -> &str {
        &self.conv
    }

    /// Every parameter's and running statistic's values, by the names it was built from.
    pub(crate) fn values(&self, into: &mut Vec<(String, Vec<f32>)>) {
        let (c, b) = (&self.conv, &self.bn);
        into.push((format!("{c}.weight"), self.weight.value.clone()));
        into.push((format!("{b}.weight"), self.gamma.value.clone()));
        into.push((format!("{b}.bias"), self.beta.value.clone()));
        into.push((format!("{b}.running_mean"), self.running_mean.clone()));
        into.push((format!("{b}.running_var"), self.running_var.clone()));
    }

    /// The norm folded into the convolution with the running statistics (in f64): weights
    /// `w * g/sqrt(v+eps)` and bias `beta - m * g/sqrt(v+eps)`, what inference runs.
    pub(crate) fn fold(&self) -> (Vec<f32>, Vec<f32>) {
        let per = self.weight.value.len() / self.out;
        let scale: Vec<f64> =
            (0..self.out).map(|o| self.gamma.value[o] as f64 / (self.running_var[o] as f64 + BN_EPS).sqrt()).collect();
        let w = self.weight.value.iter().enumerate().map(|(i, &w)| (w as f64 * scale[i / per]) as f32).collect();
        let b = (0..self.out).map(|o| (self.beta.value[o] as f64 - self.running_mean[o] as f64 * scale[o]) as f32);
        (w, b.collect())
    }

    pub(crate) fn geometry(&self, p: Plane) -> ConvGeometry {
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

    /// The output plane for input plane `p`.
    pub(crate) fn out_plane(&self, p: Plane) -> Plane {
        let (height, width) = self.geometry(p).out_size();
        Plane { batch: p.batch, height, width }
    }

    pub(crate) fn ckk(&self) -> usize {
        self.inp * self.kernel * self.kernel
    }

    /// `pre = conv(x)` for channel-major `x` on plane `p`.
    pub(crate) fn convolve(&mut self, x: &[f32], p: Plane, scratch: &mut Scratch) {
        let (g, ckk) = (self.geometry(p), self.ckk());
        let out = self.out_plane(p);
        let per = out.height * out.width;
        let n = out.len();
        self.pre.resize(self.out * n, 0.0);
        let w = MatRef::new(&self.weight.value, self.out, ckk);
        for images in image_chunks(p.batch) {
            let nc = images.len() * per;
            let cols = chunk_columns(x, &g, images.clone(), &mut scratch.cols, scratch.parallel);
            let dst = &mut self.pre[images.start * per..];
            matmul_columns(dst, n, w, MatRef::new(cols, ckk, nc), false, scratch.parallel);
        }
    }

    /// `y = batch_norm(pre)`: with the batch's statistics, updating the running ones, when
    /// `train`; with the running ones otherwise.
    pub(crate) fn normalise(&mut self, y: &mut Vec<f32>, train: bool, parallel: bool) {
        let m = self.pre.len() / self.out.max(1);
        y.resize(self.pre.len(), 0.0);
        let stats: Vec<(f64, f64)> = if train {
            let stat = |x: &[f32]| {
                let mu = x.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
                (mu, x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / m as f64)
            };
            if parallel {
                self.pre.par_chunks(m).map(stat).collect()
            } else {
                self.pre.chunks(m).map(stat).collect()
            }
        } else {
            self.running_mean.iter().zip(&self.running_var).map(|(&mu, &v)| (mu as f64, v as f64)).collect()
        };
        self.mean.clear();
        self.inv_std.clear();
        for (&(mu, var), ch) in stats.iter().zip(0..) {
            self.mean.push(mu);
            self.inv_std.push(1.0 / (var + BN_EPS).sqrt());
            if train {
                let mom = BN_MOMENTUM as f32;
                let unbiased = (var * m as f64 / (m as f64 - 1.0).max(1.0)) as f32;
                self.running_mean[ch] = self.running_mean[ch] * (1.0 - mom) + mu as f32 * mom;
                self.running_var[ch] = self.running_var[ch] * (1.0 - mom) + unbiased * mom;
            }
        }
        let (mean, inv, gamma, beta) = (&self.mean, &self.inv_std, &self.gamma.value, &self.beta.value);
        let apply = |(ch, (out, x)): (usize, (&mut [f32], &[f32]))| {
            let scale = gamma[ch] as f64 * inv[ch];
            let (scale, shift) = (scale as f32, (beta[ch] as f64 - mean[ch] * scale) as f32);
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        };
        if parallel {
            y.par_chunks_mut(m).zip(self.pre.par_chunks(m)).enumerate().for_each(apply);
        } else {
            y.chunks_mut(m).zip(self.pre.chunks(m)).enumerate().for_each(apply);
        }
    }

    /// From the gradient `dy` at the norm's output (of a training-mode forward): the norm's
    /// parameter gradients, and the gradient at `pre` in `dpre`.
    pub(crate) fn normalise_backward(&mut self, dy: &[f32], parallel: bool) {
        let m = self.pre.len() / self.out.max(1);
        self.dpre.resize(self.pre.len(), 0.0);
        let (mean, inv, gamma) = (&self.mean, &self.inv_std, &self.gamma.value);
        let per_channel = |(ch, ((dx, x), dy)): ChannelSlices| {
            let (mu, inv) = (mean[ch], inv[ch]);
            let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
            for (&d, &v) in dy.iter().zip(x) {
                sum_dy += d as f64;
                sum_dy_xhat += d as f64 * (v as f64 - mu) * inv;
            }
            let k = gamma[ch] as f64 * inv / m as f64;
            for ((o, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
                let xhat = (v as f64 - mu) * inv;
                *o = (k * (m as f64 * d as f64 - sum_dy - xhat * sum_dy_xhat)) as f32;
            }
            (sum_dy, sum_dy_xhat)
        };
        let sums: Vec<(f64, f64)> = if parallel {
            self.dpre
                .par_chunks_mut(m)
                .zip(self.pre.par_chunks(m))
                .zip(dy.par_chunks(m))
                .enumerate()
                .map(per_channel)
                .collect()
        } else {
            self.dpre.chunks_mut(m).zip(self.pre.chunks(m)).zip(dy.chunks(m)).enumerate().map(per_channel).collect()
        };
        for (ch, (sum_dy, sum_dy_xhat)) in sums.into_iter().enumerate() {
            self.gamma.grad[ch] = sum_dy_xhat as f32;
            self.beta.grad[ch] = sum_dy as f32;
        }
    }

    /// The whole backward from `dy` (at the norm's output): every parameter gradient, and the
    /// input gradient added into `dx` (channel-major, plane `p`) when there is one to give.
    pub(crate) fn backward(&mut self, dy: &[f32], x: &[f32], p: Plane, dx: Option<&mut [f32]>, scratch: &mut Scratch) {
        self.normalise_backward(dy, scratch.parallel);
        self.backward_from_pre(x, p, dx, scratch);
    }

    /// The convolution's backward from `dpre`: the weight gradient, and the input gradient added
    /// into `dx` when given.
    pub(crate) fn backward_from_pre(&mut self, x: &[f32], p: Plane, mut dx: Option<&mut [f32]>, scratch: &mut Scratch) {
        let (g, ckk) = (self.geometry(p), self.ckk());
        let out = self.out_plane(p);
        let per = out.height * out.width;
        let n = out.len();
        let w = MatRef::new(&self.weight.value, self.out, ckk);
        for images in image_chunks(p.batch) {
            let nc = images.len() * per;
            let cols = chunk_columns(x, &g, images.clone(), &mut scratch.cols, scratch.parallel);
            let dpre = MatRef::columns(&self.dpre, self.out, n, images.start * per..images.end * per);
            let first = images.start == 0;
            matmul(&mut self.weight.grad, dpre, MatRef::new(cols, ckk, nc).t(), !first, scratch.parallel);
            if let Some(dx) = dx.as_deref_mut() {
                scratch.dcols.resize(ckk * nc, 0.0);
                let dcols = &mut scratch.dcols[..ckk * nc];
                matmul(dcols, w.t(), dpre, false, scratch.parallel);
                col2im_add(dcols, &g, PlaneOrder::Cnhw, images, dx);
            }
        }
    }

    pub(crate) fn params(&self) -> [&Param; 3] {
        [&self.weight, &self.gamma, &self.beta]
    }

    pub(crate) fn params_mut(&mut self) -> [&mut Param; 3] {
        [&mut self.weight, &mut self.gamma, &mut self.beta]
    }
}
