//! `classmod decompose`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::dataset::{ImageShape, Split};
use classmod_host::decompose::compact::{self, CompactOptions};
use classmod_host::decompose::growth::{self, CheckImages, GrowthOptions};
use classmod_host::decompose::{self, DecomposeOptions};
use classmod_host::pack::{golden_sample, pack, PackGroup};
use classmod_host::progress;
use classmod_runtime::host::ClassModule;

use super::keygen::read_secret_key;
use super::{at_least_one_golden, load_data, model_error, print_json, read_model};
use classmod_runtime::Device;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Training data of the model (its `train` split gives positives and negatives).
    #[arg(long)]
    data: PathBuf,
    /// Output directory, a packed directory a device can serve: the base blob, one module blob
    /// per class (golden vectors from the training images) and `manifest.json`; unsigned unless
    /// --key is given (`classmod pack` re-signs and records golden vectors from test images).
    #[arg(long)]
    out: PathBuf,
    /// Module kind: `mask` (the paper's node masks over the whole base) or `compact` (the base's
    /// trunk, computed once for every loaded class, plus a small distilled branch per class).
    #[arg(long, value_enum, default_value = "mask")]
    kind: super::KindArg,
    /// Mask modules' head (compact modules always have a calibrated head).
    #[arg(long, value_enum, default_value = "channel")]
    head: super::HeadArg,
    /// Compact: stages of the base the shared trunk covers (1 or 2).
    #[arg(long, default_value_t = compact::TRUNK_STAGES)]
    trunk_stages: usize,
    /// Compact: blocks of the next stage the shared trunk runs too (0: none; fewer than the
    /// stage has) [default: 1 for a base of 100 classes or more, else 0: measured, see results/]
    #[arg(long)]
    trunk_blocks: Option<usize>,
    /// Compact: the branch's channel width [default: a share of the width of the base's last
    /// stage's 3x3s, 16 of its 64 channels for a base of up to 3 blocks a stage (ResNet-20), 24
    /// for deeper ones (ResNet-56), 64 of 512 for a four-stage base (torchvision's ResNet-18
    /// to 152; 128 for wide_resnet50_2), 10 of 64 for a base of 100 classes or more: measured,
    /// see results/]
    #[arg(long)]
    branch_width: Option<usize>,
    /// Compact: blocks after the branch's entry convolution [default: 1 for a base of up to 3
    /// blocks a stage (ResNet-20) or of 100 classes or more, 2 for deeper ones (ResNet-56) and
    /// for four-stage bases: measured, see results/]
    #[arg(long)]
    branch_blocks: Option<usize>,
    /// Compact: passes over the cached training images per branch.
    #[arg(long, default_value_t = compact::EPOCHS, value_parser = super::at_least_one())]
    epochs: usize,
    /// Compact: peak learning rate of the branches' training (SGD, Nesterov, cosine).
    #[arg(long, default_value_t = compact::LR)]
    branch_lr: f64,
    /// Compact: training images held out to calibrate the scores [default: 2000, or 20 a class
    /// when the base has more than 100].
    #[arg(long)]
    held_out: Option<usize>,
    /// Compact: the images each branch trains on: `all` (every image, all branches on shared
    /// minibatches), N (its class's images and N others, half those the base scores highest
    /// for the class, half at random; each branch alone), or `auto` (12000 others for a base
    /// of 100 classes or more when that sample is at most half the images; else all).
    #[arg(long, default_value = "auto")]
    negatives: compact::Negatives,
    /// Also compose the modules, once decomposed, on this dataset's `--check-split` images of
    /// the decomposed classes against the base: images the base did not train on (your
    /// validation split, say). The held-out training images understate the modules against a
    /// base fit to them (2.5 to 7.3 points of top-1 on the bases measured), these do not.
    /// Compact modules check themselves on half of them and grow the branches that lose
    /// (--max-loss) [default for compact: --data's --check-split, if it has one; --no-check: none]
    #[arg(long)]
    check_data: Option<PathBuf>,
    /// Compact: no check on images the base did not train on, and so no growth (only the
    /// held-out training images' figure).
    #[arg(long, conflicts_with = "check_data")]
    no_check: bool,
    /// Compact: points of top-1 the modules may lose against the base on half the check images
    /// (the other half is only reported); beyond it the branches of the classes that lose most
    /// grow (a block deeper, then half as wide again) and train again, while the time budget lasts.
    #[arg(long, default_value_t = growth::MAX_LOSS, value_parser = super::non_negative)]
    max_loss: f64,
    /// Compact: minutes the growth may take [default: as long as the first training took].
    #[arg(long, value_parser = super::non_negative)]
    grow_minutes: Option<f64>,
    /// The split of --check-data that the base did not train on.
    #[arg(long, value_enum, default_value = "test")]
    check_split: super::SplitArg,
    /// At most this many --check-data images (a seeded class-balanced sample; default all).
    #[arg(long, value_parser = super::at_least_one())]
    check_limit: Option<usize>,
    /// Compact: at most this many training images (a class-balanced sample; default all).
    #[arg(long)]
    max_images: Option<usize>,
    /// Class names (or output indices) to decompose, comma-separated; default all.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Positives per class.
    #[arg(long, default_value_t = decompose::N_POS)]
    n_pos: usize,
    /// Minimum softmax probability of a positive (relaxed, and reported, if too few qualify).
    #[arg(long, default_value_t = decompose::POS_CONF)]
    pos_conf: f32,
    /// CI: keep a node active on at least this fraction of the positives. At these rates TI
    /// decides (keep 0.5 and 0.9 give the same masks at tangle 0.05); see --tangle-rate.
    #[arg(long, default_value_t = decompose::KEEP_RATE)]
    keep_rate: f64,
    /// TI: restore a node active on at least this fraction of the negatives (0 = any). The
    /// default is the knee of the measured trade-off (results/resnet{20,56}-tradeoff): the
    /// fewest nodes (93.0 % of ResNet-20's, 93.4 % of ResNet-56's) whose composed top-1 stays
    /// within 0.5 points and top-5 within 0.85 points of the base with the default channel head;
    /// at 0.07 top-1 already drops 0.6 (ResNet-20) and 1.4 points (ResNet-56).
    #[arg(long, default_value_t = decompose::TANGLE_RATE)]
    tangle_rate: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 32, value_parser = super::batch_size())]
    batch: usize,
    /// Accepted for scripts written when module files were the default: blobs are always written.
    #[arg(long = "blobs", hide = true)]
    _blobs: bool,
    /// Sign the blobs with this secret key (`classmod keygen`).
    #[arg(long = "sign-key", visible_alias = "key")]
    key: Option<PathBuf>,
    /// Golden images per module blob.
    /// At least one: a module without golden vectors cannot be health-checked on the device.
    #[arg(long, default_value_t = 8, value_parser = at_least_one_golden())]
    golden: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = read_model(&a.model, &Device::Cpu)?;
    let names = &model.meta.class_names;
    let classes = a
        .classes
        .as_ref()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    names
                        .iter()
                        .position(|n| n == c)
                        .or_else(|| c.parse::<usize>().ok().filter(|&i| i < names.len()))
                        .ok_or_else(|| {
                            anyhow!(
                                "--classes: `{c}` is neither a class of {} ({}) nor an index",
                                a.model.display(),
                                names.join(", ")
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    if !(0.0..=1.0).contains(&a.keep_rate) || a.tangle_rate < 0.0 {
        return Err(anyhow!("--keep-rate must be in [0, 1] and --tangle-rate at least 0"));
    }
    let spec = &model.meta.input;
    let shape = ImageShape::from(spec);
    let mut train = load_data(&a.data, Split::Train, shape, Some(names), None, a.seed)?;
    if let Some(n) = a.max_images.filter(|&n| n < train.len()) {
        train = train.balanced_sample(n, a.seed);
    }
    // Read before the long decomposition, so that a bad path fails at once.
    let check = check_images(&a, shape, names, classes.as_deref())?;
    if a.kind == super::KindArg::Compact {
        return run_compact(&a, &model, &train, classes, check);
    }
    let opts = DecomposeOptions {
        n_pos: a.n_pos.max(1),
        pos_conf: a.pos_conf,
        keep_rate: a.keep_rate,
        tangle_rate: a.tangle_rate,
        head: a.head.into(),
        classes,
        seed: a.seed,
        batch: a.batch,
    };
    let pb = progress::bar(0, "decompose");
    let d = decompose::decompose(&model, &train, &opts, &pb).map_err(|e| model_error(&a.model, e))?;
    pb.finish_and_clear();
    let key = a.key.as_deref().map(read_secret_key).transpose()?;
    let group = PackGroup::new(model.clone(), d.modules.clone()).map_err(|e| model_error(&a.model, e))?;
    let golden = |_: usize, m: &ClassModule| golden_sample(&train, a.golden, a.seed ^ m.class_id.0 as u64);
    let manifest = pack(&[group], &a.out, key.as_ref(), classmod_host::pack::version_now(), golden)
        .map_err(|e| model_error(&a.out, e))?;
    let paths: Vec<PathBuf> = manifest.modules.iter().map(|m| a.out.join(&m.file)).collect();
    println!("{:<14} {:>9} {:>9} {:>9} {:>10}  relaxed", "class", "positives", "negatives", "pos_conf", "nodes kept");
    for r in &d.reports {
        println!(
            "{:<14} {:>9} {:>9} {:>9.3} {:>9.1}%  {}",
            r.class_name,
            r.positives,
            r.negatives,
            r.pos_conf_used,
            100.0 * r.nodes_kept,
            if r.relaxed { "yes" } else { "no" }
        );
    }
    println!(
        "{} modules in {} ({:.1} s); mean nodes kept {:.1}%",
        paths.len(),
        a.out.display(),
        d.seconds,
        100.0 * d.nodes_kept()
    );
    let check = check.map(|(path, images)| unseen_check(&a, &path, &model, &d.modules, &images)).transpose()?;
    if a.json {
        print_json(&serde_json::json!({
            "kind": "mask", "modules": paths, "nodes_kept": d.nodes_kept(), "seconds": d.seconds, "options": opts, "classes": d.reports,
            "check": check,
        }));
    }
    Ok(())
}

/// The images the decomposition is checked on (`--check-data`, by default for compact modules
/// the training data's `--check-split`), those of the decomposed classes (labels kept), at
/// most `--check-limit`; with their path. A default that cannot be read is said and skipped.
fn check_images(
    a: &Args,
    shape: ImageShape,
    names: &[String],
    classes: Option<&[usize]>,
) -> Result<Option<(PathBuf, classmod_host::dataset::ImageSet)>> {
    let split = a.check_split.into();
    let set = match (&a.check_data, a.kind == super::KindArg::Compact && !a.no_check) {
        (Some(path), _) => (path.clone(), load_data(path, split, shape, Some(names), None, a.seed)?),
        (None, true) => match load_data(&a.data, split, shape, Some(names), None, a.seed) {
            Ok(set) => (a.data.clone(), set),
            Err(e) => {
                println!(
                    "no check on images the base did not train on ({e:#}): the modules are checked on held-out training images only and do not grow (--check-data)"
                );
                return Ok(None);
            }
        },
        (None, false) => return Ok(None),
    };
    let (path, mut set) = set;
    if let Some(cs) = classes {
        let map: Vec<Option<u32>> = (0..names.len()).map(|l| cs.contains(&l).then_some(l as u32)).collect();
        set = set.relabelled(&map, names.to_vec());
    }
    if let Some(n) = a.check_limit.filter(|&n| n < set.len()) {
        set = set.balanced_sample(n, a.seed);
    }
    Ok(Some((path, set)))
}

/// The decomposition checked on images the base did not train on (`--check-data`).
#[derive(serde::Serialize)]
struct UnseenCheck {
    data: PathBuf,
    split: String,
    images: usize,
    base_top1: f64,
    base_top5: f64,
    top1: f64,
    top5: f64,
    /// What the modules lose against the base, in points of top-1 (negative: they gain).
    loss_points: f64,
}

/// Composes `modules` on the `--check-data` images of their classes, against the base; prints
/// the summary line.
fn unseen_check(
    a: &Args,
    path: &std::path::Path,
    model: &classmod_runtime::host::ModelFile,
    modules: &[ClassModule],
    all: &classmod_host::dataset::ImageSet,
) -> Result<UnseenCheck> {
    let names: Vec<String> = modules.iter().map(|m| m.class_name.clone()).collect();
    let images = all.only_classes(path, &names)?;
    let pb = progress::bar(images.len() as u64, "check");
    let r = classmod_host::compose_eval::evaluate_decomposed(model, &a.model, modules.to_vec(), &images, &pb)?;
    let base = r.base.as_ref().expect("one base");
    let split = format!("{:?}", Split::from(a.check_split)).to_lowercase();
    let c = UnseenCheck {
        data: path.to_path_buf(),
        split,
        images: r.composed.n,
        base_top1: base.top1,
        base_top5: base.top5,
        top1: r.composed.top1,
        top5: r.composed.top5,
        loss_points: 100.0 * (base.top1 - r.composed.top1),
    };
    println!(
        "on {} images of {}'s {} split, unseen by the base (the check), the modules compose {:.2} / {:.2} % top-1 / top-5 against the base's {:.2} / {:.2} % ({:+.2} points of top-1)",
        c.images,
        path.display(),
        c.split,
        100.0 * c.top1,
        100.0 * c.top5,
        100.0 * c.base_top1,
        100.0 * c.base_top5,
        -c.loss_points
    );
    Ok(c)
}

fn run_compact(
    a: &Args,
    model: &classmod_runtime::host::ModelFile,
    train: &classmod_host::dataset::ImageSet,
    classes: Option<Vec<usize>>,
    check: Option<(PathBuf, classmod_host::dataset::ImageSet)>,
) -> Result<()> {
    let defaults = CompactOptions::for_base(&model.meta.arch.network(), classes, a.seed);
    let opts = CompactOptions {
        trunk_stages: a.trunk_stages,
        trunk_blocks: a.trunk_blocks.unwrap_or(defaults.trunk_blocks),
        width: a.branch_width.unwrap_or(defaults.width),
        blocks: a.branch_blocks.unwrap_or(defaults.blocks),
        epochs: a.epochs,
        held_out: a.held_out.unwrap_or(defaults.held_out),
        negatives: a.negatives,
        lr: a.branch_lr,
        ..defaults
    };
    let growth =
        GrowthOptions { max_loss: a.max_loss, budget_seconds: a.grow_minutes.map(|m| 60.0 * m), ..Default::default() };
    let halves = check.as_ref().map(|(_, set)| set.balanced_halves(a.seed ^ 0xC4EC));
    let pb = progress::bar(0, "compact");
    let d = match &halves {
        Some((tune, confirm)) => {
            let images = CheckImages { tune, confirm };
            compact::decompose_compact_checked(model, train, &opts, images, &growth, &pb)
        }
        None => compact::decompose_compact(model, train, &opts, &pb),
    }
    .map_err(|e| model_error(&a.model, e))?;
    pb.finish_and_clear();
    let key = a.key.as_deref().map(read_secret_key).transpose()?;
    let group = PackGroup::new(model.clone(), d.modules.clone()).map_err(|e| model_error(&a.model, e))?;
    let golden = |_: usize, m: &ClassModule| golden_sample(train, a.golden, a.seed ^ m.class_id.0 as u64);
    let manifest = pack(&[group], &a.out, key.as_ref(), classmod_host::pack::version_now(), golden)
        .map_err(|e| model_error(&a.out, e))?;
    let paths: Vec<PathBuf> = manifest.modules.iter().map(|m| a.out.join(&m.file)).collect();
    println!(
        "{:<14} {:>7} {:>10} {:>10} {:>9} {:>8} {:>8}",
        "class", "branch", "first loss", "last loss", "held acc", "recall", "seconds"
    );
    for r in &d.reports {
        println!(
            "{:<14} {:>7} {:>10.3} {:>10.3} {:>8.1}% {:>7.1}% {:>8.1}",
            r.class_name,
            format!("{}x{}", r.width, r.blocks),
            r.first_loss,
            r.last_loss,
            100.0 * r.held_out_accuracy,
            100.0 * r.held_out_recall,
            r.seconds
        );
    }
    let trained_on = match d.negatives {
        compact::Negatives::Sample(k) => format!("each branch on its class's images and {k} others"),
        _ => "every branch on every image".into(),
    };
    println!(
        "{} compact modules in {} ({:.1} s, trunk cached in {:.1} s; {trained_on}); a module adds {:.2}% of the base's parameters and {:.2}% of its MACs to a shared trunk of {:.1}%",
        paths.len(),
        a.out.display(),
        d.seconds,
        d.cache_seconds,
        100.0 * d.params_fraction(),
        100.0 * d.macs_fraction(),
        100.0 * d.trunk_macs_fraction()
    );
    let c = &d.check;
    println!(
        "on {} held-out training images (held out of the branches, not of the base, which fits them: this understates the modules) they compose {:.2} / {:.2} % top-1 / top-5 against the base's {:.2} / {:.2} % ({:+.2} points of top-1; {} calibration by top-1 + top-5: {:.2} / {:.2} % per class, {:.2} / {:.2} % shared)",
        c.images,
        100.0 * c.top1(),
        100.0 * c.top5(),
        100.0 * c.base_top1,
        100.0 * c.top5[0],
        -c.loss_points(),
        match c.chosen {
            compact::Calibration::PerClass => "per-class",
            compact::Calibration::Shared => "shared",
        },
        100.0 * c.per_class_top1,
        100.0 * c.top5[1],
        100.0 * c.shared_top1,
        100.0 * c.top5[2]
    );
    if let (Some(g), Some((path, _))) = (&d.growth, &check) {
        println!("{}", growth_line(g, path, a.check_split));
    }
    let check = check.map(|(path, images)| unseen_check(a, &path, model, &d.modules, &images)).transpose()?;
    if a.json {
        print_json(&serde_json::json!({
            "kind": "compact", "modules": paths, "params_fraction": d.params_fraction(),
            "macs_fraction": d.macs_fraction(), "trunk_macs_fraction": d.trunk_macs_fraction(),
            "seconds": d.seconds, "cache_seconds": d.cache_seconds, "options": opts, "classes": d.reports,
            "negatives": d.negatives, "heldout_loss": d.check.loss_points(), "heldout": d.check, "check": check,
            "growth": d.growth,
        }));
    }
    Ok(())
}

/// The summary line of the check and what grew.
fn growth_line(g: &growth::GrowthReport, path: &std::path::Path, split: super::SplitArg) -> String {
    let split = format!("{:?}", Split::from(split)).to_lowercase();
    let grew = match g.rounds.iter().filter(|r| r.kept).count() {
        0 => "nothing grew".to_string(),
        kept => format!(
            "{kept} round(s) grew {} branch(es) in {:.0} s to {:+.2} / {:+.2}",
            g.grown, g.seconds, -g.tune.loss_points, -g.confirm.loss_points
        ),
    };
    format!(
        "checked on {} + {} images of {}'s {split} split, unseen by the base (the first half chooses, the second only confirms): the first training composed {:+.2} / {:+.2} points of top-1 against the base (target: at most {:.2} lost); {grew}; stopped: {}",
        g.tune.images,
        g.confirm.images,
        path.display(),
        -g.first_tune.loss_points,
        -g.first_confirm.loss_points,
        g.max_loss,
        serde_json::to_value(g.stopped).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    )
}
