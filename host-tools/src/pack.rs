//! Packing modules into blobs for a device: one base blob per base model, one module blob per
//! class (with golden self-test vectors recorded on real images) and the directory's manifest.

use crate::HostError;
use std::path::{Path, PathBuf};

use classmod_blob::{AlignedBytes, Blob, SigningKey};
use classmod_runtime::host::write_atomically;
use classmod_runtime::host::{base_blob, key_hex};
use classmod_runtime::host::{ClassModule, Golden, ModelFile, ModuleBlob, ResNet};
use classmod_runtime::{Device, ModelKey};
use classmod_runtime::{Manifest, ManifestBase, ManifestModule};

use crate::compose_eval::{read_packed, ComposeError};
use crate::dataset::ImageSet;
use crate::decompose::{class_file_stem, decompose, DecomposeOptions};
use indicatif::ProgressBar;

/// A base model and the modules to pack with it.
pub struct PackGroup {
    /// The model's key, which every module names.
    pub key: ModelKey,
    pub model: ModelFile,
    pub modules: Vec<ClassModule>,
}

/// Reads module blobs (files, or packed directories) and their bases, grouped per base in the
/// order the bases first appear.
pub fn read_groups(paths: &[PathBuf]) -> Result<Vec<PackGroup>, ComposeError> {
    let packed = read_packed(paths, &Device::Cpu)?;
    let mut groups: Vec<PackGroup> =
        packed.bases.into_iter().map(|(key, _, model)| PackGroup { key, model, modules: Vec::new() }).collect();
    for m in packed.modules {
        let g = groups.iter_mut().find(|g| g.key == m.base_key).expect("every module's base was read");
        g.modules.push(m);
    }
    Ok(groups)
}

impl PackGroup {
    /// `model` and modules of it.
    pub fn new(model: ModelFile, modules: Vec<ClassModule>) -> Result<PackGroup, HostError> {
        Ok(PackGroup { key: ModelKey::of(&model)?, model, modules })
    }
}

/// File name of a module blob: `class-007-horse.blob`.
pub fn module_blob_name(m: &ClassModule) -> String {
    format!("{}.blob", class_file_stem(m))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), HostError> {
    let p = dir.join(name);
    write_atomically(&p, bytes).map_err(|e| HostError::io(&p, e))
}

fn content_hash_hex(bytes: &[u8]) -> Result<String, HostError> {
    Ok(key_hex(&Blob::parse(AlignedBytes::new(bytes).bytes()).map_err(classmod_runtime::Error::from)?.content_hash()))
}

/// The default release number of a packed module: the packing time in seconds since the epoch,
/// so that a later pack is newer (see [`ModuleBlob::version`]).
pub fn version_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes every group's base blob and module blobs into `out`, then the manifest (last, so a
/// directory with a manifest is complete). Every module is release `version`
/// ([`ModuleBlob::version`]); `golden(group index, module)` gives each module's golden images
/// (raw pixels of the input spec).
pub fn pack(
    groups: &[PackGroup],
    out: &Path,
    key: Option<&SigningKey>,
    version: u64,
    golden: impl Fn(usize, &ClassModule) -> Vec<u8>,
) -> Result<Manifest, HostError> {
    std::fs::create_dir_all(out).map_err(|e| HostError::io(out, e))?;
    let (mut bases, mut modules) = (Vec::new(), Vec::new());
    for (gi, g) in groups.iter().enumerate() {
        let bkey = g.key;
        let base_bytes = base_blob::encode(&g.model, key)?;
        let base_file = format!("base-{}.blob", bkey.short());
        write(out, &base_file, &base_bytes)?;
        bases.push(ManifestBase {
            file: base_file,
            key: bkey,
            content_hash: content_hash_hex(&base_bytes)?,
            bytes: base_bytes.len() as u64,
            class_names: g.model.meta.class_names.clone(),
        });
        let net = ResNet::new(&g.model, &Device::Cpu)?;
        for m in &g.modules {
            if m.base_key != bkey {
                return Err(classmod_runtime::Error::WrongBase { class: m.class_name.clone() }.into());
            }
            let module = m.clone();
            let images = golden(gi, m);
            let golden = Golden::record(&net, &module, images)?;
            let blob = ModuleBlob { golden, module, sites: net.relu_sites(), version };
            let bytes = blob.encode(key)?;
            let file = module_blob_name(&blob.module);
            write(out, &file, &bytes)?;
            modules.push(ManifestModule {
                file,
                class_name: blob.module.class_name.clone(),
                class_id: blob.module.class_id.0,
                base_key: bkey,
                content_hash: content_hash_hex(&bytes)?,
                bytes: bytes.len() as u64,
                version,
                highest_version: version,
                previous: None,
            });
        }
    }
    let manifest = Manifest::new(bases, modules);
    Manifest::from_json(&serde_json::to_string(&manifest).expect("serialises"))?;
    manifest.write(out)?;
    Ok(manifest)
}

/// Decomposes `opts.classes` of `model` on `train` and packs them into `out` (see [`pack`]), each
/// module with `golden` golden images drawn from `test`.
#[allow(clippy::too_many_arguments)]
pub fn decompose_and_pack(
    model: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &DecomposeOptions,
    golden: usize,
    out: &Path,
    key: Option<&SigningKey>,
    progress: &ProgressBar,
) -> Result<Manifest, HostError> {
    let d = decompose(model, train, opts, progress)?;
    let group = PackGroup::new(model.clone(), d.modules)?;
    pack(&[group], out, key, version_now(), |_, m| golden_sample(test, golden, opts.seed ^ u64::from(m.class_id.0)))
}

/// [`decompose_and_pack`] for compact modules ([`crate::decompose::compact::decompose_compact`]).
#[allow(clippy::too_many_arguments)]
pub fn decompose_compact_and_pack(
    model: &ModelFile,
    train: &ImageSet,
    test: &ImageSet,
    opts: &crate::decompose::compact::CompactOptions,
    golden: usize,
    out: &Path,
    key: Option<&SigningKey>,
    progress: &ProgressBar,
) -> Result<Manifest, HostError> {
    let d = crate::decompose::compact::decompose_compact(model, train, opts, progress)?;
    let group = PackGroup::new(model.clone(), d.modules)?;
    pack(&[group], out, key, version_now(), |_, m| golden_sample(test, golden, opts.seed ^ u64::from(m.class_id.0)))
}

/// Golden images for a module: `n` images of a seeded class-balanced sample of `images` (whose
/// classes are the base's), raw pixels.
pub fn golden_sample(images: &ImageSet, n: usize, seed: u64) -> Vec<u8> {
    images.balanced_sample(n, seed).pixels
}
