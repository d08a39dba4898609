//! Composition: which class a set of modules predicts for one image. Rule `max` takes the module
//! with the highest score; rule `vote` (the paper's lineage) lets modules whose positive logit
//! beats their negative logit vote: a single voter wins, several voters or none fall back to the
//! highest score.

/// A composition rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The module with the highest score wins.
    Max,
    /// A single module whose positive logit beats its negative one wins; otherwise the highest score.
    Vote,
}

/// Index of the highest score (ties go to the lower index, as argmax does).
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// The winning module for one image, from each module's score and vote.
pub fn predict(scores: &[f32], votes: &[bool], rule: Rule) -> usize {
    match rule {
        Rule::Max => argmax(scores),
        Rule::Vote => {
            let mut voters = votes.iter().enumerate().filter(|(_, &v)| v).map(|(i, _)| i);
            match (voters.next(), voters.next()) {
                (Some(only), None) => only,
                _ => argmax(scores),
            }
        }
    }
}

/// Module indices by descending score (stable: ties keep index order), for top-k.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let scores = [0.2, 0.9, 0.6];
        assert_eq!(predict(&scores, &[false, true, false], Rule::Max), 1);
        // One voter wins even without the highest score.
        assert_eq!(predict(&scores, &[false, false, true], Rule::Vote), 2);
        // Several or no voters: highest score.
        assert_eq!(predict(&scores, &[true, false, true], Rule::Vote), 1);
        assert_eq!(predict(&scores, &[false, false, false], Rule::Vote), 1);
        assert_eq!(ranking(&scores), vec![1, 2, 0]);
        assert_eq!(predict(&[0.5, 0.5], &[false, false], Rule::Max), 0);
    }
}
