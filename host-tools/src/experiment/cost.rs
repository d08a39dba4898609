//! The cost of reuse (the paper's CO2e comparison): decomposing a trained model into modules
//! against training the same network from scratch on the same data, in wall time, CPU time and an
//! energy estimate.
//!
//! Method. Both sides run in this process on the same machine, one after the other: the full
//! decomposition (observation of every class, CI/TI, heads) and `train_steps` SGD steps of the
//! same architecture from a random initialisation, with the data already in memory. Training is
//! scaled to one epoch and to the recipe's epochs (akamaster/pytorch_resnet_cifar10, which made
//! the pretrained models: 200 epochs at batch 128). Energy = process CPU time (getrusage, all
//! threads) x a power per busy core, and CO2e = energy x a grid intensity; both constants are
//! inputs because no power counter is readable here (no RAPL in this VM). The ratio of the two
//! sides does not depend on them.

use crate::HostError;
use std::time::Instant;

use classmod_runtime::host::ModelFile;
use classmod_runtime::Device;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::decompose::compact::{decompose_compact, CompactOptions};
use crate::decompose::{decompose, DecomposeOptions};
use crate::train::{self, Schedule, SgdConfig, TrainOptions, Trainer};

/// The training side and the energy constants.
#[derive(Debug, Clone, Serialize)]
pub struct CostOptions {
    /// Training steps measured (one epoch by default; fewer are scaled up).
    pub train_steps: usize,
    pub batch: usize,
    /// Epochs of the standard recipe.
    pub recipe_epochs: f64,
    /// Power drawn per busy core, watts (package and platform share).
    pub watts_per_core: f64,
    /// Grid carbon intensity, kg CO2e per kWh.
    pub kg_co2e_per_kwh: f64,
}

/// The decomposition measured: into mask modules, or compact ones.
#[derive(Debug, Clone)]
pub enum Decomposition {
    Mask(DecomposeOptions),
    Compact(CompactOptions),
}

/// Wall and CPU seconds of one piece of work.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spent {
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

impl Spent {
    fn scaled(self, f: f64) -> Spent {
        Spent { wall_seconds: self.wall_seconds * f, cpu_seconds: self.cpu_seconds * f }
    }
    pub fn kwh(&self, o: &CostOptions) -> f64 {
        self.cpu_seconds * o.watts_per_core / 3.6e6
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    pub model: String,
    pub train_images: usize,
    pub options: CostOptions,
    /// `mask` or `compact`.
    pub kind: String,
    /// The mask decomposition's options, or the compact one's.
    pub decompose_options: Option<DecomposeOptions>,
    pub compact_options: Option<CompactOptions>,
    pub classes: usize,
    pub decompose: Spent,
    pub train_measured: Spent,
    pub train_epoch: Spent,
    pub train_recipe: Spent,
}

/// Process CPU time so far (user + system, every thread).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one plain struct we own; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn measure<T>(f: impl FnOnce() -> Result<T, HostError>) -> Result<(T, Spent), HostError> {
    let (w, c) = (Instant::now(), cpu_seconds());
    let out = f()?;
    Ok((out, Spent { wall_seconds: w.elapsed().as_secs_f64(), cpu_seconds: cpu_seconds() - c }))
}

/// Measures both sides. `train_set` labels are in the model's class order.
pub fn run(
    model: &ModelFile,
    train_set: &ImageSet,
    decomposition: &Decomposition,
    o: &CostOptions,
    progress: &ProgressBar,
) -> Result<CostReport, HostError> {
    let hidden = ProgressBar::hidden();
    let (classes, decompose_spent) = match decomposition {
        Decomposition::Mask(d) => measure(|| decompose(model, train_set, d, &hidden).map(|d| d.modules.len()))?,
        Decomposition::Compact(c) => {
            measure(|| decompose_compact(model, train_set, c, &hidden).map(|d| d.modules.len()))?
        }
    };
    let opts = TrainOptions {
        arch: model.meta.arch.clone(),
        mean_std: Some((model.meta.input.mean.clone(), model.meta.input.std.clone())),
        steps: o.train_steps,
        batch: o.batch,
        // akamaster's recipe (SGD, momentum 0.9, weight decay 1e-4, lr 0.1).
        sgd: SgdConfig { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 1e-4 },
        schedule: Schedule::Cosine,
        seed: 0,
        flip: true,
        checkpoint: None,
        time_limit: None,
        settings: serde_json::Value::Null,
    };
    let mut net = Trainer::init(train::meta_for(train_set, &opts), 0, &Device::Cpu)?;
    let (_, train_spent) =
        measure(|| train::train(&mut net, train::TrainData::Images(train_set), &opts, None, progress))?;
    let epoch = train_spent.scaled(train_set.len() as f64 / (o.train_steps * o.batch) as f64);
    Ok(CostReport {
        model: model.meta.arch.name(),
        train_images: train_set.len(),
        options: o.clone(),
        kind: match decomposition {
            Decomposition::Mask(_) => "mask",
            Decomposition::Compact(_) => "compact",
        }
        .into(),
        decompose_options: match decomposition {
            Decomposition::Mask(d) => Some(d.clone()),
            Decomposition::Compact(_) => None,
        },
        compact_options: match decomposition {
            Decomposition::Compact(c) => Some(c.clone()),
            Decomposition::Mask(_) => None,
        },
        classes,
        decompose: decompose_spent,
        train_measured: train_spent,
        train_epoch: epoch,
        train_recipe: epoch.scaled(o.recipe_epochs),
    })
}

pub fn markdown(r: &CostReport) -> String {
    let o = &r.options;
    let how = match (&r.decompose_options, &r.compact_options) {
        (Some(d), _) => format!("mask modules ({:?} head, keep {} / tangle {})", d.head, d.keep_rate, d.tangle_rate),
        (None, Some(c)) => format!(
            "compact modules (trunk of {} stages, branches {} wide, {} epochs over the cached trunk)",
            c.trunk_stages, c.width, c.epochs
        ),
        (None, None) => r.kind.clone(),
    };
    let mut s = format!(
        "# Cost of reuse: {}\n\nDecomposition into {} {how} against training the same \
         network from scratch on the same {} images (SGD, batch {}; {} steps measured, scaled to one epoch and to the \
         recipe's {} epochs). Energy = process CPU time x {} W per busy core; CO2e = energy x {} kg/kWh (assumed \
         constants: no power counter is readable here; the ratios do not depend on them).\n\n",
        r.model,
        r.classes,
        r.train_images,
        o.batch,
        o.train_steps,
        o.recipe_epochs,
        o.watts_per_core,
        o.kg_co2e_per_kwh,
    );
    s.push_str("| work | wall | CPU time | energy | CO2e |\n|---|---|---|---|---|\n");
    let row = |name: &str, x: &Spent| {
        let kwh = x.kwh(o);
        format!(
            "| {name} | {} | {} | {:.2} Wh | {:.2} g |\n",
            duration(x.wall_seconds),
            duration(x.cpu_seconds),
            1000.0 * kwh,
            1000.0 * kwh * o.kg_co2e_per_kwh
        )
    };
    s.push_str(&row("decomposition (all classes)", &r.decompose));
    s.push_str(&row(&format!("training, {} steps measured", o.train_steps), &r.train_measured));
    s.push_str(&row("training, one epoch", &r.train_epoch));
    s.push_str(&row(&format!("training, {} epochs", o.recipe_epochs), &r.train_recipe));
    s.push_str(&format!(
        "\nTraining from scratch costs **{:.0}x** the decomposition in CPU time ({:.0}x in wall time); one epoch alone \
         costs {:.1}x. The paper reports ~37x less CO2e for reuse.\n",
        r.train_recipe.cpu_seconds / r.decompose.cpu_seconds,
        r.train_recipe.wall_seconds / r.decompose.wall_seconds,
        r.train_epoch.cpu_seconds / r.decompose.cpu_seconds,
    ));
    s
}

/// `1 h 02 min`, `3 min 05 s`, `12.3 s`.
fn duration(s: f64) -> String {
    if s >= 3600.0 {
        format!("{} h {:02} min", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    } else if s >= 60.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let a = cpu_seconds();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > a, "getrusage reports the work just done");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
