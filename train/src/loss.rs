//! The losses and their gradients at the logits, as batch means: cross entropy for a
//! classifier, and the distillation of a compact branch's logit from its base.

/// `log_softmax(v)` in f64.
fn log_softmax(v: &[f64]) -> Vec<f64> {
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    v.iter().map(|x| x - lse).collect()
}

/// Mean cross entropy of `logits` `(B, classes)` against `labels`, and its gradient into `dz`.
pub fn cross_entropy(logits: &[f32], labels: &[u32], dz: &mut Vec<f32>) -> f64 {
    let batch = labels.len();
    let classes = logits.len() / batch.max(1);
    dz.resize(logits.len(), 0.0);
    let mut loss = 0f64;
    for ((row, d), &y) in logits.chunks(classes).zip(dz.chunks_mut(classes)).zip(labels) {
        let lp = log_softmax(&row.iter().map(|&v| v as f64).collect::<Vec<_>>());
        loss -= lp[y as usize];
        for (k, (d, p)) in d.iter_mut().zip(&lp).enumerate() {
            *d = ((p.exp() - if k == y as usize { 1.0 } else { 0.0 }) / batch as f64) as f32;
        }
    }
    loss / batch as f64
}

/// Class `c`'s distillation loss on a minibatch and its gradient at the branch's logits `z`:
/// the branch's logit replaces the base's logit of `c`, and the softmax of the result is
/// distilled to the base's: `T^2 KL(softmax(L/T) || softmax(S/T)) + CE(S, label)`, batch means.
pub fn distillation(z: &[f32], teacher: &[f32], labels: &[u32], c: usize, t: f64, dz: &mut Vec<f32>) -> f64 {
    let batch = z.len();
    let classes = teacher.len() / batch.max(1);
    dz.resize(batch, 0.0);
    let mut loss = 0f64;
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
