//! A class module: what the device needs to answer "is this image of class c, and how sure?".
//! The mask kind is the base network with some nodes switched off plus a binary head; the type
//! is an enum so a second kind (compact per-class branches) can join without touching callers.

pub mod compose;
pub mod composition;
pub mod group;
pub mod head;
pub mod mask;

use crate::{Error, InputSpec, ModelKey, ResNet, Result};

pub use composition::{ComposedOutputs, Composition};
pub use group::{ModuleGroup, ModuleOutputs};
pub use head::{score, ModuleHead};
pub use mask::{NodeMask, SiteMask};

/// The id of a class: its output index in the model it was decomposed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(pub u32);

/// What a module computes with.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleKind {
    /// The base network with a node mask (the paper's modules).
    Mask(NodeMask),
}

impl ModuleKind {
    /// The kinds this build runs, as module metadata names them.
    pub const KNOWN: &'static str = "mask";

    /// The kind's name in module metadata (`kind`).
    pub fn name(&self) -> &'static str {
        match self {
            ModuleKind::Mask(_) => "mask",
        }
    }

    /// The node mask, for a mask module.
    pub fn as_mask(&self) -> Option<&NodeMask> {
        match self {
            ModuleKind::Mask(m) => Some(m),
        }
    }

    /// Fraction of the base's nodes the module keeps, for kinds that keep a subset of them.
    pub fn kept_fraction(&self) -> Option<f64> {
        match self {
            ModuleKind::Mask(m) => Some(m.kept_fraction()),
        }
    }

    /// Bytes a served module of this kind holds beyond its base: for a mask, its bits and the
    /// 0/1 bytes (one a node) its group stacks them into for the kernels.
    pub fn resident_bytes(&self) -> u64 {
        match self {
            ModuleKind::Mask(m) => m.total_nodes() as u64 + m.bit_bytes(),
        }
    }

    /// Why the kind cannot run on `base`, if it cannot.
    fn misfit(&self, base: &ResNet) -> Option<String> {
        match self {
            ModuleKind::Mask(m) if !m.matches(&base.relu_sites()) => {
                Some("its masks do not fit the base network".into())
            }
            ModuleKind::Mask(_) => None,
        }
    }
}

/// One class module.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassModule {
    /// The class's output index in the base.
    pub class_id: ClassId,
    /// The class's name.
    pub class_name: String,
    /// The base network the module runs on.
    pub base_key: ModelKey,
    /// The images the module takes.
    pub input: InputSpec,
    /// What the module computes with.
    pub kind: ModuleKind,
    /// How its outputs become a score.
    pub head: ModuleHead,
}

impl ClassModule {
    /// The node mask, for a mask module.
    pub fn as_mask(&self) -> Option<&NodeMask> {
        self.kind.as_mask()
    }

    /// Bytes the served module holds beyond its base: its kind's and its head's.
    pub fn resident_bytes(&self) -> u64 {
        self.kind.resident_bytes() + self.head.resident_bytes()
    }

    /// Checks that the module can run on `base`: the same input spec, a kind that fits the
    /// network, and a class index and head within its outputs. Indices and sizes from a file
    /// are checked here, so execution never indexes out of range.
    pub fn fits(&self, base: &ResNet) -> Result<()> {
        let misfit = |reason: String| Error::ModuleDoesNotFit { class: self.class_name.clone(), reason };
        if &self.input != base.input_spec() {
            return Err(misfit("it takes another input spec than its base".into()));
        }
        if let Some(reason) = self.kind.misfit(base) {
            return Err(misfit(reason));
        }
        let (classes, features) = (base.config().num_classes, base.config().widths[2]);
        if self.class_id.0 as usize >= classes {
            return Err(misfit(format!("class id {} but the base has {classes} classes", self.class_id.0)));
        }
        match &self.head {
            ModuleHead::Channel { class_index } if *class_index >= classes => {
                Err(misfit(format!("its head reads logit {class_index} of {classes}")))
            }
            ModuleHead::Calibrated { weight, .. } if weight.len() != features => {
                Err(misfit(format!("its calibrated head has {} weights for {features} features", weight.len())))
            }
            _ => Ok(()),
        }
    }
}
