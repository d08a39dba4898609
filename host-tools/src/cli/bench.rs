//! `classmod bench`: classmod and PyTorch CPU on the same images, one after the other in the same
//! minute, with images/s of each and their ratio (the measuring is `classmod_host::bench`'s; the
//! PyTorch side is `tools/pytorch_reference.py`, run by path). With `--peers`: classmod against
//! PyTorch, ONNX Runtime and OpenVINO in interleaved rounds (`classmod_host::bench::peers`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use classmod_host::bench::peers::{self, PeerRun};
use classmod_host::bench::{self, ReferenceRun, DEBIAN_PYTHON};
use classmod_host::dataset::ImageShape;
use classmod_host::progress;
use classmod_runtime::host::ResNet;

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
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    #[arg(long, default_value_t = 64, value_parser = super::batch_size())]
    batch: usize,
    /// Single-image forwards timed for the batch-1 latency (default 100; with --peers 300 per
    /// engine and round).
    #[arg(long)]
    batch1_iters: Option<usize>,
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
    /// Instead of the dataset run: classmod against the CPU engines an edge engineer would pick
    /// instead (PyTorch TorchScript, ONNX Runtime, OpenVINO with its latency and throughput
    /// hints) on the same float32 inputs (real images of --data) with the same threads, in
    /// interleaved rounds: batch-1 latency (median, p90) and batch throughput, ratios to classmod,
    /// each engine's logits against PyTorch's. Installs onnxruntime and openvino from PyPI into
    /// --venv when absent.
    #[arg(long)]
    peers: bool,
    /// With --peers: rounds (each measures every engine once).
    #[arg(long, default_value_t = 4, value_parser = super::at_least_one())]
    rounds: usize,
    /// With --peers: the peer engines, of pytorch, onnxruntime, openvino-latency, openvino-throughput.
    #[arg(long, value_delimiter = ',', default_values_t = peers::PEER_ENGINES.map(String::from))]
    peer_engines: Vec<String>,
    /// With --peers: images of --data every engine runs on (a whole number of batches).
    #[arg(long, default_value_t = 640)]
    peer_images: usize,
    /// With --peers: least seconds of each throughput figure.
    #[arg(long, default_value_t = 1.0, value_parser = super::positive)]
    min_seconds: f64,
    /// With --peers: the Python environment of the peers (default ~/.cache/classmod/peer-engines).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// With --peers: the peers' script; default `tools/peer_engines.py` of the workspace.
    #[arg(long)]
    peer_script: Option<PathBuf>,
    /// With --peers: also write the table and the figures as OUT/engines.md and OUT/engines.json.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn classmod_side(a: &Args) -> Result<serde_json::Value> {
    let device = a.device.device()?;
    let model = read_model(&a.model, &device)?;
    let net = ResNet::new(&model, &device).map_err(|e| model_error(&a.model, e))?;
    let spec = net.input_spec().clone();
    let shape = ImageShape::from(&spec);
    let t0 = Instant::now();
    let data = load_data(&a.data, a.split.into(), shape, Some(net.class_names()), a.limit, 0)?;
    let decode_seconds = t0.elapsed().as_secs_f64();
    let pb = progress::bar(data.len() as u64, "classmod");
    let figures = bench::measure(&net, &data, decode_seconds, a.batch, a.batch1_iters.unwrap_or(100), &pb)?;
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
        batch1_iters: a.batch1_iters.unwrap_or(100),
    })?)
}

fn peers_side(a: &Args) -> Result<()> {
    let device = a.device.device()?;
    let net = ResNet::new(&read_model(&a.model, &device)?, &device).map_err(|e| model_error(&a.model, e))?;
    let spec = net.input_spec().clone();
    let shape = ImageShape::from(&spec);
    anyhow::ensure!(a.batch >= 1 && a.rounds >= 1, "--batch and --rounds must be at least 1");
    let data = load_data(&a.data, a.split.into(), shape, Some(net.class_names()), Some(a.peer_images), 0)?;
    let n = data.len() / a.batch * a.batch;
    anyhow::ensure!(n > 0, "{}: {} images, fewer than one batch of {}", a.data.display(), data.len(), a.batch);
    let mut inputs = vec![0f32; n * spec.image_len()];
    for (i, x) in inputs.chunks_exact_mut(spec.image_len()).enumerate() {
        spec.normalize_into(data.image(i), x);
    }
    let run = PeerRun {
        model: a.model.clone(),
        script: a.peer_script.clone().unwrap_or_else(peers::default_script),
        venv: a.venv.clone().unwrap_or_else(peers::default_venv),
        base_python: a.python.clone(),
        engines: a.peer_engines.clone(),
        threads: bench::threads(),
        batch: a.batch,
        batch1_iters: a.batch1_iters.unwrap_or(300),
        min_seconds: a.min_seconds,
        rounds: a.rounds,
    };
    eprintln!(
        "classmod and {} on {n} images, {} rounds, {} threads each ...",
        run.engines.join(", "),
        run.rounds,
        run.threads
    );
    let pb = progress::bar(run.rounds as u64, "rounds");
    let shape4 = [n, spec.channels, spec.height, spec.width];
    let c = peers::compare(&net, &inputs, shape4, &run, &pb)?;
    let table = c.markdown();
    if !a.json {
        println!("{table}");
    }
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        let json = serde_json::json!({ "comparison": c, "summary": c.summary() });
        for (name, text) in [("engines.md", table), ("engines.json", serde_json::to_string_pretty(&json)?)] {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "comparison": c, "summary": c.summary() }));
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.peers {
        return peers_side(&a);
    }
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
        "(batch {}, {} images, {} threads, classmod's CPU kernel {}; ratio = classmod / PyTorch)",
        a.batch,
        f(&ours, "n"),
        f(&ours, "threads"),
        ours["cpu_kernel"].as_str().unwrap_or("?")
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
