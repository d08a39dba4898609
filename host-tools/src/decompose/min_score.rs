//! A module's minimum score ([`classmod_runtime::host::ClassModule::min_score`]): the score that
//! [`ACCEPTED_SHARE`] of its class's held-out training images reach. A device serving the module
//! then still accepts about that share of its class's images, and can answer "none" for images
//! that no served module claims.

/// The share of a class's held-out images its module's minimum lets through.
pub const ACCEPTED_SHARE: f64 = 0.95;

/// Fewer held-out images of the class than this give no minimum (too few to place a quantile).
pub const MIN_HELD_OUT: usize = 20;

/// The highest score that at least `share` of `scores` (the module's scores on held-out images
/// of its class) reach; `None` with fewer than [`MIN_HELD_OUT`] scores.
pub fn min_score(mut scores: Vec<f32>, share: f64) -> Option<f32> {
    scores.retain(|s| s.is_finite());
    if scores.len() < MIN_HELD_OUT {
        return None;
    }
    scores.sort_by(f32::total_cmp);
    // Scores from index i on are at least scores[i]: n - i of them, at least share * n.
    let i = ((1.0 - share.clamp(0.0, 1.0)) * scores.len() as f64 + 1e-9).floor() as usize;
    Some(scores[i.min(scores.len() - 1)].clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_lets_the_share_through() {
        let scores: Vec<f32> = (0..100).rev().map(|i| i as f32 / 100.0).collect();
        let m = min_score(scores.clone(), 0.95).unwrap();
        assert_eq!(m, 0.05);
        assert_eq!(scores.iter().filter(|&&s| s >= m).count(), 95);
        assert_eq!(min_score(scores.clone(), 1.0), Some(0.0));
        assert_eq!(min_score(scores[..19].to_vec(), 0.95), None, "too few to place a quantile");
        let mut with_nan = scores.clone();
        with_nan.push(f32::NAN);
        assert_eq!(min_score(with_nan, 0.95), Some(0.05));
    }
}
