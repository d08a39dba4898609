//! What one classification uses: a [`Snapshot`] of the loaded modules (each [`LoadedModule`]
//! with the [`LoadedBase`] it runs on, grouped per base for one stacked pass each) and the
//! [`Classification`] it returns. A snapshot never changes; the runtime swaps in a new one.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;

use crate::module::compose::{predict, Rule};
use crate::Result;
use crate::{Error, InputSpec, ModuleBlob, ModuleGroup, ResNet};

/// A base model in memory, shared by its loaded modules.
pub struct LoadedBase {
    /// Its model key (the blob header's).
    pub key: [u8; 32],
    /// The network, built on the serving device.
    pub net: ResNet,
    /// Weights as the network holds them (`ResNet::resident_bytes`).
    pub resident_bytes: u64,
}

/// A loaded class module.
pub struct LoadedModule {
    /// The module, as its blob holds it.
    pub blob: ModuleBlob,
    /// The blob file it was loaded from.
    pub file: PathBuf,
    /// The base it runs on, shared with the other modules of that base.
    pub base: Arc<LoadedBase>,
    /// Largest score difference of its golden self-test.
    pub self_test_diff: f32,
    /// Masks as resident tensors (a byte a node) plus the head.
    pub resident_bytes: u64,
}

/// One consistent set of loaded modules, grouped per base for one stacked pass each.
pub struct Snapshot {
    /// Increases with every change.
    pub generation: u64,
    /// Loaded modules in load order: the classifier's classes.
    pub modules: Vec<Arc<LoadedModule>>,
    groups: Vec<ModuleGroup>,
    /// For each module: (group, index in group).
    order: Vec<(usize, usize)>,
}

/// What a classification returns: the snapshot's classes and, per image, the winner and every
/// class's score.
#[derive(Debug, Clone)]
pub struct Classification {
    /// The generation of the snapshot that classified.
    pub generation: u64,
    /// The snapshot's classes, in load order.
    pub classes: Vec<String>,
    /// Per image, the index in `classes` of the winner.
    pub predictions: Vec<usize>,
    /// `scores[i][c]`: class c's module on image i.
    pub scores: Vec<Vec<f32>>,
}

impl Snapshot {
    pub(super) fn build(generation: u64, modules: Vec<Arc<LoadedModule>>) -> Result<Snapshot> {
        // One batch of raw pixels feeds every group, each normalised its own base's way: the
        // image shape must agree, the normalisation need not (classes from other models).
        if let Some(first) = modules.first() {
            let shape = |m: &LoadedModule| {
                let s = &m.blob.module.input;
                (s.channels, s.height, s.width)
            };
            if let Some(m) = modules.iter().find(|m| shape(m) != shape(first)) {
                return Err(Error::IncompatibleInput {
                    class: m.blob.module.class_name.clone(),
                    found: shape(m),
                    served: shape(first),
                });
            }
        }
        let mut bases: Vec<Arc<LoadedBase>> = Vec::new();
        let mut members: Vec<Vec<crate::ClassModule>> = Vec::new();
        let mut order = Vec::with_capacity(modules.len());
        for m in &modules {
            let g = match bases.iter().position(|b| Arc::ptr_eq(b, &m.base)) {
                Some(g) => g,
                None => {
                    bases.push(m.base.clone());
                    members.push(Vec::new());
                    bases.len() - 1
                }
            };
            order.push((g, members[g].len()));
            members[g].push(m.blob.module.clone());
        }
        let groups = bases
            .iter()
            .zip(members)
            .map(|(b, ms)| ModuleGroup::new(b.net.clone(), ms))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { generation, modules, groups, order })
    }

    /// The images the served classes take (their shape; each base normalises them its own
    /// way), or `None` when nothing is loaded.
    pub fn input_spec(&self) -> Option<&InputSpec> {
        self.modules.first().map(|m| &m.blob.module.input)
    }

    /// The served classes, in load order.
    pub fn class_names(&self) -> Vec<String> {
        self.modules.iter().map(|m| m.blob.module.class_name.clone()).collect()
    }

    /// Resident bytes: each distinct base once, plus every module.
    pub fn resident_bytes(&self) -> u64 {
        let mut bases: Vec<&Arc<LoadedBase>> = Vec::new();
        for m in &self.modules {
            if !bases.iter().any(|b| Arc::ptr_eq(b, &m.base)) {
                bases.push(&m.base);
            }
        }
        bases.iter().map(|b| b.resident_bytes).sum::<u64>() + self.modules.iter().map(|m| m.resident_bytes).sum::<u64>()
    }

    /// Classifies `n` images of raw pixels (`n * C * H * W` bytes in the input spec's layout).
    pub fn classify(&self, pixels: &[u8], rule: Rule) -> Result<Classification> {
        let classes = self.class_names();
        let Some(first) = self.modules.first() else {
            return Err(Error::NoClassesLoaded);
        };
        let spec = first.blob.module.input.clone();
        let per = spec.image_len();
        if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
            return Err(Error::InputShape {
                expected: (spec.channels, spec.height, spec.width),
                found: vec![pixels.len()],
            });
        }
        let n = pixels.len() / per;
        // Normalised once per distinct input spec (usually one for all groups).
        let mut inputs: Vec<(&InputSpec, Tensor)> = Vec::new();
        let mut outs = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let gspec = g.base().input_spec();
            let x = match inputs.iter().find(|(s, _)| *s == gspec) {
                Some((_, x)) => x.clone(),
                None => {
                    let mut x = vec![0f32; pixels.len()];
                    gspec.normalize_into(pixels, &mut x);
                    let x = Tensor::from_vec(x, (n, spec.channels, spec.height, spec.width), g.base().device())?;
                    inputs.push((gspec, x.clone()));
                    x
                }
            };
            outs.push(g.run(&x)?);
        }
        let mut predictions = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        for i in 0..n {
            let s: Vec<f32> = self.order.iter().map(|&(g, m)| outs[g].score(m, i)).collect();
            let v: Vec<bool> = self.order.iter().map(|&(g, m)| outs[g].votes(m, i)).collect();
            predictions.push(predict(&s, &v, rule));
            scores.push(s);
        }
        Ok(Classification { generation: self.generation, classes, predictions, scores })
    }
}
