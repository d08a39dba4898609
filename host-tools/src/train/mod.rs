//! `classmod train`: supervised training of a CIFAR-style ResNet from scratch or from a model
//! (fine-tuning), seeded and reproducible, with checkpoints in the self-describing model format;
//! and the data side of the compact branches' distillation. The pipeline lives here (images,
//! augmentation, minibatches, checkpoints, the trunk cache); the engine that steps is
//! `classmod_train`.

pub mod augment;
pub mod distill;
pub mod job;
pub mod trunk_cache;

use crate::HostError;
use std::path::PathBuf;
use std::time::Instant;

use classmod_runtime::host::write_atomically;
use classmod_runtime::host::{ModelFile, ModelMeta, ResNetConfig};
use classmod_runtime::InputSpec;
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::dataset::ImageSet;
pub use classmod_train::{Schedule, SgdConfig, Trainer};
pub use job::{train_and_eval, ArchSpec, TrainJob, TrainOutcome};

/// Everything a training run needs besides the data.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub arch: ResNetConfig,
    /// Normalisation; `None` = the training images' own per-channel mean and std.
    pub mean_std: Option<(Vec<f32>, Vec<f32>)>,
    pub steps: usize,
    pub batch: usize,
    pub sgd: SgdConfig,
    pub schedule: Schedule,
    pub seed: u64,
    /// Horizontal flips (off for digits and text, whose mirror images are other things).
    pub flip: bool,
    /// Where checkpoints go (written atomically at every epoch end and at the end).
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: usize,
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
        input: InputSpec { channels: set.shape.channels, height: set.shape.height, width: set.shape.width, mean, std },
        class_names: set.class_names.clone(),
    }
}

/// Trains `net` on `set` and returns the trained model.
pub fn train(
    net: &mut Trainer,
    set: &ImageSet,
    opts: &TrainOptions,
    progress: &ProgressBar,
) -> Result<(ModelFile, TrainReport), HostError> {
    if set.is_empty() {
        return Err(HostError::NoTrainingImages);
    }
    let spec = net.meta().input.clone();
    let (c, h, w) = (spec.channels, spec.height, spec.width);
    let per = spec.image_len();
    let batch = opts.batch.clamp(2, set.len().max(2)); // BN needs two samples
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..set.len()).collect();
    let mut cursor = order.len(); // forces a shuffle on the first step
    let mut raw = vec![0u8; batch * per];
    let mut x = vec![0f32; batch * per];
    let mut labels = vec![0u32; batch];
    let mut losses = Vec::with_capacity(opts.steps);
    let t0 = Instant::now();
    let mut epoch = 0;
    for step in 0..opts.steps {
        for i in 0..batch {
            if cursor == order.len() {
                if epoch > 0 {
                    checkpoint(net, opts)?;
                }
                order.shuffle(&mut rng);
                cursor = 0;
                epoch += 1;
            }
            let idx = order[cursor];
            cursor += 1;
            augment::crop_flip(set.image(idx), &mut raw[i * per..(i + 1) * per], c, h, w, opts.flip, &mut rng);
            labels[i] = set.labels[idx];
        }
        spec.normalize_into(&raw, &mut x);
        let loss_value = net.step(&x, &labels, &opts.sgd, opts.schedule.lr(step, opts.steps, opts.sgd.lr))?;
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
    let model = checkpoint(net, opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let every = (losses.len() / 50).max(1);
    let report = TrainReport {
        steps: opts.steps,
        epochs: (opts.steps * batch) as f64 / set.len() as f64,
        first_loss: mean(&losses[..tenth.min(losses.len())]),
        last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
        loss_curve: losses.chunks(every).enumerate().map(|(i, c)| ((i + 1) * every, mean(c))).collect(),
        seconds,
        images_per_second: (opts.steps * batch) as f64 / seconds.max(1e-9),
    };
    Ok((model, report))
}

/// Writes the current weights to the checkpoint path (atomically) and returns them.
fn checkpoint(net: &Trainer, opts: &TrainOptions) -> Result<ModelFile, HostError> {
    let model = net.to_model()?;
    if let Some(path) = &opts.checkpoint {
        write_atomically(path, &model.to_bytes()?).map_err(|e| HostError::io(path, e))?;
    }
    Ok(model)
}
