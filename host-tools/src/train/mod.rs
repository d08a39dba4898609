//! `classmod train`: supervised training of a CIFAR-style ResNet from scratch or from a model
//! (fine-tuning, optionally with a frozen trunk trained on its cached activations), seeded and
//! reproducible, with checkpoints in the self-describing model format that a run resumes from
//! exactly; and the data side of the compact branches' distillation. The pipeline lives here
//! (images, augmentation, the sampler, minibatches, checkpoints, the trunk cache); the engine
//! that steps is `classmod_train`.

pub mod augment;
pub mod distill;
pub mod job;
pub mod resume;
pub mod sampler;
pub mod trunk_cache;

use crate::HostError;
use std::path::PathBuf;
use std::time::Instant;

use classmod_runtime::host::write_atomically;
use classmod_runtime::host::{Architecture, ModelFile, ModelMeta};
use classmod_runtime::InputSpec;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
pub use classmod_train::{Schedule, SgdConfig, Trainer};
pub use job::{train_and_eval, ArchSpec, TrainJob, TrainOutcome};
pub use resume::RunState;
pub use sampler::Sampler;
pub use trunk_cache::TrunkCache;

/// Everything a training run needs besides the data.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub arch: Architecture,
    /// Normalisation; `None` = the training images' own per-channel mean and std.
    pub mean_std: Option<(Vec<f32>, Vec<f32>)>,
    pub steps: usize,
    pub batch: usize,
    pub sgd: SgdConfig,
    pub schedule: Schedule,
    pub seed: u64,
    /// Horizontal flips (off for digits and text, whose mirror images are other things).
    pub flip: bool,
    /// Where checkpoints go (written atomically at every epoch end and at the end), with the
    /// run's state for `--resume` beside them ([`RunState::path_for`]).
    pub checkpoint: Option<PathBuf>,
    /// Stop at the first epoch end after this many seconds (its checkpoint written, so that
    /// `--resume` goes on); `None`: run every step.
    pub time_limit: Option<f64>,
    /// What a run resumed from a checkpoint must have in common with the one that wrote it
    /// (data, network, optimiser, schedule, seed...): saved with every checkpoint.
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: usize,
    /// Steps done: `steps`, or fewer when the run stopped at its time limit.
    pub steps_done: usize,
    pub epochs: f64,
    /// Mean training loss of the first and the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// (step, mean loss since the previous entry), about 50 entries.
    pub loss_curve: Vec<(usize, f64)>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Per-channel mean and standard deviation of pixels scaled to [0, 1].
pub fn channel_stats(set: &ImageSet) -> (Vec<f32>, Vec<f32>) {
    let c = set.shape.channels;
    let plane = set.shape.height * set.shape.width;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for (i, chunk) in set.pixels.chunks(plane).enumerate() {
        let ch = i % c;
        for &p in chunk {
            let v = p as f64 / 255.0;
            sum[ch] += v;
            sq[ch] += v * v;
        }
    }
    let n = (set.len() * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq.iter().zip(&mean).map(|(q, m)| ((q / n - m * m).max(1e-12)).sqrt() as f32).collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// The model metadata a run on `set` produces.
pub fn meta_for(set: &ImageSet, opts: &TrainOptions) -> ModelMeta {
    let (mean, std) = opts.mean_std.clone().unwrap_or_else(|| channel_stats(set));
    ModelMeta {
        arch: opts.arch.clone(),
        input: InputSpec::new(set.shape.channels, set.shape.height, set.shape.width, mean, std),
        class_names: set.class_names.clone(),
    }
}

/// What a run trains on.
#[derive(Clone, Copy)]
pub enum TrainData<'a> {
    /// Images, augmented (random crops, flips where allowed) as they are drawn.
    Images(&'a ImageSet),
    /// A frozen trunk's activations of images, computed once (a network with frozen stages).
    Cached(&'a TrunkCache),
}

impl TrainData<'_> {
    fn len(&self) -> usize {
        match self {
            TrainData::Images(set) => set.len(),
            TrainData::Cached(cache) => cache.len(),
        }
    }
}

/// Buffers of one minibatch, kept across steps.
#[derive(Default)]
struct Minibatch {
    raw: Vec<u8>,
    x: Vec<f32>,
    labels: Vec<u32>,
    rows: Vec<usize>,
    teacher: Vec<f32>,
}

/// Trains `net` on `data` for `opts.steps` steps, or for those left after `resume` (a run's
/// state saved at a checkpoint: `net` must hold its model; its optimiser state and sampler are
/// restored here, its settings must be `opts.settings`). Returns the trained model.
pub fn train(
    net: &mut Trainer,
    data: TrainData,
    opts: &TrainOptions,
    resume: Option<RunState>,
    progress: &ProgressBar,
) -> Result<(ModelFile, TrainReport), HostError> {
    let n = data.len();
    if n == 0 {
        return Err(HostError::NoTrainingImages);
    }
    let batch = opts.batch.clamp(2, n.max(2)); // BN needs two samples
    let (mut sampler, mut losses, start, seconds_before) = match resume {
        None => (Sampler::new(n, opts.seed), Vec::with_capacity(opts.steps), 0, 0.0),
        Some(r) => {
            let path = opts.checkpoint.as_deref().map(RunState::path_for).unwrap_or_default();
            let bad = |reason: String| HostError::ResumeFile { path: path.clone(), reason };
            if r.settings != opts.settings {
                return Err(bad(settings_differ(&r.settings, &opts.settings)));
            }
            net.restore_momentum(&r.momentum)?;
            let sampler = Sampler::restore(n, opts.seed, r.sampler)
                .ok_or_else(|| bad(format!("its sampler is not of these {n} training items")))?;
            (sampler, r.losses, r.steps_done, r.seconds)
        }
    };
    let mut mb = Minibatch::default();
    let t0 = Instant::now();
    let seconds = |t0: Instant| seconds_before + t0.elapsed().as_secs_f64();
    let mut epochs_saved = sampler.epochs_done();
    progress.set_position(start as u64);
    for step in start..opts.steps {
        if sampler.epochs_done() > epochs_saved {
            checkpoint(net, opts, &sampler, &losses, seconds(t0))?;
            epochs_saved = sampler.epochs_done();
            if opts.time_limit.is_some_and(|limit| t0.elapsed().as_secs_f64() >= limit) {
                break;
            }
        }
        let lr = opts.schedule.lr(step, opts.steps, opts.sgd.lr);
        let loss_value = match data {
            TrainData::Images(set) => {
                images_minibatch(set, batch, opts.flip, &net.meta().input, &mut sampler, &mut mb);
                net.step(&mb.x, &mb.labels, &opts.sgd, lr)?
            }
            TrainData::Cached(cache) => {
                mb.rows.clear();
                mb.rows.extend((0..batch).map(|_| sampler.next_item()));
                cache.gather(&mb.rows, &mut mb.x, &mut mb.teacher, &mut mb.labels);
                net.step_cached(&mb.x, &mb.labels, &opts.sgd, lr)?
            }
        };
        if !loss_value.is_finite() {
            return Err(HostError::Diverged { step, loss: loss_value });
        }
        losses.push(loss_value);
        progress.inc(1);
        if step % 10 == 0 {
            progress.set_message(format!("loss {loss_value:.3}"));
        }
    }
    progress.finish_and_clear();
    let model = checkpoint(net, opts, &sampler, &losses, seconds(t0))?;
    let this_run = t0.elapsed().as_secs_f64();
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let every = (losses.len() / 50).max(1);
    let report = TrainReport {
        steps: opts.steps,
        steps_done: losses.len(),
        epochs: (opts.steps * batch) as f64 / n as f64,
        first_loss: mean(&losses[..tenth.min(losses.len())]),
        last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
        loss_curve: losses.chunks(every).enumerate().map(|(i, c)| ((i + 1) * every, mean(c))).collect(),
        seconds: seconds(t0),
        images_per_second: ((losses.len() - start) * batch) as f64 / this_run.max(1e-9),
    };
    Ok((model, report))
}

/// The next minibatch of augmented, normalised images and their labels into `mb`.
fn images_minibatch(
    set: &ImageSet,
    batch: usize,
    flip: bool,
    spec: &InputSpec,
    sampler: &mut Sampler,
    mb: &mut Minibatch,
) {
    let (c, h, w) = (spec.channels, spec.height, spec.width);
    let per = spec.image_len();
    mb.raw.resize(batch * per, 0);
    mb.x.resize(batch * per, 0.0);
    mb.labels.clear();
    for i in 0..batch {
        let idx = sampler.next_item();
        augment::crop_flip(set.image(idx), &mut mb.raw[i * per..(i + 1) * per], c, h, w, flip, sampler.rng());
        mb.labels.push(set.labels[idx]);
    }
    spec.normalize_into(&mb.raw, &mut mb.x);
}

/// Which settings of a saved run differ from this one's, for the error that refuses to go on.
fn settings_differ(saved: &serde_json::Value, now: &serde_json::Value) -> String {
    let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let mut names = keys(saved);
    names.extend(keys(now));
    names.sort();
    names.dedup();
    let differ: Vec<String> = names
        .iter()
        .filter(|k| saved.get(k.as_str()) != now.get(k.as_str()))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
            format!("{k} {} (now {})", show(saved.get(k.as_str())), show(now.get(k.as_str())))
        })
        .collect();
    format!("a checkpoint of another run: {}", differ.join(", "))
}

/// Writes the current weights to the checkpoint path and the run's state beside them (both
/// atomically) and returns the weights.
fn checkpoint(
    net: &Trainer,
    opts: &TrainOptions,
    sampler: &Sampler,
    losses: &[f64],
    seconds: f64,
) -> Result<ModelFile, HostError> {
    let model = net.to_model()?;
    if let Some(path) = &opts.checkpoint {
        write_atomically(path, &model.to_bytes()?).map_err(|e| HostError::io(path, e))?;
        let state = RunState {
            model: model.clone(),
            momentum: net.momentum()?,
            sampler: sampler.state(),
            steps_done: losses.len(),
            losses: losses.to_vec(),
            seconds,
            settings: opts.settings.clone(),
        };
        state.write(&RunState::path_for(path))?;
    }
    Ok(model)
}
