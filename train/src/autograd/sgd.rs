//! [`crate::SgdConfig`]'s rule (PyTorch's SGD) on candle `Var`s, for the autograd twins.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use crate::SgdConfig;

/// The optimiser of an autograd network.
pub struct Sgd {
    vars: Vec<Var>,
    buffers: Vec<Option<Tensor>>,
    pub config: SgdConfig,
}

impl Sgd {
    pub fn new(vars: Vec<Var>, config: SgdConfig) -> Self {
        let buffers = vec![None; vars.len()];
        Sgd { vars, buffers, config }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Every variable's momentum buffer, zeros before its first step (which the rule treats
    /// alike: the first buffer is the gradient).
    pub fn momentum(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .zip(&self.buffers)
            .map(|(v, b)| match b {
                Some(b) => b.flatten_all()?.to_vec1::<f32>(),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect()
    }

    /// Restores buffers [`Sgd::momentum`] gave for the same variables; `false` (nothing
    /// changed) if their number or sizes differ.
    pub fn restore_momentum(&mut self, saved: &[Vec<f32>]) -> Result<bool> {
        if saved.len() != self.vars.len() || self.vars.iter().zip(saved).any(|(v, s)| v.elem_count() != s.len()) {
            return Ok(false);
        }
        for ((v, s), b) in self.vars.iter().zip(saved).zip(&mut self.buffers) {
            *b = Some(Tensor::from_slice(s, v.shape(), v.device())?);
        }
        Ok(true)
    }

    /// One update from the gradients of the last backward pass. Variables without a gradient
    /// (unused in the graph) are left alone, as PyTorch does.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for (var, buf) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(var) else { continue };
            let mut g = grad.clone();
            if c.weight_decay != 0.0 {
                g = (g + (var.as_tensor() * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * c.momentum)? + &g)?,
                    None => g.clone(),
                };
                g = if c.nesterov { (g + (&b * c.momentum)?)? } else { b.clone() };
                *buf = Some(b);
            }
            var.set(&(var.as_tensor() - (g * c.lr)?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Hand-computed from PyTorch's documented rule: p=1, grad=2p (loss p^2), lr=0.1, mu=0.9,
    /// wd=0.1, Nesterov. Step 1: g=2+0.1=2.1, buf=2.1, step=2.1+0.9*2.1=3.99, p=1-0.399=0.601.
    /// Step 2: g=1.202+0.0601=1.2621, buf=0.9*2.1+1.2621=3.1521, step=1.2621+2.83689=4.09899,
    /// p=0.601-0.409899=0.191101.
    #[test]
    fn matches_pytorch_nesterov_rule() -> Result<()> {
        let p = Var::new(&[1.0f64], &Device::Cpu)?;
        let mut opt =
            Sgd::new(vec![p.clone()], SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.1 });
        let want = [0.601, 0.191101];
        for w in want {
            let loss = p.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
            let got = p.as_tensor().to_vec1::<f64>()?[0];
            assert!((got - w).abs() < 1e-9, "{got} vs {w}");
        }
        Ok(())
    }
}
