//! `classmod throughput`: forward passes of a base network, or of a group of k class modules, on
//! synthetic inputs already on the device, timed one pass at a time (each waits for the device)
//! at several batch sizes. What GPU figures are compared on: `scripts/gpu-check.sh` runs it
//! beside PyTorch's `tools/gpu_reference.py` on the same GPU, in the same minute.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use classmod_host::compose_eval;
use classmod_runtime::host::{ResNet, Tensor};
use classmod_runtime::{Device, InputSpec};

use super::{model_error, print_json, read_model, DeviceArg, PrecisionArg};

#[derive(clap::Args)]
pub struct Args {
    /// A classmod model file: time the base network's forward pass (logits).
    #[arg(long, required_unless_present = "packed", conflicts_with = "packed")]
    model: Option<PathBuf>,
    /// A packed directory (or module blobs): time a group of its first --classes modules
    /// instead (mask modules: one stacked pass; compact: the trunk once plus the branches),
    /// scores included.
    #[arg(long)]
    packed: Option<PathBuf>,
    /// Modules in the group (with --packed).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256", value_parser = super::batch_size())]
    batches: Vec<usize>,
    /// Seconds of timed passes per batch size, after a warm-up.
    #[arg(long, default_value_t = 2.0, value_parser = super::positive)]
    seconds: f64,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    #[arg(long)]
    json: bool,
}

/// What is timed: one forward pass of a batch, finished on the device.
enum Subject {
    Base(ResNet),
    Group(compose_eval::Composition),
}

impl Subject {
    fn input_spec(&self) -> Option<&InputSpec> {
        match self {
            Subject::Base(n) => Some(n.input_spec()),
            Subject::Group(c) => c.composed.input_spec(),
        }
    }

    fn pass(&self, x: &Tensor, device: &Device) -> Result<()> {
        match self {
            // Reading the logits back waits for the device, as a caller would.
            Subject::Base(n) => drop(n.forward(x)?.to_vec2::<f32>()?),
            // Scores come back to the host inside `run`.
            Subject::Group(c) => drop(c.composed.run(x)?),
        }
        device.synchronize()?;
        Ok(())
    }
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.device()?;
    let precision = a.precision.into();
    let (subject, what) = match (&a.model, &a.packed) {
        (Some(path), _) => {
            let model = read_model(path, &device)?;
            let net = ResNet::new(&model, &device)
                .and_then(|n| n.with_precision(precision))
                .map_err(|e| model_error(path, e))?;
            (Subject::Base(net), format!("base {}", path.display()))
        }
        (None, Some(dir)) => {
            let paths = compose_eval::module_paths(std::slice::from_ref(dir))?;
            if paths.len() < a.classes || a.classes == 0 {
                bail!("{}: {} modules; --classes {} asked for", dir.display(), paths.len(), a.classes);
            }
            let c = compose_eval::load(&paths[..a.classes], &device, precision)?;
            (Subject::Group(c), format!("group of {} modules of {}", a.classes, dir.display()))
        }
        (None, None) => unreachable!("clap requires --model or --packed"),
    };
    let Some(spec) = subject.input_spec().cloned() else { bail!("nothing to run") };
    let mut rows = Vec::new();
    eprintln!("{what} on {device:?} in {precision}");
    for &batch in &a.batches {
        if batch == 0 {
            bail!("--batches: a batch of 0 images");
        }
        let x = Tensor::randn(0f32, 1f32, (batch, spec.channels, spec.height, spec.width), &device)?;
        // Warm-up: kernels loaded, allocations cached, clocks up.
        let warm = Instant::now();
        while warm.elapsed().as_secs_f64() < (a.seconds / 4.0).min(1.0) {
            subject.pass(&x, &device)?;
        }
        let mut ms = Vec::new();
        let start = Instant::now();
        while ms.len() < 10 || start.elapsed().as_secs_f64() < a.seconds {
            let t = Instant::now();
            subject.pass(&x, &device)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let (median, p90) = (ms[ms.len() / 2], ms[ms.len() * 9 / 10]);
        rows.push(serde_json::json!({
            "batch": batch, "passes": ms.len(), "median_ms": median, "p90_ms": p90,
            "images_per_second": batch as f64 / (median / 1e3),
        }));
    }
    println!("{:>6} {:>8} {:>12} {:>12} {:>14}", "batch", "passes", "median ms", "p90 ms", "images/s");
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>6} {:>8} {:>12.4} {:>12.4} {:>14.0}",
            f("batch"),
            f("passes"),
            f("median_ms"),
            f("p90_ms"),
            f("images_per_second")
        );
    }
    if a.json {
        print_json(&serde_json::json!({
            "subject": what, "device": format!("{device:?}"), "precision": precision.name(), "rows": rows,
        }));
    }
    Ok(())
}
