//! `classmod demo`: the main job on a fresh machine. Gets Fashion-MNIST (Debian's
//! `dataset-fashion-mnist`) if absent, trains a small ResNet on the CPU for a few minutes,
//! evaluates it on the 10,000 held-out test images and prints the per-class table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Result};

use super::print_json;
use super::train::{train_and_eval, Args as TrainArgs, ShortcutArg};
use super::DeviceArg;

pub const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
const FASHION_CLASSES: &str = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot";

#[derive(clap::Args)]
pub struct Args {
    /// Where the demo writes its model.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Fashion-MNIST IDX directory.
    #[arg(long, default_value = FASHION_MNIST)]
    data: PathBuf,
    /// Training steps of batch 64 (the default takes a few minutes on two cores).
    #[arg(long, default_value_t = 600)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn ensure_fashion_mnist(dir: &Path) -> Result<()> {
    if dir.join("train-images-idx3-ubyte.gz").exists() {
        return Ok(());
    }
    let how = "run `sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or pass --data DIR with the four IDX files";
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if dir != Path::new(FASHION_MNIST) || !root {
        return Err(anyhow!("{}: Fashion-MNIST not found; {how}", dir.display()));
    }
    eprintln!("Fashion-MNIST is absent: installing Debian's dataset-fashion-mnist ...");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "dataset-fashion-mnist"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && dir.join("train-images-idx3-ubyte.gz").exists() {
        Ok(())
    } else {
        Err(anyhow!("{}: could not install Fashion-MNIST; {how}", dir.display()))
    }
}

pub fn run(a: Args) -> Result<()> {
    ensure_fashion_mnist(&a.data)?;
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow!("{}: {e}", a.out.display()))?;
    let model = a.out.join("fashion-resnet8.safetensors");
    eprintln!(
        "classmod demo: train a ResNet-8 on Fashion-MNIST ({} steps), then evaluate it on the test split",
        a.steps
    );
    let args = TrainArgs {
        data: a.data.clone(),
        out: model.clone(),
        arch: "resnet8".into(),
        widths: vec![16, 32, 64],
        shortcut: ShortcutArg::A,
        init: None,
        freeze_stages: 0,
        input_size: None,
        resume: false,
        time_limit: None,
        steps: Some(a.steps),
        epochs: 0.0,
        batch: 64,
        lr: 0.1,
        momentum: 0.9,
        no_nesterov: false,
        weight_decay: 5e-4,
        schedule: super::ScheduleArg::OneCycle,
        seed: a.seed,
        limit: None,
        eval_limit: None,
        class_names: Some(FASHION_CLASSES.split(',').map(String::from).collect()),
        classes: None,
        no_flip: false,
        mean: None,
        std: None,
        device: DeviceArg::Cpu,
        json: false,
    };
    let mut v = train_and_eval(&args)?;
    println!("model written to {}", model.display());
    // A second model (another seed, a quarter of the steps) whose module will replace one class.
    let other = a.out.join("fashion-resnet8-other.safetensors");
    let other_args = TrainArgs { out: other.clone(), steps: Some((a.steps / 4).max(30)), seed: a.seed + 1, ..args };
    eprintln!("classmod demo: a second model to take one module from ({} steps)", (a.steps / 4).max(30));
    train_and_eval(&other_args)?;
    let key = super::keygen::fresh_key();
    let log = classmod_host::demo::device_demo(&a.out, &model, &other, &a.data, a.seed, &key)?;
    if a.json {
        v["device_log"] = log.into();
        print_json(&v);
    }
    Ok(())
}
