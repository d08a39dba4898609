//! Replace by transplant (the paper's inter-model replace, for compact modules): model B's class
//! c distilled onto model A's trunk ([`transplant_compact`]), so that the replaced class still
//! shares A's trunk and costs one branch, not a second base. For each class c, A's own compact
//! modules with module c replaced by the transplanted one: class c's accuracy and the overall
//! accuracy before and after, beside B's base on class c (what the transplant brings over).
//! At 200 classes A's own modules can come from its packed directory, and a sample of the
//! classes be transplanted (each transplanted class costs a branch's training).

use classmod_runtime::host::{ModelFile, ModuleGroup, ResNet};
use classmod_runtime::{Device, ModelKey, Rule};
use indicatif::ProgressBar;
use serde::Serialize;

use super::scores::{replaced_one_by_one, ScoreTable};
use crate::dataset::ImageSet;
use crate::decompose::compact::{decompose_compact, transplant_compact, CompactOptions};
use crate::HostError;

#[derive(Debug, Clone, Serialize)]
pub struct TransplantRow {
    pub class: String,
    /// Class c's top-1 with A's own module, with B's transplanted one, and B's base on class c.
    pub class_before: f64,
    pub class_after: f64,
    pub class_base_b: f64,
    pub overall_before: f64,
    pub overall_after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransplantReport {
    pub model_a: String,
    pub model_b: String,
    pub images: usize,
    pub options: CompactOptions,
    /// A's own compact modules, all of B's classes transplanted onto A's trunk, the two bases.
    pub composed_a: f64,
    pub composed_transplanted: f64,
    pub base_a: f64,
    pub base_b: f64,
    /// One row per transplanted class (all of B's, or the sample asked for), in class order.
    pub rows: Vec<TransplantRow>,
    /// The classes B and A have.
    pub classes: usize,
    /// Decomposing A (`None`: its own modules were given, read from a packed directory).
    pub seconds_own: Option<f64>,
    pub seconds_transplant: f64,
}

/// Transplants `b`'s classes (`opts.classes`, default all) onto `a`'s trunk and scores them on
/// `test` (labels in the models' class order) against `a`'s own compact modules: `own`, one for
/// every class of `a` in class order (e.g. read from its packed directory), or decomposed here.
pub fn transplant(
    a: &ModelFile,
    b: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &CompactOptions,
    own: Option<&ModuleGroup>,
    progress: &ProgressBar,
) -> Result<TransplantReport, HostError> {
    let k = a.meta.class_names.len();
    let net_a = ResNet::new(a, &Device::Cpu)?;
    let hidden = ProgressBar::hidden();
    let (ta, seconds_own) = match own {
        Some(group) => {
            let key = ModelKey::of(a)?;
            let fits = group.modules().len() == k
                && group.modules().iter().enumerate().all(|(i, m)| m.class_id.0 as usize == i && m.base_key == key);
            if !fits {
                return Err(HostError::ModulesNotOfModel { model: a.meta.arch.name() });
            }
            (ScoreTable::compute(group, test, 64, &hidden)?, None)
        }
        None => {
            let own = decompose_compact(a, train, &CompactOptions { classes: None, ..opts.clone() }, progress)?;
            progress.println(format!("{}'s own compact modules: {:.0} s", a.meta.arch.name(), own.seconds));
            (ScoreTable::compute(&ModuleGroup::new(net_a.clone(), own.modules)?, test, 64, &hidden)?, Some(own.seconds))
        }
    };
    let moved = transplant_compact(a, b, train, opts, progress)?;
    progress.println(format!(
        "{} of {}'s classes on {}'s trunk: {:.0} s",
        moved.modules.len(),
        b.meta.arch.name(),
        a.meta.arch.name(),
        moved.seconds
    ));
    let classes: Vec<usize> = moved.modules.iter().map(|m| m.class_id.0 as usize).collect();
    let tt = ScoreTable::compute(&ModuleGroup::new(net_a, moved.modules)?, test, 64, &hidden)?;
    // A's table with the transplanted classes' columns swapped in.
    let mut swapped_in = ta.clone();
    for (j, &c) in classes.iter().enumerate() {
        swapped_in.scores[c] = tt.scores[j].clone();
        swapped_in.votes[c] = tt.votes[j].clone();
    }
    let base_b = crate::eval::evaluate(&ResNet::new(b, &Device::Cpu)?, test, 64, &hidden)?;
    let (before, swapped) = replaced_one_by_one(&ta, &swapped_in, Rule::Max, &classes);
    let everything_moved = (0..k).map(|m| (usize::from(classes.contains(&m)), m)).collect::<Vec<_>>();
    let rows = classes
        .iter()
        .zip(&swapped)
        .map(|(&c, after)| TransplantRow {
            class: a.meta.class_names[c].clone(),
            class_before: before.per_class[c],
            class_after: after.per_class[c],
            class_base_b: base_b.per_class[c].top1,
            overall_before: before.composed,
            overall_after: after.composed,
        })
        .collect();
    Ok(TransplantReport {
        model_a: a.meta.arch.name(),
        model_b: b.meta.arch.name(),
        images: test.len(),
        options: opts.clone(),
        composed_a: before.composed,
        composed_transplanted: ScoreTable::subset_accuracy(&[&ta, &swapped_in], &everything_moved, Rule::Max).composed,
        base_a: before.base,
        base_b: base_b.top1,
        rows,
        classes: k,
        seconds_own,
        seconds_transplant: moved.seconds,
    })
}

pub fn markdown(r: &TransplantReport, command: &str) -> String {
    let mut s = format!(
        "# Replace by transplant: {b}'s class c distilled onto {a}'s trunk\n\n`{command}`\n\n\
         {} test images; compact modules (trunk of {} stages, branches {} wide). All of {a}'s own modules: {:.2} % \
         (its base {:.2} %); {} of {b}'s {} classes transplanted onto {a}'s trunk: {:.2} % ({b}'s base {:.2} %). \
         Decomposition {}, transplant {:.0} s.\n\n\
         | class | class top-1, {a}'s module | {b}'s, transplanted | Δ class | {b}'s base on the class | overall before | after | Δ overall |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        r.images,
        r.options.trunk_stages,
        r.options.width,
        100.0 * r.composed_a,
        100.0 * r.base_a,
        if r.rows.len() == r.classes { "all".to_string() } else { r.rows.len().to_string() },
        r.classes,
        100.0 * r.composed_transplanted,
        100.0 * r.base_b,
        r.seconds_own.map_or("- (A's packed modules)".to_string(), |s| format!("{s:.0} s")),
        r.seconds_transplant,
        a = r.model_a,
        b = r.model_b
    );
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:+.2} | {:.2} | {:.2} | {:.2} | {:+.2} |\n",
            x.class,
            100.0 * x.class_before,
            100.0 * x.class_after,
            100.0 * (x.class_after - x.class_before),
            100.0 * x.class_base_b,
            100.0 * x.overall_before,
            100.0 * x.overall_after,
            100.0 * (x.overall_after - x.overall_before)
        ));
    }
    s
}
