//! What one classification uses: a [`Snapshot`] of the loaded modules (each [`LoadedModule`]
//! with the [`LoadedBase`] it runs on, grouped per base for one stacked pass each) and the
//! [`Classification`] it returns. A snapshot never changes; the runtime swaps in a new one.

use std::path::PathBuf;
use std::sync::Arc;

use crate::module::compose::{MinScore, Rule};
use crate::Result;
use crate::{ClassModule, Composition, Error, InputSpec, ModelKey, ResNet};

/// A base model in memory, shared by its loaded modules. Its fields are the runtime's: a device
/// program reads what it needs through the accessors (the network and the module model stay
/// out of the device API).
pub struct LoadedBase {
    /// Its model key (the blob header's).
    pub(crate) key: ModelKey,
    /// The network, built on the serving device.
    pub(crate) net: ResNet,
    /// Weights as the network holds them (`ResNet::resident_bytes`).
    pub(crate) resident_bytes: u64,
}

impl LoadedBase {
    /// Its model key (the blob header's).
    pub fn key(&self) -> ModelKey {
        self.key
    }

    /// Bytes its weights take as the network holds them.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }
}

/// A loaded class module.
pub struct LoadedModule {
    /// The module (its masks once, as bits; the golden images are dropped after the self-test).
    pub(crate) module: Arc<ClassModule>,
    /// The blob file it was loaded from.
    pub(crate) file: PathBuf,
    /// The base it runs on, shared with the other modules of that base.
    pub(crate) base: Arc<LoadedBase>,
    /// Largest score difference of its golden self-test.
    pub(crate) self_test_diff: f32,
    /// How many golden images the self-test ran.
    pub(crate) golden_images: usize,
    /// What the module holds beyond its base ([`ClassModule::resident_bytes`]: the masks as
    /// bits and as the bytes its group runs them with, and the head).
    pub(crate) resident_bytes: u64,
}

impl LoadedModule {
    /// Its class.
    pub fn class_name(&self) -> &str {
        &self.module.class_name
    }

    /// Its kind's name (`mask`, `compact`).
    pub fn kind_name(&self) -> &'static str {
        self.module.kind.name()
    }

    /// The blob file it was loaded from.
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    /// The base it runs on.
    pub fn base(&self) -> &LoadedBase {
        &self.base
    }

    /// Largest score difference of its golden self-test.
    pub fn self_test_diff(&self) -> f32 {
        self.self_test_diff
    }

    /// How many golden images the self-test ran.
    pub fn golden_images(&self) -> usize {
        self.golden_images
    }

    /// What the module holds beyond its base.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }
}

/// One consistent set of loaded modules, grouped per base for one stacked pass each.
pub struct Snapshot {
    /// Increases with every change.
    pub(crate) generation: u64,
    /// Loaded modules in load order: the classifier's classes.
    pub(crate) modules: Vec<Arc<LoadedModule>>,
    /// The modules grouped per base: what classifies.
    composition: Composition,
}

/// What a classification returns: the snapshot's classes and, per image, the winner and every
/// class's score.
#[derive(Debug, Clone)]
pub struct Classification {
    /// The generation of the snapshot that classified.
    pub generation: u64,
    /// The snapshot's classes, in load order.
    pub classes: Vec<String>,
    /// Per image, the index in `classes` of the winner, or `None`: none of the loaded classes
    /// (no module's score reached its minimum).
    pub predictions: Vec<Option<usize>>,
    /// `scores[i][c]`: class c's module on image i.
    pub scores: Vec<Vec<f32>>,
}

impl Snapshot {
    pub(super) fn build(generation: u64, modules: Vec<Arc<LoadedModule>>) -> Result<Snapshot> {
        // One batch of raw pixels feeds every group, each normalised its own base's way: the
        // image shape must agree, the normalisation need not (classes from other models).
        if let Some(first) = modules.first() {
            let shape = |m: &LoadedModule| {
                let s = &m.module.input;
                (s.channels, s.height, s.width)
            };
            if let Some(m) = modules.iter().find(|m| shape(m) != shape(first)) {
                return Err(Error::IncompatibleInput {
                    class: m.module.class_name.clone(),
                    found: shape(m),
                    served: shape(first),
                });
            }
        }
        // Modules of one loaded base share its network: grouped by the base they hold.
        let composition =
            Composition::group(modules.iter().map(|m| (Arc::as_ptr(&m.base), m.base.net.clone(), m.module.clone())))?;
        Ok(Snapshot { generation, modules, composition })
    }

    /// Increases with every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The loaded modules, in load order (the classifier's classes).
    pub fn modules(&self) -> &[Arc<LoadedModule>] {
        &self.modules
    }

    /// The images the served classes take (their shape; each base normalises them its own
    /// way), or `None` when nothing is loaded.
    pub fn input_spec(&self) -> Option<&InputSpec> {
        self.modules.first().map(|m| &m.module.input)
    }

    /// The served classes, in load order.
    pub fn class_names(&self) -> Vec<String> {
        self.modules.iter().map(|m| m.module.class_name.clone()).collect()
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
    pub fn classify(&self, pixels: &[u8], rule: Rule, min_score: MinScore) -> Result<Classification> {
        if self.modules.is_empty() {
            return Err(Error::NoClassesLoaded);
        }
        let classes = self.class_names();
        let outs = self.composition.run_pixels(pixels)?;
        let (predictions, scores) = (0..outs.batch).map(|i| outs.answer(i, rule, min_score)).unzip();
        Ok(Classification { generation: self.generation, classes, predictions, scores })
    }
}
