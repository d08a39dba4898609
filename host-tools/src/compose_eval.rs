//! `classmod compose-eval`: loads modules (from one or several base models), builds the composed
//! classifier (one stacked forward per base) and scores it on labelled images: top-1, top-5,
//! per-class accuracy, confusion matrix, and a reference beside them: the base model restricted to
//! the same classes when all modules come from one base, or, when the bases were trained on
//! different datasets (one dataset per base), each base on its own dataset's images (per source).

use crate::HostError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use classmod_runtime::host::ModuleBlob;
use classmod_runtime::host::{ClassModule, ModelFile, ModuleGroup, ResNet};
use classmod_runtime::io::MappedFile;
use classmod_runtime::{Device, InputSpec, Precision};
use classmod_runtime::{Manifest, ModelKey, PackedDir, MANIFEST_FILE};
use classmod_runtime::{MinScore, Rule};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::eval::{batch_tensor, score, EvalReport};

/// Why a set of modules cannot be composed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("no module blobs (a manifest.json and class-*.blob, as `classmod decompose` writes) in {0}")]
    NoModules(String),
    #[error(
        "{}: module files of the old format (*.module.safetensors, written before modules were blobs); run `classmod decompose` again",
        .0.display()
    )]
    OldFormat(PathBuf),
    #[error("{}: {error}", path.display())]
    Module { path: PathBuf, error: classmod_runtime::Error },
    #[error("{}: the manifest beside it lists no base with the module's key {key}", path.display())]
    MissingBase { path: PathBuf, key: ModelKey },
    #[error("{}: its base {} does not match the module's base key (modified or replaced?)", path.display(), base.display())]
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

/// `error` about the file at `path`, naming the file once (I/O and blob errors name it already).
fn at(path: PathBuf, error: classmod_runtime::Error) -> ComposeError {
    match error {
        e @ (classmod_runtime::Error::Io { .. } | classmod_runtime::Error::BadBlob { .. }) => ComposeError::Runtime(e),
        error => ComposeError::Module { path, error },
    }
}

/// Module blobs named by `paths`: blob files, or packed directories (the modules their manifests
/// list, sorted by file name), in a stable order.
pub fn module_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ComposeError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        if !p.join(MANIFEST_FILE).exists() {
            let old = std::fs::read_dir(p)
                .map_err(|e| ComposeError::Runtime(classmod_runtime::Error::io(p, e)))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".module.safetensors"));
            return Err(if old {
                ComposeError::OldFormat(p.clone())
            } else {
                ComposeError::NoModules(p.display().to_string())
            });
        }
        let manifest = Manifest::read(p).map_err(|error| at(p.join(MANIFEST_FILE), error))?;
        let mut found: Vec<PathBuf> = manifest.modules.iter().map(|m| p.join(&m.file)).collect();
        if found.is_empty() {
            return Err(ComposeError::NoModules(p.display().to_string()));
        }
        found.sort();
        out.extend(found);
    }
    if out.is_empty() {
        return Err(ComposeError::NoModules(
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        ));
    }
    Ok(out)
}

/// The module in the blob file at `path` (layout and hash checked; signatures are `verify`'s).
pub fn read_module(path: &Path) -> Result<ModuleBlob, ComposeError> {
    let read =
        || -> Result<ModuleBlob, classmod_runtime::Error> { ModuleBlob::decode(&MappedFile::open(path)?.blob(None)?) };
    read().map_err(|error| at(path.to_path_buf(), error))
}

/// The base model with key `key` of the module blob at `module_path`: the base the manifest of
/// the module's directory lists under that key, its contents checked against it.
pub fn read_base(module_path: &Path, key: &ModelKey, device: &Device) -> Result<(PathBuf, ModelFile), ComposeError> {
    let dir = module_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let packed = PackedDir::open(dir, None).map_err(|error| at(dir.join(MANIFEST_FILE), error))?;
    let missing = || ComposeError::MissingBase { path: module_path.to_path_buf(), key: *key };
    let base_path = packed.base_file(key).map_err(|_| missing())?;
    let model = packed.base(key, device).map_err(|error| match error {
        // Another file than the manifest's, or one naming another base: modified or replaced.
        classmod_runtime::Error::ManifestHashMismatch { .. }
        | classmod_runtime::Error::ManifestEntryMismatch { .. } => {
            ComposeError::BaseMismatch { path: module_path.to_path_buf(), base: base_path.clone() }
        }
        error => at(base_path.clone(), error),
    })?;
    Ok((base_path, model))
}

/// The composed classifier (the runtime's [`classmod_runtime::host::Composition`], which a device
/// serves through too) and the base blob each of its groups was read from.
pub struct Composition {
    pub composed: classmod_runtime::host::Composition,
    /// The base blob of each group.
    pub base_files: Vec<PathBuf>,
}

impl Composition {
    /// Every module of `group`, in its order.
    pub fn of_one_base(group: ModuleGroup, base_file: PathBuf) -> Composition {
        Composition { composed: classmod_runtime::host::Composition::of_one_base(group), base_files: vec![base_file] }
    }

    /// The groups, one per base.
    pub fn groups(&self) -> &[ModuleGroup] {
        self.composed.groups()
    }

    /// For each composed class: (group, index in group).
    pub fn order(&self) -> &[(usize, usize)] {
        self.composed.order()
    }

    pub fn class_names(&self) -> Vec<String> {
        self.composed.class_names()
    }

    pub fn modules(&self) -> Vec<&ClassModule> {
        self.composed.modules()
    }

    pub fn input_spec(&self) -> &InputSpec {
        self.composed.input_spec().expect("a composition has at least one module")
    }

    /// The single base, when every module comes from one.
    pub fn single_base(&self) -> Option<&ResNet> {
        (self.groups().len() == 1).then(|| self.groups()[0].base())
    }
}

/// Module blobs and the bases they run on, as read from disk.
pub struct PackedModules {
    /// One entry per base, in the order the bases first appear among the modules: its key, its
    /// blob file and the model.
    pub bases: Vec<(ModelKey, PathBuf, ModelFile)>,
    /// The modules, in the order `paths` gave them.
    pub modules: Vec<ClassModule>,
}

/// Reads the module blobs `paths` name (see [`module_paths`]) and their bases, each base read
/// once and checked against its modules' key, its tensors on `device`.
pub fn read_packed(paths: &[PathBuf], device: &Device) -> Result<PackedModules, ComposeError> {
    let mut out = PackedModules { bases: Vec::new(), modules: Vec::new() };
    for path in module_paths(paths)? {
        let m = read_module(&path)?.module;
        if !out.bases.iter().any(|(k, _, _)| *k == m.base_key) {
            let (base_path, model) = read_base(&path, &m.base_key, device)?;
            out.bases.push((m.base_key, base_path, model));
        }
        out.modules.push(m);
    }
    Ok(out)
}

/// Loads module blobs and their bases as one composition on `device`, computing in `precision`,
/// refusing mixed input specs and a class given twice.
pub fn load(paths: &[PathBuf], device: &Device, precision: Precision) -> Result<Composition, ComposeError> {
    let packed = read_packed(paths, device)?;
    let first = &packed.modules[0];
    for (i, m) in packed.modules.iter().enumerate() {
        if m.input != first.input {
            let spec =
                |s: &InputSpec| format!("{}x{}x{} mean {:?} std {:?}", s.channels, s.height, s.width, s.mean, s.std);
            return Err(ComposeError::MixedInputSpecs {
                a: first.class_name.clone(),
                a_spec: spec(&first.input),
                b: m.class_name.clone(),
                b_spec: spec(&m.input),
            });
        }
        if packed.modules[..i].iter().any(|x| x.class_name == m.class_name) {
            return Err(ComposeError::DuplicateClass(m.class_name.clone()));
        }
    }
    let nets = packed
        .bases
        .iter()
        .map(|(key, _, model)| Ok((*key, ResNet::new(model, device)?.with_precision(precision)?)))
        .collect::<Result<Vec<_>, ComposeError>>()?;
    let net =
        |key: &ModelKey| nets.iter().find(|(k, _)| k == key).map(|(_, n)| n.clone()).expect("every base was read");
    let composed = classmod_runtime::host::Composition::group(
        packed.modules.into_iter().map(|m| (m.base_key, net(&m.base_key), Arc::new(m))),
    )?;
    // Groups are in the order the bases first appear, as `packed.bases` is.
    Ok(Composition { composed, base_files: packed.bases.into_iter().map(|(_, f, _)| f).collect() })
}

/// The class list to read one dataset for all bases with (every base's classes, first seen
/// first), and the composed label of each of those classes (`None` for classes outside the
/// composition).
pub fn dataset_classes(c: &Composition) -> (Vec<String>, Vec<Option<u32>>) {
    let mut all: Vec<String> = Vec::new();
    for g in c.groups() {
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
    with_composed_labels(c, c.groups()[g].base().class_names().to_vec())
}

fn with_composed_labels(c: &Composition, all: Vec<String>) -> (Vec<String>, Vec<Option<u32>>) {
    let composed = c.class_names();
    let map = all.iter().map(|n| composed.iter().position(|x| x == n).map(|i| i as u32)).collect();
    (all, map)
}

/// The images of classes outside the composition, as one class `other` (so that those of
/// several datasets append).
pub fn others(images: &ImageSet, map: &[Option<u32>]) -> ImageSet {
    let keep: Vec<usize> = (0..images.len()).filter(|&i| map[images.labels[i] as usize].is_none()).collect();
    let mut out = images.select(&keep);
    out.labels.iter_mut().for_each(|l| *l = 0);
    out.class_names = vec!["other".into()];
    out
}

/// Keeps the images of composed classes, relabelled to composition order.
pub fn restrict(images: ImageSet, map: &[Option<u32>], composed_names: Vec<String>) -> ImageSet {
    images.relabelled(map, composed_names)
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
    /// Mean fraction of the base's nodes the mask modules keep (0 without mask modules: a
    /// compact module masks nothing).
    pub nodes_kept: f64,
    /// Per image, the answer under the minimum score evaluated with (a composed class or `None`);
    /// empty with [`MinScore::Off`]. Read by [`none_answers`].
    #[serde(skip)]
    pub answers: Vec<Option<usize>>,
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
    min: MinScore,
    reference: Reference,
    batch: usize,
    progress: &ProgressBar,
) -> Result<ComposeReport, ComposeError> {
    let t0 = Instant::now();
    let k = c.order().len();
    let spec = c.input_spec().clone();
    let per_source = reference == Reference::PerSource;
    let mut scores_all: Vec<f32> = Vec::with_capacity(images.len() * k);
    let mut predictions: Vec<usize> = Vec::with_capacity(images.len());
    let mut answers: Vec<Option<usize>> = Vec::new();
    let mut base_logits: Vec<f32> = Vec::new();
    // Per source: the restricted base's prediction for each image (a composed class index).
    let mut source_predictions: Vec<usize> = Vec::new();
    let device = c.groups()[0].base().device().clone();
    let idx: Vec<usize> = (0..images.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = batch_tensor(images, chunk, &spec, &device)?;
        // The device's scoring path: the runtime's composition on the normalised batch.
        let outs = c.composed.run(&x)?;
        for i in 0..chunk.len() {
            let (winner, scores) = outs.predict(i, rule);
            predictions.push(winner);
            if min != MinScore::Off {
                answers.push(outs.answer(i, rule, min).0);
            }
            // Ranking for top-5: the rule's winner first, then the others by score.
            let mut ranked = scores.clone();
            ranked[*predictions.last().expect("pushed")] = f32::INFINITY;
            scores_all.extend(ranked);
        }
        if per_source {
            let logits = c
                .groups()
                .iter()
                .map(|g| g.base().forward(&x)?.to_vec2::<f32>().map_err(classmod_runtime::Error::from))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, &image) in chunk.iter().enumerate() {
                let g = c.order()[images.labels[image] as usize].0;
                let best = (0..k)
                    .filter(|&j| c.order()[j].0 == g)
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
    // Over the mask modules (a compact module masks nothing); 0 when there are none.
    let kept: Vec<f64> = c.modules().iter().filter_map(|m| m.kind.kept_fraction()).collect();
    let nodes_kept = if kept.is_empty() { 0.0 } else { kept.iter().sum::<f64>() / kept.len() as f64 };
    Ok(ComposeReport {
        rule: format!("{rule:?}").to_lowercase(),
        modules: names,
        composed,
        confusion,
        base,
        sources,
        nodes_kept,
        answers,
    })
}

/// `modules` just decomposed from `model` (read from `model_file`), composed on `images` (labels in
/// the modules' order) against the base restricted to their classes, as `compose-eval` would
/// score them once packed: `decompose --check-data`'s check on images the base did not train on.
pub fn evaluate_decomposed(
    model: &ModelFile,
    model_file: &Path,
    modules: Vec<ClassModule>,
    images: &ImageSet,
    progress: &ProgressBar,
) -> Result<ComposeReport, ComposeError> {
    let group = ModuleGroup::new(ResNet::new(model, &Device::Cpu)?, modules)?;
    let c = Composition::of_one_base(group, model_file.to_path_buf());
    evaluate(&c, images, Rule::Max, MinScore::Off, Reference::RestrictedBase, 64, progress)
}

/// How a composition answers "none of these classes" under a minimum score: what it costs on the
/// composed classes' images and what it buys on the images of every other class.
#[derive(Debug, Clone, Serialize)]
pub struct NoneAnswers {
    /// `calibrated`, or the one minimum given.
    pub min_score: String,
    /// Share of the composed classes' images answered none.
    pub loaded_none: f64,
    /// Top-1 on the composed classes' images, a `none` counted wrong.
    pub top1_with_none: f64,
    /// Images of the dataset's other classes (0 when it has none).
    pub others: usize,
    /// Share of those answered none (the rest get one of the composed classes, wrongly).
    pub others_none: f64,
}

/// [`NoneAnswers`] of the composition: on the composed classes' images, from `report` (an
/// [`evaluate`] of them under `min`, labels `labels` in composition order), and on `others`
/// (images of classes outside the composition), run here.
#[allow(clippy::too_many_arguments)]
pub fn none_answers(
    c: &Composition,
    report: &ComposeReport,
    labels: &[u32],
    others: &ImageSet,
    rule: Rule,
    min: MinScore,
    batch: usize,
    progress: &ProgressBar,
) -> Result<NoneAnswers, ComposeError> {
    let device = c.groups()[0].base().device().clone();
    let idx: Vec<usize> = (0..others.len()).collect();
    let mut theirs = Vec::with_capacity(others.len());
    for chunk in idx.chunks(batch.max(1)) {
        let outs = c.composed.run(&batch_tensor(others, chunk, c.input_spec(), &device)?)?;
        theirs.extend((0..chunk.len()).map(|i| outs.answer(i, rule, min).0));
        progress.inc(chunk.len() as u64);
    }
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mine = &report.answers;
    let right = mine.iter().zip(labels).filter(|(a, &l)| **a == Some(l as usize)).count();
    Ok(NoneAnswers {
        min_score: match min {
            MinScore::Fixed(v) => format!("{v}"),
            other => format!("{other:?}").to_lowercase(),
        },
        loaded_none: frac(mine.iter().filter(|a| a.is_none()).count(), mine.len()),
        top1_with_none: frac(right, mine.len()),
        others: theirs.len(),
        others_none: frac(theirs.iter().filter(|a| a.is_none()).count(), theirs.len()),
    })
}

/// Per base: the composition and the base alone on the images of that base's composed classes.
fn source_reports(c: &Composition, labels: &[u32], composed: &[usize], alone: &[usize]) -> Vec<SourceReport> {
    let names = c.class_names();
    let group_of = |class: usize| c.order()[class].0;
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (0..c.groups().len())
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
