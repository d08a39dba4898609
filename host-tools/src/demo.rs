//! The device side of `classmod demo`, as a function the demo and its test call: the whole
//! product end to end on two trained models (decompose, pack signed blobs, run the device
//! program, press its trigger, deliver an update through its inbox). It orchestrates the
//! device program's own library, whose errors are `anyhow`'s, hence this module's.

use std::path::Path;

use anyhow::{anyhow, Result};
use classmod_blob::SigningKey;
use classmod_edge::pins::ValueFilePin;
use classmod_edge::{Edge, EdgeOptions, LogPin};
use classmod_runtime::host::ModelFile;
use classmod_runtime::Device;

use crate::dataset::{self, ImageShape, Split};
use crate::decompose::compact::{decompose_compact, CompactOptions};
use crate::pack::{golden_sample, pack, version_now, PackGroup};

/// Training images the demo's compact modules are trained on.
const DEMO_TRAIN_IMAGES: usize = 12_000;

/// Each image's classification by the device, one image at a time (median of 15), beside the
/// full model's forward on the same image, in the same minute.
fn print_latencies(edge: &Edge<LogPin>, model: &ModelFile, files: &[std::path::PathBuf]) -> Result<()> {
    let snap = edge.runtime.snapshot();
    let spec = snap.input_spec().ok_or_else(|| anyhow!("no classes served"))?.clone();
    let full = classmod_runtime::host::ResNet::new(model, &Device::Cpu)?;
    let median = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut t = Vec::new();
        for _ in 0..15 {
            let s = std::time::Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        t.sort_by(f64::total_cmp);
        Ok(t[t.len() / 2])
    };
    for f in files {
        let px = classmod_edge::pixels(f, &spec, classmod_edge::ImageLimits::of(edge.board))?;
        let r = snap.classify(&px, classmod_runtime::Rule::Max, edge.runtime.config().min_score)?;
        let served = median(&mut || {
            snap.classify(&px, classmod_runtime::Rule::Max, classmod_runtime::MinScore::Off)
                .map(drop)
                .map_err(Into::into)
        })?;
        let mut x = vec![0f32; px.len()];
        spec.normalize_into(&px, &mut x);
        let t = classmod_runtime::host::Tensor::from_vec(x, (1, spec.channels, spec.height, spec.width), &Device::Cpu)?;
        let whole = median(&mut || full.forward(&t).map(drop).map_err(Into::into))?;
        let answer = match r.predictions[0] {
            Some(p) => format!("{} ({:.3})", r.classes[p], r.scores[0][p]),
            None => "none".into(),
        };
        println!(
            "  {:<24} {:<22} {:.3} ms on {} compact modules, the full model {:.3} ms ({:.2}x)",
            f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            answer,
            served,
            r.classes.len(),
            whole,
            served / whole
        );
    }
    Ok(())
}

/// The device side of the demo: decompose the model into compact modules (its trunk shared, a
/// small branch per class), pack three classes (signed) for a device, start the device program,
/// classify test images (each one's latency printed beside the full model's; the fourth class's
/// garments, not served, may be answered `none`), then drop into its inbox the other model's base
/// and its module for class 0 (a swap) and this model's module for class 3 (a fourth class), and
/// classify again. Returns the device log.
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
    let shape = ImageShape::from(spec);
    let names = &model.meta.class_names;
    let train = dataset::load(data, Split::Train, shape, Some(names))?;
    let test = dataset::load(data, Split::Test, shape, Some(names))?;
    // Compact modules from a class-balanced fifth of the training images, two epochs: a demo's
    // minute, not the product's defaults (`classmod decompose --kind compact`).
    let sample = train.balanced_sample(DEMO_TRAIN_IMAGES, seed);
    // One block after each branch's entry: the ResNet-8 has one a stage.
    let opts = |classes: Vec<usize>| CompactOptions {
        blocks: 1,
        epochs: 2,
        held_out: 1000,
        ..CompactOptions::new(Some(classes), seed)
    };
    let hidden = indicatif::ProgressBar::hidden();
    let t0 = std::time::Instant::now();
    let mine = decompose_compact(&model, &sample, &opts(vec![0, 1, 2, 3]), &hidden)?;
    let theirs = decompose_compact(&other, &sample, &opts(vec![0]), &hidden)?;
    println!(
        "compact modules of 4 + 1 classes in {:.0} s: each adds {:.1} % of the model's parameters and {:.1} % of its MACs to a shared trunk of {:.0} %",
        t0.elapsed().as_secs_f64(),
        100.0 * mine.params_fraction(),
        100.0 * mine.macs_fraction(),
        100.0 * mine.trunk_macs_fraction()
    );
    let golden =
        |_: usize, m: &classmod_runtime::host::ClassModule| golden_sample(&test, 4, seed ^ m.class_id.0 as u64);
    let device = out.join("device");
    let staging = out.join("staging");
    let _ = std::fs::remove_dir_all(&device);
    let _ = std::fs::remove_dir_all(&staging);
    let group =
        |m: &ModelFile, modules: &[classmod_runtime::host::ClassModule]| PackGroup::new(m.clone(), modules.to_vec());
    pack(&[group(&model, &mine.modules[..3])?], &device, Some(key), version_now(), golden)?;
    pack(
        &[group(&model, &mine.modules[3..])?, group(&other, &theirs.modules)?],
        &staging,
        Some(key),
        version_now(),
        golden,
    )?;
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
        classes_only: false,
        device: classmod_edge::DeviceChoice::Cpu,
        precision: None,
        min_score: classmod_runtime::MinScore::Calibrated,
        allow_downgrade: false,
    };
    let mut edge = Edge::start(opts, LogPin::default())?;
    let verdicts = edge.classify_files(&files)?;
    print_latencies(&edge, &model, &files)?;
    let unserved: Vec<_> =
        verdicts.iter().filter(|v| v.file.to_string_lossy().contains(&names[3].replace('/', "_"))).collect();
    println!(
        "device program: {} of the {} {} images (a class not served) answered none",
        unserved.iter().filter(|v| v.class.is_none()).count(),
        unserved.len(),
        names[3]
    );
    // A button on the trigger input (here a value file, as sysfs GPIO has) classifies the frame a
    // camera keeps current: the press is written to the file, the debounced edge fires once.
    let value = out.join("trigger-value");
    std::fs::write(&value, "0\n")?;
    let trigger =
        classmod_edge::Trigger::new(ValueFilePin { path: value.clone() }, 2).map_err(|e| anyhow!("trigger: {e}"))?;
    let mut trigger = classmod_edge::TriggerSampler::new(trigger, &files[0], 64 << 20);
    std::fs::write(&value, "1\n")?;
    let fired = (0..3).filter_map(|_| edge.poll_trigger(&mut trigger).transpose()).count();
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
    edge.process_inbox(&inbox)?;
    let c = edge.inbox_counts();
    println!(
        "device program: inbox: {} added, {} updated, {} already present, {} refused; classifying again",
        c.added, c.updated, c.already_present, c.refused
    );
    edge.classify_files(&files)?;
    let snap = edge.runtime.snapshot();
    println!(
        "device program: serving {} ({} KiB resident, {} base models)",
        snap.class_names().join(", "),
        snap.resident_bytes() >> 10,
        {
            let mut keys: Vec<classmod_runtime::ModelKey> = snap.modules().iter().map(|m| m.base().key()).collect();
            keys.sort();
            keys.dedup();
            keys.len()
        }
    );
    Ok(edge.log)
}
