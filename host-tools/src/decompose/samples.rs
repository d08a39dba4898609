//! Positives and negatives of each concern (class), as PRODUCT.md specifies: up to `n_pos`
//! training images of class c that the model classifies as c with probability above `pos_conf`
//! (relaxed, and reported, when too few qualify), and a seeded balanced draw of about
//! `n_pos/(N-1)` images from each other class as negatives.

use crate::HostError;
use classmod_runtime::host::ResNet;
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::eval::batch_tensor;

/// The chosen samples of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassSamples {
    /// Indices into the training set.
    pub positives: Vec<usize>,
    /// Images of class c drawn as negatives for the other classes.
    pub negative_draw: Vec<usize>,
    /// The confidence threshold finally used (below `pos_conf` when it had to be relaxed).
    pub pos_conf_used: f32,
    pub relaxed: bool,
    pub scanned: usize,
}

/// Images scanned per class at most, as a multiple of `n_pos` (the scan stops earlier as soon as
/// `n_pos` positives qualify).
const SCAN_FACTOR: usize = 4;

/// Chooses the samples of every class of `train` for `model`.
/// Positives are only searched for the classes in `wanted`; every class gets its negative draw.
pub fn choose(
    model: &ResNet,
    train: &ImageSet,
    wanted: &[usize],
    n_pos: usize,
    pos_conf: f32,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Vec<ClassSamples>, HostError> {
    let n_classes = model.class_names().len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in train.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let per_other = n_pos.div_ceil(n_classes.saturating_sub(1).max(1));
    let spec = model.input_spec().clone();
    let mut out = Vec::with_capacity(n_classes);
    for (c, idx) in by_class.iter_mut().enumerate() {
        // One seeded stream per class so classes do not depend on each other's scans.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        idx.shuffle(&mut rng);
        let negative_draw: Vec<usize> = idx.iter().rev().take(per_other).cloned().collect();
        // (probability of c, index) of the scanned images classified as c.
        let mut scored: Vec<(f32, usize)> = Vec::new();
        let mut scanned = 0;
        let limit = if wanted.contains(&c) { (SCAN_FACTOR * n_pos).min(idx.len()) } else { 0 };
        while scanned < limit && scored.iter().filter(|(p, _)| *p > pos_conf).count() < n_pos {
            let chunk = &idx[scanned..(scanned + 64).min(limit)];
            let x = batch_tensor(train, chunk, &spec, model.device())?;
            let probs = candle_nn::ops::softmax_last_dim(&model.forward(&x)?)?.to_vec2::<f32>()?;
            for (row, &i) in probs.iter().zip(chunk) {
                let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j);
                if argmax == Some(c) {
                    scored.push((row[c], i));
                }
            }
            scanned += chunk.len();
            progress.inc(chunk.len() as u64);
        }
        // Most confident first; ties by index for determinism.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(n_pos);
        let qualified = scored.iter().filter(|(p, _)| *p > pos_conf).count();
        let relaxed = qualified < scored.len().min(n_pos) || scored.len() < n_pos;
        let pos_conf_used = if relaxed { scored.last().map(|s| s.0).unwrap_or(0.0).min(pos_conf) } else { pos_conf };
        out.push(ClassSamples {
            positives: scored.iter().map(|s| s.1).collect(),
            negative_draw,
            pos_conf_used,
            relaxed,
            scanned,
        });
    }
    Ok(out)
}
