//! A packed directory, read-only: its manifest and, on demand, each base and module it lists,
//! mapped, verified (layout, content hash, signature when a key is given), held to its manifest
//! entry (the file's hash, the class and base it claims) and decoded. The one way a packed
//! directory is read: serving loads through `read_base` and `read_module` (`serve/`, which adds
//! the writing side: transactions, following, cleaning), and the host tools read bases and
//! modules through [`PackedDir`].

use std::path::{Path, PathBuf};

use candle_core::Device;
use classmod_blob::VerifyingKey;

use crate::model::key::key_hex;
use crate::pack::base_blob;
use crate::pack::manifest::{Manifest, ManifestModule};
use crate::pack::mapped::MappedFile;
use crate::Result;
use crate::{Error, ModelFile, ModelKey, ModuleBlob};

/// A packed directory as it is on disk now (see the module comment).
#[derive(Debug, Clone)]
pub struct PackedDir {
    dir: PathBuf,
    key: Option<VerifyingKey>,
    manifest: Manifest,
}

impl PackedDir {
    /// Reads `dir`'s manifest; every blob read later must be signed by `key` when one is given.
    pub fn open(dir: &Path, key: Option<VerifyingKey>) -> Result<Self> {
        Ok(PackedDir { dir: dir.to_path_buf(), key, manifest: Manifest::read(dir)? })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its manifest, as read when opened.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The file the manifest lists for base `key`.
    pub fn base_file(&self, key: &ModelKey) -> Result<PathBuf> {
        let entry = self.manifest.base(key).ok_or(Error::BaseNotInManifest { key: *key })?;
        Ok(self.dir.join(&entry.file))
    }

    /// The base model `key`, read and checked (see the module comment), its tensors on `device`.
    pub fn base(&self, key: &ModelKey, device: &Device) -> Result<ModelFile> {
        read_base(&self.dir, &self.manifest, key, self.key.as_ref(), device)
    }

    /// The module of `class`, read and checked (see the module comment); its golden self-test
    /// is the caller's to run (it needs the base).
    pub fn module(&self, class: &str) -> Result<ModuleBlob> {
        let entry = self.manifest.module(class).ok_or_else(|| Error::UnknownClass(class.to_string()))?;
        read_module(&self.dir.join(&entry.file), entry, self.key.as_ref())
    }
}

/// Base `key` of the directory `dir` whose manifest is `manifest`: mapped, verified (signed by
/// `verify` when given), its content hash the manifest's, its header's key the one asked for,
/// decoded onto `device` (which checks the weights against that key).
pub(crate) fn read_base(
    dir: &Path,
    manifest: &Manifest,
    key: &ModelKey,
    verify: Option<&VerifyingKey>,
    device: &Device,
) -> Result<ModelFile> {
    let entry = manifest.base(key).ok_or(Error::BaseNotInManifest { key: *key })?;
    let path = dir.join(&entry.file);
    let map = MappedFile::open(&path)?;
    let blob = map.blob(verify)?;
    if key_hex(&blob.content_hash()) != entry.content_hash {
        return Err(Error::ManifestHashMismatch { path });
    }
    if ModelKey(blob.base_key()) != *key {
        return Err(Error::ManifestEntryMismatch { path });
    }
    base_blob::decode(&blob, device).map_err(|e| e.in_file(&path))
}

/// The module blob `file` for the manifest entry `entry` (the active file or its rollback copy):
/// mapped, verified (signed by `verify` when given), its content hash the entry's, its class and
/// base the entry's.
pub(crate) fn read_module(file: &Path, entry: &ManifestModule, verify: Option<&VerifyingKey>) -> Result<ModuleBlob> {
    let map = MappedFile::open(file)?;
    let blob = map.blob(verify)?;
    if key_hex(&blob.content_hash()) != entry.content_hash {
        return Err(Error::ManifestHashMismatch { path: file.to_path_buf() });
    }
    let mb = ModuleBlob::decode(&blob)?;
    if mb.module.class_name != entry.class_name || mb.module.base_key != entry.base_key {
        return Err(Error::ManifestEntryMismatch { path: file.to_path_buf() });
    }
    Ok(mb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixture;

    /// The directory reads as serving loads it: every base and module of the fixture, each
    /// checked against the manifest; a module file swapped for another class's, a base file
    /// changed by one byte, an unknown class and an unknown base are refused by name.
    #[test]
    fn a_packed_directory_reads_each_file_checked_against_its_manifest() {
        let f = fixture(None);
        let packed = PackedDir::open(&f.dir, None).unwrap();
        for b in &packed.manifest().bases {
            let model = packed.base(&b.key, &Device::Cpu).unwrap();
            assert_eq!(ModelKey::of(&model).unwrap(), b.key);
        }
        for m in &packed.manifest().modules {
            assert_eq!(packed.module(&m.class_name).unwrap().module.class_name, m.class_name);
        }
        assert!(matches!(packed.module("no-such-class"), Err(Error::UnknownClass(_))));
        assert!(matches!(packed.base(&ModelKey([7; 32]), &Device::Cpu), Err(Error::BaseNotInManifest { .. })));

        let modules = &packed.manifest().modules;
        let (a, b) = (&modules[0], &modules[1]);
        std::fs::copy(f.dir.join(&b.file), f.dir.join(&a.file)).unwrap();
        assert!(matches!(packed.module(&a.class_name), Err(Error::ManifestHashMismatch { .. })));

        let base = &packed.manifest().bases[0];
        let path = f.dir.join(&base.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(packed.base(&base.key, &Device::Cpu).is_err(), "a changed base is refused");
    }
}
