//! PyTorch's SGD rule (`torch.optim.SGD`, dampening 0) with momentum, Nesterov momentum and L2
//! weight decay, which candle-nn's SGD lacks:
//! `g = grad + wd*p; buf = mu*buf + g; step = nesterov ? g + mu*buf : buf; p -= lr*step`.
//! `Param` applies it in place; the autograd twin's [`crate::autograd::Sgd`] applies the same
//! rule to candle `Var`s.

/// The optimiser's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (a schedule may change it every step).
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// A parameter with its gradient and momentum buffer.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub(crate) value: Vec<f32>,
    pub(crate) grad: Vec<f32>,
    momentum: Vec<f32>,
}

impl Param {
    pub(crate) fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Param { value, grad: vec![0.0; n], momentum: vec![0.0; n] }
    }

    /// The momentum buffer (what a resumed run needs besides the values).
    pub(crate) fn momentum(&self) -> &[f32] {
        &self.momentum
    }

    /// Restores a momentum buffer saved by [`Param::momentum`]; `false` (and nothing changed)
    /// if its length is not the parameter's.
    pub(crate) fn restore_momentum(&mut self, saved: &[f32]) -> bool {
        let fits = saved.len() == self.momentum.len();
        if fits {
            self.momentum.copy_from_slice(saved);
        }
        fits
    }

    /// One update from `grad` at learning rate `lr`. The first step's buffer is the gradient
    /// itself, as PyTorch's (a zero buffer gives the same).
    pub(crate) fn sgd(&mut self, c: &SgdConfig, lr: f32) {
        let (mu, wd) = (c.momentum as f32, c.weight_decay as f32);
        for ((p, &g), m) in self.value.iter_mut().zip(&self.grad).zip(&mut self.momentum) {
            let g = g + wd * *p;
            *m = mu * *m + g;
            let step = if c.nesterov { g + mu * *m } else { *m };
            *p -= lr * step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed from PyTorch's documented rule: p=1, grad=2p (loss p^2), lr=0.1, mu=0.9,
    /// wd=0.1, Nesterov. Step 1: g=2+0.1=2.1, buf=2.1, step=2.1+0.9*2.1=3.99, p=1-0.399=0.601.
    /// Step 2: g=1.202+0.0601=1.2621, buf=0.9*2.1+1.2621=3.1521, step=1.2621+2.83689=4.09899,
    /// p=0.601-0.409899=0.191101.
    #[test]
    fn matches_pytorch_nesterov_rule() {
        let c = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.1 };
        let mut p = Param::new(vec![1.0]);
        for want in [0.601, 0.191101] {
            p.grad[0] = 2.0 * p.value[0];
            p.sgd(&c, 0.1);
            assert!((p.value[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p.value[0]);
        }
    }
}
