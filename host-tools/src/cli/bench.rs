//! `classmod bench`: classmod and PyTorch CPU on the same images, one after the other in the same
//! minute, with images/s of each and their ratio. The PyTorch side is
//! `host-tools/scripts/pytorch_reference.py` (embedded in the binary), run with `--python`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use classmod_host::dataset::{ImageShape, Split};
use classmod_host::{eval, progress};
use classmod_runtime::{ResNet, Tensor};

use super::{load_data, model_error, print_json, read_model, DeviceArg};

const DEBIAN_PYTHON: &str = "/usr/bin/python3";
const PYTORCH_SCRIPT: &str = include_str!("../../scripts/pytorch_reference.py");

#[derive(clap::Args)]
pub struct Args {
    /// A classmod model file (both sides read it, so they use the same weights and normalisation).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
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
    /// Only measure classmod.
    #[arg(long)]
    no_pytorch: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn classmod_side(a: &Args) -> Result<serde_json::Value> {
    let device = a.device.device()?;
    let model = read_model(&a.model, &device)?;
    let net = ResNet::new(&model, &device).map_err(|e| model_error(&a.model, e))?;
    let spec = net.input_spec().clone();
    let shape = ImageShape { channels: spec.channels, height: spec.height, width: spec.width };
    let t0 = Instant::now();
    let data = load_data(&a.data, a.split, shape, Some(net.class_names()), a.limit, 0)?;
    let decode_seconds = t0.elapsed().as_secs_f64();
    // Warm-up batch, then all batches (normalisation included, as PyTorch's side includes it in
    // its decode time: we count it in forward, the stricter side for us).
    let warm = data.select(&(0..a.batch.min(data.len())).collect::<Vec<_>>());
    eval::logits(&net, &warm, a.batch, &indicatif::ProgressBar::hidden())?;
    let pb = progress::bar(data.len() as u64, "classmod");
    let r = eval::evaluate(&net, &data, a.batch, &pb)?;
    let mut lat = Vec::with_capacity(a.batch1_iters);
    let mut x = vec![0f32; spec.image_len()];
    for i in 0..a.batch1_iters {
        let t = Instant::now();
        spec.normalize_into(data.image(i % data.len()), &mut x);
        let xt = Tensor::from_slice(&x, (1, spec.channels, spec.height, spec.width), &device)?;
        net.forward(&xt)?.to_vec2::<f32>()?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(serde_json::json!({
        "n": r.n, "top1": r.top1, "top5": r.top5, "decode_seconds": decode_seconds,
        "forward_seconds": r.seconds, "images_per_second_forward": r.n as f64 / r.seconds,
        "images_per_second_end_to_end": r.n as f64 / (decode_seconds + r.seconds),
        "batch": a.batch, "threads": rayon_threads(), "batch1_ms": median(lat),
    }))
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn ensure_torch(python: &str) -> Result<()> {
    let ok = |py: &str| {
        Command::new(py).args(["-c", "import torch, numpy, PIL"]).output().map(|o| o.status.success()).unwrap_or(false)
    };
    if ok(python) {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if root && python == DEBIAN_PYTHON {
        eprintln!("PyTorch is absent: installing Debian's python3-torch (apt-get) ...");
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "python3-torch", "python3-numpy", "python3-pil"])
            .status();
        if ok(python) {
            return Ok(());
        }
    }
    Err(anyhow!("{python} cannot import torch: run `apt-get install -y python3-torch python3-pil` (or pass --python, or --no-pytorch)"))
}

fn pytorch_side(a: &Args) -> Result<serde_json::Value> {
    ensure_torch(&a.python)?;
    let script = std::env::temp_dir().join(format!("classmod-pytorch-reference-{}.py", std::process::id()));
    std::fs::write(&script, PYTORCH_SCRIPT).with_context(|| script.display().to_string())?;
    let mut cmd = Command::new(&a.python);
    cmd.arg(&script)
        .arg("--model")
        .arg(&a.model)
        .arg("--data")
        .arg(&a.data)
        .args(["--split", if a.split == Split::Test { "test" } else { "train" }])
        .args(["--batch", &a.batch.to_string(), "--batch1-iters", &a.batch1_iters.to_string()])
        // Same number of threads on both sides (torch 1.13 defaults to one here).
        .args(["--threads", &rayon_threads().to_string()]);
    if let Some(n) = a.limit {
        cmd.args(["--limit", &n.to_string()]);
    }
    eprintln!("running PyTorch on the same images ...");
    let out = cmd.output().with_context(|| format!("cannot run {}", a.python))?;
    let _ = std::fs::remove_file(&script);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow!("the PyTorch reference failed: {}", err.lines().last().unwrap_or("(no output)")));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| anyhow!("the PyTorch reference printed no JSON ({e}): {last}"))
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
