//! Refitting the heads of a composition against each other's classes.
//!
//! A module's head is fitted at decomposition time against the other classes of its own model's
//! dataset. Composed with modules of a model trained on another dataset, it sees images it never
//! saw a negative of, and out-of-distribution images can score high (measured: digits scored as
//! sandals). Recalibration refits every module's calibrated head (a channel head becomes a
//! calibrated one) on the masked module's pooled features of training images of its own class
//! against those of every other composed class, from whichever dataset they come. Masks and the
//! base models are untouched: no backpropagation, seconds of work. Compact modules' heads are
//! refitted the same way on their branch's pooled features. Each module's minimum score is
//! placed again for its new head, on its class's training images the head was not fitted on.

use crate::HostError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::compose_eval::Composition;
use crate::dataset::ImageSet;
use crate::decompose::{calibrated_head, held_out_min_score};

/// Refits every head of `c` on `train`, whose labels index the composed classes: `n_pos` seeded
/// images of the module's class against as many drawn evenly from the other composed classes.
pub fn recalibrate(
    c: &mut Composition,
    train: &ImageSet,
    n_pos: usize,
    seed: u64,
    batch: usize,
) -> Result<(), HostError> {
    let k = c.order().len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in train.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    for (j, idx) in by_class.iter_mut().enumerate() {
        if idx.is_empty() {
            return Err(HostError::NoImagesOfClass { class: c.class_names()[j].clone() });
        }
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    }
    let per_other = n_pos.div_ceil(k.saturating_sub(1).max(1));
    let mut refitted: Vec<Vec<classmod_runtime::host::ClassModule>> =
        c.groups().iter().map(|g| g.modules().iter().map(|m| (**m).clone()).collect()).collect();
    for (j, &(g, m)) in c.order().iter().enumerate() {
        let positives: Vec<usize> = by_class[j].iter().take(n_pos).cloned().collect();
        let negatives: Vec<usize> =
            (0..k).filter(|&o| o != j).flat_map(|o| by_class[o].iter().rev().take(per_other).cloned()).collect();
        let base = c.groups()[g].base();
        let module = &refitted[g][m];
        refitted[g][m].head = calibrated_head(base, module, train, &positives, &negatives, batch)?;
        // The minimum score belongs to the head it was placed for: placed again for the new one
        // on the class's images the head was not fitted on (none when too few are left).
        refitted[g][m].min_score = held_out_min_score(base, &refitted[g][m], train, j, &positives, batch)?;
    }
    c.composed = c.composed.with_modules(refitted)?;
    Ok(())
}
