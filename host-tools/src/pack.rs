//! Packing modules into blobs for a device: one base blob per base model, one module blob per
//! class (with golden self-test vectors recorded on real images) and the directory's manifest.

use crate::HostError;
use std::path::{Path, PathBuf};

use classmod_blob::{AlignedBytes, Blob, SigningKey};
use classmod_runtime::host::write_atomically;
use classmod_runtime::host::{base_blob, key_hex};
use classmod_runtime::host::{ClassModule, Golden, ModelFile, ModuleBlob, ResNet};
use classmod_runtime::{Device, LockWait, ModelKey};
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
    // A device directory (a device may be serving it, the Mender update module writing it) is
    // written under its writer lock, waited for and said so.
    let _lock = LockWait::telling(|line| eprintln!("classmod pack: {line}")).take(out)?;
    // The downgrade marks a device directory already has stay (a re-pack must not reopen the
    // door to replayed old modules): unreadable or absent, there are none.
    let marks: std::collections::HashMap<String, u64> = Manifest::read(out)
        .map(|m| m.modules.into_iter().map(|e| (e.class_name, e.highest_version.max(e.version))).collect())
        .unwrap_or_default();
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
                highest_version: marks.get(&blob.module.class_name).map_or(version, |&m| m.max(version)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use classmod_runtime::testing::{module, tiny_model::tiny_model};

    /// Issue 36, item 9: `pack --out` into a device directory reset its downgrade marks to the
    /// pack's release. A re-pack at an older release keeps the marks (its modules serve, and a
    /// replayed release below the mark stays refused), and it writes under the writer lock.
    #[test]
    fn a_re_pack_keeps_the_directorys_downgrade_marks() {
        let model = tiny_model(1);
        let net = ResNet::new(&model, &Device::Cpu).unwrap();
        let modules: Vec<ClassModule> =
            (0..2).map(|c| module(&model, &net, c, ["a", "b"][c as usize], 3).module).collect();
        let dir = classmod_runtime::testing::scratch();
        let images = |_: usize, _: &ClassModule| vec![100; 2 * 64];
        let group = || PackGroup::new(model.clone(), modules.clone()).unwrap();
        pack(&[group()], &dir, None, 10, images).unwrap();
        let m = pack(&[group()], &dir, None, 3, images).unwrap();
        let a = m.module("a").unwrap();
        assert_eq!((a.version, a.highest_version), (3, 10));
        assert_eq!(Manifest::read(&dir).unwrap(), m);
        // Held by another writer: the pack waits for it.
        let held = classmod_runtime::DirLock::exclusive(&dir).unwrap();
        let (d, g) = (dir.clone(), group());
        let packing = std::thread::spawn(move || pack(&[g], &d, None, 4, images).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!packing.is_finished(), "waits for the lock");
        drop(held);
        packing.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
