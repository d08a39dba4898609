//! Decompose the ../shared ResNet-20 with the default rates and compose all ten modules on a
//! seeded class-balanced sample of 500 CIFAR-10 JPEG test images. Reference: the base model on the
//! same images, restricted to the same classes; targets: the paper's average decomposition cost
//! (Pan & Rajan 2022: 1.77 points top-1, 0.85 top-5), with fewer nodes than the model.

mod common;

#[test]
fn default_decomposition_composes_within_the_papers_cost() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compose-cifar10");
    let model = dir.join("r20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let modules = dir.join("modules");
    let o = common::classmod(&[
        "decompose",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        modules.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = common::last_json(&o);
    assert_eq!(d["modules"].as_array().unwrap().len(), 10);
    let kept = d["nodes_kept"].as_f64().unwrap();
    let o = common::classmod(&[
        "compose-eval",
        "--modules",
        modules.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "500",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let (top1, top5) = (v["top1"].as_f64().unwrap(), v["top5"].as_f64().unwrap());
    let (b1, b5) = (v["base"]["top1"].as_f64().unwrap(), v["base"]["top5"].as_f64().unwrap());
    eprintln!(
        "nodes kept {:.1}%; composed {:.2}/{:.2}, base {:.2}/{:.2}",
        100.0 * kept,
        100.0 * top1,
        100.0 * top5,
        100.0 * b1,
        100.0 * b5
    );
    assert_eq!(v["n"], 500);
    assert!(kept < 0.97, "modules keep clearly fewer nodes than the model: {kept}");
    assert!(100.0 * (b1 - top1) <= 1.77, "top-1 cost {:.2} points", 100.0 * (b1 - top1));
    assert!(100.0 * (b5 - top5) <= 0.85, "top-5 cost {:.2} points", 100.0 * (b5 - top5));
    two_datasets_compose_with_each_base_beside_them(&shared, &dir, &modules);
    let _ = std::fs::remove_dir_all(dir);
}

/// Inter-dataset composition (one `--data` per base): a second "dataset" is CIFAR-10's dog, frog
/// and cat folders renamed `b-dog`, ... and a second base is the same network imported under those
/// names. Three modules of the first base and two of the second are scored on the union of the two
/// test sets. Reference: each source's figure "base alone, told the source" must equal, exactly,
/// what single-base compose-eval reports for the same base restricted to the same classes on the
/// same images (an independent code path).
fn two_datasets_compose_with_each_base_beside_them(
    shared: &std::path::Path,
    dir: &std::path::Path,
    a_modules: &std::path::Path,
) {
    let tar_gz = shared.join("data/cifar10-jpeg.tar.gz");
    let b_data = dir.join("b-data");
    for split in ["train", "test"] {
        std::fs::create_dir_all(b_data.join(split)).unwrap();
        let folders: Vec<String> = ["dog", "frog", "cat"].iter().map(|c| format!("{split}/{c}")).collect();
        let st = std::process::Command::new("tar")
            .args(["xzf", tar_gz.to_str().unwrap(), "-C", b_data.to_str().unwrap()])
            .args(&folders)
            .status()
            .expect("tar runs");
        assert!(st.success(), "tar extracts {folders:?}");
        for c in ["dog", "frog", "cat"] {
            std::fs::rename(b_data.join(split).join(c), b_data.join(split).join(format!("b-{c}"))).unwrap();
        }
    }
    let b_model = dir.join("b.safetensors");
    let b_names: Vec<String> = common::CIFAR10_CLASSES.iter().map(|c| format!("b-{c}")).collect();
    let src = shared.join("models/resnet20-cifar10.safetensors");
    let o = common::classmod(&[
        "import",
        src.to_str().unwrap(),
        "--out",
        b_model.to_str().unwrap(),
        "--mean",
        "0.485,0.456,0.406",
        "--std",
        "0.229,0.224,0.225",
        "--class-names",
        &b_names.join(","),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b_modules = dir.join("b-modules");
    let o = common::classmod(&[
        "decompose",
        "--model",
        b_model.to_str().unwrap(),
        "--data",
        b_data.to_str().unwrap(),
        "--out",
        b_modules.to_str().unwrap(),
        "--classes",
        "b-dog,b-frog",
        "--n-pos",
        "100",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = |c: &str| {
        let i = common::CIFAR10_CLASSES.iter().position(|x| *x == c).unwrap();
        a_modules.join(format!("class-{i:03}-{c}.blob")).to_str().unwrap().to_string()
    };
    let (a0, a1, a2) = (a("airplane"), a("automobile"), a("bird"));
    let args = ["compose-eval", "--modules", &a0, &a1, &a2, b_modules.to_str().unwrap(), "--json", "--data"];
    let o = common::classmod(&[&args[..], &[tar_gz.to_str().unwrap(), b_data.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let union = common::last_json(&o);
    let sources = union["sources"].as_array().unwrap();
    assert_eq!(union["n"], 5000, "3 + 2 classes of 1,000 test images");
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["n"], 3000);
    assert_eq!(sources[1]["n"], 2000);
    assert_eq!(sources[1]["classes"], serde_json::json!(["b-dog", "b-frog"]));
    // The reference, computed by single-base compose-eval on the original dataset.
    let restricted = |modules: &[&str]| {
        let o = common::classmod(
            &[&["compose-eval", "--data", tar_gz.to_str().unwrap(), "--json", "--modules"][..], modules].concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::last_json(&o)["base"]["top1"].as_f64().unwrap()
    };
    let (dog, frog) = (a("dog"), a("frog"));
    assert_eq!(sources[0]["base_top1"].as_f64().unwrap(), restricted(&[&a0, &a1, &a2]));
    assert_eq!(sources[1]["base_top1"].as_f64().unwrap(), restricted(&[&dog, &frog]));
    let top1 = union["top1"].as_f64().unwrap();
    eprintln!("union of two datasets: composed top-1 {:.2}%, sources {sources:?}", 100.0 * top1);
    assert!(top1 > 0.8, "five well-separated CIFAR-10 classes compose well: {top1}");
    for s in sources {
        assert!(s["crossed"].as_u64().unwrap() <= s["n"].as_u64().unwrap());
    }
    // Heads refitted against each other's classes on both datasets' training images: still a
    // working classifier (the digits + garments experiment in results/ measures what it is for).
    let both = [tar_gz.to_str().unwrap(), b_data.to_str().unwrap()];
    let o = common::classmod(&[&args[..], &both[..], &["--recalibrate", "--limit", "1000"][..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recalibrated = common::last_json(&o);
    assert_eq!(recalibrated["recalibrated"], true);
    let top1 = recalibrated["top1"].as_f64().unwrap();
    assert!(top1 > 0.8, "recalibrated heads: {top1}");
    // One dataset per base, or one for all: three datasets for two bases is refused.
    let three = [tar_gz.to_str().unwrap(), b_data.to_str().unwrap(), b_data.to_str().unwrap()];
    let o = common::classmod(&[&args[..], &three[..]].concat());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3 datasets for 2 base models"), "{err}");
}
