//! Evaluation of a model on an image set: logits in batches, top-1 / top-5, per-class accuracy.

use crate::HostError;
use std::time::Instant;

use classmod_runtime::host::{ResNet, Tensor};
use classmod_runtime::{Device, InputSpec};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;

/// Accuracy of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassAccuracy {
    pub name: String,
    pub n: usize,
    pub correct: usize,
    pub top1: f64,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<ClassAccuracy>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// The normalised `(n, C, H, W)` tensor of the images at `indices`.
pub fn batch_tensor(
    images: &ImageSet,
    indices: &[usize],
    spec: &InputSpec,
    device: &Device,
) -> Result<Tensor, HostError> {
    let raw = pixels_of(images, indices);
    let mut x = vec![0f32; raw.len()];
    spec.normalize_into(&raw, &mut x);
    Ok(Tensor::from_vec(x, (indices.len(), spec.channels, spec.height, spec.width), device)?)
}

/// The raw pixels of the images at `indices`, one after the other.
fn pixels_of(images: &ImageSet, indices: &[usize]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(indices.len() * images.image_len());
    for &i in indices {
        raw.extend_from_slice(images.image(i));
    }
    raw
}

/// The images `indices` of `images` normalised the network's way, NHWC (the CPU path's layout;
/// other engines lay them out their own way once).
pub fn batch_nhwc(images: &ImageSet, indices: &[usize], spec: &InputSpec) -> Vec<f32> {
    let raw = pixels_of(images, indices);
    let mut x = vec![0f32; raw.len()];
    spec.normalize_into_nhwc(&raw, &mut x);
    x
}

/// Logits of every image, `len * classes` values, row-major.
pub fn logits(model: &ResNet, images: &ImageSet, batch: usize, progress: &ProgressBar) -> Result<Vec<f32>, HostError> {
    let spec = model.input_spec();
    let per = images.image_len();
    if per != spec.image_len() {
        return Err(classmod_runtime::Error::InputShape {
            expected: (spec.channels, spec.height, spec.width),
            found: vec![images.shape.channels, images.shape.height, images.shape.width],
        }
        .into());
    }
    let batch = batch.max(1);
    let mut out = Vec::with_capacity(images.len() * model.network().num_classes);
    let mut buf = vec![0f32; batch * per];
    for start in (0..images.len()).step_by(batch) {
        let b = batch.min(images.len() - start);
        let buf = &mut buf[..b * per];
        spec.normalize_into(&images.pixels[start * per..(start + b) * per], buf);
        let x = Tensor::from_slice(buf, (b, spec.channels, spec.height, spec.width), model.device())?;
        let y = model.forward(&x)?;
        out.extend(y.flatten_all()?.to_vec1::<f32>()?);
        progress.inc(b as u64);
    }
    Ok(out)
}

/// Rank of the true class among `row` (0 = predicted): the number of classes scoring strictly
/// higher, ties broken towards the lower index as argmax does.
pub fn rank_of(row: &[f32], label: usize) -> usize {
    let t = row[label];
    row.iter().enumerate().filter(|&(j, &v)| v > t || (v == t && j < label)).count()
}

/// Scores `logits` (row per image) against `labels`.
pub fn score(logits: &[f32], labels: &[u32], class_names: &[String], seconds: f64) -> EvalReport {
    let k = class_names.len();
    let mut per = vec![(0usize, 0usize); k];
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in logits.chunks(k).zip(labels) {
        let r = rank_of(row, label as usize);
        per[label as usize].0 += 1;
        if r == 0 {
            top1 += 1;
            per[label as usize].1 += 1;
        }
        if r < 5 {
            top5 += 1;
        }
    }
    let n = labels.len();
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    EvalReport {
        n,
        top1: frac(top1, n),
        top5: frac(top5, n),
        per_class: class_names
            .iter()
            .zip(&per)
            .map(|(name, &(n, correct))| ClassAccuracy { name: name.clone(), n, correct, top1: frac(correct, n) })
            .collect(),
        seconds,
        images_per_second: if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
    }
}

/// Runs `model` over `images` and scores it.
pub fn evaluate(
    model: &ResNet,
    images: &ImageSet,
    batch: usize,
    progress: &ProgressBar,
) -> Result<EvalReport, HostError> {
    let t0 = Instant::now();
    let l = logits(model, images, batch, progress)?;
    progress.finish_and_clear();
    Ok(score(&l, &images.labels, model.class_names(), t0.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_scores() {
        assert_eq!(rank_of(&[0.1, 0.9, 0.5], 1), 0);
        assert_eq!(rank_of(&[0.1, 0.9, 0.5], 0), 2);
        // A tie goes to the lower index, as argmax does.
        assert_eq!(rank_of(&[0.5, 0.5], 1), 1);
        let names: Vec<String> = (0..6).map(|i| i.to_string()).collect();
        let logits = [
            6., 5., 4., 3., 2., 1., // label 0: rank 0
            6., 5., 4., 3., 2., 1., // label 5: rank 5 (outside the top 5)
            6., 5., 4., 3., 2., 1., // label 4: rank 4
        ];
        let r = score(&logits, &[0, 5, 4], &names, 1.0);
        assert_eq!(r.n, 3);
        assert!((r.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[5].n, 1);
        assert_eq!(r.per_class[5].correct, 0);
    }
}
