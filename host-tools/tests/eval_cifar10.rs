//! `classmod eval` on the full CIFAR-10 JPEG test split (10,000 images read from the .tar.gz in
//! place). Reference: PyTorch's top-1 on the same files, from ../shared/README.md: ResNet-20
//! 81.03 %, ResNet-56 83.20 % (PIL decoding; our JPEG decoder may differ by a step in some pixels).

mod common;

fn check(file: &str, reference_top1: f64) {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch(file);
    let model = dir.join("model.safetensors");
    common::import_shared(&shared, file, &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let o = common::classmod(&["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let (top1, top5, n) = (v["top1"].as_f64().unwrap(), v["top5"].as_f64().unwrap(), v["n"].as_u64().unwrap());
    eprintln!("{file}: top-1 {:.2} % top-5 {:.2} % on {n} ({:.1} s)", 100.0 * top1, 100.0 * top5, v["seconds"]);
    assert_eq!(n, 10_000);
    assert!((100.0 * top1 - reference_top1).abs() <= 0.3, "{file}: top-1 {top1} vs PyTorch {reference_top1} %");
    assert!(top5 >= top1 && top5 <= 1.0);
    // The per-class table is printed and sums up.
    let per: u64 = v["per_class"].as_array().unwrap().iter().map(|c| c["n"].as_u64().unwrap()).sum();
    assert_eq!(per, 10_000);
    assert!(String::from_utf8_lossy(&o.stdout).contains("airplane"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resnet20_top1_matches_pytorch() {
    check("resnet20-cifar10.safetensors", 81.03);
}

#[test]
fn resnet56_top1_matches_pytorch() {
    check("resnet56-cifar10.safetensors", 83.20);
}

/// `--limit` takes a seeded class-balanced sample, not the first N files (which would all be
/// airplanes in this archive's order).
#[test]
fn limit_is_a_class_balanced_sample() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("limit");
    let model = dir.join("model.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let run = |seed: &str| {
        let o = common::classmod(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "200",
            "--seed",
            seed,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::last_json(&o)
    };
    let v = run("0");
    assert_eq!(v["n"], 200);
    for c in v["per_class"].as_array().unwrap() {
        assert_eq!(c["n"], 20, "{c}");
    }
    assert_eq!(run("0")["top1"], v["top1"], "same seed, same sample");
    let _ = std::fs::remove_dir_all(dir);
}
