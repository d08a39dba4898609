//! classmod-runtime: what runs on the device.
//!
//! This crate owns the inference side of classmod: the description of a model's architecture
//! ([`ResNetConfig`]) and input ([`InputSpec`]), the self-describing model file
//! ([`model_file`]), the eval-mode ResNet graph with batch norm folded into the convolutions
//! ([`ResNet`]), and crash-safe file replacement ([`atomic_file`]). It deliberately has no CLI,
//! no image decoding, no datasets and no training: `classmod-host` builds those on top.

pub mod atomic_file;
pub mod base_blob;
pub mod class_module;
pub mod compose;
pub mod cpu;
pub mod device;
pub mod error;
pub mod field_update;
pub mod input_spec;
pub mod manifest;
pub mod mapped_file;
pub mod model_file;
pub mod module_blob;
pub mod module_file;
pub mod module_group;
mod module_parts;
pub mod node_mask;
pub mod resnet;
pub mod resnet_config;
pub mod serving;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tiny_model;

pub use candle_core::{DType, Device, Tensor};
pub use class_module::{ClassId, ClassModule, ModuleHead, ModuleKind};
pub use error::ModelError;
pub use input_spec::InputSpec;
pub use model_file::{ModelFile, ModelMeta};
pub use module_blob::{Golden, ModuleBlob};
pub use module_group::{ModuleGroup, ModuleOutputs};
pub use node_mask::{NodeMask, SiteMask};
pub use resnet::ResNet;
pub use resnet_config::{ResNetConfig, Shortcut};
