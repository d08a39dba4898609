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
    let _ = std::fs::remove_dir_all(dir);
}
