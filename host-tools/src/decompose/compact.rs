//! `classmod decompose --kind compact`: one compact module per class, without retraining the base.
//! The base's trunk (stem and first stages) runs once over the training images and its
//! activations are cached with the base's logits (one pass: `ResNet::trunk_and_logits`); each
//! class's branch is then trained on the cache by distillation, with a loss of its own: its
//! logit replaces the base's logit of its class, and the softmax of the result is distilled to
//! the base's (KL at temperature T, times T², plus the label's cross entropy). Because no
//! branch's loss involves another, all of them step together on the same minibatches
//! (`train::distill` over a `train::trunk_cache`, stepped by `classmod_train::BranchSet`),
//! sharing the minibatch and the entry convolution's columns; a class trained alone gets the same
//! branch as with the others. A held-out slice of the training images calibrates each module's score
//! (one-vs-rest logistic regression on the branch's logit, folded into its head), so modules of
//! different bases compose fairly.
//!
//! Transplant ([`transplant_compact`]): the logits distilled may come from another model of the
//! same classes (the teacher) instead of the base: class c of model B then runs on model A's
//! trunk, beside A's own modules, at a branch's cost instead of a second base.

use std::time::Instant;

use candle_core::Device;
use classmod_runtime::host::score;
use classmod_runtime::host::{BranchSpec, ClassId, ClassModule, ModelFile, ModuleHead, ModuleKind, ResNet, TrunkEnd};
use classmod_runtime::ModelKey;
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::decompose::growth::{grow, Branches, CheckCaches, CheckImages, GrowthOptions, GrowthReport};
use crate::decompose::logistic;
use crate::train::distill::{train_branches, train_branches_on_samples, ClassSample, Distillation};
use crate::train::trunk_cache::TrunkCache;
use crate::HostError;
use classmod_train::Branch;

/// Stages of the base the trunk covers, by default.
pub const TRUNK_STAGES: usize = 2;
/// The branch width to use when none is asked for, chosen by measurement (full training split,
/// 6 epochs, `results/compact-resnet20/`, `compact-resnet56*/`): a branch stands in for the
/// base's last stage, and ResNet-56's nine blocks a stage need more than ResNet-20's three.
/// ResNet-20 at W=16 composes 0.8 points above its base with 5.2 % of its parameters a module;
/// ResNet-56 at W=16 1.05 points below, at W=24 level with it (3.3 % a module). On ResNet-20's
/// full trade-off (`results/compact-tradeoff-resnet20/`, T in {1, 2} x W in {8, 16, 32}) T=2,
/// W=16 is the knee: the only setting within half a point of the base whose module stays under
/// the 6 % size target (T=2, W=8: -0.9 points; T=1 reaches -0.3 only at W=32, 15.8 % a module).
/// Those widths are shares of the last stage's 64 channels ([`BRANCH_WIDTH_SHARE`] and the
/// others), so that a wider base gets a branch as wide in proportion, not 16 channels beside
/// a stage of hundreds.
pub fn default_width(net: &classmod_runtime::host::Network) -> usize {
    let share = if has_many_classes(net) {
        MANY_CLASSES_BRANCH_WIDTH_SHARE
    } else if has_four_stages(net) {
        FOUR_STAGE_BRANCH_WIDTH_SHARE
    } else if is_shallow(net) {
        BRANCH_WIDTH_SHARE
    } else {
        DEEP_BRANCH_WIDTH_SHARE
    };
    share_of_last_stage(net, share)
}

/// The branch's width as a share `(numerator, denominator)` of the base's last stage's: 16 of
/// ResNet-20's 64, for a base of at most [`SHALLOW_STAGE_BLOCKS`] blocks a stage.
pub const BRANCH_WIDTH_SHARE: (usize, usize) = (1, 4);
/// 24 of ResNet-56's 64, for deeper bases.
pub const DEEP_BRANCH_WIDTH_SHARE: (usize, usize) = (3, 8);
/// 10 of 64, for a base of [`MANY_CLASSES`] or more.
pub const MANY_CLASSES_BRANCH_WIDTH_SHARE: (usize, usize) = (5, 32);
/// The width [`BRANCH_WIDTH_SHARE`] gives the CIFAR ResNets ([`CompactOptions::new`]'s).
pub const BRANCH_WIDTH: usize = 16;
pub const SHALLOW_STAGE_BLOCKS: usize = 3;

/// 64 of the 512 channels of the last stage's 3x3s, for a base of four stages (torchvision's
/// layout), whose branch replaces stages 3 and 4. Chosen on two trained torchvision-layout
/// bases (CIFAR-10 at 32x32, the whole test split, `results/compact-four-stage-cifar10/`):
/// ResNet-18 composes +0.89 points above its base at 64 wide with two blocks (2.02 % of its
/// parameters a module) and +1.05 at 128 with one (4.11 %), so the narrower branch costs half
/// the bytes for 0.16 points; ResNet-34, whose stage 3 has six blocks, composes +1.00 at 64
/// with two blocks (1.06 % a module). The CIFAR rule would have given ResNet-34 192 channels
/// and ResNet-50 768 (3/8 of its 2048 expanded outputs): modules of 7.5 % and 108 % of the base.
/// Checked on a base it was not chosen on, a trained ResNet-50 (bottlenecks; 64 wide, 1.90 % a
/// module): +1.71 points.
pub const FOUR_STAGE_BRANCH_WIDTH_SHARE: (usize, usize) = (1, 8);
/// Two blocks after the entry (the first strided to stage 4's plane), for a four-stage base:
/// see [`FOUR_STAGE_BRANCH_WIDTH_SHARE`].
pub const FOUR_STAGE_BRANCH_BLOCKS: usize = 2;

/// Whether `net` has four stages or more (torchvision's layout), where the branch after a
/// trunk of [`TRUNK_STAGES`] replaces two stages, not one.
pub fn has_four_stages(net: &classmod_runtime::host::Network) -> bool {
    net.stages.len() > 3
}

/// `share` of the width of the base's last stage's 3x3 convolutions (its channels for basic
/// blocks; a bottleneck's inner width, a quarter of ResNet-50's 2048), rounded to an even
/// number, at least 2. A branch is made of basic blocks, so it is sized against the base's 3x3s,
/// not against a bottleneck's expanded output.
fn share_of_last_stage(net: &classmod_runtime::host::Network, (n, d): (usize, usize)) -> usize {
    let width = net.stages.last().map_or(0, |s| s.inner_width());
    let exact = width as f64 * n as f64 / d as f64;
    ((exact / 2.0).round() as usize * 2).max(2)
}
/// Blocks of the stage after the trunk's that the trunk runs too, by default: none, but for a
/// base of many classes ([`MANY_CLASSES_TRUNK_BLOCKS`], where its stages have more blocks than that).
pub fn default_trunk_blocks(net: &classmod_runtime::host::Network) -> usize {
    match has_many_classes(net) && stage_after_trunk_blocks(net) > MANY_CLASSES_TRUNK_BLOCKS {
        true => MANY_CLASSES_TRUNK_BLOCKS,
        false => 0,
    }
}

/// Whether `net` has at most [`SHALLOW_STAGE_BLOCKS`] blocks in the stage the branch replaces
/// (ResNet-20, not ResNet-56): what the compact defaults and size targets that differ by model go
/// by.
pub fn is_shallow(net: &classmod_runtime::host::Network) -> bool {
    stage_after_trunk_blocks(net) <= SHALLOW_STAGE_BLOCKS
}

/// Blocks of the stage after a default trunk of [`TRUNK_STAGES`] stages (every stage's, in a
/// CIFAR ResNet).
fn stage_after_trunk_blocks(net: &classmod_runtime::host::Network) -> usize {
    net.stages.get(TRUNK_STAGES).map_or(0, |s| s.blocks)
}

/// Blocks of the branch after its entry convolution, by default, for a deeper base than
/// ResNet-20; a shallow one gets [`SHALLOW_BRANCH_BLOCKS`] ([`default_blocks`]).
pub const BRANCH_BLOCKS: usize = 2;
pub const SHALLOW_BRANCH_BLOCKS: usize = 1;

/// The branch's blocks when none are asked for, chosen by measurement on the full training
/// split (two seeds each, `results/compact-resnet20-b1/`): on ResNet-20 one block composes
/// 81.18 % and 81.28 % (base 81.10) with 3.4 % of the parameters a module, where two compose
/// 82.04 % and 82.25 % with 5.2 %; but ten classes of two-block branches cost 1.00-1.02x the
/// base at batch 64 (target 1.0), one-block ones 0.91-0.93x, and the one-block branches train in
/// 128 s instead of 221 s. ResNet-56 keeps two (at W=24 one module is 3.3 % of its base and ten
/// classes cost 0.93x).
pub fn default_blocks(net: &classmod_runtime::host::Network) -> usize {
    if has_many_classes(net) {
        MANY_CLASSES_BRANCH_BLOCKS
    } else if has_four_stages(net) {
        FOUR_STAGE_BRANCH_BLOCKS
    } else if is_shallow(net) {
        SHALLOW_BRANCH_BLOCKS
    } else {
        BRANCH_BLOCKS
    }
}
/// A base of at least this many classes is a base of many classes: its trunk runs
/// [`MANY_CLASSES_TRUNK_BLOCKS`] block into the stage after the trunk's, and its branches are
/// [`MANY_CLASSES_BRANCH_WIDTH_SHARE`] of the last stage wide with [`MANY_CLASSES_BRANCH_BLOCKS`] block.
pub const MANY_CLASSES: usize = 100;
/// Measured on Tiny ImageNet's 200 classes (ResNet-56 base, `results/compact-tiny-imagenet-resnet56/`):
/// with many classes each branch must be small (the 1 % of the base's parameters) and its
/// logit precise (the composed answer is the largest of 200, so each branch's error counts
/// against every image), and a branch that starts from the base's own first block of its last
/// stage (features trained for these classes) rather than from the frozen stage-2 ones is both:
/// in a PyTorch probe, 20 branches in place of the base's logits cost 0.49 points from stage 2
/// (W=12) and none from one block in (W=10, 0.88 % of the parameters); all 200 composed 38.43 %
/// (-5.85 points) from stage 2 and 41.51 % (-2.77) from one block in, for 3 % more shared trunk
/// (70.0 % of the base's MACs), and trained in 12 minutes instead of 19.
pub const MANY_CLASSES_TRUNK_BLOCKS: usize = 1;
pub const MANY_CLASSES_BRANCH_BLOCKS: usize = 1;

/// Whether `net` has [`MANY_CLASSES`] classes or more.
pub fn has_many_classes(net: &classmod_runtime::host::Network) -> bool {
    net.num_classes >= MANY_CLASSES
}

/// Passes over the cached training images per branch, by default.
pub const EPOCHS: usize = 6;
/// Distillation temperature.
pub const TEMPERATURE: f32 = 4.0;
/// Peak learning rate, by default.
pub const LR: f64 = 0.2;
/// Training images held out to calibrate the modules' scores, by default (at least
/// [`HELD_OUT_PER_CLASS`] a class: [`held_out_for`]).
pub const HELD_OUT: usize = 2000;
/// Held-out images a class, at least, so that a base of many classes still calibrates each
/// module's score on a few dozen of its own images.
pub const HELD_OUT_PER_CLASS: usize = 20;

/// The held-out images to calibrate a base of `classes` classes with.
pub fn held_out_for(classes: usize) -> usize {
    HELD_OUT.max(HELD_OUT_PER_CLASS * classes)
}

/// Other classes' images a branch trains on beside its own class's, when branches train on
/// samples of their own ([`Negatives::Sample`]). Measured on Tiny ImageNet's 200 classes
/// (ResNet-56 base, the many-class branch, validation split): 4,000 composed 2.77 points below
/// the base in 19.5 minutes, 8,000 0.22 below (top-5 1.83 below) in 36 minutes beside other
/// work (about 31 alone), 12,000 2.21 above (top-5 0.35 above) in 38 minutes alone, the issue's
/// hour with room for a slower base.
pub const NEGATIVES: usize = 12_000;
/// [`Negatives::Auto`] samples for a base of [`MANY_CLASSES`] or more, whose branches on every
/// image would cost `classes` passes over the whole split (a branch-step costs about the same
/// either way: 68 a second alone on samples, 76 on shared minibatches, 200 Tiny ImageNet
/// classes), and where a branch's sample is at most this fraction of the images (Tiny
/// ImageNet: 480 + 12,000 of 96,000; CIFAR-100: 480 + 12,000 of 48,000). The 10-class defaults
/// keep every image, whatever the split's size: they were measured that way.
pub const SAMPLE_WHEN_FRACTION: f64 = 0.5;

/// Which images each branch trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Negatives {
    /// Every image, all branches stepping together on the same minibatches (what pays with
    /// few classes, where a class's images are a large share of the set).
    All,
    /// Each branch alone on its class's images and this many others: half those the base
    /// scores highest for the class (the ones its logit must keep below the true class's),
    /// half drawn at random (seeded, per class). The loss is distillation: each image's
    /// target is the base's own logit whichever images are drawn, so the choice changes
    /// emphasis, not the answer.
    Sample(usize),
    /// [`Negatives::Sample`] of [`NEGATIVES`] for a base of [`MANY_CLASSES`] or more where a
    /// sample is at most [`SAMPLE_WHEN_FRACTION`] of the images (200 in Tiny ImageNet), else
    /// [`Negatives::All`] (CIFAR-10's 10).
    Auto,
}

impl Negatives {
    /// What `Auto` means for `images` training images of `classes` classes; the others as
    /// they are.
    pub fn resolve(self, images: usize, classes: usize) -> Negatives {
        match self {
            Negatives::Auto => {
                let sample = images / classes.max(1) + NEGATIVES;
                match classes >= MANY_CLASSES && (sample as f64) <= SAMPLE_WHEN_FRACTION * images as f64 {
                    true => Negatives::Sample(NEGATIVES),
                    false => Negatives::All,
                }
            }
            other => other,
        }
    }
}

impl std::str::FromStr for Negatives {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Negatives::Auto),
            "all" => Ok(Negatives::All),
            n => n.parse().map(Negatives::Sample).map_err(|_| format!("`{n}`: auto, all or a number of images")),
        }
    }
}

/// Class `c`'s sample of the cached images: all of its own and the `k / 2` others the teacher
/// gives the highest logit of `c`, every epoch; and `k - k / 2` of the rest drawn anew each
/// epoch. (A fixed random draw was tried first: 24 epochs on it composed 5 points below 6,
/// each branch learning its few thousand negatives rather than the other classes.)
pub fn class_sample(cache: &TrunkCache, c: usize, k: usize) -> ClassSample {
    let (mut fixed, mut others): (Vec<usize>, Vec<usize>) =
        (0..cache.len()).partition(|&r| cache.labels()[r] as usize == c);
    let hard = (k / 2).min(others.len());
    let logit = |r: usize| cache.teacher_logit(r, c).unwrap_or(0.0);
    others.sort_by(|&a, &b| logit(b).total_cmp(&logit(a)).then(a.cmp(&b)));
    let pool = others.split_off(hard);
    fixed.extend(others);
    ClassSample { fixed, pool, fresh: k - k / 2 }
}

/// How compact modules are made.
#[derive(Debug, Clone, Serialize)]
pub struct CompactOptions {
    /// Stages of the base the trunk covers (1 or 2).
    pub trunk_stages: usize,
    /// Blocks of the next stage the trunk runs too (0: none).
    pub trunk_blocks: usize,
    /// The branch's channel width.
    pub width: usize,
    /// Blocks after the branch's entry convolution.
    pub blocks: usize,
    /// Passes over the cached images per branch.
    pub epochs: usize,
    /// Images per training step.
    pub batch: usize,
    /// Peak learning rate (SGD, Nesterov momentum 0.9, cosine schedule).
    pub lr: f64,
    /// Distillation temperature.
    pub temperature: f32,
    /// Training images held out for calibration (not trained on).
    pub held_out: usize,
    /// Which images each branch trains on.
    pub negatives: Negatives,
    /// Output indices of the classes to decompose; `None` = all.
    pub classes: Option<Vec<usize>>,
    pub seed: u64,
}

impl CompactOptions {
    /// The defaults for a base network `net` (its branch width and blocks), for
    /// `classes` and `seed`.
    pub fn for_base(net: &classmod_runtime::host::Network, classes: Option<Vec<usize>>, seed: u64) -> Self {
        CompactOptions {
            trunk_blocks: default_trunk_blocks(net),
            width: default_width(net),
            blocks: default_blocks(net),
            held_out: held_out_for(net.num_classes),
            ..Self::new(classes, seed)
        }
    }

    /// A branch of [`BRANCH_WIDTH`] channels and [`BRANCH_BLOCKS`] blocks whatever the base, for
    /// `classes` and `seed`: what a test or an experiment that sets its own shape starts from
    /// ([`Self::for_base`] has the measured defaults by base).
    pub fn new(classes: Option<Vec<usize>>, seed: u64) -> Self {
        CompactOptions {
            trunk_stages: TRUNK_STAGES,
            trunk_blocks: 0,
            width: BRANCH_WIDTH,
            blocks: BRANCH_BLOCKS,
            epochs: EPOCHS,
            batch: 128,
            lr: LR,
            temperature: TEMPERATURE,
            held_out: HELD_OUT,
            negatives: Negatives::Auto,
            classes,
            seed,
        }
    }
}

/// What happened for one class.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub class_id: u32,
    pub class_name: String,
    /// Its branch's width and blocks (larger than asked where the check grew it).
    pub width: usize,
    pub blocks: usize,
    /// Mean training loss over the first and the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// On the held-out images: the share the calibrated module classifies right one-vs-rest
    /// (score above 0.5 for its class, below for the others), and the share of its own class's
    /// images it accepts.
    pub held_out_accuracy: f64,
    pub held_out_recall: f64,
    /// Parameters and multiply-accumulates per image the module adds beyond the shared trunk.
    pub params: u64,
    pub macs: u64,
    pub seconds: f64,
}

/// The modules and what it took.
pub struct CompactDecomposition {
    pub modules: Vec<ClassModule>,
    pub reports: Vec<CompactReport>,
    /// The base's parameters and multiply-accumulates per image, and the trunk's.
    pub base_params: u64,
    pub base_macs: u64,
    pub trunk_macs: u64,
    /// What each branch trained on (never [`Negatives::Auto`]).
    pub negatives: Negatives,
    /// The modules composed against their base on the held-out images, and the calibration
    /// chosen by it.
    pub check: CalibrationCheck,
    /// What the check on images the base did not train on found, and what grew
    /// ([`decompose_compact_checked`]).
    pub growth: Option<GrowthReport>,
    /// Seconds caching the trunk, and in all.
    pub cache_seconds: f64,
    pub seconds: f64,
}

impl CompactDecomposition {
    /// Mean fraction of the base's parameters one module adds beyond the shared trunk.
    pub fn params_fraction(&self) -> f64 {
        self.mean(|r| r.params as f64) / self.base_params.max(1) as f64
    }
    /// The same for multiply-accumulates per image.
    pub fn macs_fraction(&self) -> f64 {
        self.mean(|r| r.macs as f64) / self.base_macs.max(1) as f64
    }
    /// The shared trunk's fraction of the base's multiply-accumulates.
    pub fn trunk_macs_fraction(&self) -> f64 {
        self.trunk_macs as f64 / self.base_macs.max(1) as f64
    }
    fn mean(&self, f: impl Fn(&CompactReport) -> f64) -> f64 {
        self.reports.iter().map(f).sum::<f64>() / self.reports.len().max(1) as f64
    }
}

/// Decomposes `model` into compact modules using its training images `train`.
pub fn decompose_compact(
    model: &ModelFile,
    train: &ImageSet,
    opts: &CompactOptions,
    progress: &ProgressBar,
) -> Result<CompactDecomposition, HostError> {
    compact_modules(model, None, train, opts, None, progress)
}

/// [`decompose_compact`] checking itself on `check`, images the base did not train on, and
/// growing the branches of the classes that lose most while the modules lose more than
/// `growth.max_loss` points of top-1 there ([`super::growth`]).
pub fn decompose_compact_checked(
    model: &ModelFile,
    train: &ImageSet,
    opts: &CompactOptions,
    check: CheckImages,
    growth: &GrowthOptions,
    progress: &ProgressBar,
) -> Result<CompactDecomposition, HostError> {
    compact_modules(model, None, train, opts, Some((check, growth)), progress)
}

/// Transplant: compact modules of `teacher`'s classes on `model`'s trunk, each branch distilled
/// from the teacher's logits (the two models must have the same classes and image shape; each
/// normalises the images its own way). The modules run on `model` (its key), beside its own.
pub fn transplant_compact(
    model: &ModelFile,
    teacher: &ModelFile,
    train: &ImageSet,
    opts: &CompactOptions,
    progress: &ProgressBar,
) -> Result<CompactDecomposition, HostError> {
    let (a, b) = (&model.meta, &teacher.meta);
    let shape = |i: &classmod_runtime::InputSpec| (i.channels, i.height, i.width);
    if a.class_names != b.class_names || shape(&a.input) != shape(&b.input) {
        return Err(HostError::ModelsDiffer);
    }
    let teacher = ResNet::new(teacher, &Device::Cpu)?;
    compact_modules(model, Some(&teacher), train, opts, None, progress)
}

fn compact_modules(
    model: &ModelFile,
    teacher: Option<&ResNet>,
    train: &ImageSet,
    opts: &CompactOptions,
    check: Option<(CheckImages, &GrowthOptions)>,
    progress: &ProgressBar,
) -> Result<CompactDecomposition, HostError> {
    let t0 = Instant::now();
    let device = Device::Cpu;
    let net = ResNet::new(model, &device)?;
    let network = net.network().clone();
    let classes = network.num_classes;
    let wanted: Vec<usize> = opts.classes.clone().unwrap_or_else(|| (0..classes).collect());
    if let Some(&bad) = wanted.iter().find(|&&c| c >= classes) {
        return Err(HostError::ClassOutOfRange { index: bad, classes });
    }
    if train.is_empty() {
        return Err(HostError::NoTrainingImages);
    }
    let end = TrunkEnd { stages: opts.trunk_stages, blocks: opts.trunk_blocks };
    let spec = BranchSpec::after(end, &network, opts.width, opts.blocks);
    spec.validate()?;
    spec.fits(&network)
        .map_err(|why| HostError::Options { what: format!("a compact module that does not fit: {why}") })?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    let held = opts.held_out.min(train.len() / 5);
    let (held_idx, train_idx) = order.split_at(held);
    let check_len = check.map_or(0, |(c, _)| c.tune.len() + c.confirm.len());
    progress.set_length((train.len() + check_len) as u64);
    progress.set_message("caching the trunk");
    let cache = TrunkCache::build(&net, teacher, train, train_idx, end, progress)?;
    let held_cache = TrunkCache::build(&net, teacher, train, held_idx, end, progress)?;
    let every = |set: &ImageSet| (0..set.len()).collect::<Vec<_>>();
    let check_caches = check
        .map(|(c, _)| -> Result<_, HostError> {
            let tune = TrunkCache::build(&net, teacher, c.tune, &every(c.tune), end, progress)?;
            Ok((tune, TrunkCache::build(&net, teacher, c.confirm, &every(c.confirm), end, progress)?))
        })
        .transpose()?;
    let cache_seconds = t0.elapsed().as_secs_f64();
    let negatives = opts.negatives.resolve(cache.len(), classes);
    let steps_per_epoch = |images: usize| images.div_ceil(opts.batch.max(2));
    let steps = opts.epochs.max(1) * steps_per_epoch(cache.len());
    // Each class's sample, drawn once: the first training and a growth round train on the same.
    let samples: Vec<ClassSample> = match negatives {
        Negatives::Sample(k) => wanted.iter().map(|&c| class_sample(&cache, c, k)).collect(),
        _ => Vec::new(),
    };
    let position = |c: usize| wanted.iter().position(|&w| w == c).expect("a decomposed class");
    let branch_steps = |c: usize| match negatives {
        Negatives::Sample(_) => opts.epochs.max(1) * steps_per_epoch(samples[position(c)].epoch_len()),
        _ => steps,
    };
    progress.set_position(0);
    progress.set_length(wanted.iter().map(|&c| branch_steps(c)).sum::<usize>() as u64);
    progress.set_message(format!("training {} branches", wanted.len()));
    let key = ModelKey::of(model)?;
    let (h, w) = (cache.shape().1, cache.shape().2);
    let distill = Distillation { seed: opts.seed, lr: opts.lr, batch: opts.batch, temperature: opts.temperature };
    // Trains the branches of `these` classes at `spec`: the first time all of them, then the
    // classes the check grows.
    let train_these = |these: &[usize], spec: BranchSpec| match negatives {
        Negatives::Sample(_) => {
            let mine: Vec<&ClassSample> = these.iter().map(|&c| &samples[position(c)]).collect();
            train_branches_on_samples(&cache, spec, these, &mine, opts.epochs, &distill, progress)
        }
        _ => train_branches(&cache, spec, these, steps, &distill, progress),
    };
    let tt = Instant::now();
    let (mut branches, losses) = train_these(&wanted, spec)?;
    let first_seconds = tt.elapsed().as_secs_f64();
    // Calibration evaluates each branch on the held-out images: independent, one per thread.
    let held_logits =
        branches.par_iter_mut().map(|branch| logits_of(branch, &held_cache)).collect::<Result<Vec<_>, HostError>>()?;
    let check_held = calibration_check(&held_cache, &wanted, &held_logits);
    let calibrate_seconds = t0.elapsed().as_secs_f64() - cache_seconds - first_seconds;
    let n = wanted.len().max(1) as f64;
    let mut set = Branches {
        names: wanted.iter().map(|&c| net.class_names()[c].clone()).collect(),
        specs: vec![spec; wanted.len()],
        seconds: vec![first_seconds / n; wanted.len()],
        classes: wanted.clone(),
        branches,
        losses,
        held_logits,
        check: check_held,
    };
    let growth = match (check_caches, check) {
        (Some((tune, confirm)), Some((_, growth))) => {
            let caches = CheckCaches { held: &held_cache, tune: &tune, confirm: &confirm };
            let retrain = |these: &[usize], spec: BranchSpec| {
                progress.set_position(0);
                progress.set_length(these.iter().map(|&c| branch_steps(c)).sum::<usize>() as u64);
                progress.set_message(format!(
                    "growing {} branches to width {}, {} blocks",
                    these.len(),
                    spec.width,
                    spec.blocks
                ));
                train_these(these, spec)
            };
            Some(grow(&mut set, &caches, &network, growth, first_seconds, &retrain)?)
        }
        _ => None,
    };
    let (mut modules, mut reports) = (Vec::new(), Vec::new());
    for (i, &c) in set.classes.iter().enumerate() {
        let (spec, losses) = (set.specs[i], &set.losses[i]);
        let (module, (accuracy, recall)) = calibrated_module(
            &net,
            &held_cache,
            &set.branches[i],
            &set.held_logits[i],
            set.check.chosen_fit(i),
            c,
            key,
        )?;
        let tenth = (losses.len() / 10).max(1);
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        reports.push(CompactReport {
            class_id: c as u32,
            class_name: set.names[i].clone(),
            width: spec.width,
            blocks: spec.blocks,
            first_loss: mean(&losses[..tenth.min(losses.len())]),
            last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
            held_out_accuracy: accuracy,
            held_out_recall: recall,
            params: spec.params() + spec.width as u64 + 1,
            macs: spec.macs(h, w) + spec.width as u64,
            seconds: set.seconds[i] + calibrate_seconds / n,
        });
        modules.push(module);
    }
    let spec_in = net.input_spec();
    let base_macs = network.macs(spec_in.height, spec_in.width);
    // The network's own count: an option-B trunk's shortcut projections included.
    let trunk_macs = network.macs_until_blocks(network.blocks_until_end(end)?, spec_in.height, spec_in.width);
    let base_params =
        model.tensors.iter().filter(|(n, _)| !n.contains("running_")).map(|(_, t)| t.elem_count() as u64).sum();
    Ok(CompactDecomposition {
        modules,
        reports,
        base_params,
        base_macs,
        trunk_macs,
        negatives,
        check: set.check,
        growth,
        cache_seconds,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// How the branches' logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Calibration {
    /// `sigmoid(a_c z + b_c)` fitted for each class on its own (one-vs-rest, held-out images):
    /// each module's score its class's probability, however its branch's logit came out.
    PerClass,
    /// One `sigmoid(a z + b)` for every class of the base, fitted on all their held-out logits
    /// at once: the branches' logits keep the order of the base's they were distilled from,
    /// and no class's fit rests on its few held-out images alone (20 a class with 200 classes).
    Shared,
}

impl Calibration {
    /// The calibration of the higher top-1 plus top-5 given each one's `[top-1, top-5]` (a
    /// composition is judged by both); per class on a tie, as before top-5 was measured.
    pub fn better(per_class: [f64; 2], shared: [f64; 2]) -> Self {
        if shared[0] + shared[1] > per_class[0] + per_class[1] {
            Calibration::Shared
        } else {
            Calibration::PerClass
        }
    }
}

/// The modules composed (every decomposed class, the highest score answers) against their base
/// on the held-out training images, under each calibration; the better one is chosen.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationCheck {
    /// Held-out images of the decomposed classes.
    pub images: usize,
    /// The base's top-1 on them, among the decomposed classes.
    pub base_top1: f64,
    /// The modules' composed top-1 with each calibration.
    pub per_class_top1: f64,
    pub shared_top1: f64,
    /// The same for top-5 (the base's, per class, shared): with many classes the shared fit
    /// keeps the order of the distilled logits below the first, which per-class fits on a few
    /// held-out images of each class scramble.
    pub top5: [f64; 3],
    /// The one the modules carry: the better on the held-out images by top-1 plus top-5 (per
    /// class on a tie).
    pub chosen: Calibration,
    #[serde(skip)]
    per_class: Vec<(f32, f32)>,
    #[serde(skip)]
    shared: (f32, f32),
}

impl CalibrationCheck {
    /// The composed top-1 with the chosen calibration.
    pub fn top1(&self) -> f64 {
        match self.chosen {
            Calibration::PerClass => self.per_class_top1,
            Calibration::Shared => self.shared_top1,
        }
    }

    /// The composed top-5 with the chosen calibration.
    pub fn top5(&self) -> f64 {
        match self.chosen {
            Calibration::PerClass => self.top5[1],
            Calibration::Shared => self.top5[2],
        }
    }

    /// What the modules lose against the base on the held-out images, in points of top-1. On a
    /// base trained on these images (the decomposer holds them out of the branches' training,
    /// not of the base's) the base's figure is a training accuracy, and this overstates the loss.
    pub fn loss_points(&self) -> f64 {
        100.0 * (self.base_top1 - self.top1())
    }

    /// Module `i`'s `(a, b)` under the chosen calibration.
    pub(super) fn chosen_fit(&self, i: usize) -> (f32, f32) {
        match self.chosen {
            Calibration::PerClass => self.per_class[i],
            Calibration::Shared => self.shared,
        }
    }
}

/// Where one image of a decomposed class lands when the classes are scored: `own` and `winner`
/// are positions in the decomposed classes (its class and the highest scored), `above` how many
/// score above its own (0: top-1 right; under 5: top-5 right).
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub own: usize,
    pub above: usize,
    pub winner: usize,
}

/// The placement of every image of `cache` whose label is one of `classes`, class `classes[i]`
/// scoring `score(i, row)` (composition among the decomposed classes, on their images).
pub(super) fn placements(
    cache: &TrunkCache,
    classes: &[usize],
    score: &(dyn Fn(usize, usize) -> f32 + Sync),
) -> Vec<Placement> {
    (0..cache.len())
        .into_par_iter()
        .filter_map(|r| {
            let own = classes.iter().position(|&c| c == cache.labels()[r] as usize)?;
            let mine = score(own, r);
            let (mut above, mut winner, mut best) = (0, own, mine);
            for i in 0..classes.len() {
                let v = score(i, r);
                above += usize::from(v > mine);
                if v > best {
                    (winner, best) = (i, v);
                }
            }
            Some(Placement { own, above, winner })
        })
        .collect()
}

/// Fits both calibrations to the branches' logits `logits[i]` (class `classes[i]`) on the
/// held-out images of `held`, and composes the modules under each against the base there.
pub(super) fn calibration_check(held: &TrunkCache, classes: &[usize], logits: &[Vec<f32>]) -> CalibrationCheck {
    let is = |c: usize| -> Vec<bool> { held.labels().iter().map(|&l| l as usize == c).collect() };
    let fit = |z: &[f32], labels: &[bool]| {
        let feats: Vec<Vec<f32>> = z.iter().map(|&v| vec![v]).collect();
        let (a, b) = logistic::fit_weighted(&feats, labels, 1e-4, false);
        (a[0], b)
    };
    let per_class: Vec<(f32, f32)> = classes.par_iter().zip(logits).map(|(&c, z)| fit(z, &is(c))).collect();
    let pooled: Vec<f32> = logits.concat();
    let pooled_labels: Vec<bool> = classes.iter().flat_map(|&c| is(c)).collect();
    let shared = fit(&pooled, &pooled_labels);
    let top1_top5 = |score: &(dyn Fn(usize, usize) -> f32 + Sync)| {
        let p = placements(held, classes, score);
        [1, 5].map(|k| p.iter().filter(|x| x.above < k).count() as f64 / p.len().max(1) as f64)
    };
    let [base_top1, base_top5] = top1_top5(&|i, r| held.teacher_logit(r, classes[i]).unwrap_or(f32::NEG_INFINITY));
    let [per_class_top1, per_class_top5] = top1_top5(&|i, r| per_class[i].0 * logits[i][r] + per_class[i].1);
    let [shared_top1, shared_top5] = top1_top5(&|i, r| shared.0 * logits[i][r] + shared.1);
    let chosen = Calibration::better([per_class_top1, per_class_top5], [shared_top1, shared_top5]);
    CalibrationCheck {
        images: (0..held.len()).filter(|&r| classes.contains(&(held.labels()[r] as usize))).count(),
        base_top1,
        per_class_top1,
        shared_top1,
        top5: [base_top5, per_class_top5, shared_top5],
        chosen,
        per_class,
        shared,
    }
}

/// Class `c`'s module from its trained branch and its logits `z` on the held-out images: the
/// score `sigmoid(a z + b)` folded into the head; with the held-out one-vs-rest accuracy and the
/// share of the class's images accepted.
fn calibrated_module(
    net: &ResNet,
    held: &TrunkCache,
    branch: &Branch,
    z: &[f32],
    (a, b): (f32, f32),
    c: usize,
    key: ModelKey,
) -> Result<(ClassModule, (f64, f64)), HostError> {
    let (weights, lin_w, lin_b) = branch.fold()?;
    let labels: Vec<bool> = held.labels().iter().map(|&l| l as usize == c).collect();
    let head = ModuleHead::Calibrated { weight: lin_w.iter().map(|v| v * a).collect(), bias: a * lin_b + b };
    let accepted: Vec<bool> = z.iter().map(|&v| a * v + b > 0.0).collect();
    let right = accepted.iter().zip(&labels).filter(|(s, l)| s == l).count();
    let positives = labels.iter().filter(|&&l| l).count();
    let hits = accepted.iter().zip(&labels).filter(|(s, l)| **s && **l).count();
    let class_scores = z.iter().zip(&labels).filter(|(_, &l)| l).map(|(&v, _)| score(a * v + b, 0.0)).collect();
    let module = ClassModule {
        class_id: ClassId(c as u32),
        class_name: net.class_names()[c].clone(),
        base_key: key,
        input: net.input_spec().clone(),
        kind: ModuleKind::Compact(weights),
        head,
        min_score: super::min_score::min_score(class_scores, super::min_score::ACCEPTED_SHARE),
    };
    Ok((module, (right as f64 / labels.len().max(1) as f64, hits as f64 / positives.max(1) as f64)))
}

/// The branch's logits (eval mode) on every image of `cache`.
pub(super) fn logits_of(branch: &mut Branch, cache: &TrunkCache) -> Result<Vec<f32>, HostError> {
    let rows: Vec<usize> = (0..cache.len()).collect();
    let mut out = Vec::with_capacity(rows.len());
    let (mut acts, mut teacher, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in rows.chunks(256) {
        cache.gather(chunk, &mut acts, &mut teacher, &mut labels);
        out.extend(branch.logits(&acts, cache.plane(chunk.len()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use classmod_runtime::host::{Network, ResNetConfig};

    /// The measured defaults: ResNet-20 (3 blocks a stage) 16 channels and one block, ResNet-32
    /// (5) and up 24 channels and two blocks, after two stages; with 200 classes, 10 channels
    /// and one block after the first block of stage 3 (none for ResNet-8, whose stage has one).
    #[test]
    fn the_default_shape_follows_the_depth_and_classes_of_the_base() {
        for (depth, classes, trunk_blocks, width, blocks) in [
            (8, 10, 0, 16, 1),
            (20, 10, 0, 16, 1),
            (32, 10, 0, 24, 2),
            (56, 10, 0, 24, 2),
            (20, 200, 1, 10, 1),
            (56, 200, 1, 10, 1),
            (56, 100, 1, 10, 1),
            (8, 200, 0, 10, 1),
        ] {
            let arch = ResNetConfig::cifar(depth, 3, classes).unwrap().network();
            let o = CompactOptions::for_base(&arch, None, 0);
            let want = (trunk_blocks, width, blocks);
            let found = (default_trunk_blocks(&arch), default_width(&arch), default_blocks(&arch));
            assert_eq!(found, want, "ResNet-{depth}, {classes} classes");
            assert_eq!((o.trunk_blocks, o.width, o.blocks), want, "ResNet-{depth}, {classes} classes");
            let spec =
                BranchSpec::after(TrunkEnd { stages: o.trunk_stages, blocks: o.trunk_blocks }, &arch, width, blocks);
            assert!(spec.fits(&arch).is_ok(), "ResNet-{depth}, {classes} classes: {spec:?}");
        }
        // A base twice as wide gets branches twice as wide: the widths are shares of its last stage.
        for (depth, classes, width) in [(20, 10, 32), (56, 10, 48), (56, 200, 20)] {
            let arch =
                ResNetConfig { widths: [32, 64, 128], ..ResNetConfig::cifar(depth, 3, classes).unwrap() }.network();
            assert_eq!(default_width(&arch), width, "ResNet-{depth} x2, {classes} classes");
        }
        let narrow = ResNetConfig { widths: [4, 4, 4], ..ResNetConfig::cifar(20, 3, 200).unwrap() }.network();
        assert_eq!(default_width(&narrow), 2, "at least 2 channels");
        // torchvision's four-stage bases: a share of the last stage's 3x3 width (512 for
        // ResNet-18 to 152, 1024 for wide_resnet50_2), two blocks; many classes as above.
        for (depth, wpg, classes, trunk_blocks, width, blocks) in [
            (18, 64, 10, 0, 64, 2),
            (34, 64, 10, 0, 64, 2),
            (50, 64, 10, 0, 64, 2),
            (152, 64, 1000, 1, 80, 1),
            (50, 128, 10, 0, 128, 2),
            (18, 64, 200, 1, 80, 1),
        ] {
            let arch = Network::torchvision(depth, wpg, classes).unwrap();
            let o = CompactOptions::for_base(&arch, None, 0);
            let want = (trunk_blocks, width, blocks);
            assert_eq!((o.trunk_blocks, o.width, o.blocks), want, "ResNet-{depth} ({wpg}), {classes} classes");
            let spec =
                BranchSpec::after(TrunkEnd { stages: o.trunk_stages, blocks: o.trunk_blocks }, &arch, width, blocks);
            assert!(spec.fits(&arch).is_ok(), "ResNet-{depth}, {classes} classes: {spec:?}");
        }
    }

    /// CIFAR-10's ten classes keep training every branch on every image; Tiny ImageNet's 200
    /// train each on a sample; an explicit choice stays.
    #[test]
    fn branches_sample_their_images_only_with_many_classes() {
        assert_eq!(Negatives::Auto.resolve(48_000, 10), Negatives::All);
        assert_eq!(Negatives::Auto.resolve(96_000, 200), Negatives::Sample(NEGATIVES));
        assert_eq!(Negatives::Auto.resolve(96_000, 100), Negatives::Sample(NEGATIVES));
        assert_eq!(Negatives::Auto.resolve(48_000, 100), Negatives::Sample(NEGATIVES), "CIFAR-100's split");
        assert_eq!(Negatives::Auto.resolve(20_000, 100), Negatives::All, "a small split: every image");
        assert_eq!(Negatives::Auto.resolve(1_000_000, 10), Negatives::All, "ten classes: every image");
        assert_eq!(Negatives::All.resolve(96_000, 200), Negatives::All);
        assert_eq!(Negatives::Sample(7).resolve(48_000, 10), Negatives::Sample(7));
        assert_eq!("auto".parse::<Negatives>(), Ok(Negatives::Auto));
        assert_eq!("all".parse::<Negatives>(), Ok(Negatives::All));
        assert_eq!("300".parse::<Negatives>(), Ok(Negatives::Sample(300)));
        assert!("many".parse::<Negatives>().is_err());
        assert_eq!((held_out_for(10), held_out_for(200)), (2000, 4000));
    }

    /// The held-out check composes the branches' logits under both calibrations against the
    /// base's logits: a branch whose logits are the base's shifted by a per-class offset is
    /// right only once each class has its own fit, and the base's top-1 is its logits'.
    #[test]
    fn the_held_out_check_composes_under_both_calibrations_and_picks_the_better() {
        let (n, classes) = (60usize, 3usize);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
        // The base: right on every image but the last three.
        let teacher: Vec<f32> = (0..n)
            .flat_map(|r| (0..classes).map(move |c| if c == (r + usize::from(r >= 57)) % 3 { 4.0 } else { 0.0 }))
            .collect();
        let cache = TrunkCache::from_parts(vec![0.0; n], (1, 1, 1), teacher.clone(), labels.clone());
        // Branch c: the base's logit plus 10 c, so raw (and shared) scores always answer class 2.
        let logits: Vec<Vec<f32>> =
            (0..classes).map(|c| (0..n).map(|r| teacher[r * classes + c] + 10.0 * c as f32).collect()).collect();
        let check = calibration_check(&cache, &[0, 1, 2], &logits);
        assert_eq!(check.images, n);
        assert!((check.base_top1 - 57.0 / 60.0).abs() < 1e-9, "{check:?}");
        assert!((check.shared_top1 - 1.0 / 3.0).abs() < 1e-9, "{check:?}");
        assert!((check.per_class_top1 - check.base_top1).abs() < 1e-9, "{check:?}");
        assert_eq!(check.chosen, Calibration::PerClass);
        assert!(check.loss_points().abs() < 1e-6);
        assert_eq!(check.top5, [1.0; 3], "three classes: every image's own class is in its top five");
        assert_eq!(check.top5(), 1.0);
        // Top-1 about equal (200 Tiny ImageNet classes: 45.50 vs 45.48 %): top-5 decides.
        assert_eq!(Calibration::better([0.4550, 0.70], [0.4548, 0.715]), Calibration::Shared);
        assert_eq!(Calibration::better([0.46, 0.70], [0.44, 0.715]), Calibration::PerClass);
        assert_eq!(Calibration::better([0.5, 0.7], [0.5, 0.7]), Calibration::PerClass);
        // Only the decomposed classes' images count, among those classes.
        let two = calibration_check(&cache, &[0, 1], &logits[..2]);
        assert_eq!(two.images, 40);
    }

    /// A class's sample: every epoch all its images and the others the teacher scores highest
    /// for it; the rest is the pool fresh ones are drawn from.
    #[test]
    fn a_class_sample_is_its_images_its_closest_others_and_a_pool() {
        let (n, classes) = (40, 4);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
        // The teacher's logit of class 1 grows with the row: rows 39, 38, 36 ... are the closest others.
        let logits: Vec<f32> =
            (0..n).flat_map(|r| (0..classes).map(move |c| if c == 1 { r as f32 } else { 0.0 })).collect();
        let cache = TrunkCache::from_parts(vec![0.0; n], (1, 1, 1), logits, labels.clone());
        let s = class_sample(&cache, 1, 6);
        let own: Vec<usize> = s.fixed.iter().copied().filter(|&r| labels[r] == 1).collect();
        assert_eq!(own, (0..n).filter(|r| r % 4 == 1).collect::<Vec<_>>(), "every image of the class");
        assert_eq!(&s.fixed[10..], &[39, 38, 36], "the three closest others");
        assert_eq!((s.pool.len(), s.fresh, s.epoch_len()), (27, 3, 16));
        let mut all: Vec<usize> = s.fixed.iter().chain(&s.pool).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "each image once, fixed or in the pool");
        let few = class_sample(&cache, 1, 100);
        assert_eq!((few.fixed.len(), few.epoch_len()), (n, n), "fewer others than asked: all of them, every epoch");
    }
}
