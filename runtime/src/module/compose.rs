//! Composition: which class a set of modules predicts for one image. Rule `max` takes the module
//! with the highest score; rule `vote` (the paper's lineage) lets modules whose positive logit
//! beats their negative logit vote: a single voter wins, several voters or none fall back to the
//! highest score. Either rule picks only among the modules whose score reaches their minimum
//! ([`MinScore`]); where none does, the image is none of the loaded classes.

use crate::ClassModule;

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

/// The score a module must reach to claim an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinScore {
    /// Every image is one of the loaded classes (the paper's closed world).
    Off,
    /// Each module's own calibrated minimum ([`ClassModule::min_score`]); a module packed
    /// without one claims every image.
    Calibrated,
    /// One minimum for every module, a score in [0, 1].
    Fixed(f32),
}

impl MinScore {
    /// The minimum `module` must reach.
    pub fn of(&self, module: &ClassModule) -> f32 {
        match self {
            MinScore::Off => f32::NEG_INFINITY,
            MinScore::Calibrated => module.min_score.unwrap_or(f32::NEG_INFINITY),
            MinScore::Fixed(s) => *s,
        }
    }
}

impl std::str::FromStr for MinScore {
    type Err = String;

    /// `calibrated`, `off` or a score in [0, 1].
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "calibrated" => Ok(MinScore::Calibrated),
            "off" => Ok(MinScore::Off),
            _ => match s.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(MinScore::Fixed(v)),
                _ => Err(format!("{s:?}: give `calibrated`, `off` or a score between 0 and 1")),
            },
        }
    }
}

/// The winning module for one image among those whose score reaches its minimum (`mins`, one
/// per module), or `None` when no module does.
pub fn answer(scores: &[f32], votes: &[bool], mins: &[f32], rule: Rule) -> Option<usize> {
    let claims: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] >= mins[i]).collect();
    if claims.len() == scores.len() {
        return Some(predict(scores, votes, rule));
    }
    let (s, v): (Vec<f32>, Vec<bool>) = claims.iter().map(|&i| (scores[i], votes[i])).unzip();
    (!claims.is_empty()).then(|| claims[predict(&s, &v, rule)])
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
    fn only_modules_that_reach_their_minimum_claim_an_image() {
        let (scores, votes) = ([0.2, 0.9, 0.6], [false, true, true]);
        let off = [f32::NEG_INFINITY; 3];
        assert_eq!(answer(&scores, &votes, &off, Rule::Max), Some(1));
        // The best score misses its own minimum: the next module that reaches its own wins.
        assert_eq!(answer(&scores, &votes, &[0.1, 0.95, 0.5], Rule::Max), Some(2));
        assert_eq!(answer(&scores, &votes, &[0.1, 0.95, 0.5], Rule::Vote), Some(2));
        assert_eq!(answer(&scores, &votes, &[0.3, 0.95, 0.7], Rule::Max), None);
        // A minimum is reached at equality.
        assert_eq!(answer(&scores, &votes, &[0.3, 0.9, 0.7], Rule::Max), Some(1));
        for (s, want) in [
            ("calibrated", Some(MinScore::Calibrated)),
            ("off", Some(MinScore::Off)),
            ("0.25", Some(MinScore::Fixed(0.25))),
        ] {
            assert_eq!(s.parse::<MinScore>().ok(), want);
        }
        for bad in ["1.5", "-0.1", "NaN", "high", ""] {
            assert!(bad.parse::<MinScore>().is_err(), "{bad}");
        }
    }

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
