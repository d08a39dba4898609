//! `classmod train`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::train::{self, ArchSpec, SgdConfig, TrainJob};
use classmod_host::{progress, report};
use classmod_runtime::host::Shortcut;

use super::{check_output_dir, model_error, print_json, read_model, DeviceArg};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Training data (its `train` split), and the held-out `test` split evaluated at the end.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the trained model (also the checkpoint, rewritten atomically every epoch).
    #[arg(long)]
    pub out: PathBuf,
    /// Architecture: `resnetN` with N = 6n+2 (resnet8, resnet14, resnet20, ...: CIFAR ResNets of
    /// `--widths`), or `resnet18` / `resnet34` (torchvision's layout: the 7x7 stride-2 stem and
    /// its max-pool, four stages of 64 to 512 channels; `--widths` and `--shortcut` do not apply).
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    /// Stage widths.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub widths: Vec<usize>,
    #[arg(long, value_enum, default_value = "a")]
    pub shortcut: ShortcutArg,
    /// Fine-tune from this model instead of a fresh initialisation (its architecture wins). A
    /// model of other classes gets a fresh head for the dataset's (a line says so).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Freeze the stem and the first T stages of the --init model (batch norm in eval mode):
    /// their features are computed once and the later stages train on them.
    #[arg(long, default_value_t = 0)]
    pub freeze_stages: usize,
    /// Resize images to SxS (default: the --init model's input size, else the dataset's own).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Go on from the last checkpoint of an interrupted run with the same flags (OUT.resume,
    /// written every epoch beside OUT).
    #[arg(long)]
    pub resume: bool,
    /// Stop at the first epoch end after this many minutes (checkpoint written; --resume goes
    /// on). The JSON says `"finished": false`.
    #[arg(long)]
    pub time_limit: Option<f64>,
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
    /// Train and evaluate on these of the dataset's classes only, comma-separated names as the
    /// dataset gives them (`cat,dog`; Tiny ImageNet: `goldfish (n01443537),bullfrog (n01641577)`):
    /// a model of a few classes (a fresh head unless --init has exactly these).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
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

impl Args {
    /// The library's job for these flags.
    pub fn job(&self) -> Result<TrainJob> {
        let device = self.device.device()?;
        check_output_dir(&self.out)?;
        let init = self.init.as_ref().map(|p| read_model(p, &device)).transpose()?;
        let depth = self.arch.strip_prefix("resnet").and_then(|d| d.parse::<usize>().ok()).ok_or_else(|| {
            anyhow!("--arch `{}`: expected resnetN (e.g. resnet20, or resnet18 in torchvision's layout)", self.arch)
        })?;
        let widths =
            <[usize; 3]>::try_from(self.widths.as_slice()).map_err(|_| anyhow!("--widths needs three values"))?;
        let shortcut = match self.shortcut {
            ShortcutArg::A => Shortcut::A,
            ShortcutArg::B => Shortcut::B,
        };
        if self.time_limit.is_some_and(|m| !(m >= 0.0 && m.is_finite())) {
            return Err(anyhow!("--time-limit: minutes, 0 or more"));
        }
        let mean_std = match (&self.mean, &self.std) {
            (Some(m), Some(s)) => Some((m.clone(), s.clone())),
            (None, None) => None,
            _ => return Err(anyhow!("give both --mean and --std, or neither")),
        };
        Ok(TrainJob {
            data: self.data.clone(),
            out: self.out.clone(),
            init,
            freeze_stages: self.freeze_stages,
            input_size: self.input_size,
            resume: self.resume,
            time_limit_minutes: self.time_limit,
            arch: ArchSpec { depth, widths, shortcut },
            steps: self.steps,
            epochs: self.epochs,
            batch: self.batch,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                nesterov: !self.no_nesterov,
                weight_decay: self.weight_decay,
            },
            schedule: self.schedule.into(),
            seed: self.seed,
            limit: self.limit,
            eval_limit: self.eval_limit,
            class_names: self.class_names.clone(),
            classes: self.classes.clone(),
            mean_std,
            flip: !self.no_flip,
            device,
        })
    }
}

/// Trains as the flags say and evaluates on the test split (printing the per-class table);
/// returns the JSON summary.
pub fn train_and_eval(a: &Args) -> Result<serde_json::Value> {
    let job = a.job()?;
    let outcome =
        train::train_and_eval(&job, progress::bar, |line| eprintln!("{line}")).map_err(|e| model_error(&a.out, e))?;
    let r = &outcome.eval;
    println!("held-out test split of {}:", a.data.display());
    print!("{}", report::eval_table(r));
    Ok(serde_json::json!({
        "model": a.out, "arch": outcome.model.meta.arch.name(), "train": outcome.train, "eval": r,
        "top1": r.top1, "top5": r.top5, "n": r.n, "seconds": outcome.seconds,
        "freeze_stages": a.freeze_stages, "finished": outcome.train.steps_done == outcome.train.steps, "input_size": outcome.model.meta.input.height,
    }))
}

pub fn run(a: Args) -> Result<()> {
    let v = train_and_eval(&a)?;
    if a.json {
        print_json(&v);
    }
    Ok(())
}
