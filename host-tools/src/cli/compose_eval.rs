//! `classmod compose-eval`

use std::path::PathBuf;

use anyhow::anyhow;
use anyhow::Result;
use classmod_host::compose_eval::{self, dataset_classes, others, restrict, source_classes, Composition, Reference};
use classmod_host::dataset::{ImageSet, ImageShape, Split};
use classmod_host::recalibrate::recalibrate;
use classmod_host::{progress, report};
use classmod_runtime::{MinScore, Rule};

use super::{load_data, print_json, EvalArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuleArg {
    Max,
    Vote,
}

#[derive(clap::Args)]
pub struct Args {
    /// Module blobs, or packed directories of them (as `decompose` writes).
    #[arg(long, num_args = 1.., required = true)]
    modules: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "max")]
    rule: RuleArg,
    /// Labelled images (ImageFolder, .tar.gz of one, CIFAR-10 binary or IDX directory). Once for
    /// modules of one dataset; or once per base model, in the order the bases first appear among
    /// the modules, when the bases were trained on different datasets (inter-dataset reuse: the
    /// union of their test images is scored, and each base beside it on its own images).
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Refit every module's head (as a calibrated head) against the other composed classes on
    /// the datasets' training images before scoring: for modules of models trained on different
    /// datasets, whose heads never saw each other's images. Masks stay as they are.
    #[arg(long)]
    recalibrate: bool,
    /// The score a module must reach to claim an image: `calibrated` (each module's own, set when
    /// it was packed), `off`, or a score in [0, 1]. Unless `off`, also reported: the share of
    /// the composed classes' images answered `none`, and of the dataset's other classes' images.
    #[arg(long, default_value = "calibrated")]
    min_score: MinScore,
    /// Training images per class for --recalibrate.
    #[arg(long, default_value_t = 200)]
    n_pos: usize,
    #[command(flatten)]
    eval: EvalArgs,
}

pub fn run(args: Args) -> Result<()> {
    let a = &args.eval;
    let device = a.device.device()?;
    let mut c = compose_eval::load(&args.modules, &device, a.precision.into())?;
    let spec = c.input_spec();
    let shape = ImageShape::from(spec);
    if args.recalibrate {
        let t0 = std::time::Instant::now();
        let (train, _) = composed_images(&c, &args.data, Split::Train, a.seed, shape)?;
        recalibrate(&mut c, &train, args.n_pos, a.seed, a.batch)?;
        eprintln!("heads recalibrated on {} training images in {:.1} s", train.len(), t0.elapsed().as_secs_f64());
    }
    let (images, other_images) = composed_images(&c, &args.data, a.split.into(), a.seed, shape)?;
    let (images, other_images) = match a.limit {
        Some(n) => (images.balanced_sample(n, a.seed), other_images.balanced_sample(n, a.seed)),
        None => (images, other_images),
    };
    let rule = match args.rule {
        RuleArg::Max => Rule::Max,
        RuleArg::Vote => Rule::Vote,
    };
    let pb = progress::bar(images.len() as u64, "compose");
    let reference = if args.data.len() > 1 { Reference::PerSource } else { Reference::RestrictedBase };
    let r = compose_eval::evaluate(&c, &images, rule, args.min_score, reference, a.batch, &pb)?;
    let masks = c.modules().iter().filter(|m| m.kind.kept_fraction().is_some()).count();
    println!(
        "composed from {} modules (rule {}{}){}:",
        r.modules.len(),
        r.rule,
        if args.recalibrate { ", heads recalibrated" } else { "" },
        if masks > 0 {
            format!(", mean nodes kept by the {masks} mask modules {:.1}%", 100.0 * r.nodes_kept)
        } else {
            String::new()
        }
    );
    print!("{}", report::eval_table(&r.composed));
    if let Some(b) = &r.base {
        println!(
            "base model on the same images, restricted to these classes: top-1 {:.2}%  top-5 {:.2}%  (composed - base: {:+.2} / {:+.2} points)",
            100.0 * b.top1,
            100.0 * b.top5,
            100.0 * (r.composed.top1 - b.top1),
            100.0 * (r.composed.top5 - b.top5)
        );
    }
    for s in &r.sources {
        println!(
            "images of {} ({}): {}, composed top-1 {:.2}%, that base alone told the source {:.2}% ({:+.2} points); {} given another base's class",
            s.base,
            s.classes.join(", "),
            s.n,
            100.0 * s.composed_top1,
            100.0 * s.base_top1,
            100.0 * (s.composed_top1 - s.base_top1),
            s.crossed
        );
    }
    if !r.sources.is_empty() {
        let n: usize = r.sources.iter().map(|s| s.n).sum();
        let told = r.sources.iter().map(|s| s.n as f64 * s.base_top1).sum::<f64>() / n.max(1) as f64;
        println!(
            "told the source, the bases alone would reach top-1 {:.2}% on these images (composed - told: {:+.2} points)",
            100.0 * told,
            100.0 * (r.composed.top1 - told)
        );
    }
    print!("{}", report::confusion_table(&r.modules, &r.confusion));
    let none = if args.min_score == MinScore::Off {
        None
    } else {
        let pb = progress::bar(other_images.len() as u64, "other classes");
        let n = compose_eval::none_answers(&c, &r, &images.labels, &other_images, rule, args.min_score, a.batch, &pb)?;
        pb.finish_and_clear();
        println!(
            "minimum score {}: {:.2}% of these classes' images answered none (top-1 counting none as wrong {:.2}%){}",
            n.min_score,
            100.0 * n.loaded_none,
            100.0 * n.top1_with_none,
            if n.others > 0 {
                format!("; {:.2}% of the {} images of the other classes answered none", 100.0 * n.others_none, n.others)
            } else {
                String::new()
            }
        );
        Some(n)
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["none_answers"] = serde_json::to_value(&none)?;
        v["seconds"] = r.composed.seconds.into();
        v["recalibrated"] = args.recalibrate.into();
        print_json(&v);
    }
    Ok(())
}

/// The images of the composed classes, labelled in composition order: one dataset read with every
/// base's classes, or one dataset per base read with that base's classes, concatenated.
fn composed_images(
    c: &Composition,
    data: &[PathBuf],
    split: Split,
    seed: u64,
    shape: ImageShape,
) -> Result<(ImageSet, ImageSet)> {
    if let [one] = data {
        let (classes, map) = dataset_classes(c);
        let all = load_data(one, split, shape, Some(&classes), None, seed)?;
        let rest = others(&all, &map);
        return Ok((restrict(all, &map, c.class_names()), rest));
    }
    if data.len() != c.groups().len() {
        let bases: Vec<String> = c.base_files.iter().map(|p| p.display().to_string()).collect();
        return Err(anyhow!(
            "{} datasets for {} base models: give one --data for all modules, or one per base in this order: {}",
            data.len(),
            c.groups().len(),
            bases.join(", ")
        ));
    }
    let (mut union, mut rest): (Option<ImageSet>, Option<ImageSet>) = (None, None);
    for (g, path) in data.iter().enumerate() {
        let (classes, map) = source_classes(c, g);
        let all = load_data(path, split, shape, Some(&classes), None, seed)?;
        let theirs = others(&all, &map);
        let set = restrict(all, &map, c.class_names());
        for (acc, s) in [(&mut union, set), (&mut rest, theirs)] {
            match acc.as_mut() {
                Some(u) => u.append(s),
                None => *acc = Some(s),
            }
        }
    }
    Ok((union.expect("at least two datasets"), rest.expect("at least two datasets")))
}
