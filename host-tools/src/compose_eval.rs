//! `classmod compose-eval`: loads modules (from one or several base models), builds the composed
//! classifier (one stacked forward per base) and scores it on labelled images: top-1, top-5,
//! per-class accuracy, confusion matrix, and a reference beside them: the base model restricted to
//! the same classes when all modules come from one base, or, when the bases were trained on
//! different datasets (one dataset per base), each base on its own dataset's images (per source).

use crate::HostError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use classmod_runtime::host::module_file::{base_key, StoredModule};
use classmod_runtime::{host::predict, Rule};
use classmod_runtime::{ClassModule, Device, InputSpec, ModelFile, ModuleGroup, ResNet};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::eval::{batch_tensor, score, EvalReport};

/// Why a set of modules cannot be composed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("no module files (*.module.safetensors) in {0}")]
    NoModules(String),
    #[error("{}: {error}", path.display())]
    Module { path: PathBuf, error: classmod_runtime::Error },
    #[error("{path}: its base model {base} does not match the module's base key (modified or replaced?)")]
    BaseMismatch { path: PathBuf, base: PathBuf },
    #[error("modules have different input specs and cannot be composed: `{a}` ({a_spec}) vs `{b}` ({b_spec})")]
    MixedInputSpecs { a: String, a_spec: String, b: String, b_spec: String },
    #[error("class `{0}` has more than one module in the set")]
    DuplicateClass(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Runtime(#[from] classmod_runtime::Error),
}

/// Module files named by `paths` (files, or directories holding `*.module.safetensors`), in a
/// stable order: directories sorted by file name.
pub fn module_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ComposeError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| ComposeError::Module { path: p.clone(), error: classmod_runtime::Error::io(p, e) })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".module.safetensors")))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ComposeError::NoModules(p.display().to_string()));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(ComposeError::NoModules(
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        ));
    }
    Ok(out)
}

/// The composed classifier: groups of modules, one per base, in composition order.
pub struct Composition {
    pub groups: Vec<ModuleGroup>,
    /// The base model file of each group.
    pub base_files: Vec<PathBuf>,
    /// The composed classes: (group, module index in group), in the order the modules were given.
    pub order: Vec<(usize, usize)>,
}

impl Composition {
    /// Every module of `group`, in its order.
    pub fn of_one_base(group: ModuleGroup, base_file: PathBuf) -> Composition {
        let order = (0..group.modules().len()).map(|i| (0, i)).collect();
        Composition { groups: vec![group], base_files: vec![base_file], order }
    }

    pub fn class_names(&self) -> Vec<String> {
        self.order.iter().map(|&(g, m)| self.groups[g].modules()[m].class_name.clone()).collect()
    }

    pub fn modules(&self) -> Vec<&ClassModule> {
        self.order.iter().map(|&(g, m)| &self.groups[g].modules()[m]).collect()
    }

    pub fn input_spec(&self) -> &InputSpec {
        self.groups[0].base().input_spec()
    }

    /// The single base, when every module comes from one.
    pub fn single_base(&self) -> Option<&ResNet> {
        (self.groups.len() == 1).then(|| self.groups[0].base())
    }
}

/// Loads modules and their bases (each base verified against its modules' key, loaded once).
/// The base model file `base_file` (relative to module `path`) of a module whose base key is
/// `key`, checked against that key.
pub fn read_base(
    path: &Path,
    base_file: &str,
    key: &str,
    device: &Device,
) -> Result<(PathBuf, ModelFile), ComposeError> {
    let base_path = path.parent().unwrap_or(Path::new(".")).join(base_file);
    let bytes = std::fs::read(&base_path).map_err(|e| ComposeError::Module {
        path: path.to_path_buf(),
        error: classmod_runtime::Error::io(&base_path, e),
    })?;
    if base_key(&bytes) != key {
        return Err(ComposeError::BaseMismatch { path: path.to_path_buf(), base: base_path });
    }
    let model = ModelFile::from_bytes(&bytes, device)
        .map_err(|error| ComposeError::Module { path: base_path.clone(), error })?;
    Ok((base_path, model))
}

pub fn load(paths: &[PathBuf], device: &Device) -> Result<Composition, ComposeError> {
    let files = module_paths(paths)?;
    let mut bases: BTreeMap<String, (ResNet, Vec<ClassModule>)> = BTreeMap::new();
    let mut base_order: Vec<String> = Vec::new();
    let mut base_files: Vec<PathBuf> = Vec::new();
    let mut order_keys: Vec<(String, usize)> = Vec::new();
    let mut first: Option<ClassModule> = None;
    for path in &files {
        let stored = StoredModule::read(path).map_err(|error| ComposeError::Module { path: path.clone(), error })?;
        let m = stored.module;
        if let Some(f) = &first {
            if f.input != m.input {
                let spec = |s: &InputSpec| {
                    format!("{}x{}x{} mean {:?} std {:?}", s.channels, s.height, s.width, s.mean, s.std)
                };
                return Err(ComposeError::MixedInputSpecs {
                    a: f.class_name.clone(),
                    a_spec: spec(&f.input),
                    b: m.class_name.clone(),
                    b_spec: spec(&m.input),
                });
            }
        } else {
            first = Some(m.clone());
        }
        if !bases.contains_key(&m.base_key) {
            let (base_path, model) = read_base(path, &stored.base_file, &m.base_key, device)?;
            bases.insert(m.base_key.clone(), (ResNet::new(&model, device)?, Vec::new()));
            base_order.push(m.base_key.clone());
            base_files.push(base_path);
        }
        let entry = bases.get_mut(&m.base_key).expect("inserted above");
        order_keys.push((m.base_key.clone(), entry.1.len()));
        entry.1.push(m);
    }
    let mut names: Vec<&str> = Vec::new();
    for (_, ms) in bases.values() {
        for m in ms {
            if names.contains(&m.class_name.as_str()) {
                return Err(ComposeError::DuplicateClass(m.class_name.clone()));
            }
            names.push(&m.class_name);
        }
    }
    let mut groups = Vec::with_capacity(base_order.len());
    for key in &base_order {
        let (base, modules) = bases.remove(key).expect("every key was inserted");
        groups.push(ModuleGroup::new(base, modules)?);
    }
    let order = order_keys
        .into_iter()
        .map(|(k, i)| (base_order.iter().position(|b| *b == k).expect("known base"), i))
        .collect();
    Ok(Composition { groups, base_files, order })
}

/// The class list to read one dataset for all bases with (every base's classes, first seen
/// first), and the composed label of each of those classes (`None` for classes outside the
/// composition).
pub fn dataset_classes(c: &Composition) -> (Vec<String>, Vec<Option<u32>>) {
    let mut all: Vec<String> = Vec::new();
    for g in &c.groups {
        for n in g.base().class_names() {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
    }
    with_composed_labels(c, all)
}

/// As [`dataset_classes`] for the dataset of group `g`'s base alone (bases trained on different
/// datasets: one dataset per base).
pub fn source_classes(c: &Composition, g: usize) -> (Vec<String>, Vec<Option<u32>>) {
    with_composed_labels(c, c.groups[g].base().class_names().to_vec())
}

fn with_composed_labels(c: &Composition, all: Vec<String>) -> (Vec<String>, Vec<Option<u32>>) {
    let composed = c.class_names();
    let map = all.iter().map(|n| composed.iter().position(|x| x == n).map(|i| i as u32)).collect();
    (all, map)
}

/// Keeps the images of composed classes, relabelled to composition order.
pub fn restrict(images: ImageSet, map: &[Option<u32>], composed_names: Vec<String>) -> ImageSet {
    let keep: Vec<usize> = (0..images.len()).filter(|&i| map[images.labels[i] as usize].is_some()).collect();
    let mut out = images.select(&keep);
    out.labels = out.labels.iter().map(|&l| map[l as usize].expect("kept")).collect();
    out.class_names = composed_names;
    out
}

/// Figures of a composed classifier.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeReport {
    pub rule: String,
    pub modules: Vec<String>,
    #[serde(flatten)]
    pub composed: EvalReport,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u32>>,
    /// The base model restricted to the composed classes (argmax over their logits), on the
    /// same images, when all modules come from one base.
    pub base: Option<EvalReport>,
    /// Per base, when each base has its own dataset ([`Reference::PerSource`]).
    pub sources: Vec<SourceReport>,
    /// Mean fraction of the base's nodes the modules keep.
    pub nodes_kept: f64,
}

/// What the composed classifier is held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// The single base restricted to the composed classes (no reference with several bases).
    RestrictedBase,
    /// The bases were trained on different datasets and each image's label says which: each base
    /// alone, restricted to its composed classes, on its own images: a classifier told the
    /// source of every image, which the composition is not.
    PerSource,
}

/// The images of one base's classes in an inter-dataset composition.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub base: String,
    pub classes: Vec<String>,
    pub n: usize,
    /// The composition on these images.
    pub composed_top1: f64,
    /// The base alone, restricted to its composed classes, on these images.
    pub base_top1: f64,
    /// Images the composition gave a class of another base.
    pub crossed: usize,
}

/// Scores the composition on `images`, whose labels index the composed classes.
pub fn evaluate(
    c: &Composition,
    images: &ImageSet,
    rule: Rule,
    reference: Reference,
    batch: usize,
    progress: &ProgressBar,
) -> Result<ComposeReport, ComposeError> {
    let t0 = Instant::now();
    let k = c.order.len();
    let spec = c.input_spec().clone();
    let per_source = reference == Reference::PerSource;
    let mut scores_all: Vec<f32> = Vec::with_capacity(images.len() * k);
    let mut predictions: Vec<usize> = Vec::with_capacity(images.len());
    let mut base_logits: Vec<f32> = Vec::new();
    // Per source: the restricted base's prediction for each image (a composed class index).
    let mut source_predictions: Vec<usize> = Vec::new();
    let device = c.groups[0].base().device().clone();
    let idx: Vec<usize> = (0..images.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = batch_tensor(images, chunk, &spec, &device)?;
        let outs = c.groups.iter().map(|g| g.run(&x)).collect::<Result<Vec<_>, _>>()?;
        for i in 0..chunk.len() {
            let scores: Vec<f32> = c.order.iter().map(|&(g, m)| outs[g].score(m, i)).collect();
            let votes: Vec<bool> = c.order.iter().map(|&(g, m)| outs[g].votes(m, i)).collect();
            predictions.push(predict(&scores, &votes, rule));
            // Ranking for top-5: the rule's winner first, then the others by score.
            let mut ranked = scores.clone();
            ranked[*predictions.last().expect("pushed")] = f32::INFINITY;
            scores_all.extend(ranked);
        }
        if per_source {
            let logits = c
                .groups
                .iter()
                .map(|g| g.base().forward(&x)?.to_vec2::<f32>().map_err(classmod_runtime::Error::from))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, &image) in chunk.iter().enumerate() {
                let g = c.order[images.labels[image] as usize].0;
                let best = (0..k)
                    .filter(|&j| c.order[j].0 == g)
                    .map(|j| (j, logits[g][i][c.modules()[j].class_id.0 as usize]))
                    .fold((usize::MAX, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
                source_predictions.push(best.0);
            }
        } else if let Some(base) = c.single_base() {
            let logits = base.forward(&x)?.to_vec2::<f32>().map_err(classmod_runtime::Error::from)?;
            for row in logits {
                base_logits.extend(c.modules().iter().map(|m| row[m.class_id.0 as usize]));
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let names = c.class_names();
    let composed = score(&scores_all, &images.labels, &names, seconds);
    let mut confusion = vec![vec![0u32; k]; k];
    for (p, &l) in predictions.iter().zip(&images.labels) {
        confusion[l as usize][*p] += 1;
    }
    let base = match reference {
        Reference::RestrictedBase => c.single_base().map(|_| score(&base_logits, &images.labels, &names, seconds)),
        Reference::PerSource => None,
    };
    let sources =
        if per_source { source_reports(c, &images.labels, &predictions, &source_predictions) } else { vec![] };
    let nodes_kept = c.modules().iter().filter_map(|m| m.kind.kept_fraction()).sum::<f64>() / k.max(1) as f64;
    Ok(ComposeReport {
        rule: format!("{rule:?}").to_lowercase(),
        modules: names,
        composed,
        confusion,
        base,
        sources,
        nodes_kept,
    })
}

/// Per base: the composition and the base alone on the images of that base's composed classes.
fn source_reports(c: &Composition, labels: &[u32], composed: &[usize], alone: &[usize]) -> Vec<SourceReport> {
    let names = c.class_names();
    let group_of = |class: usize| c.order[class].0;
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (0..c.groups.len())
        .map(|g| {
            let mine: Vec<usize> = (0..labels.len()).filter(|&i| group_of(labels[i] as usize) == g).collect();
            let right = |p: &[usize]| mine.iter().filter(|&&i| p[i] == labels[i] as usize).count();
            SourceReport {
                base: c.base_files[g].display().to_string(),
                classes: (0..names.len()).filter(|&j| group_of(j) == g).map(|j| names[j].clone()).collect(),
                n: mine.len(),
                composed_top1: frac(right(composed), mine.len()),
                base_top1: frac(right(alone), mine.len()),
                crossed: mine.iter().filter(|&&i| group_of(composed[i]) != g).count(),
            }
        })
        .collect()
}
