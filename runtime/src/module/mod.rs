//! A class module: what the device needs to answer "is this image of class c, and how sure?".
//! The mask kind is the base network with some nodes switched off plus a binary head; the
//! compact kind is a small branch from the base's trunk (its first stages, shared by every
//! loaded class of that base) plus a calibrated head on the branch's features.

pub mod compose;
pub mod composition;
pub mod group;
pub mod head;
pub mod mask;

use crate::model::branch::BranchWeights;
use crate::model::network::TrunkEnd;
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
    /// A branch from the base's trunk ([`crate::Branch`]); its head is calibrated on the
    /// branch's pooled features.
    Compact(BranchWeights),
}

/// Which modules can run in one group: the same kind, and for compact modules the same trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// Mask modules: the whole base, stacked.
    Mask,
    /// Compact modules branching where their trunk ends.
    Compact {
        /// Where the trunk ends.
        trunk: TrunkEnd,
    },
}

impl ModuleKind {
    /// The kinds this build runs, as module metadata names them.
    pub const KNOWN: &'static str = "mask, compact";

    /// The kind's name in module metadata (`kind`).
    pub fn name(&self) -> &'static str {
        match self {
            ModuleKind::Mask(_) => "mask",
            ModuleKind::Compact(_) => "compact",
        }
    }

    /// The group a module of this kind runs in.
    pub fn group_kind(&self) -> GroupKind {
        match self {
            ModuleKind::Mask(_) => GroupKind::Mask,
            ModuleKind::Compact(b) => GroupKind::Compact { trunk: b.spec().trunk_end() },
        }
    }

    /// The branch, for a compact module.
    pub fn as_compact(&self) -> Option<&BranchWeights> {
        match self {
            ModuleKind::Compact(b) => Some(b),
            ModuleKind::Mask(_) => None,
        }
    }

    /// Features the kind's head reads: the base's pooled features for a mask module, the
    /// branch's for a compact one.
    pub fn features(&self, base: &ResNet) -> usize {
        match self {
            ModuleKind::Mask(_) => base.network().features(),
            ModuleKind::Compact(b) => b.spec().width,
        }
    }

    /// The node mask, for a mask module.
    pub fn as_mask(&self) -> Option<&NodeMask> {
        match self {
            ModuleKind::Mask(m) => Some(m),
            ModuleKind::Compact(_) => None,
        }
    }

    /// Fraction of the base's nodes the module keeps, for kinds that keep a subset of them.
    pub fn kept_fraction(&self) -> Option<f64> {
        match self {
            ModuleKind::Mask(m) => Some(m.kept_fraction()),
            ModuleKind::Compact(_) => None,
        }
    }

    /// Bytes a served module of this kind holds beyond its base, on inputs of spec `input`: for
    /// a mask, its bits and the 0/1 bytes (one a node) its group stacks them into for the
    /// kernels; for a compact module, its branch's values and their packed copy.
    pub fn resident_bytes(&self, input: &InputSpec) -> u64 {
        match self {
            ModuleKind::Mask(m) => m.total_nodes() as u64 + m.bit_bytes(),
            ModuleKind::Compact(b) => {
                let (h, w) = b.spec().trunk_plane(input.height, input.width);
                b.served_bytes(h, w)
            }
        }
    }

    /// Why the kind cannot run on `base`, if it cannot.
    fn misfit(&self, base: &ResNet) -> Option<String> {
        match self {
            ModuleKind::Mask(m) if !m.matches(&base.relu_sites()) => {
                Some("its masks do not fit the base network".into())
            }
            ModuleKind::Mask(_) => None,
            ModuleKind::Compact(b) => b.spec().fits(base.network()).err(),
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
    /// The score from which the module claims an image: calibrated when it was packed, on
    /// held-out training images of its class, so that 95 % of them reach it. Below it on every
    /// loaded module, an image is none of the loaded classes ([`crate::MinScore`]). `None` for
    /// modules packed without one.
    pub min_score: Option<f32>,
}

impl ClassModule {
    /// The node mask, for a mask module.
    pub fn as_mask(&self) -> Option<&NodeMask> {
        self.kind.as_mask()
    }

    /// The branch, for a compact module.
    pub fn as_compact(&self) -> Option<&BranchWeights> {
        self.kind.as_compact()
    }

    /// Bytes the served module holds beyond its base: its kind's and its head's.
    pub fn resident_bytes(&self) -> u64 {
        self.kind.resident_bytes(&self.input) + self.head.resident_bytes()
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
        let (classes, features) = (base.network().num_classes, self.kind.features(base));
        if self.class_id.0 as usize >= classes {
            return Err(misfit(format!("class id {} but the base has {classes} classes", self.class_id.0)));
        }
        match &self.head {
            ModuleHead::Channel { .. } if self.as_mask().is_none() => {
                Err(misfit(format!("a {} module reads no base logits for a channel head", self.kind.name())))
            }
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
