//! The base network: its architecture ([`Architecture`]: a CIFAR [`ResNetConfig`] or a whole
//! network description), its input ([`InputSpec`]), the
//! self-describing model file it is imported into ([`ModelFile`]) and the eval-mode graph that
//! runs it ([`ResNet`]) from its folded layers ([`ConvBn`], [`Block`]), the key that names
//! it ([`ModelKey`]), and a compact module's branch ([`Branch`]) built from the same layers.

pub mod arch;
pub mod branch;
pub mod config;
pub mod file;
pub mod graph;
pub mod input;
pub mod key;
pub mod layers;
pub(crate) mod linear;
pub mod network;

pub use arch::Architecture;
pub use branch::{Branch, BranchSpec, BranchWeights};
pub use config::{ResNetConfig, Shortcut};
pub use file::{ModelFile, ModelMeta};
pub use graph::ResNet;
pub use input::{InputSpec, Resize};
pub use key::ModelKey;
pub use layers::{Block, BlockShortcut, ConvBn};
pub use network::ReluSite;
