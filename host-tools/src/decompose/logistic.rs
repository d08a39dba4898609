//! The calibrated head: a one-vs-rest logistic regression on a module's pooled features, fitted
//! by Newton's method (iteratively reweighted least squares) with a small L2 penalty. No
//! backpropagation through the network; deterministic; a few milliseconds for 64 features.

/// Fits `sigmoid(w . x + b)` to labels `y` (1 = positive). Positives and negatives are weighted
/// to count equally. Returns `(w, b)`.
pub fn fit(features: &[Vec<f32>], labels: &[bool], l2: f64) -> (Vec<f32>, f32) {
    fit_weighted(features, labels, l2, true)
}

/// [`fit`], with positives and negatives weighted to count equally when `balanced`, or each
/// image once (the fitted score is then the probability of the class at its own frequency: what
/// keeps one base's modules ranked as their logits are).
pub fn fit_weighted(features: &[Vec<f32>], labels: &[bool], l2: f64, balanced: bool) -> (Vec<f32>, f32) {
    let d = features.first().map_or(0, Vec::len);
    let n_pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let n_neg = labels.iter().filter(|&&l| !l).count().max(1) as f64;
    let n = labels.len().max(1) as f64;
    // Standardise features so one penalty fits all scales; folded back at the end.
    let mean: Vec<f64> = (0..d).map(|j| features.iter().map(|f| f[j] as f64).sum::<f64>() / n).collect();
    let std: Vec<f64> = (0..d)
        .map(|j| (features.iter().map(|f| (f[j] as f64 - mean[j]).powi(2)).sum::<f64>() / n).sqrt().max(1e-6))
        .collect();
    let xs: Vec<Vec<f64>> =
        features.iter().map(|f| (0..d).map(|j| (f[j] as f64 - mean[j]) / std[j]).chain([1.0]).collect()).collect();
    let p = d + 1;
    let mut theta = vec![0f64; p];
    for _ in 0..25 {
        let mut grad = vec![0f64; p];
        let mut hess = vec![0f64; p * p];
        for (x, &y) in xs.iter().zip(labels) {
            let w = match (balanced, y) {
                (false, _) => 1.0,
                (true, true) => 0.5 * n / n_pos,
                (true, false) => 0.5 * n / n_neg,
            };
            let z: f64 = x.iter().zip(&theta).map(|(a, b)| a * b).sum();
            let prob = 1.0 / (1.0 + (-z).exp());
            let r = w * (prob - if y { 1.0 } else { 0.0 });
            let s = w * prob * (1.0 - prob);
            for i in 0..p {
                grad[i] += r * x[i];
                for j in 0..p {
                    hess[i * p + j] += s * x[i] * x[j];
                }
            }
        }
        for i in 0..d {
            // No penalty on the bias.
            grad[i] += l2 * n * theta[i];
            hess[i * p + i] += l2 * n;
        }
        hess[p * p - 1] += 1e-9 * n;
        let step = solve(hess, grad, p);
        let mut max = 0f64;
        for (t, s) in theta.iter_mut().zip(&step) {
            *t -= s;
            max = max.max(s.abs());
        }
        if max < 1e-8 {
            break;
        }
    }
    let w: Vec<f32> = (0..d).map(|j| (theta[j] / std[j]) as f32).collect();
    let b = theta[d] - (0..d).map(|j| theta[j] * mean[j] / std[j]).sum::<f64>();
    (w, b as f32)
}

/// Solves `a x = b` (a symmetric positive definite, p x p) by Gaussian elimination with pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, p: usize) -> Vec<f64> {
    for col in 0..p {
        let piv = (col..p).max_by(|&i, &j| a[i * p + col].abs().total_cmp(&a[j * p + col].abs())).unwrap_or(col);
        if piv != col {
            for k in 0..p {
                a.swap(col * p + k, piv * p + k);
            }
            b.swap(col, piv);
        }
        let d = a[col * p + col];
        if d.abs() < 1e-300 {
            continue;
        }
        for row in col + 1..p {
            let f = a[row * p + col] / d;
            if f != 0.0 {
                for k in col..p {
                    a[row * p + k] -= f * a[col * p + k];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0f64; p];
    for row in (0..p).rev() {
        let s: f64 = (row + 1..p).map(|k| a[row * p + k] * x[k]).sum();
        let d = a[row * p + row];
        x[row] = if d.abs() < 1e-300 { 0.0 } else { (b[row] - s) / d };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Data drawn from a known logistic model: the fit recovers its direction and separates it.
    #[test]
    fn recovers_a_known_logistic_model() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let true_w = [2.0f64, -1.0, 0.0];
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let x: Vec<f32> = (0..3).map(|_| rng.random_range(-2.0..2.0)).collect();
            let z: f64 = x.iter().zip(&true_w).map(|(a, b)| *a as f64 * b).sum::<f64>() + 0.5;
            ys.push(rng.random_bool(1.0 / (1.0 + (-z).exp())));
            xs.push(x);
        }
        let (w, _) = fit(&xs, &ys, 1e-4);
        assert!((w[0] / w[1] + 2.0).abs() < 0.3, "{w:?}");
        assert!(w[2].abs() < 0.2, "{w:?}");
        let (w, b) = fit(&[vec![0.0], vec![1.0], vec![2.0], vec![3.0]], &[false, false, true, true], 1e-2);
        assert!(w[0] > 0.0 && (1.5 * w[0] + b).abs() < 1e-3, "boundary at 1.5: {w:?} {b}");
    }
}
