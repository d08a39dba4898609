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
    /// Architecture: `resnet18`, `resnet34` (basic blocks), `resnet50`, `resnet101`, `resnet152`,
    /// `wide_resnet50_2`, `wide_resnet101_2` (bottlenecks) in torchvision's layout (the 7x7
    /// stride-2 stem and its max-pool, four stages; `--widths` and `--shortcut` do not apply), or
    /// `resnetN` with N = 6n+2 (resnet8, resnet20, resnet56, resnet110, ...: CIFAR ResNets of
    /// `--widths`); `cifar_resnetN` names a CIFAR ResNet of any such depth, 50 and 152 included.
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
    #[arg(long, value_parser = super::non_negative)]
    pub time_limit: Option<f64>,
    /// Optimiser steps; default: `--epochs` worth.
    #[arg(long, value_parser = super::at_least_one())]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 30.0, value_parser = super::positive)]
    pub epochs: f64,
    #[arg(long, default_value_t = 128, value_parser = super::batch_size())]
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
    #[arg(long, value_parser = super::at_least_one())]
    pub limit: Option<usize>,
    /// Evaluate on a sample of N test images (default: all).
    #[arg(long, value_parser = super::at_least_one())]
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
        let arch = parse_arch(&self.arch, &self.widths, self.shortcut)?;
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
            arch,
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

/// torchvision's ResNet depths: `resnet{N}` names its layout for these.
const TORCHVISION_DEPTHS: [usize; 5] = [18, 34, 50, 101, 152];

/// The network `--arch` names (see [`Args::arch`]).
fn parse_arch(name: &str, widths: &[usize], shortcut: ShortcutArg) -> Result<ArchSpec> {
    let depth = |digits: &str| digits.parse::<usize>().ok();
    let cifar = |depth: usize| -> Result<ArchSpec> {
        let widths = <[usize; 3]>::try_from(widths).map_err(|_| anyhow!("--widths needs three values"))?;
        let shortcut = match shortcut {
            ShortcutArg::A => Shortcut::A,
            ShortcutArg::B => Shortcut::B,
        };
        Ok(ArchSpec::Cifar { depth, widths, shortcut })
    };
    let wide = name.strip_prefix("wide_resnet").and_then(|r| r.strip_suffix("_2")).and_then(depth);
    match (wide, name.strip_prefix("cifar_resnet").and_then(depth), name.strip_prefix("resnet").and_then(depth)) {
        (Some(d @ (50 | 101)), _, _) => Ok(ArchSpec::Torchvision { depth: d, width_per_group: 128 }),
        (_, Some(d), _) => cifar(d),
        (_, _, Some(d)) if TORCHVISION_DEPTHS.contains(&d) => {
            Ok(ArchSpec::Torchvision { depth: d, width_per_group: 64 })
        }
        (_, _, Some(d)) => cifar(d),
        _ => Err(anyhow!(
            "--arch `{name}`: expected resnet18/34/50/101/152 or wide_resnet50_2/101_2 (torchvision's layout), \
             or resnetN / cifar_resnetN with N = 6n+2 (a CIFAR ResNet)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's names mean its layout (as `classmod import --arch` reads them), other
    /// `resnetN` the CIFAR ResNets, and `cifar_resnetN` reaches the CIFAR depths torchvision
    /// shares (50, 152).
    #[test]
    fn arch_names_pick_the_layout() {
        let arch = |name: &str| parse_arch(name, &[16, 32, 64], ShortcutArg::A);
        let tv = |depth, width_per_group| ArchSpec::Torchvision { depth, width_per_group };
        let cifar = |depth| ArchSpec::Cifar { depth, widths: [16, 32, 64], shortcut: Shortcut::A };
        for (name, want) in [
            ("resnet18", tv(18, 64)),
            ("resnet34", tv(34, 64)),
            ("resnet50", tv(50, 64)),
            ("resnet101", tv(101, 64)),
            ("resnet152", tv(152, 64)),
            ("wide_resnet50_2", tv(50, 128)),
            ("wide_resnet101_2", tv(101, 128)),
            ("resnet20", cifar(20)),
            ("resnet110", cifar(110)),
            ("cifar_resnet50", cifar(50)),
            ("cifar_resnet20", cifar(20)),
        ] {
            assert_eq!(arch(name).unwrap(), want, "{name}");
        }
        for bad in ["resnet", "vgg16", "wide_resnet18_2", "wide_resnet50", "resnet50x", "cifar_resnet"] {
            let e = arch(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_arch("resnet20", &[16, 32], ShortcutArg::A).is_err(), "two widths");
    }
}
