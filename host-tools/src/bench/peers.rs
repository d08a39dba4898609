//! classmod against the CPU engines an edge engineer would pick instead of it: PyTorch
//! (TorchScript, oneDNN), ONNX Runtime and OpenVINO (its latency and its throughput hint), on
//! the same float32 inputs with the same number of threads, in interleaved rounds so that every
//! engine is measured in the same minutes of this shared, noisy machine.
//!
//! The peers run in `tools/peer_engines.py` (a development tool run by path, like the PyTorch
//! reference): a child process that exports the model to ONNX with PyTorch, loads every engine
//! once, and answers each `round` with one JSON line. It runs in a venv over Debian's torch with
//! PyPI's `onnxruntime` and `openvino`, made once by [`ensure_venv`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use classmod_runtime::host::{ResNet, Tensor};
use serde::{Deserialize, Serialize};

use super::{ensure_torch, percentile, ReferenceError};
use crate::HostError;

/// The engine names `tools/peer_engines.py` knows, in its order.
pub const PEER_ENGINES: [&str; 4] = ["pytorch", "onnxruntime", "openvino-latency", "openvino-throughput"];

/// classmod's own row.
pub const CLASSMOD: &str = "classmod";

/// How many of the inputs every engine's logits are checked on against PyTorch eager's.
pub const CHECKED_INPUTS: usize = 64;

/// Where the peer script lives in a checkout of the workspace.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/peer_engines.py")
}

/// The peers' venv: `$XDG_CACHE_HOME/classmod/peer-engines` (else `~/.cache/...`), made once.
pub fn default_venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("classmod").join("peer-engines")
}

/// Why the peers could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Debian's torch is missing (the export and the PyTorch engine need it).
    #[error(transparent)]
    Torch(#[from] ReferenceError),
    /// The script is not where it was looked for.
    #[error("{}: the peer-engine script is not there (run from a checkout of the workspace, or pass --peer-script PATH)", .0.display())]
    NoScript(PathBuf),
    /// The venv could not be made or lacks a package after installing.
    #[error("cannot set up the peer engines' Python environment {}: {why}", .venv.display())]
    Venv {
        /// The venv's directory.
        venv: PathBuf,
        /// What failed.
        why: String,
    },
    /// A process could not be started or spoken to.
    #[error("cannot run {what}: {error}")]
    Io {
        /// The program.
        what: String,
        /// Why.
        error: std::io::Error,
    },
    /// The script ended; its last line of stderr.
    #[error("the peer engines failed: {0}")]
    Failed(String),
    /// A line that is not what the protocol says.
    #[error("the peer engines printed something else than their JSON ({reason}): {line}")]
    Protocol {
        /// The parser's complaint.
        reason: String,
        /// The line, cut to 300 characters.
        line: String,
    },
}

/// Makes sure `venv` has a python that imports torch (Debian's, through `--system-site-packages`),
/// onnxruntime and openvino; creates the venv and installs the two from PyPI when absent (one line
/// says so). `numpy<2` keeps Debian's torch 1.13, built against numpy 1, importable. Returns the
/// venv's interpreter.
pub fn ensure_venv(venv: &Path, base_python: &str) -> Result<PathBuf, PeerError> {
    let python = venv.join("bin").join("python");
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", "import torch, onnxruntime, openvino"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if imports(&python) {
        return Ok(python);
    }
    ensure_torch(base_python)?;
    eprintln!("installing onnxruntime and openvino from PyPI into {} (once) ...", venv.display());
    let fail = |why: String| PeerError::Venv { venv: venv.to_path_buf(), why };
    let run = |cmd: &mut Command, what: &str| -> Result<(), PeerError> {
        let out = cmd.output().map_err(|e| fail(format!("{what}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!("{what}: {}", err.lines().last().unwrap_or("(no output)"))))
    };
    if !python.exists() {
        run(Command::new(base_python).arg("-m").arg("venv").arg("--system-site-packages").arg(venv), "python -m venv")?;
    }
    run(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "onnxruntime",
            "openvino",
            "numpy<2",
        ]),
        "pip install onnxruntime openvino",
    )?;
    if !imports(&python) {
        return Err(fail("torch, onnxruntime or openvino still does not import".into()));
    }
    Ok(python)
}

/// One engine's figures in one round.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EngineFigures {
    /// Median latency of one image, milliseconds.
    pub batch1_median_ms: f64,
    /// 90th percentile of the same calls.
    pub batch1_p90_ms: f64,
    /// Images per second at the throughput batch.
    pub batch_images_per_second: f64,
}

/// What the peer process says once loaded.
#[derive(Debug, Clone, Deserialize)]
struct Ready {
    versions: BTreeMap<String, String>,
    max_abs_diff_vs_pytorch_eager: BTreeMap<String, f64>,
    engines: Vec<String>,
    config: serde_json::Value,
    reference_logits: Vec<Vec<f32>>,
}

/// The running peer process.
struct PeerProcess {
    child: Child,
    // An Option so that dropping it (EOF) can come before the wait.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    last_stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl PeerProcess {
    fn spawn(python: &Path, run: &PeerRun, inputs: &Path, shape: [usize; 4]) -> Result<(Self, Ready), PeerError> {
        let shape_arg = shape.map(|d| d.to_string()).join(",");
        let mut child = Command::new(python)
            .arg(&run.script)
            .arg("--model")
            .arg(&run.model)
            .arg("--inputs")
            .arg(inputs)
            .args(["--shape", &shape_arg])
            .args(["--threads", &run.threads.to_string(), "--batch", &run.batch.to_string()])
            .args(["--batch1-iters", &run.batch1_iters.to_string()])
            .args(["--min-seconds", &run.min_seconds.to_string()])
            .args(["--engines", &run.engines.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| PeerError::Io { what: python.display().to_string(), error })?;
        // Its notes pass through to our stderr; the last one is the error if it dies.
        let last_stderr = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let keep = Arc::clone(&last_stderr);
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("peers: {line}");
                *keep.lock().unwrap_or_else(|p| p.into_inner()) = line;
            }
        });
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut process =
            PeerProcess { child, stdin: Some(stdin), stdout, last_stderr, stderr_reader: Some(stderr_reader) };
        let ready = process.read::<ReadyLine>()?.ready;
        Ok((process, ready))
    }

    fn read<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, PeerError> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|error| PeerError::Io { what: "the peer engines".into(), error })?;
        if n == 0 {
            let _ = self.child.wait();
            // Its stderr ends with it: the reader has seen the last line once joined.
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
            let last = self.last_stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(PeerError::Failed(if last.is_empty() { "(no output)".into() } else { last }));
        }
        serde_json::from_str(&line).map_err(|e| PeerError::Protocol {
            reason: e.to_string(),
            line: line.trim_end().chars().take(300).collect(),
        })
    }

    fn round(&mut self) -> Result<BTreeMap<String, EngineFigures>, PeerError> {
        let stdin = self.stdin.as_mut().expect("open until dropped");
        writeln!(stdin, "round").map_err(|error| PeerError::Io { what: "the peer engines".into(), error })?;
        Ok(self.read::<RoundLine>()?.round)
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        // A script that ignores both "quit" and end of input is stopped after a grace period.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[derive(Deserialize)]
struct ReadyLine {
    ready: Ready,
}

#[derive(Deserialize)]
struct RoundLine {
    round: BTreeMap<String, EngineFigures>,
}

/// What `classmod bench --peers` asks for.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// The classmod model file (the peers rebuild the same network from it).
    pub model: PathBuf,
    /// `tools/peer_engines.py`.
    pub script: PathBuf,
    /// The venv the peers run in.
    pub venv: PathBuf,
    /// An interpreter with Debian's torch, the venv's base.
    pub base_python: String,
    /// Peer engines to run, of [`PEER_ENGINES`].
    pub engines: Vec<String>,
    /// Threads, the same for every engine.
    pub threads: usize,
    /// The throughput batch.
    pub batch: usize,
    /// Single-image calls per engine and round.
    pub batch1_iters: usize,
    /// Least seconds of one throughput figure.
    pub min_seconds: f64,
    /// Rounds; each measures every engine once, classmod first in even rounds and last in odd.
    pub rounds: usize,
}

/// classmod's side: the same measurements the peer script makes, on the same inputs.
struct ClassmodEngine<'a> {
    net: &'a ResNet,
    inputs: &'a [f32],
    shape: [usize; 4],
}

impl ClassmodEngine<'_> {
    fn image_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    fn logits(&self, first: usize, count: usize) -> Result<Vec<Vec<f32>>, HostError> {
        let [_, c, h, w] = self.shape;
        let x = &self.inputs[first * self.image_len()..(first + count) * self.image_len()];
        let t = Tensor::from_slice(x, (count, c, h, w), self.net.device())?;
        Ok(self.net.forward(&t)?.to_vec2::<f32>()?)
    }

    fn latency_ms(&self, iters: usize) -> Result<(f64, f64), HostError> {
        let singles = self.shape[0].min(64);
        for i in 0..iters.min(10) {
            self.logits(i % singles, 1)?;
        }
        let mut times = Vec::with_capacity(iters);
        for i in 0..iters {
            let t = Instant::now();
            self.logits(i % singles, 1)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok((percentile(&times, 0.5), percentile(&times, 0.9)))
    }

    fn throughput(&self, batch: usize, min_seconds: f64) -> Result<f64, HostError> {
        let batches = self.shape[0] / batch;
        self.logits(0, batch)?;
        let (mut done, t) = (0usize, Instant::now());
        loop {
            for b in 0..batches {
                self.logits(b * batch, batch)?;
            }
            done += batches * batch;
            let elapsed = t.elapsed().as_secs_f64();
            if elapsed >= min_seconds {
                return Ok(done as f64 / elapsed);
            }
        }
    }

    fn measure(&self, run: &PeerRun) -> Result<EngineFigures, HostError> {
        let (batch1_median_ms, batch1_p90_ms) = self.latency_ms(run.batch1_iters)?;
        let batch_images_per_second = self.throughput(run.batch, run.min_seconds)?;
        Ok(EngineFigures { batch1_median_ms, batch1_p90_ms, batch_images_per_second })
    }
}

/// The inputs written for the peers, removed when dropped.
struct InputsFile(PathBuf);

impl InputsFile {
    fn write(inputs: &[f32]) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("classmod-peer-inputs-{}.f32", std::process::id()));
        let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes)?;
        Ok(InputsFile(path))
    }
}

impl Drop for InputsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every round's figures per engine, and how far each engine's logits are from PyTorch eager's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Threads every engine had.
    pub threads: usize,
    /// The throughput batch.
    pub batch: usize,
    /// Single-image calls per engine and round.
    pub batch1_iters: usize,
    /// Inputs (real images, normalised by classmod) every engine ran on.
    pub inputs: usize,
    /// Versions of the peers' libraries.
    pub versions: BTreeMap<String, String>,
    /// The CPU micro-kernel classmod ran (`avx512`, `avx2-fma`, ...; `CLASSMOD_CPU_KERNEL`).
    pub cpu_kernel: String,
    /// Max abs difference of each engine's logits from PyTorch eager's on the first
    /// [`CHECKED_INPUTS`] inputs (classmod's included).
    pub max_abs_diff: BTreeMap<String, f64>,
    /// Peer-specific settings (OpenVINO's infer requests).
    pub config: serde_json::Value,
    /// Engines in table order: classmod first.
    pub engines: Vec<String>,
    /// Per round, per engine.
    pub rounds: Vec<BTreeMap<String, EngineFigures>>,
}

/// One engine over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct EngineSummary {
    /// Its name.
    pub engine: String,
    /// Lowest and highest batch-1 median over the rounds, ms.
    pub batch1_median_ms: (f64, f64),
    /// Lowest and highest batch-1 p90, ms.
    pub batch1_p90_ms: (f64, f64),
    /// Lowest and highest throughput, images/s.
    pub batch_images_per_second: (f64, f64),
    /// Median over rounds of this engine's batch-1 median over classmod's in the same round:
    /// above 1, classmod is faster.
    pub batch1_vs_classmod: f64,
    /// Median over rounds of classmod's throughput over this engine's: above 1, classmod is faster.
    pub throughput_vs_classmod: f64,
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

impl Comparison {
    /// Each engine's ranges and its median ratio to classmod in the same rounds.
    pub fn summary(&self) -> Vec<EngineSummary> {
        self.engines
            .iter()
            .map(|engine| {
                let rows: Vec<(EngineFigures, EngineFigures)> =
                    self.rounds.iter().filter_map(|r| Some((*r.get(engine)?, *r.get(CLASSMOD)?))).collect();
                let median = |v: Vec<f64>| percentile(&v, 0.5);
                EngineSummary {
                    engine: engine.clone(),
                    batch1_median_ms: range(rows.iter().map(|(e, _)| e.batch1_median_ms)),
                    batch1_p90_ms: range(rows.iter().map(|(e, _)| e.batch1_p90_ms)),
                    batch_images_per_second: range(rows.iter().map(|(e, _)| e.batch_images_per_second)),
                    batch1_vs_classmod: median(
                        rows.iter().map(|(e, c)| e.batch1_median_ms / c.batch1_median_ms).collect(),
                    ),
                    throughput_vs_classmod: median(
                        rows.iter().map(|(e, c)| c.batch_images_per_second / e.batch_images_per_second).collect(),
                    ),
                }
            })
            .collect()
    }

    /// A Markdown table: one row per engine, ranges over the rounds, ratios to classmod.
    pub fn markdown(&self) -> String {
        let b = self.batch;
        let mut s = format!(
            "| engine | batch-1 median ms | batch-1 p90 ms | batch-{b} img/s | batch-1 vs classmod | batch-{b} vs classmod | max abs diff vs PyTorch |\n|---|---|---|---|---|---|---|\n"
        );
        for e in self.summary() {
            let diff = self.max_abs_diff.get(&e.engine).map_or("-".into(), |d| format!("{d:.1e}"));
            s.push_str(&format!(
                "| {} | {:.3}-{:.3} | {:.3}-{:.3} | {:.0}-{:.0} | {:.2} | {:.2} | {diff} |\n",
                e.engine,
                e.batch1_median_ms.0,
                e.batch1_median_ms.1,
                e.batch1_p90_ms.0,
                e.batch1_p90_ms.1,
                e.batch_images_per_second.0,
                e.batch_images_per_second.1,
                e.batch1_vs_classmod,
                e.throughput_vs_classmod,
            ));
        }
        s.push_str(&format!(
            "\n{} rounds, {} threads for every engine, {} inputs, {} single-image calls per engine and round; \
             ranges over the rounds. Ratios: the median over rounds of (engine / classmod) for batch-1 latency \
             and (classmod / engine) for throughput, both measured in the same round: above 1, classmod is faster. \
             classmod's CPU kernel: {}. Versions: {}.\n",
            self.rounds.len(),
            self.threads,
            self.inputs,
            self.batch1_iters,
            self.cpu_kernel,
            self.versions.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        ));
        s
    }
}

/// Measures classmod's `net` and the peer engines on `inputs` (float32 NCHW, `shape`), in
/// `run.rounds` interleaved rounds, after checking every engine's logits against PyTorch eager's.
pub fn compare(
    net: &ResNet,
    inputs: &[f32],
    shape: [usize; 4],
    run: &PeerRun,
    progress: &indicatif::ProgressBar,
) -> Result<Comparison, HostError> {
    assert_eq!(inputs.len(), shape.iter().product::<usize>(), "compare: inputs do not fit the shape");
    if !run.script.is_file() {
        return Err(PeerError::NoScript(run.script.clone()).into());
    }
    let python = ensure_venv(&run.venv, &run.base_python)?;
    let file = InputsFile::write(inputs).map_err(|error| HostError::io(std::env::temp_dir(), error))?;
    let (mut peers, ready) = PeerProcess::spawn(&python, run, &file.0, shape)?;
    let ours = ClassmodEngine { net, inputs, shape };
    let checked = ready.reference_logits.len();
    let our_logits = ours.logits(0, checked)?;
    let diff = our_logits
        .iter()
        .flatten()
        .zip(ready.reference_logits.iter().flatten())
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let mut max_abs_diff = ready.max_abs_diff_vs_pytorch_eager.clone();
    max_abs_diff.insert(CLASSMOD.into(), diff);
    let mut engines = vec![CLASSMOD.to_string()];
    engines.extend(ready.engines.iter().cloned());
    let mut rounds = Vec::with_capacity(run.rounds);
    progress.set_length(run.rounds as u64);
    for r in 0..run.rounds {
        let mut figures = BTreeMap::new();
        if r % 2 == 0 {
            figures.insert(CLASSMOD.to_string(), ours.measure(run)?);
        }
        figures.extend(peers.round()?);
        if r % 2 == 1 {
            figures.insert(CLASSMOD.to_string(), ours.measure(run)?);
        }
        rounds.push(figures);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(Comparison {
        threads: run.threads,
        batch: run.batch,
        batch1_iters: run.batch1_iters,
        inputs: shape[0],
        versions: ready.versions,
        cpu_kernel: classmod_runtime::host::Microkernel::best().name().into(),
        max_abs_diff,
        config: ready.config,
        engines,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(b1: f64, ips: f64) -> EngineFigures {
        EngineFigures { batch1_median_ms: b1, batch1_p90_ms: b1 * 1.5, batch_images_per_second: ips }
    }

    #[test]
    fn ratios_pair_engines_within_a_round() {
        // Round 2 is twice as slow for everyone (a noisy neighbour): the same-round ratios are
        // unchanged, while a ratio of ranges would not be.
        let round = |k: f64| {
            BTreeMap::from([
                (CLASSMOD.to_string(), figures(0.5 * k, 4000.0 / k)),
                ("onnxruntime".to_string(), figures(0.4 * k, 5000.0 / k)),
            ])
        };
        let c = Comparison {
            threads: 2,
            batch: 64,
            batch1_iters: 10,
            inputs: 640,
            versions: BTreeMap::new(),
            cpu_kernel: "avx512".into(),
            max_abs_diff: BTreeMap::from([(CLASSMOD.to_string(), 2e-5)]),
            config: serde_json::Value::Null,
            engines: vec![CLASSMOD.into(), "onnxruntime".into()],
            rounds: vec![round(1.0), round(2.0), round(1.0)],
        };
        let s = c.summary();
        assert_eq!(s[0].batch1_vs_classmod, 1.0);
        assert!((s[1].batch1_vs_classmod - 0.8).abs() < 1e-12, "{}", s[1].batch1_vs_classmod);
        assert!((s[1].throughput_vs_classmod - 0.8).abs() < 1e-12);
        assert_eq!(s[1].batch1_median_ms, (0.4, 0.8));
        let md = c.markdown();
        assert!(md.contains("| onnxruntime | 0.400-0.800 |"), "{md}");
        assert!(md.contains("| classmod |") && md.contains("2.0e-5"), "{md}");
    }
}
