//! A class module: what the device needs to answer "is this image of class c, and how sure?".
//! The mask kind is the base network with some nodes switched off plus a binary head; the type
//! is an enum so a second kind (compact per-class branches) can join without touching callers.

pub mod compose;
pub mod group;
pub mod head;
pub mod mask;

use crate::InputSpec;

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

/// One class module.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassModule {
    pub class_id: ClassId,
    pub class_name: String,
    /// Identifies the base network the module runs on (hex digest of the base model file).
    pub base_key: String,
    pub input: InputSpec,
    pub kind: ModuleKind,
    pub head: ModuleHead,
}

impl ClassModule {
    pub fn mask(&self) -> &NodeMask {
        match &self.kind {
            ModuleKind::Mask(m) => m,
        }
    }
}
