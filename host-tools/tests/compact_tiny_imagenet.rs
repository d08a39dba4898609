//! Compact modules of a base of many classes, small enough for CI: chenyaofo's CIFAR-100 ResNet-20
//! (../shared) fine-tuned on 20 Tiny ImageNet classes (a subset of ../shared's archive in its own
//! layout), then decomposed into 20 compact modules with the shape the decomposer gives a base of
//! 100 classes or more (the trunk runs one block into stage 3, a branch of 10 channels and one
//! block, each branch trained on its class's images and a sample of the others: the 200-class
//! path), and the 20 modules composed on the 1,000 validation images of those classes.
//!
//! Reference: the fine-tuned base on the same images (compose-eval's `base`, an independent
//! forward of the whole model). Measured here (2026-12-07): base 73.00 %, composed 70.70 %
//! (-2.3 points), a module 2.78 % of the base's parameters, 4.5 minutes with the test profile beside
//! another run. The bound is that loss with a margin, not the product's target (0.6 points, met on all 200 classes with the
//! whole training split: results/compact-tiny-imagenet-resnet56/): CI's base and branches see a
//! few epochs, so a regression in the trunk's end, the sampled negatives, the calibration or the
//! branch execution fails it.

mod common;

/// Composed top-1 may be at most this many points below the base's.
const BOUND_POINTS: f64 = 4.0;

#[test]
fn twenty_compact_modules_of_a_fine_tuned_tiny_imagenet_base_compose_near_it() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compact-tiny-imagenet");
    let (data, _) = common::tiny_subset(&shared.join("data/tiny-imagenet-200.tar.gz"), &dir, 20);
    let (init, base) = (dir.join("r20-cifar100.safetensors"), dir.join("base.safetensors"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let o = common::classmod(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        common::last_json(&o)
    };
    let o = common::classmod(&[
        "import",
        &path(&shared.join("models/resnet20-cifar100-chenyaofo.safetensors")),
        "--out",
        &path(&init),
    ]);
    assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));
    let (data, base_s) = (path(&data), path(&base));
    let trained = run(&[
        "train",
        "--data",
        &data,
        "--init",
        &path(&init),
        "--freeze-stages",
        "2",
        "--out",
        &base_s,
        "--epochs",
        "4",
        "--batch",
        "64",
        "--lr",
        "0.1",
        "--schedule",
        "one-cycle",
        "--seed",
        "1",
        "--json",
    ]);
    let modules = path(&dir.join("modules"));
    let d = run(&[
        "decompose",
        "--kind",
        "compact",
        "--model",
        &base_s,
        "--data",
        &data,
        "--out",
        &modules,
        "--trunk-blocks",
        "1",
        "--branch-width",
        "10",
        "--branch-blocks",
        "1",
        "--negatives",
        "2000",
        "--epochs",
        "4",
        "--json",
    ]);
    assert_eq!(d["modules"].as_array().unwrap().len(), 20);
    assert_eq!(d["negatives"]["Sample"], 2000, "each branch trained on its class and 2,000 others");
    assert_eq!(d["options"]["trunk_blocks"], 1);
    let (params, trunk) = (d["params_fraction"].as_f64().unwrap(), d["trunk_macs_fraction"].as_f64().unwrap());
    // A module of the shape asked for, 10 x 1: 2.8 % of a ResNet-20 (0.88 % of the 200-class
    // ResNet-56 at the same shape); the check may have grown some (below).
    let classes = d["classes"].as_array().unwrap();
    let mean = classes.iter().map(|c| c["params"].as_f64().unwrap()).sum::<f64>() / classes.len() as f64;
    let base_params = mean / params;
    for c in classes.iter().filter(|c| c["width"] == 10 && c["blocks"] == 1) {
        let own = c["params"].as_f64().unwrap() / base_params;
        assert!(own < 0.03, "a module adds {:.2} % of the base's parameters", 100.0 * own);
    }
    let held = &d["heldout"];
    assert!(held["images"].as_u64().unwrap() > 0 && held["per_class_top1"].as_f64().unwrap() > 0.0, "{held}");
    // Without --check-data the decomposition checks itself on the data's own validation split
    // (500 images choose, 500 confirm), which the base did not train on, and says so.
    let g = &d["growth"];
    assert_eq!((g["tune"]["images"].as_u64(), g["confirm"]["images"].as_u64()), (Some(500), Some(500)), "{g}");
    assert_eq!((d["check"]["images"].as_u64(), d["check"]["split"].as_str()), (Some(1000), Some("test")));
    eprintln!("growth: {g}");
    let kept = g["rounds"].as_array().unwrap().iter().filter(|r| r["kept"] == true).count();
    let grown = classes.iter().filter(|c| !(c["width"] == 10 && c["blocks"] == 1)).count();
    assert_eq!((kept == 0, g["grown"].as_u64()), (grown == 0, Some(grown as u64)), "{g}");

    let v = run(&["compose-eval", "--modules", &modules, "--data", &data, "--split", "test", "--json"]);
    assert_eq!(v["n"], 1000, "50 validation images of each of the 20 classes");
    let (top1, b1) = (v["top1"].as_f64().unwrap(), v["base"]["top1"].as_f64().unwrap());
    eprintln!(
        "base {:.2} % (trained: {:.2} %), composed {:.2} %; module {:.2} % of the params, trunk {:.1} % of the MACs; \
         held out: {held}",
        100.0 * b1,
        100.0 * trained["top1"].as_f64().unwrap(),
        100.0 * top1,
        100.0 * params,
        100.0 * trunk
    );
    assert!(b1 > 0.3, "the fine-tuned base is well above the 5 % of chance: {b1}");
    assert!(100.0 * (b1 - top1) <= BOUND_POINTS, "composed top-1 {top1} against the base's {b1}");
}
