//! `classmod eval`

use std::path::PathBuf;

use anyhow::Result;
use classmod_host::dataset::ImageShape;
use classmod_host::{eval, progress, report};
use classmod_runtime::host::ResNet;

use super::{load_data, model_error, print_json, read_model, EvalArgs};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// ImageFolder directory, .tar.gz of one, CIFAR-10 binary or IDX directory.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    eval: EvalArgs,
}

pub fn run(args: Args) -> Result<()> {
    let (model_path, a) = (&args.model, &args.eval);
    let device = a.device.device()?;
    let model = read_model(model_path, &device)?;
    let net = ResNet::new(&model, &device)
        .and_then(|n| n.with_precision(a.precision.into()))
        .map_err(|e| model_error(model_path, e))?;
    let spec = net.input_spec();
    let shape = ImageShape::from(spec);
    let t0 = std::time::Instant::now();
    let data = load_data(&args.data, a.split.into(), shape, Some(net.class_names()), a.limit, a.seed)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let pb = progress::bar(data.len() as u64, "eval");
    let r = eval::evaluate(&net, &data, a.batch, &pb).map_err(|e| model_error(model_path, e))?;
    print!("{}", report::eval_table(&r));
    println!(
        "({} {} images of {} read in {:.1} s)",
        data.len(),
        format!("{:?}", a.split).to_lowercase(),
        args.data.display(),
        load_seconds
    );
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["load_seconds"] = load_seconds.into();
        v["total_seconds"] = t0.elapsed().as_secs_f64().into();
        v["model"] = net.architecture().name().into();
        print_json(&v);
    }
    Ok(())
}
