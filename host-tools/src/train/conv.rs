//! The training convolution: candle's `conv2d` forward with a faster CPU backward.
//!
//! candle differentiates `conv2d` with `conv_transpose2d`, whose CPU kernel is about 14x slower
//! than the forward: it made a training step 13x its forward. Here everything is GEMM plus
//! plain loops: forward = im2col + matmul (`im2col.rs`), input gradient =
//! col2im(W^T g), weight gradient = g im2col(x)^T. Other devices keep candle's own backward.

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Tensor};

use super::cpu_storage::{storage_of, tensor_of};
use super::im2col::{self as conv, ConvGeometry};

/// `x.conv2d(w, k/2, stride, 1, 1)` with the fast CPU backward.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.apply_op2(w, SameConv { stride }),
        _ => x.conv2d(w, w.dim(3)? / 2, stride, 1, 1),
    }
}

/// A "same" convolution (padding k/2, odd k) with the given stride.
struct SameConv {
    stride: usize,
}

impl CustomOp2 for SameConv {
    fn name(&self) -> &'static str {
        "classmod-same-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (tensor_of(s1, l1)?, tensor_of(s2, l2)?);
        let y = conv::conv2d(&x, &w, w.dim(3)? / 2, self.stride)?;
        Ok((storage_of(&y)?, y.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (batch, in_channels, height, width) = x.dims4()?;
        let (o, _, k, _) = w.dims4()?;
        let geo = ConvGeometry { batch, in_channels, height, width, kernel: k, stride: self.stride, padding: k / 2 };
        let (ho, wo) = geo.out_size();
        let ckk = in_channels * k * k;
        let dev = x.device();
        // The output gradient as one (o, batch*ho*wo) matrix, the layout of the forward GEMM.
        let gm =
            g.detach().reshape((batch, o, ho * wo))?.transpose(0, 1)?.contiguous()?.reshape((o, batch * ho * wo))?;
        let wm = w.detach().reshape((o, ckk))?;
        // dL/dx = col2im(W^T g)
        let gcols = wm.t()?.matmul(&gm)?.flatten_all()?.to_vec1::<f32>()?;
        let gx = Tensor::from_vec(conv::col2im(&gcols, &geo), (batch, in_channels, height, width), dev)?;
        // dL/dw = g im2col(x)^T
        let xs = x.detach().flatten_all()?.to_vec1::<f32>()?;
        let cols = Tensor::from_vec(conv::im2col(&xs, &geo), (ckk, batch * ho * wo), dev)?;
        let gw = gm.matmul(&cols.t()?)?.reshape((o, in_channels, k, k))?;
        Ok((Some(gx), Some(gw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Values and gradients against candle's own `conv2d` and its autograd (the reference), for
    /// the kernel sizes, strides and odd sizes the ResNets use.
    #[test]
    fn matches_candle_conv2d_and_its_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (k, stride, h) in [(3, 1, 8), (3, 2, 8), (1, 2, 8), (3, 1, 7), (3, 2, 7), (1, 2, 7), (3, 2, 14)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, h, h), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, k, k), &dev)?)?;
            let ours = conv2d(&x, &w, stride)?;
            let theirs = x.conv2d(&w, k / 2, stride, 1, 1)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "k{k} s{stride} h{h}: forward differs by {diff}");
            let up = Tensor::randn(0f32, 1., ours.dims(), &dev)?;
            let ga = (ours * &up)?.sum_all()?.backward()?;
            let gb = (theirs * &up)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let d = (ga.get(v).unwrap() - gb.get(v).unwrap())?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-3, "k{k} s{stride} h{h}: gradient differs by {d}");
            }
        }
        Ok(())
    }
}
