//! `classmod train`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::dataset::{self, ImageShape, Split};
use classmod_host::train::{self, SgdConfig, TrainOptions, TrainableResNet};
use classmod_host::{eval, progress, report};
use classmod_runtime::{ResNet, ResNetConfig, Shortcut};

use super::{check_output_dir, load_data, model_error, print_json, read_model, DeviceArg};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Training data (its `train` split), and the held-out `test` split evaluated at the end.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the trained model (also the checkpoint, rewritten atomically every epoch).
    #[arg(long)]
    pub out: PathBuf,
    /// Architecture `resnetN` with N = 6n+2 (resnet8, resnet14, resnet20, ...).
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// Stage widths.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub widths: Vec<usize>,
    #[arg(long, value_enum, default_value = "a")]
    pub shortcut: ShortcutArg,
    /// Fine-tune from this model instead of a fresh initialisation (its architecture wins).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Optimiser steps; default: `--epochs` worth.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 30.0)]
    pub epochs: f64,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long)]
    pub no_nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: super::ScheduleArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on a seeded class-balanced sample of N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on a sample of N test images (default: all).
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Names for a dataset whose labels are numbers (IDX, CIFAR binary), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub class_names: Option<Vec<String>>,
    /// No horizontal flips (digits, text).
    #[arg(long)]
    pub no_flip: bool,
    /// Normalisation mean (default: the training images' own).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShortcutArg {
    A,
    B,
}

fn arch_from(a: &Args, in_channels: usize, num_classes: usize) -> Result<ResNetConfig> {
    let depth = a
        .arch
        .strip_prefix("resnet")
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(|| anyhow!("--arch `{}`: expected resnetN (e.g. resnet20)", a.arch))?;
    let mut cfg = ResNetConfig::cifar(depth, in_channels, num_classes)?;
    cfg.widths = <[usize; 3]>::try_from(a.widths.as_slice()).map_err(|_| anyhow!("--widths needs three values"))?;
    cfg.shortcut = match a.shortcut {
        ShortcutArg::A => Shortcut::A,
        ShortcutArg::B => Shortcut::B,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Trains as the flags say and evaluates on the test split; returns the JSON summary.
pub fn train_and_eval(a: &Args) -> Result<serde_json::Value> {
    let device = a.device.device()?;
    check_output_dir(&a.out)?;
    let init = a.init.as_ref().map(|p| read_model(p, &device)).transpose()?;
    let shape = match &init {
        Some(m) => {
            ImageShape { channels: m.meta.input.channels, height: m.meta.input.height, width: m.meta.input.width }
        }
        None => dataset::native_shape(&a.data, Split::Train)?,
    };
    let classes = init.as_ref().map(|m| m.meta.class_names.clone());
    let t_load = std::time::Instant::now();
    let mut train_set = load_data(&a.data, Split::Train, shape, classes.as_deref(), a.limit, a.seed)?;
    if let Some(names) = &a.class_names {
        if names.len() != train_set.class_names.len() {
            return Err(anyhow!(
                "--class-names gives {} names, {} has {} classes",
                names.len(),
                a.data.display(),
                train_set.class_names.len()
            ));
        }
        train_set.class_names = names.clone();
    }
    eprintln!(
        "read {} training images of {} in {:.1} s",
        train_set.len(),
        a.data.display(),
        t_load.elapsed().as_secs_f64()
    );
    let mean_std = match (&a.mean, &a.std) {
        (Some(m), Some(s)) => Some((m.clone(), s.clone())),
        (None, None) => None,
        _ => return Err(anyhow!("give both --mean and --std, or neither")),
    };
    let steps = a.steps.unwrap_or(((a.epochs * train_set.len() as f64) / a.batch as f64).ceil().max(1.0) as usize);
    let opts = TrainOptions {
        arch: match &init {
            Some(m) => m.meta.arch.clone(),
            None => arch_from(a, shape.channels, train_set.class_names.len())?,
        },
        mean_std,
        steps,
        batch: a.batch,
        sgd: SgdConfig { lr: a.lr, momentum: a.momentum, nesterov: !a.no_nesterov, weight_decay: a.weight_decay },
        schedule: a.schedule.into(),
        seed: a.seed,
        flip: !a.no_flip,
        checkpoint: Some(a.out.clone()),
    };
    let mut net = match &init {
        Some(m) => TrainableResNet::from_model(m, &device)?,
        None => TrainableResNet::init(train::meta_for(&train_set, &opts), a.seed, &device)?,
    };
    eprintln!(
        "training {} on {} images: {} steps of batch {} ({:.1} epochs), lr {} {:?}",
        opts.arch.name(),
        train_set.len(),
        steps,
        a.batch,
        (steps * a.batch) as f64 / train_set.len() as f64,
        a.lr,
        a.schedule
    );
    let pb = progress::bar(steps as u64, "train");
    let (model, tr) = train::train(&mut net, &train_set, &opts, &device, &pb).map_err(|e| model_error(&a.out, e))?;
    eprintln!(
        "trained in {:.1} s ({:.0} images/s); loss {:.3} -> {:.3}; saved {}",
        tr.seconds,
        tr.images_per_second,
        tr.first_loss,
        tr.last_loss,
        a.out.display()
    );
    let eval_net = ResNet::new(&model, &device)?;
    let test = load_data(&a.data, Split::Test, shape, Some(&model.meta.class_names), a.eval_limit, a.seed)?;
    let pb = progress::bar(test.len() as u64, "eval");
    let r = eval::evaluate(&eval_net, &test, 32, &pb)?;
    println!("held-out test split of {}:", a.data.display());
    print!("{}", report::eval_table(&r));
    Ok(serde_json::json!({
        "model": a.out, "arch": opts.arch.name(), "train": tr, "eval": r,
        "top1": r.top1, "top5": r.top5, "n": r.n, "seconds": tr.seconds + r.seconds,
    }))
}

pub fn run(a: Args) -> Result<()> {
    let v = train_and_eval(&a)?;
    if a.json {
        print_json(&v);
    }
    Ok(())
}
