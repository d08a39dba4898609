//! `classmod train --init` from a pretrained model of other classes: chenyaofo's CIFAR-100
//! ResNet-20 (../shared) fine-tuned on ten Tiny ImageNet classes (a subset of ../shared's archive
//! in Tiny ImageNet's own layout, so the reader is exercised too) with its stem and first two
//! stages frozen and cached. What is checked against something independent: chance on ten
//! classes is 10 %, and a fresh head starts at a loss near ln 10 = 2.30; the fine-tuned model
//! must beat chance clearly on the 500 held-out validation images. Then reproducibility: the same
//! seed gives the same bytes, and a run stopped at an epoch's end and resumed gives the same
//! bytes as an uninterrupted one.

mod common;

use std::path::Path;

/// Whether two model files hold the same metadata and tensors, bit for bit (their bytes may
/// differ: safetensors writes the metadata map in hash order).
fn same_model(a: &Path, b: &Path) -> bool {
    use safetensors::SafeTensors;
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let meta = |bytes: &[u8]| SafeTensors::read_metadata(bytes).unwrap().1.metadata().clone();
    let (ta, tb) = (SafeTensors::deserialize(&a).unwrap(), SafeTensors::deserialize(&b).unwrap());
    let (mut na, mut nb) = (ta.names(), tb.names());
    na.sort();
    nb.sort();
    meta(&a) == meta(&b) && na == nb && na.iter().all(|n| ta.tensor(n).unwrap().data() == tb.tensor(n).unwrap().data())
}

fn train(args: &[&str]) -> serde_json::Value {
    let o = common::classmod(args);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    let mut v = common::last_json(&o);
    v["stderr"] = String::from_utf8_lossy(&o.stderr).into();
    v
}

#[test]
fn a_cifar100_resnet_fine_tuned_on_ten_tiny_imagenet_classes_learns_them_and_resumes_exactly() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("fine-tune");
    let (data, wnids) = common::tiny_subset(&shared.join("data/tiny-imagenet-200.tar.gz"), &dir, 10);
    let base = dir.join("r20-cifar100.safetensors");
    let o = common::classmod(&[
        "import",
        shared.join("models/resnet20-cifar100-chenyaofo.safetensors").to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));

    let out = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let args = |o: &str| -> Vec<String> {
        [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--init",
            base.to_str().unwrap(),
            "--freeze-stages",
            "2",
            "--out",
            o,
            "--steps",
            "200",
            "--batch",
            "64",
            "--lr",
            "0.1",
            "--schedule",
            "one-cycle",
            "--seed",
            "3",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |extra: &[&str], o: &str| {
        let mut a = args(o);
        a.extend(extra.iter().map(|s| s.to_string()));
        train(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let a = run(&[], &out("a.safetensors"));
    let stderr = a["stderr"].as_str().unwrap();
    assert!(stderr.contains("a fresh head of 10 outputs"), "one line says the head is new: {stderr}");
    assert!(stderr.contains("cached the frozen stem and 2 stage(s) of 5000 images"), "{stderr}");
    assert_eq!(a["n"], 500, "50 validation images of each of the 10 classes");
    let (first, last) = (a["train"]["first_loss"].as_f64().unwrap(), a["train"]["last_loss"].as_f64().unwrap());
    let top1 = a["top1"].as_f64().unwrap();
    eprintln!("fine-tuned on {wnids:?}: loss {first:.3} -> {last:.3}, top-1 {:.1} %", 100.0 * top1);
    assert!((first - 10f64.ln()).abs() < 0.6, "a fresh head starts near ln 10: {first}");
    assert!(last < first - 1.0, "the loss falls: {first} -> {last}");
    assert!(top1 > 0.4, "well above the 10 % of chance: {top1}");
    assert_eq!(a["finished"], true);

    // A model of two of the classes (`--classes`, as the paper's reuse baseline trains one on
    // a pair): a fresh head of 2, trained and evaluated on those classes' images only (chance
    // 50 %), labels in the order asked.
    let names: Vec<String> = (0..2).map(|i| a["eval"]["per_class"][i]["name"].as_str().unwrap().to_string()).collect();
    let pair = [names[1].as_str(), names[0].as_str()].join(",");
    let two = run(&["--classes", &pair], &out("pair.safetensors"));
    let stderr = two["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("a fresh head of 2 outputs")
            && stderr.contains("cached the frozen stem and 2 stage(s) of 1000 images"),
        "{stderr}"
    );
    assert_eq!(two["n"], 100, "50 validation images of each of the 2 classes");
    assert_eq!(two["eval"]["per_class"][0]["name"], names[1].as_str());
    let pair_top1 = two["top1"].as_f64().unwrap();
    eprintln!("the pair {pair}: top-1 {:.1} %", 100.0 * pair_top1);
    assert!(pair_top1 > 0.7, "well above the 50 % of chance: {pair_top1}");
    let o = common::classmod(
        &[&args(&out("none.safetensors")).iter().map(String::as_str).collect::<Vec<_>>()[..], &["--classes", "nosuch"]]
            .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(data.to_str().unwrap()) && err.contains("no class `nosuch`"), "{err}");

    // The same seed, the same weights.
    run(&[], &out("b.safetensors"));
    let same = |x: &str, y: &str| same_model(&dir.join(x), &dir.join(y));
    assert!(same("a.safetensors", "b.safetensors"), "same seed, same weights");

    // Stopped at the first epoch's end (79 steps of 200), then resumed: the same weights.
    let paused = run(&["--time-limit", "0"], &out("c.safetensors"));
    assert_eq!(paused["finished"], false);
    assert_eq!(paused["train"]["steps_done"], 79, "5000 images in batches of 64: the first epoch ends at step 79");
    assert!(dir.join("c.safetensors.resume").is_file());
    let resumed = run(&["--resume"], &out("c.safetensors"));
    assert_eq!(resumed["finished"], true);
    assert!(resumed["stderr"].as_str().unwrap().contains("resuming"));
    assert!(same("a.safetensors", "c.safetensors"), "a resumed run ends where an uninterrupted one does");
    assert_eq!(resumed["train"]["last_loss"], a["train"]["last_loss"]);

    // Resuming with other settings is refused, naming what differs.
    let mut other = args(&out("c.safetensors"));
    let lr = other.iter().position(|s| s == "--lr").unwrap();
    other[lr + 1] = "0.2".into();
    other.push("--resume".into());
    let o = common::classmod(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("c.safetensors.resume") && err.contains("lr 0.1 (now 0.2)"), "{err}");
}

/// `classmod train --arch resnet18` from scratch: torchvision's layout (the 7x7 stride-2 stem,
/// its max-pool, four stages of 64 to 512 channels) at 32x32 on the same ten Tiny ImageNet
/// classes. Its loss must fall well below where it starts (5.8 on the first minibatch, above
/// chance's ln 10 = 2.3: nothing zeroes the residual branches at initialisation) and the run
/// end below chance's; the model file says what it is.
#[test]
fn a_torchvision_layout_resnet18_trains_from_scratch() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("train-resnet18");
    let (data, _) = common::tiny_subset(&shared.join("data/tiny-imagenet-200.tar.gz"), &dir, 10);
    let out = dir.join("r18.safetensors");
    let a = train(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "resnet18",
        "--input-size",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "60",
        "--batch",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "1",
        "--json",
    ]);
    let (first, last) = (a["train"]["first_loss"].as_f64().unwrap(), a["train"]["last_loss"].as_f64().unwrap());
    eprintln!("resnet18 from scratch: loss {first:.3} -> {last:.3}, top-1 {}", a["top1"]);
    assert_eq!(a["arch"], "resnet18", "{a}");
    assert!(last < first - 1.0 && last < 10f64.ln(), "the loss falls: {first} -> {last}");
    let model = classmod_runtime::host::ModelFile::read(&out, &classmod_runtime::Device::Cpu).unwrap();
    let net = model.meta.arch.network();
    assert_eq!((model.meta.arch.name().as_str(), net.stages.len(), net.features()), ("resnet18", 4, 512));
    let _ = std::fs::remove_dir_all(&dir);
}
