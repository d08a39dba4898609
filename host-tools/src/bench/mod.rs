//! Speed against PyTorch, measured: classmod's forward and batch-1 latency on a dataset
//! ([`measure`]), and the PyTorch CPU reference (`tools/pytorch_reference.py`, a development
//! tool run by path, not part of the product) on the same images ([`run_pytorch`]). `classmod
//! bench` runs one after the other in the same minute and prints both with their ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use classmod_runtime::host::{ResNet, Tensor};
use serde::Serialize;

pub mod peers;

use crate::dataset::{ImageSet, Split};
use crate::{eval, HostError};

/// Debian's interpreter: a pyenv `python3` on PATH does not see Debian's `python3-torch`.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Where the PyTorch reference lives in a checkout of the workspace (this crate's sibling `tools/`).
pub fn default_reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/pytorch_reference.py")
}

/// classmod's side of a bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Images classified.
    pub n: usize,
    /// Top-1 accuracy, a fraction.
    pub top1: f64,
    /// Top-5 accuracy, a fraction.
    pub top5: f64,
    /// Seconds to decode the dataset (given by the caller, who decoded it).
    pub decode_seconds: f64,
    /// Seconds of all batches' forwards, normalisation included.
    pub forward_seconds: f64,
    /// Images per second, forward only.
    pub images_per_second_forward: f64,
    /// Images per second, decode and forward.
    pub images_per_second_end_to_end: f64,
    /// The batch size.
    pub batch: usize,
    /// Threads available to the engine.
    pub threads: usize,
    /// The CPU micro-kernel classmod ran (`avx512`, `avx2-fma`, ...; `CLASSMOD_CPU_KERNEL`).
    pub cpu_kernel: &'static str,
    /// Median latency of one image (normalise, forward, logits back), milliseconds.
    pub batch1_ms: f64,
}

/// The value at fraction `q` of the sorted values (nearest rank; `q` 0.5 is the median as
/// `statistics.median` gives it for odd counts); 0 for none.
pub(crate) fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

/// Threads the engines get (the same on both sides).
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Times `net` on `data` in batches of `batch` (after one warm-up batch), then `batch1_iters`
/// single images; normalisation is counted in the forward (PyTorch's side counts it in decode:
/// the stricter side for us).
pub fn measure(
    net: &ResNet,
    data: &ImageSet,
    decode_seconds: f64,
    batch: usize,
    batch1_iters: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Figures, HostError> {
    let spec = net.input_spec().clone();
    let warm = data.select(&(0..batch.min(data.len())).collect::<Vec<_>>());
    eval::logits(net, &warm, batch, &indicatif::ProgressBar::hidden())?;
    let r = eval::evaluate(net, data, batch, progress)?;
    let mut lat = Vec::with_capacity(batch1_iters);
    let mut x = vec![0f32; spec.image_len()];
    for i in 0..batch1_iters {
        let t = Instant::now();
        spec.normalize_into(data.image(i % data.len().max(1)), &mut x);
        let xt = Tensor::from_slice(&x, (1, spec.channels, spec.height, spec.width), net.device())?;
        net.forward(&xt)?.to_vec2::<f32>()?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Figures {
        n: r.n,
        top1: r.top1,
        top5: r.top5,
        decode_seconds,
        forward_seconds: r.seconds,
        images_per_second_forward: r.n as f64 / r.seconds,
        images_per_second_end_to_end: r.n as f64 / (decode_seconds + r.seconds),
        batch,
        threads: threads(),
        cpu_kernel: classmod_runtime::host::Microkernel::best().name(),
        batch1_ms: percentile(&lat, 0.5),
    })
}

/// Why the PyTorch side could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The interpreter lacks torch (and this process could not install it).
    #[error("{python} cannot import torch: run `apt-get install -y python3-torch python3-pil` (or pass --python, or --no-pytorch)")]
    NoTorch {
        /// The interpreter.
        python: String,
    },
    /// The script is not where it was looked for.
    #[error("{}: the PyTorch reference is not there (run from a checkout of the workspace, or pass --reference PATH)", .0.display())]
    NoScript(PathBuf),
    /// The interpreter could not be started.
    #[error("cannot run {python}: {error}")]
    Spawn {
        /// The interpreter.
        python: String,
        /// Why.
        error: std::io::Error,
    },
    /// The script failed; its last line of stderr.
    #[error("the PyTorch reference failed: {0}")]
    Failed(String),
    /// The script's last line was not JSON.
    #[error("the PyTorch reference printed no JSON ({reason}): {line}")]
    NoJson {
        /// The parser's complaint.
        reason: String,
        /// The line.
        line: String,
    },
}

/// Makes sure `python` imports torch, numpy and PIL; as root with Debian's interpreter, installs
/// Debian's packages when they are absent.
pub fn ensure_torch(python: &str) -> Result<(), ReferenceError> {
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
    Err(ReferenceError::NoTorch { python: python.to_string() })
}

/// What the PyTorch side is asked to do.
pub struct ReferenceRun<'a> {
    /// Interpreter with torch.
    pub python: &'a str,
    /// `pytorch_reference.py`.
    pub script: &'a Path,
    /// The classmod model file (both sides read it: same weights, same normalisation).
    pub model: &'a Path,
    /// The dataset.
    pub data: &'a Path,
    /// Its split.
    pub split: Split,
    /// A class-balanced sample of this many images, if given.
    pub limit: Option<usize>,
    /// Batch size.
    pub batch: usize,
    /// Single-image forwards for the batch-1 latency.
    pub batch1_iters: usize,
}

/// Runs the PyTorch reference and returns the JSON object it prints last.
pub fn run_pytorch(r: &ReferenceRun) -> Result<serde_json::Value, ReferenceError> {
    if !r.script.is_file() {
        return Err(ReferenceError::NoScript(r.script.to_path_buf()));
    }
    ensure_torch(r.python)?;
    let mut cmd = Command::new(r.python);
    cmd.arg(r.script)
        .arg("--model")
        .arg(r.model)
        .arg("--data")
        .arg(r.data)
        .args(["--split", if r.split == Split::Test { "test" } else { "train" }])
        .args(["--batch", &r.batch.to_string(), "--batch1-iters", &r.batch1_iters.to_string()])
        // Same number of threads on both sides (torch 1.13 defaults to one here).
        .args(["--threads", &threads().to_string()]);
    if let Some(n) = r.limit {
        cmd.args(["--limit", &n.to_string()]);
    }
    let out = cmd.output().map_err(|error| ReferenceError::Spawn { python: r.python.to_string(), error })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(ReferenceError::Failed(err.lines().last().unwrap_or("(no output)").to_string()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| ReferenceError::NoJson { reason: e.to_string(), line: last.to_string() })
}
