//! The device program's inputs on real modules of the ../shared ResNet-20 (cat, dog, ship):
//! a trigger edge classifies the camera frame (debounced, bounces ignored), an unreadable frame
//! or watched image is set aside without stopping the device, and a GPU asked of a CPU build is a
//! clear error. Reference for the verdicts: the monolithic base model restricted to the served
//! classes, on the same PNG.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;

use classmod::boards::{Status, Trigger};
use classmod::edge::pins::ValueFilePin;
use classmod::edge::{DeviceChoice, Edge, EdgeOptions, LogPin, TriggerSampler};
use classmod::fixtures::packed_resnet20;
use classmod::runtime::host::{ResNet, Tensor};
use classmod::runtime::{Device, MinScore};
use embedded_hal::digital::{ErrorType, InputPin};

/// A trigger input that plays back a script of levels, one per poll (then stays low).
struct ScriptedPin(VecDeque<bool>);

impl ErrorType for ScriptedPin {
    type Error = Infallible;
}

impl InputPin for ScriptedPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.0.pop_front().unwrap_or(false))
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

const SERVED: [usize; 3] = [3, 5, 8];

fn options(dir: &Path, device: DeviceChoice) -> EdgeOptions {
    EdgeOptions {
        dir: dir.to_path_buf(),
        classes: SERVED.iter().map(|&c| common::CIFAR10_CLASSES[c].to_string()).collect(),
        board: Some("host-sim".into()),
        key: None,
        serve_new: false,
        classes_only: false,
        device,
        precision: None,
        // These tests hold the device to the base's choice among the served classes: the closed
        // world (`none` answers have their own test).
        min_score: MinScore::Off,
        allow_downgrade: false,
    }
}

/// The base model's choice among the served classes for a PNG.
fn base_choice(net: &ResNet, png: &Path) -> String {
    let spec = net.input_spec().clone();
    let px = classmod::edge::pixels(png, &spec, classmod::edge::ImageLimits { max_bytes: 64 << 20, max_side: 4096 })
        .unwrap();
    let mut x = vec![0f32; px.len()];
    spec.normalize_into(&px, &mut x);
    let logits = net.forward(&Tensor::from_vec(x, (1, 3, 32, 32), &Device::Cpu).unwrap()).unwrap();
    let logits = logits.to_vec2::<f32>().unwrap().remove(0);
    let best = SERVED.iter().copied().max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
    common::CIFAR10_CLASSES[best].to_string()
}

#[test]
fn trigger_edges_classify_the_frame_and_bad_images_never_stop_the_device() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("edge-device");
    let packed = packed_resnet20(&shared, &SERVED, 40, 2, &dir.join("packed")).unwrap();
    let net = ResNet::new(&packed.model, &Device::Cpu).unwrap();
    let mut edge = Edge::start(options(&dir.join("packed"), DeviceChoice::Cpu), LogPin::default()).unwrap();
    assert!(edge.log.iter().any(|l| l.contains("computing on the CPU")), "{:?}", edge.log);

    // The camera frame: real CIFAR-10 test PNGs (file names end in their label).
    let pngs = shared.join("data/cifar10-lossless-20");
    let frame = dir.join("frame.png");
    std::fs::copy(pngs.join("cifar10_01_8.png"), &frame).unwrap();
    let expected = base_choice(&net, &frame);
    assert_eq!(expected, "ship", "the base model knows this ship");

    // Initial level low; then a bounce (H, L), a press held (H, H, H), a release (L, L), a press
    // (H, H). Debounce 2: exactly two edges, at the 4th and the 9th poll.
    use std::iter::once;
    let script: VecDeque<bool> = once(false).chain([true, false, true, true, true, false, false, true, true]).collect();
    let mut trigger = TriggerSampler::new(Trigger::new(ScriptedPin(script), 2).unwrap(), &frame, 64 << 20);
    let mut fired = Vec::new();
    for poll in 0..12 {
        if let Some(v) = edge.poll_trigger(&mut trigger).unwrap() {
            assert_eq!(v.class.as_ref(), Some(&expected), "poll {poll}");
            fired.push(poll);
        }
    }
    assert_eq!(fired, [3, 8], "one classification per debounced press");
    assert_eq!(edge.log.iter().filter(|l| l.contains("trigger: classifying")).count(), 2);

    // The camera left a half-written frame: logged, the LED shows the error, the device goes on;
    // the next good frame restores serving.
    let press = || {
        TriggerSampler::new(
            Trigger::new(ScriptedPin([false, true, true].into_iter().collect()), 2).unwrap(),
            &frame,
            64 << 20,
        )
    };
    let good = std::fs::read(&frame).unwrap();
    std::fs::write(&frame, &good[..good.len() / 3]).unwrap();
    let mut t = press();
    let verdicts: Vec<_> = (0..3).filter_map(|_| edge.poll_trigger(&mut t).unwrap()).collect();
    assert!(verdicts.is_empty());
    assert_eq!(edge.led_status(), Status::Error);
    assert!(edge.log.iter().any(|l| l.contains("frame unreadable")), "{:?}", edge.log);
    std::fs::write(&frame, &good).unwrap();
    let mut t = press();
    let verdicts: Vec<_> = (0..3).filter_map(|_| edge.poll_trigger(&mut t).unwrap()).collect();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(edge.led_status(), Status::Serving);

    // The trigger's value file replaced by a FIFO with no writer, then by a directory: every
    // poll returns at once, reads as not pressed, and each fault is said once; a value file
    // again, pressed: one classification, and the recovery said.
    let value = dir.join("trigger-value");
    let fifo = std::process::Command::new("mkfifo").arg(&value).status().unwrap();
    assert!(fifo.success(), "mkfifo");
    let (t, error) = Trigger::new_or_low(ValueFilePin { path: value.clone() }, 2);
    assert!(format!("{error:?}").contains("a FIFO"), "{error:?}");
    let mut t = TriggerSampler::new(t, &frame, 64 << 20);
    let polls = |edge: &mut Edge<LogPin>, t: &mut TriggerSampler<ValueFilePin>| {
        (0..5).filter_map(|_| edge.poll_trigger(t).unwrap()).count()
    };
    assert_eq!(polls(&mut edge, &mut t), 0);
    std::fs::remove_file(&value).unwrap();
    std::fs::create_dir(&value).unwrap();
    assert_eq!(polls(&mut edge, &mut t), 0);
    let failed: Vec<&String> = edge.log.iter().filter(|l| l.contains("trigger input failed")).collect();
    assert_eq!(failed.len(), 2, "once per cause: {failed:?}");
    assert!(failed[0].contains("a FIFO") && failed[1].contains("a directory"), "{failed:?}");
    std::fs::remove_dir(&value).unwrap();
    std::fs::write(&value, "1\n").unwrap();
    assert_eq!(polls(&mut edge, &mut t), 1);
    assert!(edge.log.iter().any(|l| l.contains("trigger input: readable again")), "{:?}", edge.log);
    assert_eq!(edge.led_status(), Status::Serving);

    // A watched directory with two real images and one broken one: two verdicts (the base model's
    // choices), the broken file in rejected/, the others in done/.
    let watch = dir.join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    for name in ["cifar10_00_3.png", "cifar10_02_8.png"] {
        std::fs::copy(pngs.join(name), watch.join(name)).unwrap();
    }
    std::fs::write(watch.join("broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let verdicts = edge.process_watch(&watch).unwrap();
    let got: Vec<(String, String)> = verdicts
        .iter()
        .map(|v| (v.file.file_name().unwrap().to_string_lossy().into_owned(), v.class.clone().unwrap_or_default()))
        .collect();
    let want: Vec<(String, String)> = ["cifar10_00_3.png", "cifar10_02_8.png"]
        .iter()
        .map(|n| (n.to_string(), base_choice(&net, &pngs.join(n))))
        .collect();
    assert_eq!(got, want);
    assert!(watch.join("rejected/broken.png").exists());
    assert!(watch.join("done/cifar10_00_3.png").exists() && watch.join("done/cifar10_02_8.png").exists());
    assert_eq!(std::fs::read_dir(&watch).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count(), 0);

    // Files given at start must all be readable: a broken one is an error naming it.
    let e = edge.classify_files(&[watch.join("rejected/broken.png")]).unwrap_err();
    assert!(format!("{e:#}").contains("broken.png"), "{e:#}");

    // A GPU asked of a build without CUDA: a clear error before anything is loaded.
    if !classmod::runtime::CUDA_BUILT {
        let e = Edge::start(options(&dir.join("packed"), DeviceChoice::Cuda), LogPin::default()).err().unwrap();
        assert!(e.to_string().contains("no CUDA support"), "{e}");
        // `auto` on a board without CUDA, or in a CPU build, is the CPU.
        let edge = Edge::start(options(&dir.join("packed"), DeviceChoice::Auto), LogPin::default()).unwrap();
        assert!(edge.log.iter().any(|l| l.contains("computing on the CPU")));
    }

    // With the modules' calibrated minimum scores (the device's default), images of classes
    // that are not served can be answered `none`; most images of the served classes are not.
    let opts = EdgeOptions { min_score: MinScore::Calibrated, ..options(&dir.join("packed"), DeviceChoice::Cpu) };
    let mut edge = Edge::start(opts, LogPin::default()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&pngs).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "png"));
    files.sort();
    let verdicts = edge.classify_files(&files).unwrap();
    let label = |v: &classmod::edge::Verdict| -> usize {
        let stem = v.file.file_stem().unwrap().to_string_lossy().into_owned();
        stem.rsplit('_').next().unwrap().parse().unwrap()
    };
    let (served, others): (Vec<_>, Vec<_>) = verdicts.iter().partition(|v| SERVED.contains(&label(v)));
    let none = |vs: &[&classmod::edge::Verdict]| vs.iter().filter(|v| v.class.is_none()).count();
    eprintln!(
        "none answers: {} of {} served-class images, {} of {} others",
        none(&served),
        served.len(),
        none(&others),
        others.len()
    );
    assert!(none(&others) >= 3, "{} of {} images of unserved classes answered none", none(&others), others.len());
    assert!(none(&served) <= 2, "{} of {} images of served classes answered none", none(&served), served.len());
    assert!(edge.log.iter().any(|l| l.contains(": none (best score")), "{:?}", edge.log);
    let _ = std::fs::remove_dir_all(&dir);
}
