//! `classmod compose-eval`

use std::path::PathBuf;

use anyhow::Result;
use classmod_host::compose_eval::{self, dataset_classes, restrict};
use classmod_host::dataset::ImageShape;
use classmod_host::{progress, report};
use classmod_runtime::compose::Rule;

use super::{load_data, print_json, EvalArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuleArg {
    Max,
    Vote,
}

#[derive(clap::Args)]
pub struct Args {
    /// Module files, or directories of them (`*.module.safetensors`).
    #[arg(long, num_args = 1.., required = true)]
    modules: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "max")]
    rule: RuleArg,
    #[command(flatten)]
    eval: EvalArgs,
}

pub fn run(args: Args) -> Result<()> {
    let a = &args.eval;
    let device = a.device.device()?;
    let c = compose_eval::load(&args.modules, &device)?;
    let spec = c.input_spec();
    let shape = ImageShape { channels: spec.channels, height: spec.height, width: spec.width };
    let (classes, map) = dataset_classes(&c);
    let all = load_data(&a.data, a.split, shape, Some(&classes), None, a.seed)?;
    let images = restrict(all, &map, c.class_names());
    let images = match a.limit {
        Some(n) => images.balanced_sample(n, a.seed),
        None => images,
    };
    let rule = match args.rule {
        RuleArg::Max => Rule::Max,
        RuleArg::Vote => Rule::Vote,
    };
    let pb = progress::bar(images.len() as u64, "compose");
    let r = compose_eval::evaluate(&c, &images, rule, a.batch, &pb)?;
    println!(
        "composed from {} modules (rule {}), mean nodes kept {:.1}%:",
        r.modules.len(),
        r.rule,
        100.0 * r.nodes_kept
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
    print!("{}", report::confusion_table(&r.modules, &r.confusion));
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = r.composed.seconds.into();
        print_json(&v);
    }
    Ok(())
}
