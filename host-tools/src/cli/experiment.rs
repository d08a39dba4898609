//! `classmod experiment`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::dataset::{ImageShape, Split};
use classmod_host::decompose::{DecomposeOptions, HeadKind};
use classmod_host::experiment::tradeoff;
use classmod_host::progress;
use classmod_runtime::module_file::base_key;
use classmod_runtime::ModelFile;

use super::{load_data, model_error, print_json, PathContext};

#[derive(clap::Subcommand)]
pub enum Experiment {
    /// Nodes kept vs composed accuracy over keep/tangle rates and both heads.
    Tradeoff(TradeoffArgs),
}

#[derive(clap::Args)]
pub struct TradeoffArgs {
    #[arg(long)]
    model: PathBuf,
    /// The model's dataset: `train` gives positives and negatives, `test` scores compositions.
    #[arg(long)]
    data: PathBuf,
    /// Where tradeoff.md, tradeoff.json and tradeoff.svg go.
    #[arg(long)]
    out: PathBuf,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long)]
    limit: Option<usize>,
    /// `keep:tangle` pairs, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1.0:0.0,0.9:0.02,0.9:0.05,0.8:0.1,0.5:0.1,0.5:0.2,0.5:0.3,0.5:0.5"
    )]
    settings: Vec<String>,
    #[arg(long, value_delimiter = ',', value_enum, default_value = "channel,calibrated")]
    heads: Vec<HeadKind>,
    #[arg(long, default_value_t = 200)]
    n_pos: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub fn run(e: Experiment) -> Result<()> {
    match e {
        Experiment::Tradeoff(a) => run_tradeoff(a),
    }
}

fn run_tradeoff(a: TradeoffArgs) -> Result<()> {
    let settings = a
        .settings
        .iter()
        .map(|s| {
            let (k, t) = s.split_once(':').ok_or_else(|| anyhow!("--settings: `{s}` is not keep:tangle"))?;
            Ok((k.trim().parse::<f64>()?, t.trim().parse::<f64>()?))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = std::fs::read(&a.model).at(&a.model)?;
    let model = ModelFile::from_bytes(&bytes, &classmod_runtime::Device::Cpu).map_err(|e| model_error(&a.model, e))?;
    let spec = &model.meta.input;
    let shape = ImageShape { channels: spec.channels, height: spec.height, width: spec.width };
    let names = &model.meta.class_names;
    let train = load_data(&a.data, Split::Train, shape, Some(names), None, a.seed)?;
    let test = load_data(&a.data, Split::Test, shape, Some(names), a.limit, a.seed)?;
    let opts = DecomposeOptions {
        n_pos: a.n_pos,
        pos_conf: 0.9,
        keep_rate: 0.0,
        tangle_rate: 0.0,
        head: HeadKind::Channel,
        classes: None,
        seed: a.seed,
        batch: 32,
    };
    let pb = progress::bar((settings.len() * a.heads.len()) as u64, "settings");
    let r = tradeoff::run(&model, &base_key(&bytes), &train, &test, &opts, &settings, &a.heads, &pb)?;
    pb.finish_and_clear();
    tradeoff::write(&a.out, &r).at(&a.out)?;
    print!("{}", tradeoff::markdown(&r));
    println!("\nwritten: {}/tradeoff.{{md,json,svg}}", a.out.display());
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] =
            (r.observe_seconds + r.points.iter().map(|p| p.build_seconds + p.eval_seconds).sum::<f64>()).into();
        print_json(&v);
    }
    Ok(())
}
