//! A whole training run as `classmod train` and the demo do it: read the training split, train
//! from scratch or from a model (a fresh head when the model knows other classes; optionally
//! only the stages after a frozen, cached trunk), save (with checkpoints a run resumes from), and
//! evaluate on the held-out test split. The CLI turns flags into a [`TrainJob`] and prints the [`TrainOutcome`].

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use classmod_runtime::host::{Architecture, ModelFile, Network, ResNet, ResNetConfig, Shortcut};
use indicatif::ProgressBar;

use crate::dataset::{self, ImageSet, ImageShape, Split};
use crate::eval::{self, EvalReport};
use crate::train::{self, RunState, Schedule, SgdConfig, TrainData, TrainOptions, TrainReport, Trainer, TrunkCache};
use crate::HostError;

/// The network a fresh run builds (a run from `init` takes that model's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchSpec {
    /// A CIFAR ResNet-(6n+2): the 3x3 stem, three stages of basic blocks of `widths` channels.
    Cifar {
        /// 6n+2.
        depth: usize,
        /// Stage widths.
        widths: [usize; 3],
        /// Shortcut option.
        shortcut: Shortcut,
    },
    /// torchvision's `resnet{depth}` in its layout: the 7x7 stride-2 stem and its max-pool, four
    /// stages, projection shortcuts; basic blocks for 18 and 34, bottlenecks (the stride on the
    /// 3x3) for 50, 101 and 152.
    Torchvision {
        /// 18, 34, 50, 101 or 152.
        depth: usize,
        /// A bottleneck's inner width per 64 output channels of a stage's base: 64, or 128 for
        /// `wide_resnet50_2` / `wide_resnet101_2`.
        width_per_group: usize,
    },
}

impl ArchSpec {
    /// The network for `classes` classes of `channels`-channel images.
    pub fn network(&self, channels: usize, classes: usize) -> Result<Architecture, HostError> {
        Ok(match *self {
            ArchSpec::Torchvision { depth, width_per_group } => {
                let net = Network::torchvision(depth, width_per_group, classes)?;
                Architecture::from(Network { in_channels: channels, ..net })
            }
            ArchSpec::Cifar { depth, widths, shortcut } => {
                let mut cfg = ResNetConfig::cifar(depth, channels, classes)?;
                cfg.widths = widths;
                cfg.shortcut = shortcut;
                cfg.validate()?;
                cfg.into()
            }
        })
    }
}

/// What to train, on what, and how.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The dataset: its `train` split trains, its `test` split evaluates.
    pub data: PathBuf,
    /// Where the model (and every checkpoint) is written.
    pub out: PathBuf,
    /// Fine-tune this model instead of a fresh initialisation (its architecture wins; a fresh
    /// head replaces its own when it does not know the dataset's classes).
    pub init: Option<ModelFile>,
    /// Freeze the stem and this many stages of `init` (0: train everything): their
    /// activations are computed once and the rest trains on them.
    pub freeze_stages: usize,
    /// Images resized to this square size; `None`: `init`'s input size, or the dataset's own
    /// when training from scratch.
    pub input_size: Option<usize>,
    /// Go on from the checkpoint of an interrupted run with the same settings (its resume
    /// file beside `out`).
    pub resume: bool,
    /// Stop at the first epoch end after this many minutes (the checkpoint written: `resume`
    /// goes on later).
    pub time_limit_minutes: Option<f64>,
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
    /// Train on these of the dataset's classes only (and evaluate on them): a model of a few
    /// classes, e.g. the one the paper holds reused modules against.
    pub classes: Option<Vec<String>>,
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
    /// The whole run (reading, caching, training, evaluating) in seconds, this process's.
    pub seconds: f64,
}

/// How a start model's head meets the dataset's classes.
enum Head {
    /// The model knows every class of the dataset: labels follow its order, its head trains on.
    Kept,
    /// The dataset has other classes: a fresh head of theirs.
    Fresh,
}

/// Whether `model` can classify `set`'s classes with its own head; when it can, `set`'s labels are
/// put in the model's class order (and its names become the model's). A set `restricted` to a
/// few classes (`--classes`) asks for a model of those: a model of more keeps no head.
fn fit_classes(model: &ModelFile, set: &mut ImageSet, restricted: bool) -> Head {
    let names = &model.meta.class_names;
    if restricted && names.len() != set.class_names.len() {
        return Head::Fresh;
    }
    if crate::import::are_generic(names) {
        // Only the count means something.
        return match names.len() == set.class_names.len() {
            true => Head::Kept,
            false => Head::Fresh,
        };
    }
    let position: Option<Vec<u32>> =
        set.class_names.iter().map(|c| names.iter().position(|n| n == c).map(|i| i as u32)).collect();
    match position {
        Some(to_model) => {
            set.labels.iter_mut().for_each(|l| *l = to_model[*l as usize]);
            set.class_names = names.clone();
            Head::Kept
        }
        None => Head::Fresh,
    }
}

/// The model a run on `set` starts from: `model` reading `shape` with the normalisation given
/// (else its own), its head kept when it knows `set`'s classes, else a fresh one (seeded).
fn start_model(
    model: &ModelFile,
    set: &mut ImageSet,
    shape: ImageShape,
    mean_std: Option<&(Vec<f32>, Vec<f32>)>,
    (seed, restricted): (u64, bool),
    say: &impl Fn(&str),
) -> Result<ModelFile, HostError> {
    let mut meta = model.meta.clone();
    meta.input.height = shape.height;
    meta.input.width = shape.width;
    if let Some((mean, std)) = mean_std {
        (meta.input.mean, meta.input.std) = (mean.clone(), std.clone());
    }
    Ok(match fit_classes(model, set, restricted) {
        Head::Kept if meta == model.meta => model.clone(),
        Head::Kept => ModelFile::new(meta, model.tensors.clone())?,
        Head::Fresh => {
            say(&format!(
                "fine-tuning {} of {} classes on {} other classes: a fresh head of {} outputs (seeded) replaces `linear`",
                model.meta.arch.name(),
                model.meta.class_names.len(),
                set.class_names.len(),
                set.class_names.len()
            ));
            meta.arch = meta.arch.with_classes(set.class_names.len());
            meta.class_names = set.class_names.clone();
            classmod_train::init::with_fresh_head(model, meta, seed)?
        }
    })
}

/// What a resumed run must share with the run that wrote its checkpoint.
fn settings(job: &TrainJob, shape: ImageShape, opts: &TrainOptions, classes: usize, engine: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "data": job.data.display().to_string(),
        "limit": job.limit,
        "input": [shape.channels, shape.height, shape.width],
        "classes": classes,
        "arch": opts.arch.name(),
        "freeze_stages": job.freeze_stages,
        "steps": opts.steps,
        "batch": opts.batch,
        "lr": opts.sgd.lr,
        "momentum": opts.sgd.momentum,
        "nesterov": opts.sgd.nesterov,
        "weight_decay": opts.sgd.weight_decay,
        "schedule": format!("{:?}", opts.schedule),
        "seed": opts.seed,
        "flip": opts.flip,
        "mean_std": opts.mean_std,
        "engine": engine,
    });
    // Only when given, so that checkpoints written before `--classes` existed still resume.
    if let Some(c) = &job.classes {
        v["only_classes"] = serde_json::json!(c);
    }
    v
}

/// Runs `job`; `bar(len, what)` makes the progress bars (training steps, test images) and
/// `say` gets the status lines.
pub fn train_and_eval(
    job: &TrainJob,
    bar: impl Fn(u64, &str) -> ProgressBar,
    say: impl Fn(&str),
) -> Result<TrainOutcome, HostError> {
    let t_start = Instant::now();
    let resume = match job.resume {
        true => {
            let path = RunState::path_for(&job.out);
            let state = RunState::read(&path)?;
            say(&format!(
                "resuming {} after step {} of {}",
                path.display(),
                state.steps_done,
                state.model.meta.arch.name()
            ));
            Some(state)
        }
        false => None,
    };
    // A resumed run starts from its checkpoint (which may have a fresh head already).
    let from = resume.as_ref().map(|r| &r.model).or(job.init.as_ref());
    if job.freeze_stages > 0 && from.is_none() {
        return Err(HostError::Options { what: "--freeze-stages needs --init: a trained trunk to freeze".into() });
    }
    let native = dataset::native_shape(&job.data, Split::Train)?;
    let (height, width) = match (job.input_size, from) {
        (Some(s), _) => (s, s),
        (None, Some(m)) => (m.meta.input.height, m.meta.input.width),
        (None, None) => (native.height, native.width),
    };
    let shape = ImageShape::new(from.map_or(native.channels, |m| m.meta.input.channels), height, width);
    let t_load = Instant::now();
    let mut train_set = dataset::load(&job.data, Split::Train, shape, None)?;
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
    if let Some(classes) = &job.classes {
        train_set = train_set.only_classes(&job.data, classes)?;
    }
    if let Some(n) = job.limit {
        train_set = train_set.balanced_sample(n, job.seed);
    }
    say(&format!(
        "read {} training images of {} ({} classes, {}x{}) in {:.1} s",
        train_set.len(),
        job.data.display(),
        train_set.class_names.len(),
        shape.height,
        shape.width,
        t_load.elapsed().as_secs_f64()
    ));
    let start = from
        .map(|m| start_model(m, &mut train_set, shape, job.mean_std.as_ref(), (job.seed, job.classes.is_some()), &say))
        .transpose()?;
    let steps =
        job.steps.unwrap_or(((job.epochs * train_set.len() as f64) / job.batch as f64).ceil().max(1.0) as usize);
    let arch = match &start {
        Some(m) => m.meta.arch.clone(),
        None => job.arch.network(shape.channels, train_set.class_names.len())?,
    };
    let mut opts = TrainOptions {
        arch,
        mean_std: job.mean_std.clone(),
        steps,
        batch: job.batch,
        sgd: job.sgd,
        schedule: job.schedule,
        seed: job.seed,
        flip: job.flip,
        checkpoint: Some(job.out.clone()),
        time_limit: job.time_limit_minutes.map(|m| m * 60.0),
        settings: serde_json::Value::Null,
    };
    let mut net = match &start {
        Some(m) => Trainer::from_model_frozen(m, job.freeze_stages, &job.device)?,
        None => Trainer::init(train::meta_for(&train_set, &opts), job.seed, &job.device)?,
    };
    opts.settings = settings(job, shape, &opts, train_set.class_names.len(), net.engine());
    let train_images = train_set.len();
    let cache = match (&start, job.freeze_stages) {
        (Some(m), t) if t > 0 => {
            let t_cache = Instant::now();
            let pb = bar(train_set.len() as u64, "trunk");
            let indices: Vec<usize> = (0..train_set.len()).collect();
            let cache = TrunkCache::features(&ResNet::new(m, &job.device)?, &train_set, &indices, t, &pb)?;
            pb.finish_and_clear();
            let (c, h, w) = cache.shape();
            say(&format!(
                "cached the frozen stem and {t} stage(s) of {} images ({c}x{h}x{w} each, {:.2} GB) in {:.1} s",
                cache.len(),
                cache.bytes() as f64 / 1e9,
                t_cache.elapsed().as_secs_f64()
            ));
            Some(cache)
        }
        _ => None,
    };
    let data = match &cache {
        Some(cache) => {
            drop(std::mem::take(&mut train_set.pixels)); // the cache stands for them
            TrainData::Cached(cache)
        }
        None => TrainData::Images(&train_set),
    };
    say(&format!(
        "training {}{} on {} images: {} steps of batch {} ({:.1} epochs), lr {} {:?}",
        opts.arch.name(),
        match job.freeze_stages {
            0 => String::new(),
            t => format!(" after its frozen stem and {t} stage(s)"),
        },
        train_images,
        steps,
        job.batch,
        (steps * job.batch) as f64 / train_images as f64,
        job.sgd.lr,
        job.schedule
    ));
    let pb = bar(steps as u64, "train");
    let (model, report) = train::train(&mut net, data, &opts, resume, &pb)?;
    drop(cache);
    if report.steps_done < report.steps {
        say(&format!(
            "stopped at the time limit after step {} of {} (an epoch's end); --resume goes on from {}",
            report.steps_done,
            report.steps,
            RunState::path_for(&job.out).display()
        ));
    }
    say(&format!(
        "trained in {:.1} s ({:.0} images/s); loss {:.3} -> {:.3}; saved {}",
        report.seconds,
        report.images_per_second,
        report.first_loss,
        report.last_loss,
        job.out.display()
    ));
    let eval_net = ResNet::new(&model, &job.device)?;
    let test = match &job.classes {
        // The dataset's other classes are not the model's: read all, keep the model's.
        Some(_) => {
            let all =
                dataset::load(&job.data, Split::Test, shape, None)?.only_classes(&job.data, &model.meta.class_names)?;
            match job.eval_limit {
                Some(n) => all.balanced_sample(n, job.seed),
                None => all,
            }
        }
        None => dataset::load_sample(
            &job.data,
            Split::Test,
            shape,
            Some(&model.meta.class_names),
            job.eval_limit,
            job.seed,
        )?,
    };
    let pb = bar(test.len() as u64, "eval");
    let eval = eval::evaluate(&eval_net, &test, 32, &pb)?;
    Ok(TrainOutcome { model, train: report, eval, train_images, seconds: t_start.elapsed().as_secs_f64() })
}
