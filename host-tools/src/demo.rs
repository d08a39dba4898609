//! The device side of `classmod demo`, as a function the demo and its test call: the whole
//! product end to end on two trained models (decompose, pack signed blobs, run the device
//! program, press its trigger, deliver an update through its inbox). It orchestrates the
//! device program's own library, whose errors are `anyhow`'s, hence this module's.

use std::path::Path;

use anyhow::{anyhow, Result};
use classmod_blob::SigningKey;
use classmod_edge::pins::ValueFilePin;
use classmod_edge::{Edge, EdgeOptions, LogPin};
use classmod_runtime::{Device, ModelFile};

use crate::dataset::{self, ImageShape, Split};
use crate::decompose::{decompose, DecomposeOptions, HeadKind};
use crate::pack::{golden_sample, pack, PackGroup};

/// The device side of the demo: decompose the model, pack three classes (signed) for a device,
/// start the device program, classify test images, then drop into its inbox the other model's
/// base and its module for class 0 (a swap) and this model's module for class 3 (a fourth
/// class), and classify again. Returns the device log.
pub fn device_demo(
    out: &Path,
    model_path: &Path,
    other_path: &Path,
    data: &Path,
    seed: u64,
    key: &SigningKey,
) -> Result<Vec<String>> {
    eprintln!("classmod demo: decompose both models, pack three classes for a device, run the device program");
    let read = |p: &Path| ModelFile::read(p, &Device::Cpu).map_err(|e| anyhow!("{}: {e}", p.display()));
    let (model, other) = (read(model_path)?, read(other_path)?);
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
    pack(&[group(&model, &mine.modules[..3])?], &device, Some(key), golden)?;
    pack(&[group(&model, &mine.modules[3..])?, group(&other, &theirs.modules)?], &staging, Some(key), golden)?;
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
        min_score: classmod_runtime::MinScore::Calibrated,
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
