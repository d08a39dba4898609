//! Which class subsets an experiment measures: every subset of a size while there are few (10
//! classes have 45 pairs and 252 five-class subsets), a seeded sample of distinct subsets when
//! there are too many to list (200 classes have 19,900 pairs and 2.5 billion five-class subsets).

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// The subsets of one size chosen for measuring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsets {
    /// Sorted class indices, one entry per subset, no two alike.
    pub list: Vec<Vec<usize>>,
    /// How many subsets of this size there are (saturating).
    pub of: u128,
}

impl Subsets {
    /// Whether `list` is every subset of this size.
    pub fn all(&self) -> bool {
        self.list.len() as u128 == self.of
    }
}

/// n choose k, saturating at `u128::MAX`.
pub fn count(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        // c * (n - i) / (i + 1) stays exact: c is C(n, i) and C(n, i) * (n - i) = C(n, i + 1) * (i + 1).
        match c.checked_mul((n - i) as u128) {
            Some(v) => c = v / (i as u128 + 1),
            None => return u128::MAX,
        }
    }
    c
}

/// Every subset of `k` of `n` classes, in lexicographic order.
pub fn every(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut s: Vec<usize> = (0..k).collect();
    if k == 0 || k > n {
        return out;
    }
    loop {
        out.push(s.clone());
        let Some(i) = (0..k).rev().find(|&i| s[i] < n - k + i) else { return out };
        s[i] += 1;
        for j in i + 1..k {
            s[j] = s[j - 1] + 1;
        }
    }
}

/// One seeded subset of `k` of `n` classes, sorted (all of them when `k >= n`).
pub fn one(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut s = sample(&mut ChaCha8Rng::seed_from_u64(seed), n, k.min(n)).into_vec();
    s.sort_unstable();
    s
}

/// Every subset of `k` of `n` classes when there are at most `at_most`, else `at_most` distinct
/// subsets drawn with `seed` (in lexicographic order either way).
pub fn at_most(n: usize, k: usize, at_most: usize, seed: u64) -> Subsets {
    let of = count(n, k);
    if k == 0 || of <= at_most as u128 {
        return Subsets { list: every(n, k), of };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Few more than wanted: draw which of the listed ones to keep (rejection would take long).
    if of <= 4 * at_most as u128 {
        let all = every(n, k);
        let mut keep = sample(&mut rng, all.len(), at_most).into_vec();
        keep.sort_unstable();
        return Subsets { list: keep.into_iter().map(|i| all[i].clone()).collect(), of };
    }
    let mut drawn = BTreeSet::new();
    while drawn.len() < at_most {
        let mut s = sample(&mut rng, n, k).into_vec();
        s.sort_unstable();
        drawn.insert(s);
    }
    Subsets { list: drawn.into_iter().collect(), of }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(10, 2), 45);
        assert_eq!(count(10, 5), 252);
        assert_eq!(count(200, 2), 19_900);
        assert_eq!(count(200, 5), 2_535_650_040);
        assert_eq!(count(3, 4), 0);
        assert_eq!(count(7, 0), 1);
        assert_eq!(count(10_000, 5_000), u128::MAX);
    }

    #[test]
    fn every_subset_once() {
        assert_eq!(every(10, 3).len(), 120);
        assert_eq!(every(10, 5).len(), 252);
        assert_eq!(every(4, 2), [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]);
        assert!(every(3, 4).is_empty());
    }

    #[test]
    fn all_while_few_a_distinct_seeded_sample_beyond() {
        let few = at_most(10, 2, 200, 0);
        assert!(few.all());
        assert_eq!(few.list, every(10, 2));
        for (n, k) in [(200, 5), (200, 2), (12, 5)] {
            // 12 choose 5 = 792 <= 4 * 200: picked among the listed ones.
            let s = at_most(n, k, 200, 7);
            assert_eq!(s.list.len(), 200, "{n} choose {k}");
            assert!(!s.all());
            let distinct: BTreeSet<_> = s.list.iter().cloned().collect();
            assert_eq!(distinct.len(), 200, "no subset twice");
            assert!(s.list.iter().all(|x| x.len() == k && x.windows(2).all(|w| w[0] < w[1]) && x[k - 1] < n));
            assert_eq!(s, at_most(n, k, 200, 7), "same seed, same subsets");
            assert_ne!(s.list, at_most(n, k, 200, 8).list, "another seed, other subsets");
        }
        assert_eq!(one(200, 20, 3), one(200, 20, 3));
        assert_eq!(one(200, 20, 3).len(), 20);
        assert_eq!(one(5, 9, 0), [0, 1, 2, 3, 4]);
        // Every class turns up among 200 sampled five-class subsets of 200 (1,000 draws).
        let s = at_most(200, 5, 200, 0);
        let seen: BTreeSet<usize> = s.list.iter().flatten().copied().collect();
        assert!(seen.len() > 190, "{} classes seen", seen.len());
    }
}
