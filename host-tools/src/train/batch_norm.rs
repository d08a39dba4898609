//! Training-mode batch norm as one fused op with a closed-form backward.
//!
//! Composed from candle's broadcast ops, batch norm's backward was a dozen full-size tensor ops
//! per layer, as slow as the convolution's. Here forward and backward are single passes over the
//! data (per channel: `dx = g/(m*s) * (m*dy - sum(dy) - xhat*sum(dy*xhat))`, `dg = sum(dy*xhat)`,
//! `db = sum(dy)`, with `s = sqrt(var + eps)` and the biased batch variance, as PyTorch uses).

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};

use classmod_runtime::host::BN_EPS;

use super::cpu_storage::contiguous_f32;

/// Per-channel batch mean and biased variance of an NCHW tensor, in f64 for accuracy.
pub fn batch_stats(x: &[f32], b: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (b * hw) as f64;
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for ch in 0..c {
        let plane = |bi: usize| &x[(bi * c + ch) * hw..(bi * c + ch + 1) * hw];
        let s: f64 = (0..b).map(|bi| plane(bi).iter().map(|&v| v as f64).sum::<f64>()).sum();
        let mu = s / m;
        let q: f64 = (0..b).map(|bi| plane(bi).iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>()).sum();
        mean[ch] = mu;
        var[ch] = q / m;
    }
    (mean, var)
}

/// Normalises `x` (NCHW) with its batch statistics, then scales by `gamma` and shifts by `beta`.
/// Returns the output and the batch mean and biased variance (for the running statistics).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
) -> candle_core::Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let (b, c, h, w) = x.dims4()?;
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let (mean, var) = batch_stats(&data, b, c, h * w);
    let y = match x.device() {
        Device::Cpu => x.apply_op3(gamma, beta, BatchNormTrain)?,
        // Elsewhere, candle's ops (their backward is what the device offers).
        _ => {
            let shape = (1, c, 1, 1);
            let mean_t = Tensor::from_vec(mean.iter().map(|&m| m as f32).collect::<Vec<_>>(), shape, x.device())?;
            let xc = x.broadcast_sub(&mean_t)?;
            let var_t = xc.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let xhat = xc.broadcast_div(&(var_t + BN_EPS)?.sqrt()?)?;
            xhat.broadcast_mul(&gamma.reshape(shape)?)?.broadcast_add(&beta.reshape(shape)?)?
        }
    };
    Ok((y, mean, var))
}

struct BatchNormTrain;

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "classmod-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let (b, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let (mean, var) = batch_stats(x, b, c, hw);
        let mut y = vec![0f32; x.len()];
        for ch in 0..c {
            let inv = 1.0 / (var[ch] + BN_EPS).sqrt();
            let scale = (gamma[ch] as f64 * inv) as f32;
            let shift = (beta[ch] as f64 - mean[ch] * gamma[ch] as f64 * inv) as f32;
            for bi in 0..b {
                let r = (bi * c + ch) * hw..(bi * c + ch + 1) * hw;
                for (o, &v) in y[r.clone()].iter_mut().zip(&x[r]) {
                    *o = v * scale + shift;
                }
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let hw = h * w;
        let m = (b * hw) as f64;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let dys = dy.flatten_all()?.to_vec1::<f32>()?;
        let g = gamma.to_vec1::<f32>()?;
        let (mean, var) = batch_stats(&xs, b, c, hw);
        let mut dx = vec![0f32; xs.len()];
        let mut dgamma = vec![0f32; c];
        let mut dbeta = vec![0f32; c];
        for ch in 0..c {
            let inv = 1.0 / (var[ch] + BN_EPS).sqrt();
            let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
            for bi in 0..b {
                let r = (bi * c + ch) * hw..(bi * c + ch + 1) * hw;
                for (&d, &v) in dys[r.clone()].iter().zip(&xs[r]) {
                    sum_dy += d as f64;
                    sum_dy_xhat += d as f64 * (v as f64 - mean[ch]) * inv;
                }
            }
            dgamma[ch] = sum_dy_xhat as f32;
            dbeta[ch] = sum_dy as f32;
            let k = g[ch] as f64 * inv / m;
            for bi in 0..b {
                let r = (bi * c + ch) * hw..(bi * c + ch + 1) * hw;
                for ((o, &d), &v) in dx[r.clone()].iter_mut().zip(&dys[r.clone()]).zip(&xs[r]) {
                    let xhat = (v as f64 - mean[ch]) * inv;
                    *o = (k * (m * d as f64 - sum_dy - xhat * sum_dy_xhat)) as f32;
                }
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (b, c, h, w), dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Against the same batch norm composed from candle's differentiable ops (the reference).
    #[test]
    fn fused_batch_norm_matches_the_composed_one_and_its_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2., (4, 3, 5, 5), &dev)? + 1.0)?)?;
        let g = Var::from_tensor(&Tensor::new(&[0.5f32, 1.5, -1.0], &dev)?)?;
        let bt = Var::from_tensor(&Tensor::new(&[0.1f32, -0.2, 0.3], &dev)?)?;
        let (ours, mean, var) = batch_norm_train(&x, &g, &bt)?;
        let shape = (1, 3, 1, 1);
        let mu = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let xc = x.broadcast_sub(&mu)?;
        let v = xc.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let reference = xc
            .broadcast_div(&(v.clone() + BN_EPS)?.sqrt()?)?
            .broadcast_mul(&g.reshape(shape)?)?
            .broadcast_add(&bt.reshape(shape)?)?;
        let d = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "forward differs by {d}");
        let want_mean = mu.flatten_all()?.to_vec1::<f32>()?;
        let want_var = v.flatten_all()?.to_vec1::<f32>()?;
        for ch in 0..3 {
            assert!((mean[ch] - want_mean[ch] as f64).abs() < 1e-5);
            assert!((var[ch] - want_var[ch] as f64).abs() < 1e-4);
        }
        let up = Tensor::randn(0f32, 1., (4, 3, 5, 5), &dev)?;
        let ga = (ours * &up)?.sum_all()?.backward()?;
        let gb = (reference * &up)?.sum_all()?.backward()?;
        for var in [&x, &g, &bt] {
            let d = (ga.get(var).unwrap() - gb.get(var).unwrap())?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "gradient differs by {d}");
        }
        Ok(())
    }
}
