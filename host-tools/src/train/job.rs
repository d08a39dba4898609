//! A whole training run as `classmod train` and the demo do it: read the training split, train
//! from scratch or from a model, save (with checkpoints), and evaluate on the held-out test
//! split. The CLI turns flags into a [`TrainJob`] and prints the [`TrainOutcome`].

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use classmod_runtime::host::{ModelFile, ResNet, ResNetConfig, Shortcut};
use indicatif::ProgressBar;

use crate::dataset::{self, ImageShape, Split};
use crate::eval::{self, EvalReport};
use crate::train::{self, Schedule, SgdConfig, TrainOptions, TrainReport, Trainer};
use crate::HostError;

/// The network a fresh run builds (a run from `init` takes that model's).
#[derive(Debug, Clone)]
pub struct ArchSpec {
    /// ResNet-(6n+2) depth.
    pub depth: usize,
    /// Stage widths.
    pub widths: [usize; 3],
    /// Shortcut option.
    pub shortcut: Shortcut,
}

/// What to train, on what, and how.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The dataset: its `train` split trains, its `test` split evaluates.
    pub data: PathBuf,
    /// Where the model (and every checkpoint) is written.
    pub out: PathBuf,
    /// Fine-tune this model instead of a fresh initialisation (its architecture wins).
    pub init: Option<ModelFile>,
    /// The network of a fresh run.
    pub arch: ArchSpec,
    /// Optimiser steps; `None`: `epochs` worth.
    pub steps: Option<usize>,
    /// Epochs when `steps` is `None`.
    pub epochs: f64,
    /// Batch size.
    pub batch: usize,
    /// The optimiser.
    pub sgd: SgdConfig,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of initialisation, sampling and augmentation.
    pub seed: u64,
    /// Train on a seeded class-balanced sample of this many images.
    pub limit: Option<usize>,
    /// Evaluate on a sample of this many test images.
    pub eval_limit: Option<usize>,
    /// Names for a dataset whose labels are numbers (IDX, CIFAR binary).
    pub class_names: Option<Vec<String>>,
    /// Normalisation; `None`: the training images' own.
    pub mean_std: Option<(Vec<f32>, Vec<f32>)>,
    /// Horizontal flips.
    pub flip: bool,
    /// Where to compute.
    pub device: Device,
}

/// What a run made and measured.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The trained model (also written to the job's `out`).
    pub model: ModelFile,
    /// How training went.
    pub train: TrainReport,
    /// The model on the held-out test split.
    pub eval: EvalReport,
    /// Training images used.
    pub train_images: usize,
}

/// Runs `job`; `bar(len, what)` makes the progress bars (training steps, test images) and
/// `say` gets the status lines.
pub fn train_and_eval(
    job: &TrainJob,
    bar: impl Fn(u64, &str) -> ProgressBar,
    say: impl Fn(&str),
) -> Result<TrainOutcome, HostError> {
    let shape = match &job.init {
        Some(m) => {
            ImageShape { channels: m.meta.input.channels, height: m.meta.input.height, width: m.meta.input.width }
        }
        None => dataset::native_shape(&job.data, Split::Train)?,
    };
    let classes = job.init.as_ref().map(|m| m.meta.class_names.clone());
    let t_load = Instant::now();
    let mut train_set = dataset::load_sample(&job.data, Split::Train, shape, classes.as_deref(), job.limit, job.seed)?;
    if let Some(names) = &job.class_names {
        if names.len() != train_set.class_names.len() {
            return Err(HostError::ClassNamesCount {
                given: names.len(),
                dataset: job.data.clone(),
                found: train_set.class_names.len(),
            });
        }
        train_set.class_names = names.clone();
    }
    say(&format!(
        "read {} training images of {} in {:.1} s",
        train_set.len(),
        job.data.display(),
        t_load.elapsed().as_secs_f64()
    ));
    let steps =
        job.steps.unwrap_or(((job.epochs * train_set.len() as f64) / job.batch as f64).ceil().max(1.0) as usize);
    let arch = match &job.init {
        Some(m) => m.meta.arch.clone(),
        None => {
            let mut cfg = ResNetConfig::cifar(job.arch.depth, shape.channels, train_set.class_names.len())?;
            cfg.widths = job.arch.widths;
            cfg.shortcut = job.arch.shortcut;
            cfg.validate()?;
            cfg
        }
    };
    let opts = TrainOptions {
        arch,
        mean_std: job.mean_std.clone(),
        steps,
        batch: job.batch,
        sgd: job.sgd,
        schedule: job.schedule,
        seed: job.seed,
        flip: job.flip,
        checkpoint: Some(job.out.clone()),
    };
    let mut net = match &job.init {
        Some(m) => Trainer::from_model(m, &job.device)?,
        None => Trainer::init(train::meta_for(&train_set, &opts), job.seed, &job.device)?,
    };
    say(&format!(
        "training {} on {} images: {} steps of batch {} ({:.1} epochs), lr {} {:?}",
        opts.arch.name(),
        train_set.len(),
        steps,
        job.batch,
        (steps * job.batch) as f64 / train_set.len() as f64,
        job.sgd.lr,
        job.schedule
    ));
    let pb = bar(steps as u64, "train");
    let (model, report) = train::train(&mut net, &train_set, &opts, &pb)?;
    say(&format!(
        "trained in {:.1} s ({:.0} images/s); loss {:.3} -> {:.3}; saved {}",
        report.seconds,
        report.images_per_second,
        report.first_loss,
        report.last_loss,
        job.out.display()
    ));
    let eval_net = ResNet::new(&model, &job.device)?;
    let test =
        dataset::load_sample(&job.data, Split::Test, shape, Some(&model.meta.class_names), job.eval_limit, job.seed)?;
    let pb = bar(test.len() as u64, "eval");
    let eval = eval::evaluate(&eval_net, &test, 32, &pb)?;
    Ok(TrainOutcome { model, train: report, eval, train_images: train_set.len() })
}
