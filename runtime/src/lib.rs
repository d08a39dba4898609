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
//! packaging tools need (model files in safetensors, writing containers, hooks into the graph)
//! is under `host`, built with the `host` cargo feature only (the device build leaves it, and
//! the `safetensors` dependency, out). There is no CLI, no image decoding, no dataset and no training code here:
//! `classmod-host` builds those on top.
//!
//! A device program, start to end: open a packed directory, serve two classes, classify an
//! image, then swap one class for another while serving.
//!
//! ```
//! use classmod_runtime::prelude::*;
//!
//! # fn main() -> classmod_runtime::Result<()> {
//! # let dir = example::packed_directory()?;
//! let config = ServingConfig::new(Device::Cpu).with_budget(Some(64 << 20));
//! let runtime = ModuleRuntime::open(&dir, config)?;
//! runtime.load("cat")?;
//! runtime.load("dog")?;
//! let snapshot = runtime.snapshot(); // one consistent set of modules for this classification
//! let pixels = vec![128u8; snapshot.input_spec().expect("two classes are loaded").image_len()];
//! let result = snapshot.classify(&pixels, Rule::Max, MinScore::Calibrated)?;
//! match result.predictions[0] {
//!     Some(winner) => println!("{} ({:.2})", result.classes[winner], result.scores[0][winner]),
//!     None => println!("none of {}", result.classes.join(", ")),
//! }
//! runtime.unload("dog")?; // classifications still running keep their snapshot
//! runtime.load("ship")?;
//! assert_eq!(runtime.snapshot().class_names(), ["cat", "ship"]);
//! # Ok(())
//! # }
//! # mod example {
//! #     //! A packed directory of a small random ResNet-8 with classes cat, dog and ship, as
//! #     //! `classmod pack` writes one (without golden images from a dataset).
//! #     use classmod_runtime::host::{base_blob::encode, key_hex};
//! #     use classmod_runtime::host::*;
//! #     use classmod_runtime::*;
//! #     pub fn packed_directory() -> Result<std::path::PathBuf> {
//! #         let dir = std::env::temp_dir().join(format!("classmod-doctest-{}", std::process::id()));
//! #         std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
//! #         let arch = ResNetConfig { blocks_per_stage: 1, widths: [4, 8, 16], shortcut: Shortcut::A, in_channels: 1, num_classes: 3 };
//! #         let mut tensors = std::collections::HashMap::new();
//! #         for (i, (name, shape)) in arch.tensor_shapes().into_iter().enumerate() {
//! #             let n: usize = shape.iter().product();
//! #             let v: Vec<f32> = (0..n).map(|j| if name.ends_with("running_var") { 1.0 } else { ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5 }).collect();
//! #             tensors.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
//! #         }
//! #         let classes: Vec<String> = ["cat", "dog", "ship"].map(String::from).to_vec();
//! #         let input = InputSpec::new(1, 8, 8, vec![0.5], vec![0.25]);
//! #         let model = ModelFile::new(ModelMeta { arch: arch.into(), input: input.clone(), class_names: classes.clone() }, tensors)?;
//! #         let (net, key) = (ResNet::new(&model, &Device::Cpu)?, ModelKey::of(&model)?);
//! #         let base = encode(&model, None)?;
//! #         std::fs::write(dir.join("base.blob"), &base).map_err(|e| Error::io(&dir, e))?;
//! #         let content_hash = key_hex(&classmod_blob::Blob::parse(classmod_blob::AlignedBytes::new(&base).bytes())?.content_hash());
//! #         let bases = vec![ManifestBase { file: "base.blob".into(), key, content_hash, bytes: base.len() as u64, class_names: classes.clone() }];
//! #         let mut modules = Vec::new();
//! #         for (id, name) in classes.iter().enumerate() {
//! #             let module = ClassModule { class_id: ClassId(id as u32), class_name: name.clone(), base_key: key, input: input.clone(), kind: ModuleKind::Mask(NodeMask::ones(&net.relu_sites())), head: ModuleHead::Channel { class_index: id }, min_score: None };
//! #             let golden = Golden::record(&net, &module, vec![7; 2 * input.image_len()])?;
//! #             let bytes = ModuleBlob { module, sites: net.relu_sites(), golden, version: 1 }.encode(None)?;
//! #             let file = format!("{name}.blob");
//! #             std::fs::write(dir.join(&file), &bytes).map_err(|e| Error::io(&dir, e))?;
//! #             let content_hash = key_hex(&classmod_blob::Blob::parse(classmod_blob::AlignedBytes::new(&bytes).bytes())?.content_hash());
//! #             modules.push(ManifestModule { file, class_name: name.clone(), class_id: id as u32, base_key: key, content_hash, bytes: bytes.len() as u64, version: 1, highest_version: 1, previous: None });
//! #         }
//! #         Manifest::new(bases, modules).write(&dir)?;
//! #         Ok(dir)
//! #     }
//! # }
//! ```

#![warn(missing_docs)]
// Without `host`, what only the `host` module reaches (model-file metadata keys, the composition
// API the host's evaluations call, the writers' helpers) is dead by design; with it, as in every
// workspace build and in CI's clippy, the usual checks apply.
#![cfg_attr(not(feature = "host"), allow(dead_code, unused_imports))]

mod cpu;
mod device;
mod engine;
mod error;
mod model;
mod module;
mod pack;
mod serve;
/// Packed directories of tiny random models for tests (this crate's, and with the `testing`
/// feature other crates' tests of the device program); not part of the device API.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

// The device API: what a program that serves modules names.
pub use candle_core::Device;
pub use classmod_blob::{parse_public_key, AlignedBytes, BlobError, VerifyingKey};

pub use device::{cuda, Precision, CUDA_BUILT};
pub use error::{Error, ErrorKind, Result};
pub use model::{InputSpec, ModelKey, Resize};
pub use module::compose::{MinScore, Rule};
pub use pack::manifest::{
    Manifest, ManifestBase, ManifestModule, PendingUpdate, PreviousModule, FILE_NAME as MANIFEST_FILE,
};
pub use pack::module_blob::{SelfTest, MAX_GOLDEN_IMAGES};
pub use pack::{DirLock, DurableFs, OsFs, PackedDir};
pub use serve::{
    declared_len, Applied, Classification, Followed, LoadedBase, LoadedModule, LockWait, ModuleRuntime, PendingReport,
    ServingConfig, Snapshot, UpdateKind, UpdateReport, BLOB_HEADER_LEN, BLOB_MAGIC, BLOB_TRAILER_LEN,
};

// The model, module and container types, under `host` for other crates; the crate's own files
// name them through the root as before.
#[allow(unused_imports)]
pub(crate) use model::{
    Architecture, Block, BlockShortcut, Branch, BranchSpec, BranchWeights, ConvBn, ModelFile, ModelMeta, ReluSite,
    ResNet, ResNetConfig, Shortcut,
};
#[allow(unused_imports)]
pub(crate) use module::{
    ClassId, ClassModule, ComposedOutputs, Composition, GroupKind, ModuleGroup, ModuleHead, ModuleKind, ModuleOutputs,
    NodeMask, SiteMask,
};
#[allow(unused_imports)]
pub(crate) use pack::{Golden, ModuleBlob};

/// Reading files that may be anything (a FIFO, a symlink, a huge or truncated file): regular
/// files only, bounded in size, opened without blocking; blobs mapped read-only. What the device
/// program and the host tools read every file through.
pub mod io {
    pub use crate::pack::mapped::MappedFile;
    pub use crate::pack::regular;
}

/// What a device integrator needs: `use classmod_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Applied, Classification, Device, DurableFs, Error, ErrorKind, Followed, InputSpec, LockWait, MinScore,
        ModuleRuntime, OsFs, PackedDir, PendingReport, Precision, Result, Rule, SelfTest, ServingConfig, Snapshot,
        UpdateKind, UpdateReport, VerifyingKey,
    };
}

#[cfg(feature = "host")]
/// What the host's tools use beyond the device API: the model ([`host::ResNet`], its file, its
/// network description, the images and activations its engines take and give) and the modules
/// ([`host::ClassModule`], [`host::ModuleGroup`]), the containers' writers and readers, the
/// graph's hooks, and crash-safe writes.
pub mod host {
    /// The CPU path's micro-kernels: which one runs (`Microkernel::best().name()`, reported by
    /// `classmod bench`) and the variable that picks another.
    pub use crate::cpu::microkernel::{Microkernel, KERNEL_ENV};
    /// How a batch too small to slice uses the cores, and the variable that sets it.
    pub use crate::cpu::small_batch::{SmallBatch, SMALL_BATCH_ENV};
    pub use crate::engine::{Activation, Images};
    pub use crate::model::config::BN_EPS;
    pub use crate::model::file::MAX_MODEL_BYTES;
    pub use crate::model::file::{check_tensors, read_safetensors};
    pub use crate::model::graph::{subsample, NoHook, ReluHook};
    pub use crate::model::key::{input_key, key_hex};
    pub use crate::model::network::{BlockConv, BlockKind, BlockSpec, Network, Stage, Stem, TrunkEnd};
    pub use crate::model::{
        Architecture, Block, BlockShortcut, Branch, BranchSpec, BranchWeights, ConvBn, ModelFile, ModelMeta, ReluSite,
        ResNet, ResNetConfig, Shortcut,
    };
    pub use crate::module::compose::{answer, predict, ranking};
    pub use crate::module::score;
    pub use crate::module::{
        ClassId, ClassModule, ComposedOutputs, Composition, GroupKind, ModuleGroup, ModuleHead, ModuleKind,
        ModuleOutputs, NodeMask, SiteMask,
    };
    pub use crate::pack::atomic::write as write_atomically;
    pub use crate::pack::base_blob;
    pub use crate::pack::manifest::file_stem;
    pub use crate::pack::module_blob::GOLDEN_TOLERANCE;
    pub use crate::pack::{Golden, ModuleBlob};
    pub use candle_core::{DType, Tensor};
}

/// The CPU path's kernels and knobs, for `benches/` only: not a stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::cpu::conv::{panel_outer, split_by_channels, Epilogue, Method, PackedConv, Plane, Threads};
    pub use crate::cpu::microkernel::{prefetch_weights, Isa, Microkernel};
    pub use crate::cpu::small_batch::SmallBatch;
}
