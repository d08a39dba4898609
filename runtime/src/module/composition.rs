//! A composed classifier: modules of one or several bases, one [`ModuleGroup`] per base and
//! kind (one stacked pass of the base for its mask modules, one trunk for its compact modules of
//! one trunk), in the order their classes were given. The device's [`crate::Snapshot`]
//! and the host's `compose-eval` both score modules through it, so an evaluation measures the
//! code a device runs.

use std::sync::Arc;

use candle_core::Tensor;

use crate::module::compose::{answer, predict, MinScore, Rule};
use crate::{ClassModule, Error, GroupKind, InputSpec, ModuleGroup, ModuleOutputs, ResNet, Result};

/// Module groups and the composed classes' order (see the module comment).
#[derive(Debug, Clone)]
pub struct Composition {
    groups: Vec<ModuleGroup>,
    /// For each composed class: (group, index in group).
    order: Vec<(usize, usize)>,
}

/// Every group's outputs on one batch, read in the composition's class order.
#[derive(Debug, Clone)]
pub struct ComposedOutputs<'a> {
    composition: &'a Composition,
    /// Per group.
    pub groups: Vec<ModuleOutputs>,
    /// Images in the batch.
    pub batch: usize,
}

impl Composition {
    /// Groups `modules` per base and [`crate::GroupKind`], in the order they first appear. Each
    /// comes with a key equal for modules of one base (its model key, or which loaded base it
    /// holds) and the base's network.
    pub fn group<K: PartialEq>(
        modules: impl IntoIterator<Item = (K, ResNet, Arc<ClassModule>)>,
    ) -> Result<Composition> {
        let mut keys: Vec<(K, GroupKind)> = Vec::new();
        let mut members: Vec<(ResNet, Vec<Arc<ClassModule>>)> = Vec::new();
        let mut order = Vec::new();
        for (key, base, module) in modules {
            let key = (key, module.kind.group_kind());
            let g = match keys.iter().position(|k| *k == key) {
                Some(g) => g,
                None => {
                    keys.push(key);
                    members.push((base, Vec::new()));
                    keys.len() - 1
                }
            };
            order.push((g, members[g].1.len()));
            members[g].1.push(module);
        }
        let groups = members.into_iter().map(|(b, ms)| ModuleGroup::new(b, ms)).collect::<Result<Vec<_>>>()?;
        Ok(Composition { groups, order })
    }

    /// Every module of `group`, in its order.
    pub fn of_one_base(group: ModuleGroup) -> Composition {
        let order = (0..group.modules().len()).map(|i| (0, i)).collect();
        Composition { groups: vec![group], order }
    }

    /// The groups, one per base and kind.
    pub fn groups(&self) -> &[ModuleGroup] {
        &self.groups
    }

    /// The same composition with each group's modules replaced by `modules` (as many, in the
    /// same order: refitted heads, say).
    pub fn with_modules(&self, modules: Vec<Vec<ClassModule>>) -> Result<Composition> {
        let mut groups = Vec::with_capacity(self.groups.len());
        for (g, ms) in self.groups.iter().zip(modules) {
            if ms.len() != g.modules().len() {
                return Err(Error::Misuse {
                    what: format!("{} modules to replace a group of {}", ms.len(), g.modules().len()),
                });
            }
            groups.push(ModuleGroup::new(g.base().clone(), ms)?);
        }
        Ok(Composition { groups, order: self.order.clone() })
    }

    /// For each composed class: (group, index in its group).
    pub fn order(&self) -> &[(usize, usize)] {
        &self.order
    }

    /// Number of composed classes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no class is composed.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The composed classes' modules, in order.
    pub fn modules(&self) -> Vec<&ClassModule> {
        self.order.iter().map(|&(g, m)| &*self.groups[g].modules()[m]).collect()
    }

    /// The composed classes' names, in order.
    pub fn class_names(&self) -> Vec<String> {
        self.modules().iter().map(|m| m.class_name.clone()).collect()
    }

    /// The first group's input spec (every module's image shape is the same; normalisations may
    /// differ between bases).
    pub fn input_spec(&self) -> Option<&InputSpec> {
        self.groups.first().map(|g| g.base().input_spec())
    }

    /// Runs every group on one normalised batch `x` (modules of bases that normalise alike).
    pub fn run(&self, x: &Tensor) -> Result<ComposedOutputs<'_>> {
        let batch = x.dim(0)?;
        let groups = self.groups.iter().map(|g| g.run(x)).collect::<Result<Vec<_>>>()?;
        Ok(ComposedOutputs { composition: self, groups, batch })
    }

    /// Runs every group on `n` images of raw pixels (`n * C * H * W` bytes), each normalised the
    /// way its base was trained ([`ModuleGroup::run_pixels`]).
    pub fn run_pixels(&self, pixels: &[u8]) -> Result<ComposedOutputs<'_>> {
        let batch = self.input_spec().ok_or(Error::NoClassesLoaded)?.images_in(pixels)?;
        let groups = self.groups.iter().map(|g| g.run_pixels(pixels)).collect::<Result<Vec<_>>>()?;
        Ok(ComposedOutputs { composition: self, groups, batch })
    }
}

impl ComposedOutputs<'_> {
    /// Each composed class's score on image `i`.
    pub fn scores(&self, i: usize) -> Vec<f32> {
        self.composition.order.iter().map(|&(g, m)| self.groups[g].score(m, i)).collect()
    }

    /// Each composed class's vote on image `i`.
    pub fn votes(&self, i: usize) -> Vec<bool> {
        self.composition.order.iter().map(|&(g, m)| self.groups[g].votes(m, i)).collect()
    }

    /// The winning class (an index into the composition's order) on image `i`, with the scores:
    /// the closed world, where every image is one of the composed classes.
    pub fn predict(&self, i: usize, rule: Rule) -> (usize, Vec<f32>) {
        let scores = self.scores(i);
        (predict(&scores, &self.votes(i), rule), scores)
    }

    /// The winning class on image `i` among those whose score reaches its minimum, or `None`
    /// (none of the composed classes), with the scores.
    pub fn answer(&self, i: usize, rule: Rule, min: MinScore) -> (Option<usize>, Vec<f32>) {
        let scores = self.scores(i);
        let mins: Vec<f32> = self.composition.modules().iter().map(|m| min.of(m)).collect();
        (answer(&scores, &self.votes(i), &mins, rule), scores)
    }
}
