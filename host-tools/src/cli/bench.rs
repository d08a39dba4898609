//! `classmod bench`: classmod and PyTorch CPU on the same images, one after the other in the same
//! minute, with images/s of each and their ratio (the measuring is `classmod_host::bench`'s; the
//! PyTorch side is `tools/pytorch_reference.py`, run by path).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use classmod_host::bench::{self, ReferenceRun, DEBIAN_PYTHON};
use classmod_host::dataset::ImageShape;
use classmod_host::progress;
use classmod_runtime::ResNet;

use super::{load_data, model_error, print_json, read_model, DeviceArg, SplitArg};

#[derive(clap::Args)]
pub struct Args {
    /// A classmod model file (both sides read it, so they use the same weights and normalisation).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Single-image forwards timed for the batch-1 latency.
    #[arg(long, default_value_t = 100)]
    batch1_iters: usize,
    /// Python with torch (Debian: python3-torch, installed by this command when absent and root;
    /// Debian's interpreter, since a pyenv `python3` on PATH does not see Debian's packages).
    #[arg(long, default_value = DEBIAN_PYTHON)]
    python: String,
    /// The PyTorch reference script; default `tools/pytorch_reference.py` of the workspace this
    /// binary was built from.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Only measure classmod.
    #[arg(long)]
    no_pytorch: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    json: bool,
}

fn classmod_side(a: &Args) -> Result<serde_json::Value> {
    let device = a.device.device()?;
    let model = read_model(&a.model, &device)?;
    let net = ResNet::new(&model, &device).map_err(|e| model_error(&a.model, e))?;
    let spec = net.input_spec().clone();
    let shape = ImageShape { channels: spec.channels, height: spec.height, width: spec.width };
    let t0 = Instant::now();
    let data = load_data(&a.data, a.split.into(), shape, Some(net.class_names()), a.limit, 0)?;
    let decode_seconds = t0.elapsed().as_secs_f64();
    let pb = progress::bar(data.len() as u64, "classmod");
    let figures = bench::measure(&net, &data, decode_seconds, a.batch, a.batch1_iters, &pb)?;
    Ok(serde_json::to_value(figures)?)
}

fn pytorch_side(a: &Args) -> Result<serde_json::Value> {
    let script = a.reference.clone().unwrap_or_else(bench::default_reference);
    eprintln!("running PyTorch on the same images ...");
    Ok(bench::run_pytorch(&ReferenceRun {
        python: &a.python,
        script: &script,
        model: &a.model,
        data: &a.data,
        split: a.split.into(),
        limit: a.limit,
        batch: a.batch,
        batch1_iters: a.batch1_iters,
    })?)
}

pub fn run(a: Args) -> Result<()> {
    let ours = classmod_side(&a)?;
    let theirs = if a.no_pytorch { serde_json::Value::Null } else { pytorch_side(&a)? };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("{:<34} {:>12} {:>12} {:>8}", "", "classmod", "PyTorch", "ratio");
    for (label, ours_key, theirs_key) in [
        ("images/s, forward (batch)", "images_per_second_forward", "images_per_second_forward"),
        ("images/s, end to end (decode+fwd)", "images_per_second_end_to_end", "images_per_second_end_to_end"),
        ("decode seconds (lower is better)", "decode_seconds", "decode_seconds"),
        ("batch-1 ms, median (lower better)", "batch1_ms", "batch1_ms"),
        // Debian's torch sends batch-1 convolutions to reference BLAS; the script also times
        // them forced through oneDNN, PyTorch's fast path, which is the fair baseline.
        ("batch-1 ms vs PyTorch+oneDNN", "batch1_ms", "batch1_ms_onednn"),
        ("top-1", "top1", "top1"),
    ] {
        let (x, y) = (f(&ours, ours_key), f(&theirs, theirs_key));
        println!("{label:<34} {x:>12.4} {y:>12.4} {:>8.3}", x / y);
    }
    println!(
        "(batch {}, {} images, {} threads; ratio = classmod / PyTorch)",
        a.batch,
        f(&ours, "n"),
        f(&ours, "threads")
    );
    if a.json {
        let ratio = f(&ours, "images_per_second_forward") / f(&theirs, "images_per_second_forward");
        let ratio_e2e = f(&ours, "images_per_second_end_to_end") / f(&theirs, "images_per_second_end_to_end");
        print_json(&serde_json::json!({
            "classmod": ours, "pytorch": theirs, "ratio_forward": ratio, "ratio_end_to_end": ratio_e2e,
            "top1": f(&ours, "top1"), "top5": f(&ours, "top5"), "n": f(&ours, "n"),
        }));
    }
    Ok(())
}
