//! The base network: its architecture ([`ResNetConfig`]), its input ([`InputSpec`]), the
//! self-describing model file it is imported into ([`ModelFile`]) and the eval-mode graph that
//! runs it ([`ResNet`]).

pub mod config;
pub mod file;
pub mod graph;
pub mod input;

pub use config::{ResNetConfig, Shortcut};
pub use file::{ModelFile, ModelMeta};
pub use graph::{ReluSite, ResNet};
pub use input::InputSpec;
