//! The branches of several classes (one spec), trained together on the same minibatches of
//! cached trunk activations: their entry convolutions, which all read the same activations, run
//! as one GEMM per chunk of images (and their weight gradients as another); the rest of each
//! branch steps on its own, the branches side by side on rayon's threads.

use classmod_runtime::host::BranchSpec;
use rayon::prelude::*;

use crate::kernels::{im2col_into, matmul, matmul_columns, MatRef, PlaneOrder};
use crate::layers::{image_chunks, Plane};
use crate::loss::distillation;
use crate::{Branch, SgdConfig, TrainError};

/// One minibatch: trunk activations and what the branches learn from.
pub struct Minibatch<'a> {
    /// `(C, B, H, W)` activations, channel-major (as [`crate::layers`] keep them).
    pub activations: &'a [f32],
    /// `(B, classes)` logits of the base (the teacher).
    pub teacher: &'a [f32],
    pub labels: &'a [u32],
}

/// The branches of several classes, trained together.
pub struct BranchSet {
    spec: BranchSpec,
    /// The trunk activations' plane.
    height: usize,
    width: usize,
    /// `(class, branch)`, with each branch's gradient at its logits.
    branches: Vec<(usize, Branch, Vec<f32>)>,
    /// Shared per step: the entry columns, the entry weights of every branch stacked
    /// `(K*W, C*9)`, their outputs `(K*W, N)` and weight gradients.
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
        branches: Vec<(usize, Branch)>,
    ) -> Result<Self, TrainError> {
        if let Some((_, b)) = branches.iter().find(|(_, b)| b.spec() != spec) {
            return Err(TrainError::Minibatch { what: format!("a branch of {:?} in a set of {spec:?}", b.spec()) });
        }
        Ok(BranchSet {
            spec,
            height,
            width,
            branches: branches.into_iter().map(|(c, b)| (c, b, Vec::new())).collect(),
            cols: Vec::new(),
            entry_w: Vec::new(),
            entry_pre: Vec::new(),
            entry_dw: Vec::new(),
        })
    }

    /// One SGD step of every branch on `batch`, at learning rate `lr`; each branch's loss.
    pub fn step(
        &mut self,
        batch: &Minibatch,
        sgd: &SgdConfig,
        lr: f64,
        temperature: f64,
    ) -> Result<Vec<f64>, TrainError> {
        let c = self.spec.in_channels;
        let b = batch.labels.len();
        let plane = Plane { batch: b, height: self.height, width: self.width };
        let classes = batch.teacher.len() / b.max(1);
        if b == 0 || batch.activations.len() != c * plane.len() || batch.teacher.len() != b * classes {
            return Err(TrainError::Minibatch {
                what: format!(
                    "{} activation values and {} teacher logits for {b} images of {c}x{}x{}",
                    batch.activations.len(),
                    batch.teacher.len(),
                    self.height,
                    self.width
                ),
            });
        }
        if let Some((bad, _, _)) = self.branches.iter().find(|(class, _, _)| *class >= classes) {
            return Err(TrainError::Minibatch { what: format!("class {bad} of {classes} teacher logits") });
        }
        let Some((_, first, _)) = self.branches.first() else { return Ok(Vec::new()) };
        let w = self.spec.width;
        let k = self.branches.len();
        let (geo, ckk) = (first.stack.entry.geometry(plane), first.stack.entry.ckk());
        let p0 = first.stack.entry_plane(plane);
        let n = p0.len();
        let per = p0.height * p0.width;
        // The columns of every chunk of images, kept for the weight gradient; each chunk's
        // product of all K branches' entry weights straight after its im2col.
        self.cols.resize(ckk * n, 0.0);
        self.entry_w.clear();
        for (_, br, _) in &self.branches {
            self.entry_w.extend_from_slice(&br.stack.entry.weight.value);
        }
        self.entry_pre.resize(k * w * n, 0.0);
        for images in image_chunks(b) {
            let cols = &mut self.cols[ckk * images.start * per..ckk * images.end * per];
            im2col_into(batch.activations, &geo, PlaneOrder::Cnhw, images.clone(), cols, true);
            let wm = MatRef::new(&self.entry_w, k * w, ckk);
            let nc = images.len() * per;
            matmul_columns(&mut self.entry_pre[images.start * per..], n, wm, MatRef::new(cols, ckk, nc), false, true);
        }
        let losses: Vec<f64> = self
            .branches
            .par_iter_mut()
            .zip(self.entry_pre.par_chunks_mut(w * n))
            .map(|((class, br, dz), pre)| {
                let stack = &mut br.stack;
                stack.entry.pre.clear();
                stack.entry.pre.extend_from_slice(pre);
                let logits = stack.forward_from_entry(p0, true);
                let loss = distillation(logits, batch.teacher, batch.labels, *class, temperature, dz);
                stack.backward_to_entry(dz, p0);
                pre.copy_from_slice(&stack.entry.dpre);
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
        self.branches.par_iter_mut().zip(self.entry_dw.par_chunks(w * ckk)).for_each(|((_, br, _), dw)| {
            br.stack.entry.weight.grad.copy_from_slice(dw);
            br.stack.sgd(sgd, lr);
        });
        Ok(losses)
    }

    /// The classes, in order.
    pub fn classes(&self) -> Vec<usize> {
        self.branches.iter().map(|(c, _, _)| *c).collect()
    }

    /// Branch `i`.
    pub fn branch(&self, i: usize) -> &Branch {
        &self.branches[i].1
    }

    /// The trained branches, in order.
    pub fn into_branches(self) -> Vec<Branch> {
        self.branches.into_iter().map(|(_, b, _)| b).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{AutogradBranch, Sgd};
    use crate::layers::CHUNK_IMAGES;
    use crate::testing::{channel_major, stream};
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

    /// Two SGD steps of two branches here against the same two steps of each branch through
    /// candle's autograd and [`Sgd`] (the reference): the losses, then every parameter and
    /// running statistic after the steps, for the default trunk (T = 2), the shallow one
    /// (T = 1, whose first block halves the plane through a projection shortcut) and one that
    /// runs into stage 3 (its entry keeps the plane); a branch
    /// trained alone ends where it ends beside another; and the folded branch in eval mode
    /// gives the twin's eval logits.
    #[test]
    fn steps_match_candle_autograd_and_sgd() -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
        for (trunk_stages, trunk_blocks, plane, blocks) in [(2, 0, 8, 2), (1, 0, 9, 2), (2, 1, 4, 1)] {
            let spec = BranchSpec::cifar(trunk_stages, trunk_blocks, 3, 4, blocks);
            let (batch, classes, t) = (CHUNK_IMAGES + 4, 5, 4.0); // two chunks of images
            let acts: Vec<f32> = stream(batch * 3 * plane * plane, 7).iter().map(|v| v.max(0.0) * 2.0).collect();
            let acts_cm = channel_major(&acts, batch, 3, plane * plane);
            let teacher: Vec<f32> = stream(batch * classes, 11).iter().map(|v| v * 4.0).collect();
            let labels: Vec<u32> = (0..batch as u32).map(|i| i * 7 % classes as u32).collect();
            let seeds = [(1usize, 21u64), (3, 22)];
            let inits = || -> Result<Vec<(usize, Branch)>, TrainError> {
                seeds.iter().map(|&(c, seed)| Ok((c, Branch::init(spec, seed)?))).collect()
            };
            let mut set = BranchSet::new(spec, plane, plane, inits()?)?;
            let x = Tensor::from_vec(acts.clone(), (batch, 3, plane, plane), &dev)?;
            let teacher_t = Tensor::from_vec(teacher.clone(), (batch, classes), &dev)?;
            let labels_t = Tensor::from_vec(labels.clone(), batch, &dev)?;
            let mb = Minibatch { activations: &acts_cm, teacher: &teacher, labels: &labels };
            let mut references = Vec::new();
            for (c, seed) in seeds {
                let mut b = AutogradBranch::init(spec, seed, &dev)?;
                let mut opt = Sgd::new(b.vars(), sgd);
                let mut losses = Vec::new();
                for lr in [0.1, 0.05] {
                    let loss = candle_distillation(&b.forward(&x, true)?, &teacher_t, &labels_t, c, t)?;
                    losses.push(loss.to_scalar::<f32>()? as f64);
                    opt.set_lr(lr);
                    opt.step(&loss.backward()?)?;
                }
                references.push((losses, b));
            }
            let ours: Vec<Vec<f64>> =
                [0.1, 0.05].iter().map(|&lr| set.step(&mb, &sgd, lr, t)).collect::<Result<_, _>>()?;
            for (i, (want_losses, twin)) in references.iter().enumerate() {
                for (step, want_loss) in want_losses.iter().enumerate() {
                    let got = ours[step][i];
                    assert!(
                        (got - want_loss).abs() < 1e-4 * want_loss.abs().max(1.0),
                        "T{trunk_stages} branch {i} step {step}: loss {got} vs {want_loss}"
                    );
                }
                let (got, want) = (set.branch(i).values(), twin.values()?);
                assert_eq!(got.len(), want.len());
                for (name, w) in &want {
                    let d = got[name].iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(d < 1e-4, "T{trunk_stages} branch {i} `{name}` differs by {d} after two steps");
                }
                let mut branch = Branch::from_values(spec, got)?;
                let p = Plane { batch, height: plane, width: plane };
                let eval = branch.logits(&acts_cm, p)?;
                let want_eval = twin.eval(&x)?.to_vec1::<f32>()?;
                let d = eval.iter().zip(&want_eval).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-4, "T{trunk_stages} branch {i}: eval logits differ by {d}");
            }
            assert_eq!(set.classes(), vec![1, 3]);
            // Each branch's loss is its own: class 3 trained alone ends where it ended beside 1.
            let mut alone = BranchSet::new(spec, plane, plane, inits()?.split_off(1))?;
            for lr in [0.1, 0.05] {
                alone.step(&mb, &sgd, lr, t)?;
            }
            let (a, b) = (alone.branch(0).values(), set.branch(1).values());
            for (name, v) in &a {
                let d = v.iter().zip(&b[name]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(d < 1e-6, "T{trunk_stages} `{name}`: alone and beside another differ by {d}");
            }
        }
        Ok(())
    }

    /// Minibatches that do not fit the set are errors, not panics.
    #[test]
    fn a_minibatch_of_the_wrong_size_is_refused() -> Result<(), TrainError> {
        let spec = BranchSpec::cifar(2, 0, 3, 4, 2);
        let mut set = BranchSet::new(spec, 8, 8, vec![(4, Branch::init(spec, 1)?)])?;
        let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.0 };
        let acts = vec![0.5f32; 2 * 3 * 64];
        let teacher = vec![0f32; 2 * 5];
        let ok = Minibatch { activations: &acts, teacher: &teacher, labels: &[0, 1] };
        assert_eq!(set.step(&ok, &sgd, 0.1, 2.0)?.len(), 1);
        let short = Minibatch { activations: &acts[1..], ..ok };
        assert!(matches!(set.step(&short, &sgd, 0.1, 2.0), Err(TrainError::Minibatch { .. })));
        let few_classes = Minibatch { teacher: &teacher[..4], ..ok };
        assert!(matches!(set.step(&few_classes, &sgd, 0.1, 2.0), Err(TrainError::Minibatch { .. })));
        Ok(())
    }
}
