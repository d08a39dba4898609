//! "None of the loaded classes": a device serving a few classes sees images of every other class
//! too. For every subset of 3 and of 5 classes (or a seeded sample of distinct subsets where there
//! are too many to list: 200 classes have 2.5 billion of 5), the images of the other classes
//! are what the device should answer `none` for. Per kind of module (mask, compact) and for the
//! base restricted to the subset's classes (its maximum softmax probability, the usual baseline):
//! - at 95 % acceptance: the confidence (the best loaded score, or the restricted base's max
//!   softmax) is thresholded where 95 % of the loaded classes' images still pass, and the share
//!   of the other classes' images below it is the share rejected (the threshold is chosen on
//!   the test images themselves: the same footing for every method, none of which a device has);
//! - with the modules' calibrated minimum scores (what a device runs: fitted at packing on
//!   held-out training images): the shares of loaded images accepted and of others rejected.
//!
//! Scores come from one pass over the test images per packed directory ([`ScoreTable`]).

use serde::Serialize;

use super::scores::ScoreTable;
use super::subsets;
use crate::decompose::min_score::{min_score, ACCEPTED_SHARE};

/// One way of telling loaded classes from the rest, on one packed directory.
pub struct Method<'a> {
    /// What it is (`compact modules`, `mask modules`, `base max-softmax`).
    pub name: String,
    /// Module scores and the base's logits on the test images, labels in class order with one
    /// module per class.
    pub table: &'a ScoreTable,
    /// Each module's calibrated minimum score (`None`: the base, which has none).
    pub mins: Option<Vec<Option<f32>>>,
}

/// A method's figures for one subset size, averaged over the subsets of that size measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSetRow {
    pub method: String,
    /// Classes loaded.
    pub loaded: usize,
    /// Subsets averaged over: every subset of this size, or a seeded sample of them ...
    pub subsets: usize,
    /// ... out of this many (saturating).
    pub possible: u64,
    /// Mean share of the other classes' images rejected at 95 % acceptance of the loaded ones.
    pub rejected_at_95: f64,
    /// The worst subset's.
    pub rejected_at_95_min: f64,
    /// With the calibrated minimum scores: mean share of the loaded classes' images accepted
    /// (`None` for the base), ...
    pub calibrated_accepted: Option<f64>,
    /// ... and of the other classes' images rejected.
    pub calibrated_rejected: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenSetReport {
    pub images: usize,
    pub classes: Vec<String>,
    pub rows: Vec<OpenSetRow>,
}

/// Softmax of `logits`' maximum.
fn max_softmax(logits: &[f32]) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    1.0 / logits.iter().map(|&l| (l - m).exp()).sum::<f32>()
}

/// One method on one subset.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SubsetFigures {
    /// Others rejected at 95 % acceptance.
    rejected_at_95: f64,
    /// With the calibrated minimum scores: (loaded accepted, others rejected).
    calibrated: Option<(f64, f64)>,
}

fn one_subset(m: &Method, subset: &[usize]) -> SubsetFigures {
    let t = m.table;
    let n = t.labels.len();
    let loaded = |i: usize| subset.contains(&(t.labels[i] as usize));
    let confidence = |i: usize| -> f32 {
        match m.mins {
            Some(_) => subset.iter().map(|&c| t.scores[c][i]).fold(f32::NEG_INFINITY, f32::max),
            None => max_softmax(&subset.iter().map(|&c| t.base[i][c]).collect::<Vec<_>>()),
        }
    };
    let (mine, theirs): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| loaded(i));
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let conf: Vec<f32> = mine.iter().map(|&i| confidence(i)).collect();
    let threshold = min_score(conf, ACCEPTED_SHARE).unwrap_or(f32::NEG_INFINITY);
    let rejected = frac(theirs.iter().filter(|&&i| confidence(i) < threshold).count(), theirs.len());
    let calibrated = m.mins.as_ref().map(|mins| {
        let claims = |i: usize| subset.iter().any(|&c| t.scores[c][i] >= mins[c].unwrap_or(f32::NEG_INFINITY));
        (
            frac(mine.iter().filter(|&&i| claims(i)).count(), mine.len()),
            frac(theirs.iter().filter(|&&i| !claims(i)).count(), theirs.len()),
        )
    });
    SubsetFigures { rejected_at_95: rejected, calibrated }
}

/// Every method on every subset of each size in `sizes`, or on `max_subsets` of them drawn with
/// `seed` where there are more (the same subsets for every method).
pub fn open_set(
    methods: &[Method],
    classes: Vec<String>,
    sizes: &[usize],
    max_subsets: usize,
    seed: u64,
) -> OpenSetReport {
    let images = methods.first().map_or(0, |m| m.table.labels.len());
    let mut rows = Vec::new();
    for &k in sizes {
        let chosen = subsets::at_most(classes.len(), k, max_subsets, seed);
        let all = &chosen.list;
        for m in methods {
            let per: Vec<SubsetFigures> = all.iter().map(|s| one_subset(m, s)).collect();
            let mean = |f: fn(&SubsetFigures) -> f64| per.iter().map(f).sum::<f64>() / per.len().max(1) as f64;
            let calibrated = m.mins.is_some();
            rows.push(OpenSetRow {
                method: m.name.clone(),
                loaded: k,
                subsets: all.len(),
                possible: u64::try_from(chosen.of).unwrap_or(u64::MAX),
                rejected_at_95: mean(|p| p.rejected_at_95),
                rejected_at_95_min: per.iter().map(|p| p.rejected_at_95).fold(1.0, f64::min),
                calibrated_accepted: calibrated.then(|| mean(|p| p.calibrated.map_or(0.0, |c| c.0))),
                calibrated_rejected: calibrated.then(|| mean(|p| p.calibrated.map_or(0.0, |c| c.1))),
            });
        }
    }
    OpenSetReport { images, classes, rows }
}

/// The report as Markdown.
pub fn markdown(r: &OpenSetReport, command: &str) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
    let mut s = format!(
        "# None of the loaded classes\n\n`{command}`\n\n{} test images of {} classes; every subset of each size (or a seeded sample of distinct \
         ones: \"subsets\" says how many of how many), the images of the other classes as the ones to answer `none` for. \"At 95 % acceptance\": the best loaded score (or the \
         restricted base's max softmax) thresholded where 95 % of the loaded classes' images pass, the threshold chosen on \
         these test images. \"Calibrated\": the modules' own minimum scores, fitted at packing on held-out training images \
         (what a device runs with `--min-score calibrated`).\n\n\
         | loaded classes | method | subsets | others rejected at 95 % acceptance (mean) | worst subset | calibrated: loaded accepted | calibrated: others rejected |\n\
         |---:|---|---:|---:|---:|---:|---:|\n",
        r.images,
        r.classes.len()
    );
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.loaded,
            row.method,
            if row.subsets as u64 == row.possible {
                row.subsets.to_string()
            } else {
                format!("{} of {}", row.subsets, row.possible)
            },
            pct(Some(row.rejected_at_95)),
            pct(Some(row.rejected_at_95_min)),
            pct(row.calibrated_accepted),
            pct(row.calibrated_rejected)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes, 40 images each; module c scores its own class high and the others low,
    /// except that module 0 also likes class 2's images: loading {0, 1} rejects class 2 badly,
    /// loading {1, 2} rejects class 0 perfectly.
    #[test]
    fn rejection_follows_the_scores() {
        let labels: Vec<u32> = (0..120).map(|i| (i / 40) as u32).collect();
        let score = |m: usize, l: usize, i: usize| -> f32 {
            let jitter = (i % 40) as f32 / 400.0;
            if m == l || (m == 0 && l == 2) {
                0.8 + jitter
            } else {
                0.1 + jitter
            }
        };
        let scores: Vec<Vec<f32>> =
            (0..3).map(|m| (0..120).map(|i| score(m, labels[i] as usize, i)).collect()).collect();
        let base: Vec<Vec<f32>> =
            (0..120).map(|i| (0..3).map(|m| 4.0 * score(m, labels[i] as usize, i)).collect()).collect();
        let votes = vec![vec![false; 120]; 3];
        let table = ScoreTable { labels, scores, votes, base };
        let m = Method { name: "modules".into(), table: &table, mins: Some(vec![Some(0.5); 3]) };
        let SubsetFigures { rejected_at_95: rejected, calibrated: cal } = one_subset(&m, &[0, 1]);
        // Class 2's images score like the loaded ones: only the 5 % below the threshold go.
        assert!((rejected - 0.05).abs() < 1e-9, "module 0 claims class 2's images: {rejected}");
        assert_eq!(cal, Some((1.0, 0.0)));
        let SubsetFigures { rejected_at_95: rejected, calibrated: cal } = one_subset(&m, &[1, 2]);
        assert_eq!(rejected, 1.0);
        assert_eq!(cal, Some((1.0, 1.0)));
        let r = open_set(&[m], vec!["a".into(), "b".into(), "c".into()], &[2], 1000, 0);
        assert_eq!((r.rows[0].subsets, r.rows[0].possible), (3, 3));
        assert!((r.rows[0].rejected_at_95_min - 0.05).abs() < 1e-9);
    }
}
