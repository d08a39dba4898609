//! Branches trained by distillation on a cached trunk ([`super::trunk_cache`]): the branches of
//! several classes step together on the same minibatches (a [`BranchSet`]), each from its own
//! seeded initialisation, against the teacher's logits (KL at temperature T, times T², plus the
//! label's cross entropy), under a cosine learning rate. Or each branch alone on a sample of the
//! images of its own ([`train_branches_on_samples`]): with many classes, a branch needs its
//! class's images and the ones the teacher finds close to it far more than the rest.

use classmod_runtime::host::BranchSpec;
use classmod_train::{Branch, BranchSet, Minibatch};
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::trunk_cache::TrunkCache;
use super::{Schedule, SgdConfig};
use crate::HostError;

/// How the branches are trained.
#[derive(Debug, Clone, Copy)]
pub struct Distillation {
    /// Seeds the initialisations and the minibatch order.
    pub seed: u64,
    /// The peak learning rate (cosine schedule).
    pub lr: f64,
    /// Images per minibatch.
    pub batch: usize,
    /// Distillation temperature.
    pub temperature: f32,
}

/// Trains the branches of `classes` on `cache` for `steps` steps (see the module comment), all
/// on the same minibatches (one seeded order), each from its own seeded initialisation; returns
/// them and every step's loss of each.
pub fn train_branches(
    cache: &TrunkCache,
    spec: BranchSpec,
    classes: &[usize],
    steps: usize,
    opts: &Distillation,
    progress: &ProgressBar,
) -> Result<(Vec<Branch>, Vec<Vec<f64>>), HostError> {
    let rows: Vec<usize> = (0..cache.len()).collect();
    train_set_on(cache, spec, classes, Epochs::Same(&rows), steps, opts, progress)
}

/// The images of one class's branch: every epoch `fixed` (its class's and those the teacher
/// finds closest to it) and `fresh` others drawn anew from `pool`, so that over its epochs a
/// branch meets many more of the other classes' images than one epoch holds.
#[derive(Debug, Clone)]
pub struct ClassSample {
    /// Rows every epoch trains on.
    pub fixed: Vec<usize>,
    /// Rows the fresh ones are drawn from.
    pub pool: Vec<usize>,
    /// Rows drawn from `pool` for each epoch.
    pub fresh: usize,
}

impl ClassSample {
    /// Rows of one epoch.
    pub fn epoch_len(&self) -> usize {
        self.fixed.len() + self.fresh.min(self.pool.len())
    }
}

/// Trains each class's branch alone on its own sample of `cache` (`samples[i]` that of
/// `classes[i]`) for `epochs` epochs, the classes side by side on rayon's threads; returns the
/// branches and every step's loss of each.
pub fn train_branches_on_samples(
    cache: &TrunkCache,
    spec: BranchSpec,
    classes: &[usize],
    samples: &[&ClassSample],
    epochs: usize,
    opts: &Distillation,
    progress: &ProgressBar,
) -> Result<(Vec<Branch>, Vec<Vec<f64>>), HostError> {
    let trained = classes
        .par_iter()
        .zip(samples)
        .map(|(&c, sample)| {
            let steps = epochs.max(1) * sample.epoch_len().div_ceil(opts.batch.max(2));
            let (mut b, mut l) = train_set_on(cache, spec, &[c], Epochs::Renewed(sample), steps, opts, progress)?;
            Ok((b.remove(0), l.remove(0)))
        })
        .collect::<Result<Vec<_>, HostError>>()?;
    Ok(trained.into_iter().unzip())
}

/// What each epoch of [`train_set_on`] visits.
#[derive(Clone, Copy)]
enum Epochs<'a> {
    /// The same rows, reshuffled.
    Same(&'a [usize]),
    /// A class's sample, its fresh part drawn anew.
    Renewed(&'a ClassSample),
}

/// The branches of `classes` trained together for `steps` steps on minibatches drawn from the
/// images of `cache` that `epochs` says.
fn train_set_on(
    cache: &TrunkCache,
    spec: BranchSpec,
    classes: &[usize],
    epochs: Epochs,
    steps: usize,
    opts: &Distillation,
    progress: &ProgressBar,
) -> Result<(Vec<Branch>, Vec<Vec<f64>>), HostError> {
    let inits = classes
        .iter()
        .map(|&c| {
            let seed = opts.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            Ok((c, Branch::init(spec, seed)?))
        })
        .collect::<Result<Vec<_>, HostError>>()?;
    let (_, h, w) = cache.shape();
    let mut set = BranchSet::new(spec, h, w, inits)?;
    let sgd = SgdConfig { lr: opts.lr, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xB7A9_C4E1);
    let (mut order, mut pool) = match epochs {
        Epochs::Same(rows) => (rows.to_vec(), Vec::new()),
        Epochs::Renewed(s) => (Vec::with_capacity(s.epoch_len()), s.pool.clone()),
    };
    let epoch_len = match epochs {
        Epochs::Same(rows) => rows.len(),
        Epochs::Renewed(s) => s.epoch_len(),
    };
    let mut cursor = epoch_len;
    let batch = opts.batch.clamp(2, epoch_len.max(2));
    let (mut acts, mut teacher, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut losses = vec![Vec::with_capacity(steps); classes.len()];
    for step in 0..steps {
        if cursor + batch > order.len() {
            if let Epochs::Renewed(s) = epochs {
                order.clear();
                order.extend_from_slice(&s.fixed);
                let (fresh, _) = pool.partial_shuffle(&mut rng, s.fresh);
                order.extend_from_slice(fresh);
            }
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let picked = &order[cursor..cursor + batch.min(order.len())];
        cursor += picked.len();
        cache.gather(picked, &mut acts, &mut teacher, &mut labels);
        let mb = Minibatch { activations: &acts, teacher: &teacher, labels: &labels };
        let lr = Schedule::Cosine.lr(step, steps, opts.lr);
        for (all, loss) in losses.iter_mut().zip(set.step(&mb, &sgd, lr, opts.temperature.max(1e-3) as f64)?) {
            if !loss.is_finite() {
                return Err(HostError::Diverged { step, loss });
            }
            all.push(loss);
        }
        progress.inc(classes.len() as u64);
    }
    Ok((set.into_branches(), losses))
}
