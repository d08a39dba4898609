//! Subsets and unions of [`ImageSet`]s: [`ImageSet::select`], the seeded, class-balanced
//! [`ImageSet::balanced_sample`] behind every `--limit N`, [`ImageSet::only_classes`] behind
//! `train --classes` and [`ImageSet::relabelled`] behind composing a few classes,
//! [`ImageSet::balanced_halves`] behind a check that chooses on one half and reports the other,
//! and [`ImageSet::append`].

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::ImageSet;

pub(super) fn select(set: &ImageSet, indices: &[usize]) -> ImageSet {
    let mut pixels = Vec::with_capacity(indices.len() * set.image_len());
    for &i in indices {
        pixels.extend_from_slice(set.image(i));
    }
    ImageSet {
        class_names: set.class_names.clone(),
        shape: set.shape,
        pixels,
        labels: indices.iter().map(|&i| set.labels[i]).collect(),
    }
}

/// The images whose label `l` has a `map[l]`, relabelled to it, the classes named `names`.
pub(super) fn relabelled(set: &ImageSet, map: &[Option<u32>], names: Vec<String>) -> ImageSet {
    let keep: Vec<usize> = (0..set.len()).filter(|&i| map[set.labels[i] as usize].is_some()).collect();
    let mut out = select(set, &keep);
    out.labels.iter_mut().for_each(|l| *l = map[*l as usize].expect("kept"));
    out.class_names = names;
    out
}

/// The images of `names`' classes, relabelled in `names`' order; `None` names the first class
/// the set does not have.
pub(super) fn only_classes<'a>(set: &ImageSet, names: &'a [String]) -> Result<ImageSet, &'a str> {
    let mut to_new = vec![None; set.class_names.len()];
    for (new, name) in names.iter().enumerate() {
        let old = set.class_names.iter().position(|c| c == name).ok_or(name.as_str())?;
        to_new[old] = Some(new as u32);
    }
    Ok(relabelled(set, &to_new, names.to_vec()))
}

pub(super) fn append(set: &mut ImageSet, other: ImageSet) {
    assert_eq!(
        (set.shape, &set.class_names),
        (other.shape, &other.class_names),
        "append: sets of one shape and class list"
    );
    set.pixels.extend_from_slice(&other.pixels);
    set.labels.extend_from_slice(&other.labels);
}

pub(super) fn balanced_sample(set: &ImageSet, n: usize, seed: u64) -> ImageSet {
    if n >= set.len() {
        return set.clone();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Indices per label, in label order (labels without images take no share).
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in set.labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut by_class: Vec<Vec<usize>> = by_label.into_values().collect();
    let quotas = quotas(&by_class.iter().map(Vec::len).collect::<Vec<_>>(), n);
    let mut chosen = Vec::with_capacity(n);
    for (members, quota) in by_class.iter_mut().zip(quotas) {
        members.shuffle(&mut rng);
        chosen.extend_from_slice(&members[..quota]);
    }
    chosen.shuffle(&mut rng);
    select(set, &chosen)
}

/// Each class's images shuffled (seeded) and cut in two, the first half (rounded down) to the
/// first set: two disjoint sets of about the same classes' shares, together the whole.
pub(super) fn balanced_halves(set: &ImageSet, seed: u64) -> (ImageSet, ImageSet) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in set.labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for members in by_label.values_mut() {
        members.shuffle(&mut rng);
        let (a, b) = members.split_at(members.len() / 2);
        first.extend_from_slice(a);
        second.extend_from_slice(b);
    }
    first.sort_unstable();
    second.sort_unstable();
    (select(set, &first), select(set, &second))
}

/// How many of each class to take for `n` in all (`n` at most the sum of `available`): equal
/// shares as far as the classes have images, the remainder to the first classes.
fn quotas(available: &[usize], n: usize) -> Vec<usize> {
    let mut quota = vec![0; available.len()];
    let mut remaining = n;
    loop {
        let open: Vec<usize> = (0..available.len()).filter(|&c| quota[c] < available[c]).collect();
        if remaining == 0 || open.is_empty() {
            return quota;
        }
        let share = remaining / open.len();
        if share == 0 {
            for &c in &open[..remaining] {
                quota[c] += 1;
            }
            return quota;
        }
        for &c in &open {
            let take = share.min(available[c] - quota[c]);
            quota[c] += take;
            remaining -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageShape;

    /// Image i is one byte `i`; labels as given.
    fn set(labels: &[u32]) -> ImageSet {
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        ImageSet {
            class_names: (0..classes).map(|i| i.to_string()).collect(),
            shape: ImageShape::new(1, 1, 1),
            pixels: (0..labels.len()).map(|i| i as u8).collect(),
            labels: labels.to_vec(),
        }
    }

    fn counts(s: &ImageSet) -> Vec<usize> {
        let mut c = vec![0; s.class_names.len()];
        for &l in &s.labels {
            c[l as usize] += 1;
        }
        c
    }

    #[test]
    fn only_classes_keeps_their_images_relabelled_in_the_order_asked() {
        let s = set(&[0, 1, 2, 1, 3, 2]);
        let two = s.only_classes(std::path::Path::new("d"), &["2".into(), "1".into()]).unwrap();
        assert_eq!(two.class_names, ["2", "1"]);
        assert_eq!(two.pixels, vec![1, 2, 3, 5], "the images of classes 1 and 2, in the set's order");
        assert_eq!(two.labels, vec![1, 0, 1, 0]);
        let e = s.only_classes(std::path::Path::new("d"), &["1".into(), "cat".into()]).unwrap_err();
        assert!(
            e.to_string().starts_with("d: classes do not match") && e.to_string().contains("no class `cat`"),
            "{e}"
        );
    }

    #[test]
    fn append_keeps_images_with_their_labels() {
        let mut a = set(&[0, 1, 1]);
        let mut b = set(&[1, 0]);
        b.pixels = vec![7, 9];
        a.append(b);
        assert_eq!(a.labels, vec![0, 1, 1, 1, 0]);
        assert_eq!(a.pixels, vec![0, 1, 2, 7, 9]);
        assert_eq!(a.image(4), &[9]);
    }

    #[test]
    #[should_panic(expected = "one shape and class list")]
    fn append_refuses_other_classes() {
        let mut a = set(&[0, 1]);
        a.append(set(&[0, 1, 2]));
    }

    #[test]
    fn quota_rules() {
        assert_eq!(quotas(&[10, 10, 10], 7), vec![3, 2, 2]);
        assert_eq!(quotas(&[1, 100, 100], 10), vec![1, 5, 4]);
        assert_eq!(quotas(&[2, 3], 5), vec![2, 3]);
        assert_eq!(quotas(&[5, 5], 0), vec![0, 0]);
    }

    #[test]
    fn balanced_halves_split_each_class_in_two_disjoint_halves() {
        let labels: Vec<u32> = (0..41).map(|i| (i % 4) as u32).collect();
        let s = set(&labels);
        let (a, b) = s.balanced_halves(3);
        assert_eq!((a.len(), b.len()), (20, 21), "class 0's odd image goes to the second half");
        for c in 0..4 {
            let n = |h: &ImageSet| h.labels.iter().filter(|&&l| l == c).count();
            assert!(n(&b) - n(&a) <= 1, "class {c}: {} and {}", n(&a), n(&b));
        }
        let mut all: Vec<u8> = a.pixels.iter().chain(&b.pixels).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..41).collect::<Vec<u8>>(), "disjoint, together the whole");
        assert_eq!(s.balanced_halves(3).0.pixels, a.pixels, "seeded");
        assert_ne!(s.balanced_halves(4).0.pixels, a.pixels);
    }

    #[test]
    fn select_keeps_order_and_pixels() {
        let s = set(&[0, 1, 2, 0]);
        let sub = s.select(&[3, 0, 2]);
        assert_eq!(sub.labels, vec![0, 0, 2]);
        assert_eq!(sub.pixels, vec![3, 0, 2]);
        assert_eq!(sub.class_names, s.class_names);
    }

    #[test]
    fn balanced_deterministic_and_seeded() {
        // 4 classes, 50 images each, interleaved unevenly.
        let labels: Vec<u32> = (0..200).map(|i| ((i * 7) % 4) as u32).collect();
        let s = set(&labels);
        let a = s.balanced_sample(22, 1);
        assert_eq!(a.len(), 22);
        assert_eq!(counts(&a), vec![6, 6, 5, 5]);
        // Each image once, and its label kept with it.
        let mut ids: Vec<u8> = a.pixels.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 22);
        for (p, l) in a.pixels.iter().zip(&a.labels) {
            assert_eq!(labels[*p as usize], *l);
        }
        let b = s.balanced_sample(22, 1);
        assert_eq!((a.pixels.clone(), a.labels.clone()), (b.pixels, b.labels));
        let c = s.balanced_sample(22, 2);
        assert_ne!(a.pixels, c.pixels);
        // Shuffled: not grouped by class.
        assert!(a.labels.windows(2).any(|w| w[0] > w[1]));
        // Everything when n >= len.
        assert_eq!(s.balanced_sample(200, 3).pixels, s.pixels);
        assert_eq!(s.balanced_sample(1000, 3).len(), 200);
    }

    #[test]
    fn balanced_with_small_class() {
        let mut labels = vec![0u32; 30];
        labels.extend([1, 1]);
        labels.extend(vec![2u32; 30]);
        let s = set(&labels);
        assert_eq!(counts(&s.balanced_sample(20, 9)), vec![9, 2, 9]);
        assert_eq!(counts(&s.balanced_sample(0, 9)), vec![0, 0, 0]);
    }
}
