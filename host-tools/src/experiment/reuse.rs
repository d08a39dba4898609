//! Reuse and replace (the paper's RQ on module reuse), from score tables:
//! - intra-model reuse: every two-class subset (a seeded sample of distinct pairs beyond
//!   [`PAIRS`]: 200 classes have 19,900) and a seeded sample of five-class subsets,
//!   composed from one model's modules, against the base restricted to the subset's classes;
//! - inter-model replace: for each class c, model A's module c replaced by model B's, with the
//!   change in class c's accuracy and in the overall accuracy.

use crate::HostError;
use classmod_runtime::host::{ModelFile, ModuleGroup};
use classmod_runtime::Rule;
use indicatif::ProgressBar;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::scores::{replaced_one_by_one, ScoreTable};
use super::subsets;
use crate::dataset::ImageSet;
use crate::decompose::{decompose, DecomposeOptions};

#[derive(Debug, Clone, Serialize)]
pub struct SubsetRow {
    pub classes: Vec<String>,
    pub n: usize,
    pub composed: f64,
    pub base: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReuseReport {
    pub model: String,
    /// What the modules are: `mask` or `compact`.
    pub kind: String,
    pub images: usize,
    /// The decomposition's options when the experiment decomposed the model (mask modules);
    /// `None` for modules read from a packed directory.
    pub options: Option<DecomposeOptions>,
    /// Mean fraction of the base's nodes the mask modules keep (`None` for compact modules).
    pub nodes_kept: Option<f64>,
    /// The packed directory the modules came from, if they were read.
    pub packed: Option<String>,
    pub pairs: Vec<SubsetRow>,
    /// How many two-class subsets the classes have (`pairs` is all of them or a sample).
    pub pairs_possible: u64,
    pub fives: Vec<SubsetRow>,
    /// The pairs of a few seeded classes held against a model trained on each pair alone (the
    /// paper's baseline), when asked for.
    pub trained_pairs: Vec<TrainedPairRow>,
    /// How those models were trained (`classmod train` flags).
    pub trained_with: Option<String>,
}

/// A pair's two modules composed against a model of the pair alone.
#[derive(Debug, Clone, Serialize)]
pub struct TrainedPairRow {
    pub classes: Vec<String>,
    /// The pair's test images the composition and the restricted base are scored on.
    pub n: usize,
    pub composed: f64,
    pub base: f64,
    /// The pair's model on its test images (`trained_n` of them: the pair's whole test split).
    pub trained: f64,
    pub trained_n: usize,
    pub trained_seconds: f64,
}

/// A model trained on a few classes alone, scored on their test images.
#[derive(Debug, Clone, Copy)]
pub struct TrainedOn {
    pub top1: f64,
    pub n: usize,
    pub seconds: f64,
}

/// Trains a model of the named classes alone (the reuse experiment's baseline).
pub type TrainPair<'a> = &'a mut dyn FnMut(&[String]) -> Result<TrainedOn, HostError>;

/// Two-class subsets measured at most (every pair of up to 20 classes).
pub const PAIRS: usize = 200;

/// Decomposes `model` with `opts` and scores the modules once over `test`.
pub fn score_table(
    model: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &DecomposeOptions,
    progress: &ProgressBar,
) -> Result<(ScoreTable, f64), HostError> {
    let d = decompose(model, train, opts, &ProgressBar::hidden())?;
    let nodes_kept = d.nodes_kept();
    let group =
        ModuleGroup::new(classmod_runtime::host::ResNet::new(model, &classmod_runtime::Device::Cpu)?, d.modules)?;
    Ok((ScoreTable::compute(&group, test, opts.batch, progress)?, nodes_kept))
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Intra-model reuse. `test` labels are in the model's class order; all classes are decomposed.
pub fn reuse(
    model: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &DecomposeOptions,
    (pairs, fives): (usize, usize),
    progress: &ProgressBar,
) -> Result<ReuseReport, HostError> {
    let (table, nodes_kept) =
        score_table(model, train, test, &DecomposeOptions { classes: None, ..opts.clone() }, progress)?;
    let (pairs, fives) = subsets_of(&table, &model.meta.class_names, pairs, fives, opts.seed);
    Ok(ReuseReport {
        model: model.meta.arch.name(),
        kind: "mask".into(),
        images: test.len(),
        options: Some(opts.clone()),
        nodes_kept: Some(nodes_kept),
        packed: None,
        pairs_possible: subsets::count(model.meta.class_names.len(), 2) as u64,
        pairs,
        fives,
        trained_pairs: Vec::new(),
        trained_with: None,
    })
}

/// Intra-model reuse of modules already packed (any kind, one module per class of one base, in
/// class order): `group` scored once over `test`. With `trained` = (c, how, train): every pair
/// of c seeded classes also against a model of the pair that `train` makes (`how` says how).
pub fn reuse_packed(
    group: &ModuleGroup,
    packed: &std::path::Path,
    test: &ImageSet,
    (pairs, fives): (usize, usize),
    seed: u64,
    trained: Option<(usize, String, TrainPair)>,
    progress: &ProgressBar,
) -> Result<ReuseReport, HostError> {
    let table = ScoreTable::compute(group, test, 64, progress)?;
    let names = group.base().class_names();
    let (trained_pairs, trained_with) = match trained {
        Some((classes, how, train)) => (against_trained(&table, names, classes, seed, train)?, Some(how)),
        None => (Vec::new(), None),
    };
    let (pairs, fives) = subsets_of(&table, names, pairs, fives, seed);
    let kept: Vec<f64> = group.modules().iter().filter_map(|m| m.kind.kept_fraction()).collect();
    Ok(ReuseReport {
        model: group.base().architecture().name(),
        kind: group.modules().first().map_or("mask", |m| m.kind.name()).into(),
        images: test.len(),
        options: None,
        nodes_kept: (!kept.is_empty()).then(|| mean(kept.into_iter())),
        packed: Some(packed.display().to_string()),
        pairs_possible: subsets::count(names.len(), 2) as u64,
        pairs,
        fives,
        trained_pairs,
        trained_with,
    })
}

/// Every pair of `classes` seeded classes: its two modules composed and the restricted base (from
/// the table) against a model `train` makes of the pair alone.
fn against_trained(
    table: &ScoreTable,
    names: &[String],
    classes: usize,
    seed: u64,
    train: TrainPair,
) -> Result<Vec<TrainedPairRow>, HostError> {
    let picked = subsets::one(names.len(), classes, seed);
    let mut rows = Vec::new();
    for pair in subsets::every(picked.len(), 2) {
        let (a, b) = (picked[pair[0]], picked[pair[1]]);
        let classes = vec![names[a].clone(), names[b].clone()];
        let composed = ScoreTable::subset_accuracy(&[table], &[(0, a), (0, b)], Rule::Max);
        let t = train(&classes)?;
        rows.push(TrainedPairRow {
            classes,
            n: composed.n,
            composed: composed.composed,
            base: composed.base,
            trained: t.top1,
            trained_n: t.n,
            trained_seconds: t.seconds,
        });
    }
    Ok(rows)
}

/// Every two-class subset (at most `pairs`, seeded beyond) and `fives` seeded five-class subsets
/// of the table's modules.
fn subsets_of(
    table: &ScoreTable,
    names: &[String],
    pairs: usize,
    fives: usize,
    seed: u64,
) -> (Vec<SubsetRow>, Vec<SubsetRow>) {
    let k = names.len();
    let row = |subset: &[usize]| {
        let s: Vec<(usize, usize)> = subset.iter().map(|&m| (0, m)).collect();
        let a = ScoreTable::subset_accuracy(&[table], &s, Rule::Max);
        SubsetRow {
            classes: subset.iter().map(|&m| names[m].clone()).collect(),
            n: a.n,
            composed: a.composed,
            base: a.base,
        }
    };
    let pairs = subsets::at_most(k, 2, pairs, seed).list.iter().map(|p| row(p)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fives = if k >= 5 {
        (0..fives)
            .map(|_| {
                let mut s = sample(&mut rng, k, 5).into_vec();
                s.sort();
                row(&s)
            })
            .collect()
    } else {
        Vec::new()
    };
    (pairs, fives)
}

pub fn reuse_markdown(r: &ReuseReport) -> String {
    let summary = |rows: &[SubsetRow]| {
        let d: Vec<f64> = rows.iter().map(|x| 100.0 * (x.composed - x.base)).collect();
        format!(
            "{} subsets: composed {:.2} %, restricted base {:.2} %, mean Δ {:+.2} points (min {:+.2}, max {:+.2})",
            rows.len(),
            100.0 * mean(rows.iter().map(|x| x.composed)),
            100.0 * mean(rows.iter().map(|x| x.base)),
            mean(d.iter().cloned()),
            d.iter().cloned().fold(f64::INFINITY, f64::min),
            d.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        )
    };
    let modules = match (&r.options, &r.packed) {
        (Some(o), _) => format!(
            "{} modules, {:?} head, keep {} / tangle {}, {:.1} % of nodes kept",
            r.kind,
            o.head,
            o.keep_rate,
            o.tangle_rate,
            100.0 * r.nodes_kept.unwrap_or(1.0)
        ),
        (None, Some(dir)) => format!("{} modules of {dir}", r.kind),
        (None, None) => format!("{} modules", r.kind),
    };
    let mut s = format!(
        "# Intra-model reuse: {} ({} test images, {modules})\n\n\
         Paper (Pan & Rajan 2022): reuse loses 2.3 points on average against the restricted model.\n\n\
         - two-class: {}{}\n- five-class: {}\n",
        r.model,
        r.images,
        summary(&r.pairs),
        if r.pairs.len() as u64 == r.pairs_possible {
            String::new()
        } else {
            format!(" (a seeded sample of the {} pairs)", r.pairs_possible)
        },
        summary(&r.fives)
    );
    if !r.trained_pairs.is_empty() {
        let t = &r.trained_pairs;
        s += &format!(
            "\n## Against a model of each pair alone (the paper's baseline: reuse +1.5 points on average)\n\n\
             Every pair of {} seeded classes; each pair's model trained with `classmod train {}`.\n\n\
             Mean: composed {:.2} %, restricted base {:.2} %, the pair's own model {:.2} %: composed - pair model {:+.2} points.\n\n\
             | classes | n | composed | restricted base | the pair's model (n) | composed - pair model | training s |\n|---|---:|---:|---:|---:|---:|---:|\n",
            t.iter().flat_map(|x| &x.classes).collect::<std::collections::BTreeSet<_>>().len(),
            r.trained_with.as_deref().unwrap_or("?"),
            100.0 * mean(t.iter().map(|x| x.composed)),
            100.0 * mean(t.iter().map(|x| x.base)),
            100.0 * mean(t.iter().map(|x| x.trained)),
            100.0 * mean(t.iter().map(|x| x.composed - x.trained)),
        );
        for x in t {
            s += &format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} ({}) | {:+.2} | {:.0} |\n",
                x.classes.join(", "),
                x.n,
                100.0 * x.composed,
                100.0 * x.base,
                100.0 * x.trained,
                x.trained_n,
                100.0 * (x.composed - x.trained),
                x.trained_seconds
            );
        }
    }
    s += "\n## Every subset measured\n\n| classes | n | composed | base | Δ |\n|---|---|---|---|---|\n";
    for x in r.pairs.iter().chain(&r.fives) {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:+.2} |\n",
            x.classes.join(", "),
            x.n,
            100.0 * x.composed,
            100.0 * x.base,
            100.0 * (x.composed - x.base)
        ));
    }
    s
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplaceRow {
    pub class: String,
    pub class_before: f64,
    pub class_after: f64,
    pub overall_before: f64,
    pub overall_after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplaceReport {
    pub model_a: String,
    pub model_b: String,
    pub images: usize,
    pub options: DecomposeOptions,
    /// All of A's modules, all of B's, and the two bases (all classes).
    pub composed_a: f64,
    pub composed_b: f64,
    pub base_a: f64,
    pub base_b: f64,
    pub rows: Vec<ReplaceRow>,
}

/// Inter-model replace: models `a` and `b` must have the same classes and input spec.
#[allow(clippy::too_many_arguments)]
pub fn replace(
    a: &ModelFile,
    b: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &DecomposeOptions,
    progress: &ProgressBar,
) -> Result<ReplaceReport, HostError> {
    if a.meta.class_names != b.meta.class_names || a.meta.input != b.meta.input {
        return Err(HostError::ModelsDiffer);
    }
    let opts = DecomposeOptions { classes: None, ..opts.clone() };
    let (ta, _) = score_table(a, train, test, &opts, progress)?;
    let (tb, _) = score_table(b, train, test, &opts, progress)?;
    let k = a.meta.class_names.len();
    let all = |src: usize| (0..k).map(|m| (src, m)).collect::<Vec<_>>();
    let acc = |s: &[(usize, usize)]| ScoreTable::subset_accuracy(&[&ta, &tb], s, Rule::Max);
    let (before, swapped) = replaced_one_by_one(&ta, &tb, Rule::Max, &(0..k).collect::<Vec<_>>());
    let rows = swapped
        .into_iter()
        .enumerate()
        .map(|(c, after)| ReplaceRow {
            class: a.meta.class_names[c].clone(),
            class_before: before.per_class[c],
            class_after: after.per_class[c],
            overall_before: before.composed,
            overall_after: after.composed,
        })
        .collect();
    let base_b = ScoreTable::subset_accuracy(&[&tb], &all(0), Rule::Max).base;
    Ok(ReplaceReport {
        model_a: a.meta.arch.name(),
        model_b: b.meta.arch.name(),
        images: test.len(),
        options: opts,
        composed_a: before.composed,
        composed_b: acc(&all(1)).composed,
        base_a: before.base,
        base_b,
        rows,
    })
}

pub fn replace_markdown(r: &ReplaceReport) -> String {
    let mut s = format!(
        "# Inter-model replace: {a}'s module c replaced by {b}'s ({} test images, {:?} head)\n\n\
         All {a} modules: {:.2} % (base {:.2} %); all {b} modules: {:.2} % (base {:.2} %).\n\n\
         | class | class top-1 before | after | Δ class | overall before | after | Δ overall |\n|---|---|---|---|---|---|---|\n",
        r.images,
        r.options.head,
        100.0 * r.composed_a,
        100.0 * r.base_a,
        100.0 * r.composed_b,
        100.0 * r.base_b,
        a = r.model_a,
        b = r.model_b
    );
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:+.2} | {:.2} | {:.2} | {:+.2} |\n",
            x.class,
            100.0 * x.class_before,
            100.0 * x.class_after,
            100.0 * (x.class_after - x.class_before),
            100.0 * x.overall_before,
            100.0 * x.overall_after,
            100.0 * (x.overall_after - x.overall_before)
        ));
    }
    s
}
