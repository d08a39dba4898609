//! Concern identification (CI) and tangling identification (TI) from activity counts.
//! CI keeps a node for class c when it is active on at least `keep_rate` of c's positives;
//! TI restores a node CI dropped when it is active on at least `tangle_rate` of c's negatives
//! (`tangle_rate = 0` means "on any negative").

use classmod_runtime::host::ReluSite;
use classmod_runtime::host::{NodeMask, SiteMask};

use super::observe::ActivityCounts;

/// The smallest count that reaches `rate` of `n` images (at least one image).
fn threshold(rate: f64, n: usize) -> u32 {
    ((rate * n as f64 - 1e-9).ceil() as u32).max(1)
}

/// The node mask of one class.
pub fn node_mask(
    sites: &[ReluSite],
    positives: &ActivityCounts,
    negatives: &ActivityCounts,
    keep_rate: f64,
    tangle_rate: f64,
) -> NodeMask {
    let keep_at = threshold(keep_rate, positives.images);
    let tangle_at = threshold(tangle_rate, negatives.images);
    let masks = sites
        .iter()
        .enumerate()
        .map(|(s, site)| {
            let mut m = SiteMask::zeros(site);
            for (n, (&p, &q)) in positives.sites[s].iter().zip(&negatives.sites[s]).enumerate() {
                if p >= keep_at || q >= tangle_at {
                    m.set(n, true);
                }
            }
            m
        })
        .collect();
    NodeMask { sites: masks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_and_ti_thresholds() {
        let site = ReluSite { name: "s".into(), channels: 1, height: 1, width: 4 };
        let pos = ActivityCounts { images: 10, sites: vec![vec![10, 9, 5, 0]] };
        let neg = ActivityCounts { images: 10, sites: vec![vec![0, 0, 3, 1]] };
        let kept = |k, t| {
            let m = node_mask(std::slice::from_ref(&site), &pos, &neg, k, t);
            (0..4).map(|i| m.sites[0].get(i)).collect::<Vec<_>>()
        };
        // Strict CI, no TI restoring (tangle rate above 1).
        assert_eq!(kept(1.0, 1.1), [true, false, false, false]);
        assert_eq!(kept(0.9, 1.1), [true, true, false, false]);
        // TI with rate 0: any negative activity restores.
        assert_eq!(kept(1.0, 0.0), [true, false, true, true]);
        assert_eq!(kept(1.0, 0.3), [true, false, true, false]);
        // A higher keep rate never keeps more nodes.
        let n = |k| kept(k, 1.1).iter().filter(|&&b| b).count();
        assert!(n(0.5) >= n(0.9) && n(0.9) >= n(1.0));
    }
}
