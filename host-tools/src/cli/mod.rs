//! Command-line flags (clap derive) and dispatch to one file per command.

mod bench;
mod compose_eval;
mod decompose;
mod demo;
mod eval;
mod experiment;
mod import;
mod inspect;
mod keygen;
mod mender_artifact;
mod pack;
mod throughput;
mod train;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use classmod_host::dataset::{self, ImageSet, ImageShape, Split};
use classmod_host::decompose::HeadKind;
use classmod_host::train::Schedule;
use classmod_host::HostError;
use classmod_runtime::host::ModelFile;
use classmod_runtime::{Device, Error as RuntimeError, Precision};

#[derive(Parser)]
#[command(
    name = "classmod",
    version,
    about = "Decompose trained ResNets into per-class modules and run them on edge devices"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a PyTorch-exported ResNet (safetensors) into a self-describing model file.
    Import(import::Args),
    /// Evaluate a model on a dataset: top-1, top-5 and per-class accuracy.
    Eval(eval::Args),
    /// Decompose a model into one mask module per class.
    Decompose(decompose::Args),
    /// Evaluate a classifier composed from modules (one or several models).
    ComposeEval(compose_eval::Args),
    /// Reproduce the paper's measurements (tables, JSON, SVG charts).
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Pack modules and their bases into signed, memory-mappable blobs with a manifest.
    Pack(pack::Args),
    /// Write a Mender artifact (payload type classmod-module) of some classes of a packed
    /// directory, for a fleet's OTA: `mender install` on a device, or a Mender server.
    MenderArtifact(mender_artifact::Args),
    /// Print a blob's header, tensors and metadata.
    Inspect(inspect::Args),
    /// Check blobs as a device would: layout, hash, signature, manifest, golden self-tests.
    Verify(verify::Args),
    /// Make an Ed25519 key pair for signing blobs.
    Keygen(keygen::Args),
    /// Train (or fine-tune) a CIFAR-style ResNet with SGD.
    Train(train::Args),
    /// Compare inference speed with PyTorch CPU on the same images, in the same minute.
    Bench(bench::Args),
    /// Forward passes per second of a base or of a group of k modules, on the CPU or a GPU, at
    /// several batch sizes (synthetic inputs already on the device).
    Throughput(throughput::Args),
    /// The end-to-end demo on Fashion-MNIST: train a small ResNet and evaluate it.
    Demo(demo::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Import(a) => import::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Decompose(a) => decompose::run(a),
        Command::ComposeEval(a) => compose_eval::run(a),
        Command::Experiment(e) => experiment::run(e),
        Command::Pack(a) => pack::run(a),
        Command::MenderArtifact(a) => mender_artifact::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Train(a) => train::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Throughput(a) => throughput::run(a),
        Command::Demo(a) => demo::run(a),
    }
}

/// Which labelled images an evaluation reads and how it runs (shared by `eval` and
/// `compose-eval`, which each name their datasets).
#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Evaluate a seeded class-balanced sample of N images.
    #[arg(long, value_parser = at_least_one())]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per forward pass, 1 to 1024 (32 keeps the im2col buffers in cache on small CPUs).
    #[arg(long, default_value_t = 32, value_parser = batch_size())]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// What the network computes in: f16 and bf16 on a GPU only.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
    #[arg(long)]
    pub json: bool,
}

/// `--split`: the library's [`Split`] as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
}

impl From<SplitArg> for Split {
    fn from(a: SplitArg) -> Split {
        match a {
            SplitArg::Train => Split::Train,
            SplitArg::Test => Split::Test,
        }
    }
}

/// `--head`: the library's [`HeadKind`] as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadArg {
    /// The paper's: own logit against the mean of the others.
    Channel,
    /// One-vs-rest logistic regression on the module's pooled features.
    Calibrated,
}

impl From<HeadArg> for HeadKind {
    fn from(a: HeadArg) -> HeadKind {
        match a {
            HeadArg::Channel => HeadKind::Channel,
            HeadArg::Calibrated => HeadKind::Calibrated,
        }
    }
}

/// `--kind`: which module kind `decompose` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// The paper's: the base with a node mask (a whole forward per module).
    Mask,
    /// The base's trunk, shared, plus a small distilled branch per class.
    Compact,
}

/// `--schedule`: the library's [`Schedule`] as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Linear warm-up over the first 2 % of steps, then cosine decay to zero.
    Cosine,
    /// Smith's one-cycle: linear rise from lr/25 to lr over 30 % of steps, cosine fall to lr/1e4.
    OneCycle,
}

impl From<ScheduleArg> for Schedule {
    fn from(a: ScheduleArg) -> Schedule {
        match a {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::OneCycle => Schedule::OneCycle,
        }
    }
}

/// `--device`: where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl DeviceArg {
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => Ok(classmod_runtime::cuda(0)?),
        }
    }
}

/// `--precision`: the runtime's [`Precision`] as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(a: PrecisionArg) -> Precision {
        match a {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// A count that must be at least one (images, epochs, rounds, iterations, a size): 0 is a
/// usage error, exit 2, instead of a run that does nothing and exits 0.
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// The most images a batch may hold: a batch is allocated up front (`eval --batch 1000000`
/// asked for 12 GB and aborted).
pub const MAX_BATCH: u64 = 1024;

/// `--batch` and `--batches`: 1 to [`MAX_BATCH`] images.
pub fn batch_size() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=MAX_BATCH)
}

/// Seconds, minutes, epochs, watts: a finite number above 0 (NaN, infinities, 0 and negative
/// numbers are usage errors: `--watts-per-core -5` printed "-inf Wh").
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}`: a number above 0")),
    }
}

/// A number of at least 0 (not NaN).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}`: a number of at least 0")),
    }
}

/// `--golden`: one image or more, at most `MAX_GOLDEN_IMAGES` (64). With none, a module's
/// self-test checks nothing (and `Golden::record` refuses to record it); with more, a device
/// would refuse the module (each load pays for them), so both are usage errors, exit 2.
pub fn at_least_one_golden() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=classmod_runtime::MAX_GOLDEN_IMAGES as u64)
}

/// An error about the file at `path`, with the file named once (errors that carry their own
/// path are printed as they are).
pub fn model_error(path: &Path, e: impl Into<HostError>) -> anyhow::Error {
    use RuntimeError::{BadBlob, FileTooLarge, Io, ManifestEntryMismatch, ManifestHashMismatch, NotRegularFile};
    match e.into() {
        // These name their file already.
        e @ HostError::Runtime(
            Io { .. }
            | BadBlob { .. }
            | ManifestHashMismatch { .. }
            | ManifestEntryMismatch { .. }
            | NotRegularFile { .. }
            | FileTooLarge { .. },
        ) => {
            anyhow!(e)
        }
        e @ (HostError::NoBaseInManifest { .. } | HostError::ResumeFile { .. }) => anyhow!(e),
        other => anyhow!("{}: {other}", path.display()),
    }
}

pub fn read_model(path: &Path, device: &Device) -> Result<ModelFile> {
    ModelFile::read(path, device).map_err(|e| model_error(path, e))
}

/// Loads a dataset split for a model (see [`dataset::load_sample`]).
pub fn load_data(
    path: &Path,
    split: Split,
    shape: ImageShape,
    classes: Option<&[String]>,
    limit: Option<usize>,
    seed: u64,
) -> Result<ImageSet> {
    Ok(dataset::load_sample(path, split, shape, classes, limit, seed)?)
}

/// Prints the final JSON line of a `--json` run.
pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).expect("JSON values serialise"));
}

/// The parent directory of `path` exists (so a long run does not fail at its very end).
pub fn check_output_dir(path: &Path) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if !parent.is_dir() {
        return Err(anyhow!("{}: output directory does not exist", parent.display()));
    }
    Ok(())
}

/// Context for errors while reading a file given by the user.
pub trait PathContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}
impl<T, E: std::error::Error + Send + Sync + 'static> PathContext<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T> {
        self.with_context(|| path.display().to_string())
    }
}
