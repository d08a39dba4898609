//! `classmod decompose`: a trained model -> one mask module per class (Pan & Rajan's concern
//! identification, tangling identification and concern modularization; see PRODUCT.md).

pub mod compact;
pub mod concern;
pub mod growth;
pub mod logistic;
pub mod min_score;
pub mod observe;
pub mod samples;

use crate::HostError;
use std::time::Instant;

use classmod_runtime::host::{ClassId, ClassModule, ModelFile, ModuleGroup, ModuleHead, ModuleKind, ResNet};
use classmod_runtime::ModelKey;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::dataset::ImageSet;
use crate::eval::batch_tensor;
use observe::ActivityCounts;

/// Which binary head the modules get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The paper's: own logit against the mean of the others.
    Channel,
    /// One-vs-rest logistic regression on the module's pooled features.
    Calibrated,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecomposeOptions {
    pub n_pos: usize,
    pub pos_conf: f32,
    pub keep_rate: f64,
    pub tangle_rate: f64,
    pub head: HeadKind,
    /// Output indices of the classes to decompose; `None` = all.
    pub classes: Option<Vec<usize>>,
    pub seed: u64,
    pub batch: usize,
}

/// Minimum softmax probability of a positive, by default.
pub const POS_CONF: f32 = 0.9;
/// CI's default keep rate (at the default tangle rate TI decides; keep 0.5 gives the same masks).
pub const KEEP_RATE: f64 = 0.9;
/// TI's default tangle rate: the knee of the measured trade-off (results/resnet{20,56}-tradeoff).
pub const TANGLE_RATE: f64 = 0.05;
/// Positives per class, by default.
pub const N_POS: usize = 200;
/// Images per forward while observing, by default.
pub const BATCH: usize = 32;

impl DecomposeOptions {
    /// The default confidence and rates with `n_pos` positives per class.
    pub fn with_default_rates(n_pos: usize, head: HeadKind, classes: Option<Vec<usize>>, seed: u64) -> Self {
        DecomposeOptions {
            n_pos,
            pos_conf: POS_CONF,
            keep_rate: KEEP_RATE,
            tangle_rate: TANGLE_RATE,
            head,
            classes,
            seed,
            batch: BATCH,
        }
    }
}

/// What happened for one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    pub class_id: u32,
    pub class_name: String,
    pub positives: usize,
    pub negatives: usize,
    pub pos_conf_used: f32,
    pub relaxed: bool,
    /// Fraction of the base's nodes the module keeps, overall and per ReLU site.
    pub nodes_kept: f64,
    pub kept_per_site: Vec<(String, f64)>,
    pub seconds: f64,
}

pub struct Decomposition {
    pub modules: Vec<ClassModule>,
    /// The base network's ReLU sites, which the module masks follow.
    pub sites: Vec<classmod_runtime::host::ReluSite>,
    pub reports: Vec<ClassReport>,
    pub seconds: f64,
}

impl Decomposition {
    /// Mean fraction of the model's nodes a module keeps.
    pub fn nodes_kept(&self) -> f64 {
        self.reports.iter().map(|r| r.nodes_kept).sum::<f64>() / self.reports.len().max(1) as f64
    }
}

/// Decomposes `model` using its training images `train` (labels in the model's class order).
pub fn decompose(
    model: &ModelFile,
    train: &ImageSet,
    opts: &DecomposeOptions,
    progress: &ProgressBar,
) -> Result<Decomposition, HostError> {
    let obs = observe(model, train, opts, progress)?;
    obs.modules(train, opts.keep_rate, opts.tangle_rate, opts.head, opts.batch)
}

/// What observation found: each class's samples and node activity counts. It does not depend on
/// the CI/TI rates or the head, so a sweep over those observes once.
pub struct Observation {
    net: ResNet,
    key: ModelKey,
    wanted: Vec<usize>,
    samples: Vec<samples::ClassSamples>,
    /// Activity over each wanted class's positives (indexed by class).
    positives: Vec<Option<ActivityCounts>>,
    /// Activity over each class's negative draw, shared by every other class's negatives.
    draws: Vec<ActivityCounts>,
    seconds: f64,
}

/// Chooses samples and counts node activity (`opts`' rates and head are not used here).
pub fn observe(
    model: &ModelFile,
    train: &ImageSet,
    opts: &DecomposeOptions,
    progress: &ProgressBar,
) -> Result<Observation, HostError> {
    let t0 = Instant::now();
    let net = ResNet::new(model, &classmod_runtime::Device::Cpu)?;
    let n_classes = net.class_names().len();
    let wanted: Vec<usize> = opts.classes.clone().unwrap_or_else(|| (0..n_classes).collect());
    if let Some(&bad) = wanted.iter().find(|&&c| c >= n_classes) {
        return Err(HostError::ClassOutOfRange { index: bad, classes: n_classes });
    }
    let samples = samples::choose(&net, train, &wanted, opts.n_pos, opts.pos_conf, opts.seed, progress)?;
    let draws = samples
        .iter()
        .map(|s| observe::count(&net, train, &s.negative_draw, opts.batch))
        .collect::<Result<Vec<_>, _>>()?;
    let mut positives = vec![None; n_classes];
    for &c in &wanted {
        let s = &samples[c];
        if s.positives.is_empty() {
            return Err(HostError::NoPositives { class: net.class_names()[c].clone(), scanned: s.scanned });
        }
        positives[c] = Some(observe::count(&net, train, &s.positives, opts.batch)?);
    }
    Ok(Observation {
        net,
        key: ModelKey::of(model)?,
        wanted,
        samples,
        positives,
        draws,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Observation {
    /// Seconds spent choosing samples and counting activity.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    pub fn base(&self) -> &ResNet {
        &self.net
    }

    /// The modules for the given rates and head (CI, TI, CM).
    pub fn modules(
        &self,
        train: &ImageSet,
        keep_rate: f64,
        tangle_rate: f64,
        head: HeadKind,
        batch: usize,
    ) -> Result<Decomposition, HostError> {
        let t0 = Instant::now();
        let net = &self.net;
        let sites = net.relu_sites();
        let mut modules = Vec::with_capacity(self.wanted.len());
        let mut reports = Vec::with_capacity(self.wanted.len());
        for &c in &self.wanted {
            let tc = Instant::now();
            let s = &self.samples[c];
            let pos = self.positives[c].as_ref().expect("observed for every wanted class");
            let mut neg = ActivityCounts {
                images: 0,
                sites: sites.iter().map(|x| vec![0; x.channels * x.height * x.width]).collect(),
            };
            for (j, d) in self.draws.iter().enumerate() {
                if j != c {
                    neg.add(d);
                }
            }
            let mask = concern::node_mask(&sites, pos, &neg, keep_rate, tangle_rate);
            let negatives: Vec<usize> = self
                .samples
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != c)
                .flat_map(|(_, s)| s.negative_draw.iter().cloned())
                .collect();
            let mut module = ClassModule {
                class_id: ClassId(c as u32),
                class_name: net.class_names()[c].clone(),
                base_key: self.key,
                input: net.input_spec().clone(),
                kind: ModuleKind::Mask(mask.clone()),
                head: ModuleHead::Channel { class_index: c },
                min_score: None,
            };
            if head == HeadKind::Calibrated {
                module.head = calibrated_head(net, &module, train, &s.positives, &negatives, batch)?;
            }
            module.min_score = held_out_min_score(net, &module, train, c, &s.positives, batch)?;
            reports.push(ClassReport {
                class_id: c as u32,
                class_name: module.class_name.clone(),
                positives: s.positives.len(),
                negatives: negatives.len(),
                pos_conf_used: s.pos_conf_used,
                relaxed: s.relaxed,
                nodes_kept: mask.kept_fraction(),
                kept_per_site: sites
                    .iter()
                    .zip(&mask.sites)
                    .map(|(site, m)| (site.name.clone(), m.count_kept() as f64 / m.len() as f64))
                    .collect(),
                seconds: tc.elapsed().as_secs_f64(),
            });
            modules.push(module);
        }
        Ok(Decomposition { modules, sites, reports, seconds: self.seconds + t0.elapsed().as_secs_f64() })
    }
}

/// Fits the calibrated head on the module's pooled features (the masked base's, or a compact
/// module's branch's) of its positives (1) and negatives (0), images of `train`.
pub fn calibrated_head(
    net: &ResNet,
    module: &ClassModule,
    train: &ImageSet,
    positives: &[usize],
    negatives: &[usize],
    batch: usize,
) -> Result<ModuleHead, HostError> {
    let group = ModuleGroup::new(net.clone(), vec![module.clone()])?;
    let mut features = Vec::with_capacity(positives.len() + negatives.len());
    let mut labels = Vec::with_capacity(features.capacity());
    for (set, label) in [(positives, true), (negatives, false)] {
        for chunk in set.chunks(batch.max(1)) {
            let x = batch_tensor(train, chunk, net.input_spec(), net.device())?;
            // The features the head reads: the masked base's, or a compact module's branch's.
            let f = group.features(&x)?.swap_remove(0);
            let width = f.len() / chunk.len();
            features.extend(f.chunks(width.max(1)).map(<[f32]>::to_vec));
            labels.extend(std::iter::repeat_n(label, chunk.len()));
        }
    }
    let (weight, bias) = logistic::fit(&features, &labels, 1e-3);
    Ok(ModuleHead::Calibrated { weight, bias })
}

/// Held-out images of a class a mask module's minimum score is placed on, at most.
const MIN_SCORE_IMAGES: usize = 200;

/// Module `module`'s minimum score ([`min_score::min_score`]) on up to [`MIN_SCORE_IMAGES`]
/// training images of its class `c` that its positives (what its masks and head were fitted on)
/// do not include.
pub(crate) fn held_out_min_score(
    net: &ResNet,
    module: &ClassModule,
    train: &ImageSet,
    c: usize,
    positives: &[usize],
    batch: usize,
) -> Result<Option<f32>, HostError> {
    let held: Vec<usize> = (0..train.len())
        .filter(|&i| train.labels[i] as usize == c && !positives.contains(&i))
        .take(MIN_SCORE_IMAGES)
        .collect();
    let group = ModuleGroup::new(net.clone(), vec![module.clone()])?;
    let mut scores = Vec::with_capacity(held.len());
    for chunk in held.chunks(batch.max(1)) {
        let out = group.run(&batch_tensor(train, chunk, net.input_spec(), net.device())?)?;
        scores.extend((0..chunk.len()).map(|i| out.score(0, i)));
    }
    Ok(min_score::min_score(scores, min_score::ACCEPTED_SHARE))
}

/// `class-007-horse`: a module's file name without extension (unsafe characters replaced).
pub fn class_file_stem(m: &ClassModule) -> String {
    classmod_runtime::host::file_stem(m.class_id.0, &m.class_name)
}
