//! Every module's score and vote on every test image, with the base model's logits for the same
//! classes, computed once (one stacked pass per batch). Compositions of any subset of the modules,
//! and of modules swapped in from another model, are then arithmetic on this table.

use crate::HostError;
use classmod_runtime::host::ModuleGroup;
use classmod_runtime::{host::predict, Rule};
use indicatif::ProgressBar;

use crate::dataset::ImageSet;
use crate::eval::batch_tensor;

#[derive(Clone)]
pub struct ScoreTable {
    /// Test labels, as indices of the group's modules.
    pub labels: Vec<u32>,
    /// `scores[module][image]`, `votes[module][image]`.
    pub scores: Vec<Vec<f32>>,
    pub votes: Vec<Vec<bool>>,
    /// `base[image][module]`: the base's logit of each module's class.
    pub base: Vec<Vec<f32>>,
}

impl ScoreTable {
    /// Runs `group` over `test`, whose labels index the group's modules.
    pub fn compute(
        group: &ModuleGroup,
        test: &ImageSet,
        batch: usize,
        progress: &ProgressBar,
    ) -> Result<Self, HostError> {
        let k = group.modules().len();
        let (mut scores, mut votes) =
            (vec![Vec::with_capacity(test.len()); k], vec![Vec::with_capacity(test.len()); k]);
        let mut base = Vec::with_capacity(test.len());
        let idx: Vec<usize> = (0..test.len()).collect();
        for chunk in idx.chunks(batch.max(1)) {
            let x = batch_tensor(test, chunk, group.base().input_spec(), group.base().device())?;
            let out = group.run(&x)?;
            for m in 0..k {
                for i in 0..chunk.len() {
                    scores[m].push(out.score(m, i));
                    votes[m].push(out.votes(m, i));
                }
            }
            for row in group.base().forward(&x)?.to_vec2::<f32>()? {
                base.push(group.modules().iter().map(|m| row[m.class_id.0 as usize]).collect());
            }
            progress.inc(chunk.len() as u64);
        }
        Ok(ScoreTable { labels: test.labels.clone(), scores, votes, base })
    }

    /// Top-1 of the composition of `subset` (module indices, each taken from `tables[source]`),
    /// and of the base restricted to those classes, over the images of those classes.
    pub fn subset_accuracy(tables: &[&ScoreTable], subset: &[(usize, usize)], rule: Rule) -> SubsetAccuracy {
        let t0 = tables[0];
        let (mut n, mut composed, mut base) = (0usize, 0usize, 0usize);
        let mut per_class = vec![(0usize, 0usize); subset.len()];
        for (i, &label) in t0.labels.iter().enumerate() {
            let Some(pos) = subset.iter().position(|&(_, m)| m == label as usize) else { continue };
            n += 1;
            let scores: Vec<f32> = subset.iter().map(|&(src, m)| tables[src].scores[m][i]).collect();
            let votes: Vec<bool> = subset.iter().map(|&(src, m)| tables[src].votes[m][i]).collect();
            per_class[pos].0 += 1;
            if predict(&scores, &votes, rule) == pos {
                composed += 1;
                per_class[pos].1 += 1;
            }
            let logits: Vec<f32> = subset.iter().map(|&(_, m)| t0.base[i][m]).collect();
            if predict(&logits, &[], Rule::Max) == pos {
                base += 1;
            }
        }
        let f = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        SubsetAccuracy {
            n,
            composed: f(composed, n),
            base: f(base, n),
            per_class: per_class.iter().map(|&(t, c)| f(c, t)).collect(),
        }
    }
}

/// All of `a`'s modules composed, and for each class c of `classes` the same composition with
/// module c taken from `b` instead (tables of the same images and classes, one module per class
/// in order), in `classes`' order: the inter-model replace of the paper, for mask modules or
/// transplanted compact ones.
pub fn replaced_one_by_one(
    a: &ScoreTable,
    b: &ScoreTable,
    rule: Rule,
    classes: &[usize],
) -> (SubsetAccuracy, Vec<SubsetAccuracy>) {
    let k = a.scores.len();
    let all: Vec<(usize, usize)> = (0..k).map(|m| (0, m)).collect();
    let acc = |s: &[(usize, usize)]| ScoreTable::subset_accuracy(&[a, b], s, rule);
    let swapped = classes
        .iter()
        .map(|&c| {
            let mut s = all.clone();
            s[c] = (1, c);
            acc(&s)
        })
        .collect();
    (acc(&all), swapped)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubsetAccuracy {
    pub n: usize,
    pub composed: f64,
    pub base: f64,
    /// Composed top-1 per class of the subset, in subset order.
    pub per_class: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_and_swaps_are_scored_from_the_table() {
        // Three classes, four images (labels 0, 1, 2, 2).
        let a = ScoreTable {
            labels: vec![0, 1, 2, 2],
            scores: vec![vec![0.9, 0.1, 0.2, 0.6], vec![0.2, 0.8, 0.1, 0.1], vec![0.1, 0.3, 0.7, 0.5]],
            votes: vec![
                vec![true, false, false, true],
                vec![false, true, false, false],
                vec![false, false, true, true],
            ],
            base: vec![vec![3.0, 1.0, 0.0], vec![0.0, 2.0, 1.0], vec![0.0, 0.0, 1.0], vec![2.0, 0.0, 1.0]],
        };
        let r = ScoreTable::subset_accuracy(&[&a], &[(0, 0), (0, 2)], Rule::Max);
        // Images 0, 2, 3: composed right on 0 and 2 (image 3: 0.6 vs 0.5 -> class 0, wrong).
        assert_eq!(r.n, 3);
        assert!((r.composed - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.base - 2.0 / 3.0).abs() < 1e-12);
        // Swap in another model's module for class 2 that is surer on image 3.
        let mut b = ScoreTable {
            labels: a.labels.clone(),
            scores: a.scores.clone(),
            votes: a.votes.clone(),
            base: a.base.clone(),
        };
        b.scores[2][3] = 0.95;
        let r = ScoreTable::subset_accuracy(&[&a, &b], &[(0, 0), (1, 2)], Rule::Max);
        assert!((r.composed - 1.0).abs() < 1e-12);
        assert_eq!(r.per_class, vec![1.0, 1.0]);
    }
}
