//! `classmod demo`: the main job on a fresh machine. Gets Fashion-MNIST (Debian's
//! `dataset-fashion-mnist`) if absent, trains a small ResNet on the CPU for a few minutes,
//! evaluates it on the 10,000 held-out test images and prints the per-class table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Result};

use super::train::{train_and_eval, Args as TrainArgs, ShortcutArg};
use super::DeviceArg;
use super::{print_json, read_model_bytes};

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
    let log = device_demo(&a.out, &model, &other, &a.data, a.seed)?;
    if a.json {
        v["device_log"] = log.into();
        print_json(&v);
    }
    Ok(())
}

/// The device side of the demo: decompose the model, pack three classes (signed) for a device,
/// start the device program, classify test images, then drop into its inbox the other model's
/// base and its module for class 0 (a swap) and this model's module for class 3 (a fourth
/// class), and classify again. Returns the device log.
fn device_demo(out: &Path, model_path: &Path, other_path: &Path, data: &Path, seed: u64) -> Result<Vec<String>> {
    use classmod_edge::pins::ValueFilePin;
    use classmod_edge::{Edge, EdgeOptions, LogPin};
    use classmod_host::dataset::{self, ImageShape, Split};
    use classmod_host::decompose::{decompose, DecomposeOptions, HeadKind};
    use classmod_host::pack::{golden_sample, pack, PackGroup};
    use classmod_runtime::ModelFile;

    eprintln!("classmod demo: decompose both models, pack three classes for a device, run the device program");
    let key = super::keygen::fresh_key();
    let (_, model) = read_model_bytes(model_path)?;
    let (_, other) = read_model_bytes(other_path)?;
    let spec = &model.meta.input;
    let shape = ImageShape { channels: spec.channels, height: spec.height, width: spec.width };
    let names = &model.meta.class_names;
    let train = dataset::load(data, Split::Train, shape, Some(names))?;
    let test = dataset::load(data, Split::Test, shape, Some(names))?;
    let opts =
        |classes: Vec<usize>| DecomposeOptions::with_default_rates(100, HeadKind::Calibrated, Some(classes), seed);
    let hidden = indicatif::ProgressBar::hidden();
    let mine = decompose(&model, &train, &opts(vec![0, 1, 2, 3]), &hidden)?;
    let theirs = decompose(&other, &train, &opts(vec![0]), &hidden)?;
    let golden = |_: usize, m: &classmod_runtime::ClassModule| golden_sample(&test, 4, seed ^ m.class_id.0 as u64);
    let device = out.join("device");
    let staging = out.join("staging");
    let _ = std::fs::remove_dir_all(&device);
    let _ = std::fs::remove_dir_all(&staging);
    let group = |m: &ModelFile, modules: &[classmod_runtime::ClassModule]| PackGroup::new(m.clone(), modules.to_vec());
    pack(&[group(&model, &mine.modules[..3])?], &device, Some(&key), golden)?;
    pack(&[group(&model, &mine.modules[3..])?, group(&other, &theirs.modules)?], &staging, Some(&key), golden)?;
    // Test images as PNG files, two of each of the first four classes.
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir)?;
    let mut files = Vec::new();
    for class in 0..4u32 {
        for (k, i) in (0..test.len()).filter(|&i| test.labels[i] == class).take(2).enumerate() {
            let path = images_dir.join(format!("{}-{k}.png", names[class as usize].replace('/', "_")));
            image::GrayImage::from_raw(shape.width as u32, shape.height as u32, test.image(i).to_vec())
                .ok_or_else(|| anyhow!("a {}x{} gray image", shape.width, shape.height))?
                .save(&path)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            files.push(path);
        }
    }
    let served: Vec<String> = names[..3].to_vec();
    println!("\ndevice program: serving {} from {}", served.join(", "), device.display());
    let opts = EdgeOptions {
        dir: device.clone(),
        classes: served,
        board: None,
        key: Some(key.verifying_key()),
        serve_new: true,
        device: classmod_edge::DeviceChoice::Cpu,
    };
    let mut edge = Edge::start(opts, LogPin::default())?;
    edge.classify_files(&files)?;
    // A button on the trigger input (here a value file, as sysfs GPIO has) classifies the frame a
    // camera keeps current: the press is written to the file, the debounced edge fires once.
    let value = out.join("trigger-value");
    std::fs::write(&value, "0\n")?;
    let mut trigger =
        classmod_edge::Trigger::new(ValueFilePin { path: value.clone() }, 2).map_err(|e| anyhow!("trigger: {e}"))?;
    std::fs::write(&value, "1\n")?;
    let fired = (0..3).filter_map(|_| edge.poll_trigger(&mut trigger, &files[0]).transpose()).count();
    println!("device program: trigger pressed, {fired} classification");
    // The updates arrive: the other model's base and class-0 module, and this model's class 3.
    let inbox = out.join("inbox");
    std::fs::create_dir_all(&inbox)?;
    for e in std::fs::read_dir(&staging)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "blob") {
            std::fs::copy(&p, inbox.join(p.file_name().expect("a file")))?;
        }
    }
    let applied = edge.process_inbox(&inbox)?;
    println!("device program: {applied} update(s) applied; classifying again");
    edge.classify_files(&files)?;
    let snap = edge.runtime.snapshot();
    println!(
        "device program: serving {} ({} KiB resident, {} base models)",
        snap.class_names().join(", "),
        snap.resident_bytes() >> 10,
        {
            let mut keys: Vec<classmod_runtime::ModelKey> = snap.modules.iter().map(|m| m.base.key).collect();
            keys.sort();
            keys.dedup();
            keys.len()
        }
    );
    Ok(edge.log)
}
