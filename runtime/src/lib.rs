//! classmod-runtime: what runs on the device.
//!
//! A device serves the class modules of a packed directory (a `manifest.json` beside base and
//! module blobs): it maps and verifies only the classes it is asked for, classifies batches of
//! raw pixels with one consistent set of modules, swaps single modules while other threads
//! classify, and takes field updates of one module as a crash-safe transaction.
//!
//! The crate is laid out by concern:
//! - `model/`: the base network (architecture, input spec, model file, eval-mode graph);
//! - `module/`: what a class module is (kind, head, node masks) and how k of them run and
//!   compose;
//! - `pack/`: bytes on disk (base and module blobs, the manifest, mappings, atomic writes);
//! - `serve/`: the serving runtime (snapshots, field update, cleaning after a crash);
//! - `cpu/`: the CPU execution path (crate-private kernels).
//!
//! The device integrator's names are at the root and in [`prelude`]; what only the host's
//! packaging tools need (writing containers, hashing models, hooks into the graph) is under
//! [`host`]. There is no CLI, no image decoding, no dataset and no training code here:
//! `classmod-host` builds those on top.

mod cpu;
mod device;
mod error;
mod model;
mod module;
mod pack;
mod serve;
#[cfg(test)]
mod testing;

pub use candle_core::{DType, Device, Tensor};
pub use classmod_blob::{parse_public_key, BlobError, VerifyingKey};

pub use device::{cuda, CUDA_BUILT};
pub use error::ModelError;
pub use model::{InputSpec, ModelFile, ModelMeta, ReluSite, ResNet, ResNetConfig, Shortcut};
pub use module::compose::Rule;
pub use module::{ClassId, ClassModule, ModuleGroup, ModuleHead, ModuleKind, ModuleOutputs, NodeMask, SiteMask};
pub use pack::manifest::{Manifest, ManifestBase, ManifestModule, PreviousModule};
pub use pack::{DurableFs, Golden, ModuleBlob, OsFs};
pub use serve::{Classification, LoadedBase, LoadedModule, ModuleRuntime, ServingConfig, Snapshot, UpdateReport};

/// What a device integrator needs: `use classmod_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Classification, Device, DurableFs, InputSpec, ModelError, ModuleRuntime, OsFs, Rule, ServingConfig, Snapshot,
        UpdateReport, VerifyingKey,
    };
}

/// What the host's packaging tools use beyond the device API: the containers' writers and
/// readers, model keys, the graph's hooks, and crash-safe writes.
pub mod host {
    pub use crate::model::config::BN_EPS;
    pub use crate::model::file::{check_tensors, read_safetensors};
    pub use crate::model::graph::{subsample, NoHook, ReluHook};
    pub use crate::module::compose::{predict, ranking};
    pub use crate::module::score;
    pub use crate::pack::atomic::write as write_atomically;
    pub use crate::pack::manifest::file_stem;
    pub use crate::pack::mapped::MappedFile;
    pub use crate::pack::{base_blob, module_file};
}

/// The CPU path's kernels, for `benches/cpu_kernels.rs` only: not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::cpu::conv::{Epilogue, Method, PackedConv, Plane, Threads};
    pub use crate::cpu::microkernel::Microkernel;
}
