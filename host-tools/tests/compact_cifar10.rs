//! Compact modules of the ../shared ResNet-20, trained on a subset of CIFAR-10's training JPEGs to
//! fit CI's time (a seeded class-balanced sample of 5,000 images, 4,500 trained on and 500 held
//! out for calibration, 3 epochs), at the default shape for ResNet-20 (trunk of 2 stages, branch
//! width 16, one block). Reference: the base model on the same 1,000 seeded class-balanced test
//! images (compose-eval's `base` figures, an independent forward of the whole model). Measured
//! here (2026-12-02): composed 70.3 % top-1 against the base's 81.2 %, each module adding 3.4 %
//! of the base's parameters and 1.5 % of its MACs to a trunk of 68 % (with two blocks: 71.9 %,
//! 5.2 %). The bound is that figure with a margin (12.5 points), not the product's target (1.5
//! points): 4,500 training images are too few for it (the whole training split, 6 epochs, about
//! two minutes with a release build, composes above the base: `results/compact-resnet20-b1/`),
//! so a regression in the branches' training, calibration or execution fails it.

mod common;

use classmod_host::dataset::{load_sample, ImageShape, Split};
use classmod_host::decompose::compact::{decompose_compact, CompactOptions, Negatives};
use classmod_runtime::host::ModelFile;
use classmod_runtime::Device;

#[test]
fn a_compact_decomposition_of_resnet20_composes_all_ten_classes() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compact-cifar10");
    let model = dir.join("r20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let modules = dir.join("modules");
    let (model_s, data_s, modules_s) = (model.to_str().unwrap(), data.to_str().unwrap(), modules.to_str().unwrap());
    let decompose = |out: &str, flags: &[&str]| {
        let fixed = ["decompose", "--kind", "compact", "--model", model_s, "--data", data_s, "--out", out];
        common::classmod(&[&fixed[..], flags].concat())
    };
    let o = decompose(
        modules_s,
        &[
            "--max-images",
            "5000",
            "--held-out",
            "500",
            "--epochs",
            "3",
            "--check-data",
            data_s,
            "--check-limit",
            "1000",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = common::last_json(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("unseen by the base (the check)"));
    // A check set that cannot be read fails before the decomposition, naming it.
    let missing = dir.join("no-such-check-data");
    let o = decompose(
        dir.join("never").to_str().unwrap(),
        &["--max-images", "100", "--check-data", missing.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-check-data") && !dir.join("never").exists(), "{err}");
    assert_eq!(d["kind"], "compact");
    assert_eq!(d["modules"].as_array().unwrap().len(), 10);
    let params = d["params_fraction"].as_f64().unwrap();
    let (macs, trunk) = (d["macs_fraction"].as_f64().unwrap(), d["trunk_macs_fraction"].as_f64().unwrap());
    assert!(params < 0.06, "a module adds {:.2}% of the base's parameters", 100.0 * params);
    assert!(macs < 0.05 && trunk < 0.75, "a module's MACs {macs}, the trunk's {trunk}");
    let o = common::classmod(&["compose-eval", "--modules", modules_s, "--data", data_s, "--limit", "1000", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let (top1, b1) = (v["top1"].as_f64().unwrap(), v["base"]["top1"].as_f64().unwrap());
    eprintln!(
        "compact: params {:.2}%, MACs {:.2}% + trunk {:.1}%; composed top-1 {:.2}, base {:.2}",
        100.0 * params,
        100.0 * macs,
        100.0 * trunk,
        100.0 * top1,
        100.0 * b1
    );
    assert_eq!(v["n"], 1000);
    // The decomposition's own check on the test split (--check-data, the same seeded 1,000
    // images) is what compose-eval measures on the packed modules.
    let check = &d["check"];
    assert_eq!((check["images"].as_u64(), check["split"].as_str()), (Some(1000), Some("test")));
    assert_eq!((&check["top1"], &check["base_top1"]), (&v["top1"], &v["base"]["top1"]), "{check}");
    assert!((check["loss_points"].as_f64().unwrap() - 100.0 * (b1 - top1)).abs() < 1e-9);
    assert!(100.0 * (b1 - top1) <= 12.5, "top-1 cost {:.2} points", 100.0 * (b1 - top1));
    // The decomposition checked itself on those images: half of them (500) chose, the other
    // half only confirms. On 4,500 training images the modules lose far more than the 0.5
    // points allowed (measured: 9.6 on the tune half), so the classes that lose most grew a
    // block and trained again, within a budget of as long as the first training took
    // (measured: 6 classes, 9.6 -> 8.6 points on the tune half and 12.0 -> 10.6 on the other).
    let g = &d["growth"];
    eprintln!("growth: {g}");
    let figure = |half: &str, f: &str| g[half][f].as_f64().unwrap();
    assert_eq!((g["tune"]["images"].as_u64(), g["confirm"]["images"].as_u64()), (Some(500), Some(500)));
    assert!(figure("first_tune", "loss_points") > 0.5 && g["max_loss"] == 0.5, "{g}");
    // The modules the check composed from the cached trunk are the packed ones: their figures
    // on the two halves make up compose-eval's on the 1,000 (up to ties between scores).
    let halves = (figure("tune", "top1") + figure("confirm", "top1")) / 2.0;
    assert!((halves - top1).abs() < 0.002, "halves {halves}, compose-eval {top1}");
    let rounds = g["rounds"].as_array().unwrap();
    assert!(!rounds.is_empty() && rounds[0]["step"] == "deeper", "{g}");
    for r in rounds {
        let (before, after) = (r["tune_before"].as_f64().unwrap(), r["tune_after"].as_f64().unwrap());
        let noise = r["tune_noise"].as_f64().unwrap();
        assert!(noise > 0.0 && noise < 3.0, "{r}");
        assert_eq!(r["kept"].as_bool(), Some(after <= before + noise), "kept unless worse beyond its noise: {r}");
    }
    let kept: Vec<&serde_json::Value> = rounds.iter().filter(|r| r["kept"] == true).collect();
    assert!(!kept.is_empty(), "growing the branches of the classes that lose most helped: {g}");
    // Each class's report and blob say the shape its last kept round gave it (the first round
    // a block more: 16 x 2); the others kept 16 x 1.
    let mut want = std::collections::BTreeMap::new();
    for r in &kept {
        for (c, s) in r["classes"].as_array().unwrap().iter().zip(r["shapes"].as_array().unwrap()) {
            want.insert(c.as_str().unwrap().to_string(), (s[0].as_u64().unwrap(), s[1].as_u64().unwrap()));
        }
    }
    assert_eq!(kept[0]["shapes"][0], serde_json::json!([16, 2]));
    assert_eq!(g["grown"].as_u64().unwrap() as usize, want.len());
    for (i, c) in d["classes"].as_array().unwrap().iter().enumerate() {
        let shape = (c["width"].as_u64().unwrap(), c["blocks"].as_u64().unwrap());
        assert_eq!(shape, want.get(c["class_name"].as_str().unwrap()).copied().unwrap_or((16, 1)), "{c}");
        let blob = modules.join(d["modules"].as_array().unwrap()[i].as_str().unwrap());
        let o = common::classmod(&["inspect", blob.to_str().unwrap()]);
        let inspected = String::from_utf8_lossy(&o.stdout);
        let says = format!("branch {} channels wide, {} block", shape.0, shape.1);
        assert!(inspected.contains(&says), "{says}: {inspected}");
    }
    // Every module carries a calibrated minimum score; with all ten classes loaded few test
    // images fall below every module's.
    let none = &v["none_answers"];
    assert_eq!(none["min_score"], "calibrated");
    assert!(none["loaded_none"].as_f64().unwrap() < 0.1 && none["others"] == 0, "{none}");
    // The RQ1 experiment on the same images scores the same composition: its row is
    // compose-eval's figures (an independent path: one is the CLI's report, the other the
    // experiment's), per class too, and the chart has the base line and the composed one.
    let rq1 = dir.join("rq1");
    let o = common::classmod(&[
        "experiment",
        "rq1",
        "--packed",
        modules_s,
        "--data",
        data_s,
        "--out",
        rq1.to_str().unwrap(),
        "--limit",
        "1000",
        "--paper",
        "tiny-imagenet",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q = common::last_json(&o);
    let row = &q["rows"][0];
    assert_eq!((row["kind"].as_str(), row["images"].as_u64()), (Some("compact"), Some(1000)));
    assert_eq!(
        (&row["composed_top1"], &row["base_top1"], &row["composed_top5"]),
        (&v["top1"], &v["base"]["top1"], &v["top5"])
    );
    assert_eq!(row["per_class"][3][2], v["per_class"][3]["top1"]);
    assert_eq!(row["per_class"][3][0], "cat");
    let md = std::fs::read_to_string(rq1.join("rq1.md")).unwrap();
    assert!(
        md.contains("| resnet20 | compact | classmod | 1000 |") && md.contains("| ResNet-56 | mask | the paper |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(rq1.join("rq1-per-class.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
    let o = common::classmod(&["inspect", modules.join("class-003-cat.blob").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inspected = String::from_utf8_lossy(&o.stdout);
    assert!(inspected.contains("compact: trunk = stem + stages 1..2"), "{inspected}");
    assert!(inspected.contains("claims an image from score") && inspected.contains("\"min_score\":"), "{inspected}");
    // Three classes loaded: the other seven classes' images are the ones to answer none for.
    // Measured here: 24.8 % of them answered none, 2 % of the loaded ones (the whole training
    // split: 52 % and 3 %, `results/open-set-resnet20/`); the bounds leave a margin.
    let three: Vec<String> = ["class-003-cat.blob", "class-005-dog.blob", "class-008-ship.blob"]
        .iter()
        .map(|f| modules.join(f).to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["compose-eval", "--modules"];
    args.extend(three.iter().map(String::as_str));
    args.extend(["--data", data_s, "--limit", "600", "--json"]);
    let o = common::classmod(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let none = common::last_json(&o)["none_answers"].clone();
    eprintln!("three classes loaded: {none}");
    assert_eq!(none["others"], 600, "a balanced 600 of the other classes' images");
    assert!(none["others_none"].as_f64().unwrap() > 0.15 && none["loaded_none"].as_f64().unwrap() < 0.15, "{none}");
    // The same three with their heads refitted against each other (what inter-dataset
    // composition does): the branches' features take a calibrated head and a minimum score placed
    // again for it, so composed accuracy and the none answers stay in the same range.
    let accuracy = common::last_json(&o)["top1"].as_f64().unwrap();
    args.push("--recalibrate");
    let o = common::classmod(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = common::last_json(&o);
    let (top1, none) = (r["top1"].as_f64().unwrap(), r["none_answers"].clone());
    eprintln!("three classes recalibrated: top-1 {top1} (as packed {accuracy}), {none}");
    assert_eq!(r["recalibrated"], true);
    assert!(top1 > accuracy - 0.05, "recalibrated {top1} against {accuracy} as packed");
    assert!(none["others_none"].as_f64().unwrap() > 0.1 && none["loaded_none"].as_f64().unwrap() < 0.15, "{none}");
    // The open-set experiment: every 3-class subset and 200 of the 252 five-class ones (as at
    // 200 classes, where there are billions), compact modules against the restricted base's max
    // softmax at 95 % acceptance of the loaded classes' images.
    let open = dir.join("open-set");
    let o = common::classmod(&[
        "experiment",
        "open-set",
        "--packed",
        modules_s,
        "--data",
        data_s,
        "--out",
        open.to_str().unwrap(),
        "--sizes",
        "3,5",
        "--subsets",
        "200",
        "--limit",
        "1000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = common::last_json(&o)["rows"].as_array().unwrap().clone();
    eprintln!("open set: {rows:?}");
    assert_eq!(rows.len(), 4);
    let rejected = |r: &serde_json::Value| r["rejected_at_95"].as_f64().unwrap();
    assert!(rows[..2].iter().all(|r| r["subsets"] == 120 && r["possible"] == 120));
    assert!(rows[2..].iter().all(|r| r["subsets"] == 200 && r["possible"] == 252 && r["loaded"] == 5));
    for pair in rows.chunks(2) {
        assert!(rejected(&pair[0]) > rejected(&pair[1]), "compact modules reject more than the base's max softmax");
        assert!(pair[0]["calibrated_accepted"].as_f64().unwrap() > 0.85 && pair[1]["calibrated_accepted"].is_null());
    }
    let md = std::fs::read_to_string(open.join("open-set.md")).unwrap();
    assert!(
        md.contains("| 3 | base max-softmax | 120 |") && md.contains("| 5 | base max-softmax | 200 of 252 |"),
        "{md}"
    );
    // The paper's reuse on the packed compact modules: 20 of the 45 pairs (every pair is the
    // default up to 200; 200 classes have 19,900) and seeded five-class subsets against the
    // base restricted to them.
    let reuse = dir.join("reuse");
    let train_flags = format!("--init {model_s} --freeze-stages 2 --steps 30 --batch 64 --lr 0.05");
    let reuse_with = |flags: &[&str]| {
        let fixed = ["experiment", "reuse", "--packed", modules_s, "--data", data_s, "--out", reuse.to_str().unwrap()];
        common::classmod(&[&fixed[..], flags].concat())
    };
    let o = reuse_with(&[
        "--limit",
        "500",
        "--fives",
        "3",
        "--pairs",
        "20",
        "--trained-pairs",
        "2",
        "--train-flags",
        &train_flags,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = common::last_json(&o);
    // One pair of two seeded classes, also against a model of the pair alone (here a short
    // fine-tune of the base with a fresh two-class head), scored on the pair's whole test split.
    let t = r["trained_pairs"].as_array().unwrap();
    eprintln!("trained pair: {t:?}");
    assert_eq!(t.len(), 1);
    assert_eq!((t[0]["n"].as_u64(), t[0]["trained_n"].as_u64()), (Some(100), Some(2000)));
    assert!(t[0]["trained"].as_f64().unwrap() > 0.6 && t[0]["composed"].as_f64().unwrap() > 0.5, "{t:?}");
    assert!(reuse
        .join("pair-models")
        .join(format!(
            "{}.safetensors",
            t[0]["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect::<Vec<_>>().join("_")
        ))
        .is_file());
    assert!(std::fs::read_to_string(reuse.join("reuse.md")).unwrap().contains("Against a model of each pair alone"));
    assert_eq!(
        (r["kind"].as_str(), r["pairs"].as_array().unwrap().len(), r["fives"].as_array().unwrap().len()),
        (Some("compact"), 20, 3)
    );
    assert_eq!(r["pairs_possible"], 45);
    assert!(std::fs::read_to_string(reuse.join("reuse.md")).unwrap().contains("(a seeded sample of the 45 pairs)"));
    assert!(r["nodes_kept"].is_null() && r["options"].is_null());
    let o = reuse_with(&["--limit", "100", "--trained-pairs", "2", "--train-flags", "--init nosuch.safetensors"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--train-flags") && err.contains("nosuch.safetensors"), "{err}");
    for p in r["pairs"].as_array().unwrap() {
        assert!(p["n"].as_u64().unwrap() == 100 && p["composed"].as_f64().unwrap() > 0.5, "{p}");
    }
    // The serving experiment on the packed compact modules (no timing is asserted: CI's
    // machine is shared; the figures are in the closing notes and results/).
    let served = dir.join("serving");
    let serving = |packed: &[&str], batches: &str| {
        let mut args = vec!["experiment", "serving", "--model", model_s, "--data", data_s];
        args.extend(["--out", served.to_str().unwrap(), "--packed"]);
        args.extend(packed);
        args.extend(["--batches", batches, "--iters", "1", "--cold-starts", "1", "--json"]);
        common::classmod(&args)
    };
    let o = serving(&[modules_s], "1,8");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    assert_eq!(v["rows"].as_array().unwrap().len(), 10);
    assert!(v["ratio_k1"].as_f64().unwrap() > 0.0 && v["ratio_k10"].as_f64().unwrap() > 0.0);
    assert_eq!(v["kind"], "compact");
    // Two directories measured in turn come out as one table and one pair of charts (the same
    // directory twice here: the comparison's shape, not its figures).
    let o = serving(&[modules_s, modules_s], "2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let compared = v["compared"].as_array().unwrap();
    assert_eq!(compared.len(), 2);
    assert!(compared.iter().all(|c| c["kind"] == "compact" && c["ratio_k10"].as_f64().unwrap() > 0.0), "{compared:?}");
    let md = std::fs::read_to_string(served.join("serving.md")).unwrap();
    assert!(md.contains("| loaded classes | compact (1), batch 2 (x base) | compact (2), batch 2 (x base) |"), "{md}");
    let svg = std::fs::read_to_string(served.join("serving-memory.svg")).unwrap();
    assert!(svg.contains("compact (2): runtime's tensors"), "{svg}");
    let _ = std::fs::remove_dir_all(dir);
}

/// One branch trained for a few hundred steps on 2,000 real training images: its loss falls, its
/// calibrated score separates its class from the others clearly better than chance (held-out
/// one-vs-rest accuracy above always answering "no", 90 %, and most of its class accepted), and
/// the same seed gives the same weights.
#[test]
fn a_branch_learns_its_class_and_the_same_seed_gives_the_same_branch() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compact-branch");
    let model = dir.join("r20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let model = ModelFile::read(&model, &Device::Cpu).unwrap();
    let shape = ImageShape::new(3, 32, 32);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let train = load_sample(&data, Split::Train, shape, Some(&model.meta.class_names), Some(2000), 5).unwrap();
    let opts = CompactOptions { epochs: 20, batch: 64, held_out: 400, ..CompactOptions::new(Some(vec![1]), 3) };
    let bar = indicatif::ProgressBar::hidden();
    let a = decompose_compact(&model, &train, &opts, &bar).unwrap();
    let r = &a.reports[0];
    eprintln!("{r:?}");
    assert_eq!(r.class_name, "automobile");
    assert!(r.last_loss < 0.7 * r.first_loss, "loss {} -> {}", r.first_loss, r.last_loss);
    assert!(r.held_out_accuracy > 0.93 && r.held_out_recall > 0.6, "{r:?}");
    let b = decompose_compact(&model, &train, &opts, &bar).unwrap();
    assert_eq!(a.modules, b.modules, "same seed, same branch");
    let other = decompose_compact(&model, &train, &CompactOptions { seed: 4, ..opts.clone() }, &bar).unwrap();
    assert_ne!(a.modules, other.modules, "another seed, another branch");

    // Trained alone on its class's images, the 150 others the base scores highest for it and
    // 150 drawn anew each epoch (the many-class path): it still learns its class, reproducibly.
    let sampled = CompactOptions { negatives: Negatives::Sample(300), ..opts.clone() };
    let s = decompose_compact(&model, &train, &sampled, &bar).unwrap();
    let r = &s.reports[0];
    eprintln!("sampled: {r:?}");
    assert_eq!(s.negatives, Negatives::Sample(300));
    assert!(r.last_loss < 0.8 * r.first_loss, "loss {} -> {}", r.first_loss, r.last_loss);
    assert!(r.held_out_accuracy > 0.9 && r.held_out_recall > 0.5, "{r:?}");
    assert_eq!(s.modules, decompose_compact(&model, &train, &sampled, &bar).unwrap().modules, "same seed");
    let _ = std::fs::remove_dir_all(dir);
}

/// `experiment compact-tradeoff` end to end on a small sample (600 training images, one epoch,
/// 200 test images: the wiring, not the figures, which are in results/): modules of both trunk
/// depths decomposed, composed beside the base and written as a table, JSON and a chart with
/// one line per depth; the shallow trunk is the cheaper share of the base.
#[test]
fn the_compact_tradeoff_runs_both_trunk_depths() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compact-tradeoff");
    let model = dir.join("r20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let out = dir.join("out");
    let o = common::classmod(&[
        "experiment",
        "compact-tradeoff",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--settings",
        "1:4,2:4",
        "--max-images",
        "600",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    let trunk = |i: usize| points[i]["trunk_macs_fraction"].as_f64().unwrap();
    assert_eq!((points[0]["trunk_stages"].as_u64(), points[1]["trunk_stages"].as_u64()), (Some(1), Some(2)));
    assert!(trunk(0) < trunk(1) && trunk(1) < 1.0, "trunks {} and {}", trunk(0), trunk(1));
    for p in points {
        let (top1, base) = (p["top1"].as_f64().unwrap(), p["base_top1"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&top1) && base > 0.7, "{p}");
        assert!(p["params_fraction"].as_f64().unwrap() < 0.06);
    }
    assert_eq!(v["test_images"], 200);
    let svg = std::fs::read_to_string(out.join("compact-tradeoff.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(std::fs::read_to_string(out.join("compact-tradeoff.md")).unwrap().contains("| 1 | 4 |"));
    let _ = std::fs::remove_dir_all(dir);
}

/// `experiment transplant` end to end on a small sample (3,000 training images, one epoch, 300
/// test images: the wiring and a floor, not the figures, which are in results/): ResNet-56's
/// classes distilled onto ResNet-20's trunk compose far above chance, each row swaps one class,
/// and B's base column is ResNet-56's own accuracy on the class (an independent forward).
#[test]
fn resnet56_classes_transplant_onto_the_resnet20_trunk() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("compact-transplant");
    let (a, b) = (dir.join("r20.safetensors"), dir.join("r56.safetensors"));
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &a);
    common::import_shared(&shared, "resnet56-cifar10.safetensors", &b);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let out = dir.join("out");
    let o = common::classmod(&[
        "experiment",
        "transplant",
        "--model",
        a.to_str().unwrap(),
        "--with",
        b.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-images",
        "3000",
        "--held-out",
        "500",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    eprintln!(
        "transplant: composed A {} transplanted {} base A {} base B {}",
        v["composed_a"], v["composed_transplanted"], v["base_a"], v["base_b"]
    );
    assert_eq!((v["model_a"].as_str(), v["model_b"].as_str()), (Some("resnet20"), Some("resnet56")));
    assert!(v["composed_transplanted"].as_f64().unwrap() > 0.4 && v["composed_a"].as_f64().unwrap() > 0.4, "{v}");
    assert!(v["base_b"].as_f64().unwrap() > 0.75);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    for r in rows {
        assert_eq!(r["overall_before"], v["composed_a"]);
        for f in ["class_before", "class_after", "class_base_b", "overall_after"] {
            assert!((0.0..=1.0).contains(&r[f].as_f64().unwrap()), "{r}");
        }
    }
    let md = std::fs::read_to_string(out.join("transplant.md")).unwrap();
    assert!(md.contains("| cat |") && md.contains("resnet56's base on the class"), "{md}");

    // The 200-class way: A's own modules read from its packed directory (decomposed alike, so
    // they are the same weights and compose exactly as the in-process ones did) and a seeded
    // sample of 3 classes moved.
    let own = dir.join("own");
    let (a_s, data_s, own_s) = (a.to_str().unwrap(), data.to_str().unwrap(), own.to_str().unwrap());
    let common_flags = ["--max-images", "3000", "--held-out", "500", "--epochs", "1"];
    let o = common::classmod(
        &[
            &["decompose", "--kind", "compact", "--model", a_s, "--data", data_s, "--out", own_s, "--no-check"][..],
            &common_flags[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out2 = dir.join("out2");
    let transplant = |model: &str, with: &str| {
        common::classmod(
            &[
                &["experiment", "transplant", "--model", model, "--with", with, "--data", data_s][..],
                &["--out", out2.to_str().unwrap(), "--own", own_s, "--class-sample", "3", "--limit", "300", "--json"],
                &common_flags[..],
            ]
            .concat(),
        )
    };
    let o = transplant(a_s, b.to_str().unwrap());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w = common::last_json(&o);
    eprintln!(
        "transplant of 3 onto packed modules: composed A {} (in-process {}), 3 moved {}",
        w["composed_a"], v["composed_a"], w["composed_transplanted"]
    );
    assert!(w["seconds_own"].is_null(), "{w}");
    assert_eq!(w["rows"].as_array().unwrap().len(), 3);
    assert_eq!(w["classes"], 10);
    assert!((w["composed_a"].as_f64().unwrap() - v["composed_a"].as_f64().unwrap()).abs() < 1e-9, "{w}");
    assert_eq!(w["base_a"], v["base_a"]);
    let md = std::fs::read_to_string(out2.join("transplant.md")).unwrap();
    assert!(md.contains("3 of resnet56's 10 classes transplanted"), "{md}");
    // Modules that are not the model's own: one clear line naming the directory, exit 2.
    let o = transplant(b.to_str().unwrap(), a_s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(own_s) && err.contains("not one for every class of resnet56"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
