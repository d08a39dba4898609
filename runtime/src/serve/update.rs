//! The field update of one class module, as a transaction:
//!
//! 1. **verify** the new blob in memory: layout, hash, signature (when the device has a key),
//!    decoding, and compatibility (its base is one the manifest lists, with the same input spec);
//! 2. **stage** it under its own content-named file beside the active one (temp file, fsync,
//!    rename, fsync of the directory);
//! 3. **health check**: map the staged file and run the module's golden self-test on its base;
//! 4. **commit** by writing the new manifest atomically (temp, fsync, rename, fsync directory): it
//!    names the new file and keeps the old one as the rollback copy; then serve the new module.
//!
//! The manifest rename is the commit point. A power cut before it leaves the old manifest (the
//! old module; the staged file is an orphan that [`ModuleRuntime::clean`] removes); after it, the
//! new one. Both name only complete, fsynced files, so a restart comes up with the old or the new
//! module, never a broken one. Any failed step leaves the running set untouched. [`confirm`]
//! forgets the rollback copy; [`rollback`] goes back to it.
//!
//! [`confirm`]: ModuleRuntime::confirm
//! [`rollback`]: ModuleRuntime::rollback

use std::path::Path;

use classmod_blob::{AlignedBytes, Blob, BlobKind, Header, Peek};

use crate::model::key::key_hex;
use crate::pack::atomic::{self, DurableFs};
use crate::pack::manifest::{Manifest, ManifestModule, PreviousModule};
use crate::serve::ModuleRuntime;
use crate::Result;
use crate::{Error, ModelKey, ModuleBlob};

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateReport {
    /// The updated class.
    pub class_name: String,
    /// The new module's file in the directory.
    pub file: String,
    /// The module it replaced, kept until [`ModuleRuntime::confirm`].
    pub previous: Option<String>,
}

/// What [`ModuleRuntime::apply_update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A class module was installed (see [`ModuleRuntime::update`]).
    Module(UpdateReport),
    /// A base model was added (see [`ModuleRuntime::add_base`]).
    Base {
        /// Its file in the directory.
        file: String,
        /// False when the device already had it (nothing changed).
        new: bool,
    },
}

/// Which kind of update a blob holds, as its header says (the transaction checks the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpdateKind {
    /// A base model: apply it before modules that run on it.
    Base,
    /// A class module.
    Module,
}

impl UpdateKind {
    /// The kind named by the first bytes of a blob (16 are enough), or `None` when they are
    /// not a blob's.
    pub fn of(prefix: &[u8]) -> Option<UpdateKind> {
        let kind = match Header::peek(prefix) {
            Peek::Partial { kind: Some(kind) } | Peek::Declares { kind, .. } => kind,
            Peek::NotBlob | Peek::UnknownKind(_) | Peek::Partial { kind: None } => return None,
        };
        match kind {
            BlobKind::Base => Some(UpdateKind::Base),
            BlobKind::Module => Some(UpdateKind::Module),
        }
    }
}

/// Bytes at the start of a blob that [`declared_len`] needs.
pub const BLOB_HEADER_LEN: usize = classmod_blob::HEADER_LEN;
/// The bytes every blob starts with (what tells a blob still being written from other bytes
/// before its header is complete).
pub const BLOB_MAGIC: [u8; 8] = classmod_blob::MAGIC;
/// Bytes of the trailer that ends every blob.
pub const BLOB_TRAILER_LEN: usize = classmod_blob::TRAILER_LEN;

/// The file length a blob's header declares, from the blob's first [`BLOB_HEADER_LEN`] bytes, or
/// `None` when they are not a blob's header: how a device tells an update still being written
/// (shorter) from a complete one before reading the rest (the transaction checks everything).
pub fn declared_len(header: &[u8]) -> Option<u64> {
    match Header::peek(header) {
        Peek::Declares { file_len, .. } => Some(file_len),
        Peek::NotBlob | Peek::UnknownKind(_) | Peek::Partial { .. } => None,
    }
}

/// `bytes` on the 8-byte boundary the blob parser needs: as given when they already are (an
/// [`AlignedBytes`] buffer, a mapping), else copied into `copy`. A 256 MiB update read into an
/// aligned buffer is thus held once, not twice.
fn aligned<'a>(bytes: &'a [u8], copy: &'a mut Option<AlignedBytes>) -> &'a [u8] {
    if bytes.as_ptr().align_offset(8) == 0 {
        return bytes;
    }
    copy.insert(AlignedBytes::new(bytes)).bytes()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// A verified module update and the entry it replaces.
pub(crate) struct ModuleUpdate {
    /// Its manifest entry (keeping the replaced module as the rollback copy).
    pub(crate) entry: ManifestModule,
    /// The class's entry before it, if the class had a module.
    pub(crate) old: Option<ManifestModule>,
}

/// Step 1 of a module update against `manifest`: the blob verified (layout, hash, signature),
/// decoded, its base and class checked, its release not older than the class's newest
/// committed one; its manifest entry. The same module as the active one is
/// [`Error::AlreadyInstalled`].
pub(crate) fn module_entry(rt: &ModuleRuntime, manifest: &Manifest, bytes: &[u8]) -> Result<ModuleUpdate> {
    let mut copy = None;
    let blob = Blob::open(aligned(bytes, &mut copy), rt.config().key.as_ref())?;
    let new = ModuleBlob::decode(&blob)?;
    let m = &new.module;
    let base = manifest.base(&m.base_key).ok_or_else(|| Error::MissingBase { class: m.class_name.clone() })?;
    if base.class_names.get(m.class_id.0 as usize).is_none_or(|n| *n != m.class_name) {
        return Err(Error::ClassNotInBase { class: m.class_name.clone(), index: m.class_id.0 });
    }
    let content_hash = key_hex(&blob.content_hash());
    let file =
        format!("{}-{}.blob", crate::pack::manifest::file_stem(m.class_id.0, &m.class_name), &content_hash[..16]);
    let old = manifest.module(&m.class_name).cloned();
    if old.as_ref().is_some_and(|o| o.content_hash == content_hash) {
        return Err(Error::AlreadyInstalled { class: m.class_name.clone() });
    }
    // Downgrade protection: never older than the newest committed release of the class
    // (whatever its base: ResNet-20's `cat` does not replace ResNet-56's newer one).
    let highest = old.as_ref().map_or(0, |o| o.highest_version.max(o.version));
    if new.version < highest && !rt.config().allow_downgrade {
        return Err(Error::Downgrade { class: m.class_name.clone(), version: new.version, highest });
    }
    let entry = ManifestModule {
        file,
        class_name: m.class_name.clone(),
        class_id: m.class_id.0,
        base_key: m.base_key,
        content_hash,
        bytes: bytes.len() as u64,
        version: new.version,
        // A downgrade let through on purpose resets the mark: later releases are measured
        // from the version the operator chose.
        highest_version: if new.version < highest { new.version } else { new.version.max(highest) },
        previous: old.as_ref().map(|o| PreviousModule {
            file: o.file.clone(),
            content_hash: o.content_hash.clone(),
            bytes: o.bytes,
            version: o.version,
            highest_version: o.highest_version,
            base_key: Some(o.base_key),
            class_id: Some(o.class_id),
        }),
    };
    Ok(ModuleUpdate { entry, old })
}

/// A base blob verified (hash, signature, contents against its key); its manifest entry.
pub(crate) fn base_entry(rt: &ModuleRuntime, bytes: &[u8]) -> Result<crate::pack::manifest::ManifestBase> {
    let mut copy = None;
    let blob = Blob::open(aligned(bytes, &mut copy), rt.config().key.as_ref())?;
    let model = crate::pack::base_blob::decode(&blob, &crate::Device::Cpu)?;
    let key = ModelKey(blob.base_key());
    Ok(crate::pack::manifest::ManifestBase {
        file: format!("base-{}.blob", key.short()),
        key,
        content_hash: key_hex(&blob.content_hash()),
        bytes: bytes.len() as u64,
        class_names: model.meta.class_names.clone(),
    })
}

impl ModuleRuntime {
    /// Applies an update of either kind (a base or a module blob's bytes) through `fs`: what a
    /// device does with a blob that arrives. On any error nothing changes.
    pub fn apply_update(&self, fs: &mut dyn DurableFs, bytes: &[u8]) -> Result<Applied> {
        match UpdateKind::of(bytes) {
            Some(UpdateKind::Base) => self.add_base(fs, bytes).map(|(file, new)| Applied::Base { file, new }),
            // Not a blob at all: the module path reports the format error.
            Some(UpdateKind::Module) | None => self.update(fs, bytes).map(Applied::Module),
        }
    }

    /// Applies a module update (the blob's bytes) through `fs`. On any error the served set, the
    /// manifest and the active files are as before.
    pub fn update(&self, fs: &mut dyn DurableFs, bytes: &[u8]) -> Result<UpdateReport> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        if let Some(p) = &manifest.pending {
            return Err(Error::UpdatePending { id: p.id.clone() });
        }
        // 1. Verify.
        let ModuleUpdate { entry, old } = module_entry(self, manifest, bytes)?;
        let file = entry.file.clone();
        // 2. Stage beside the active file.
        let staged = self.dir().join(&file);
        atomic::write_with(fs, &staged, bytes).map_err(io(&staged))?;
        // 3. Health check on the staged file (and the memory budget, if the class is served);
        // 4. commit.
        let result = (|| {
            let loaded = self.prepare(manifest, &entry, &staged)?;
            let snapshot = if self.serves(&entry.class_name) { Some(self.with_module(loaded)?) } else { None };
            let mut next = manifest.clone();
            match next.modules.iter_mut().find(|x| x.class_name == entry.class_name) {
                Some(x) => *x = entry.clone(),
                None => next.modules.push(entry.clone()),
            }
            Manifest::from_json(&serde_json::to_string(&next).expect("serialises"))?;
            next.write_with(fs, self.dir())?;
            *manifest = next;
            Ok(snapshot)
        })();
        match result {
            Ok(Some(snapshot)) => {
                self.note_seen();
                self.install(snapshot);
            }
            Ok(None) => self.note_seen(),
            Err(e) => {
                // A module delivered again while it is the rollback copy is staged under the
                // copy's own name: that file stays, the manifest still names it.
                if !manifest.names(&file) {
                    let _ = fs.remove(&staged);
                }
                return Err(e);
            }
        }
        // The replaced module's own rollback copy is named no more, now durably: it goes (a
        // failure here leaves an orphan for `clean`).
        if let Some(dropped) = old.as_ref().and_then(|o| o.previous.as_ref()) {
            if !manifest.names(&dropped.file) {
                let _ = fs.remove(&self.dir().join(&dropped.file));
            }
        }
        Ok(UpdateReport { class_name: entry.class_name, file, previous: old.map(|o| o.file) })
    }

    /// Adds a base model (a base blob's bytes) so that modules of another model can be installed:
    /// verified (hash, signature, contents against its key), written beside the others, then
    /// recorded by an atomic manifest rename. A base the device already has changes nothing.
    /// Returns its file name and whether it was new.
    pub fn add_base(&self, fs: &mut dyn DurableFs, bytes: &[u8]) -> Result<(String, bool)> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        let entry = base_entry(self, bytes)?;
        if let Some(b) = manifest.base(&entry.key) {
            return Ok((b.file.clone(), false));
        }
        let file = entry.file.clone();
        let path = self.dir().join(&file);
        atomic::write_with(fs, &path, bytes).map_err(io(&path))?;
        let mut next = manifest.clone();
        next.bases.push(entry);
        if let Err(e) = next.write_with(fs, self.dir()) {
            if !manifest.names(&file) {
                let _ = fs.remove(&path);
            }
            return Err(e);
        }
        *manifest = next;
        self.note_seen();
        Ok((file, true))
    }

    /// Confirms the update of `class`: the rollback copy is forgotten and deleted.
    pub fn confirm(&self, fs: &mut dyn DurableFs, class: &str) -> Result<()> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        let mut next = manifest.clone();
        let entry =
            next.modules.iter_mut().find(|x| x.class_name == class).ok_or_else(|| Error::UnknownClass(class.into()))?;
        let Some(previous) = entry.previous.take() else { return Ok(()) };
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        let old = self.dir().join(&previous.file);
        fs.remove(&old).map_err(io(&old))
    }

    /// Goes back to the module `class` ran before its unconfirmed update (and serves it if the
    /// class is served). The updated file is deleted.
    pub fn rollback(&self, fs: &mut dyn DurableFs, class: &str) -> Result<()> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        let current = manifest.module(class).cloned().ok_or_else(|| Error::UnknownClass(class.into()))?;
        let back = current.rolled_back().ok_or_else(|| Error::NothingToRollBack { class: class.to_string() })?;
        let loaded = self.prepare(manifest, &back, &self.dir().join(&back.file))?;
        let snapshot = if self.serves(class) { Some(self.with_module(loaded)?) } else { None };
        let mut next = manifest.clone();
        if let Some(x) = next.modules.iter_mut().find(|x| x.class_name == class) {
            *x = back;
        }
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        if let Some(s) = snapshot {
            self.install(s);
        }
        let updated = self.dir().join(&current.file);
        fs.remove(&updated).map_err(io(&updated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::atomic::OsFs;
    use crate::testing::tiny_model::tiny_model;
    use crate::testing::*;
    use crate::{Device, ResNet};
    use std::io;
    use std::path::PathBuf;

    fn served_file(rt: &ModuleRuntime, class: &str) -> String {
        let snap = rt.snapshot();
        let m = snap.modules.iter().find(|m| m.module.class_name == class).expect("served");
        m.file.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// A second version of class b (another mask) as blob bytes.
    fn b_v2(f: &Fixture) -> Vec<u8> {
        module(&tiny_model(1), &f.nets[0], 1, "b", 2).encode(None).unwrap()
    }

    #[test]
    fn a_restart_after_a_power_cut_at_any_step_serves_the_old_or_the_new_module() {
        power_cut_at_every_step(|| fixture(None), b_v2);
    }

    /// The same for a compact module b (beside a mask module a of its base) updated to another
    /// compact version.
    #[test]
    fn a_compact_module_update_survives_a_power_cut_at_any_step() {
        power_cut_at_every_step(compact_fixture, |f| {
            compact_module(&tiny_model(1), &f.nets[0], 1, "b", 31).encode(None).unwrap()
        });
    }

    fn power_cut_at_every_step(make: fn() -> Fixture, v2: fn(&Fixture) -> Vec<u8>) {
        // How many steps a whole update and its confirmation take.
        let f = make();
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        let mut count = PowerCut { steps: 0, cut: usize::MAX };
        rt.update(&mut count, &v2(&f)).unwrap();
        rt.confirm(&mut count, "b").unwrap();
        let total = count.steps;
        assert!(total >= 10, "stage (4) + manifest (4) + confirm (4+1) steps, got {total}");
        let _ = std::fs::remove_dir_all(&f.dir);

        let mut outcomes = Vec::new();
        for cut in 0..=total {
            let f = make();
            let old = Manifest::read(&f.dir).unwrap().module("b").unwrap().file.clone();
            let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
            rt.load("a").unwrap();
            rt.load("b").unwrap();
            let mut fs = PowerCut { steps: 0, cut };
            let updated = rt.update(&mut fs, &v2(&f));
            if updated.is_err() {
                assert_eq!(served_file(&rt, "b"), old, "cut {cut}: a failed update leaves the running set untouched");
            } else {
                let _ = rt.confirm(&mut fs, "b");
            }
            drop(rt);
            // Restart.
            let rt =
                ModuleRuntime::open(&f.dir, config(None, None)).unwrap_or_else(|e| panic!("cut {cut}: restart: {e}"));
            rt.clean(&mut OsFs).unwrap();
            rt.load("a").unwrap();
            rt.load("b").unwrap_or_else(|e| panic!("cut {cut}: b does not load after restart: {e}"));
            let now = served_file(&rt, "b");
            let new = now != old;
            if new {
                assert!(now.starts_with("class-001-b-"), "{now}");
            }
            assert!(rt.classify(&images(2)).is_ok());
            // Nothing but the named files and the manifest is left.
            let left: Vec<PathBuf> = std::fs::read_dir(&f.dir).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(
                left.iter().all(|p| !p.file_name().unwrap().to_string_lossy().contains(".tmp")),
                "cut {cut}: {left:?}"
            );
            outcomes.push(new);
            let _ = std::fs::remove_dir_all(&f.dir);
        }
        eprintln!("power cut at each of {} steps -> new module after restart: {outcomes:?}", outcomes.len());
        assert!(
            !outcomes[0] && *outcomes.last().unwrap(),
            "old before the first step, new after the last: {outcomes:?}"
        );
        let switch = outcomes.iter().position(|&n| n).unwrap();
        assert!(outcomes[switch..].iter().all(|&n| n), "once committed, always new: {outcomes:?}");
    }

    #[test]
    fn refused_updates_leave_everything_untouched() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        let manifest_before = std::fs::read(f.dir.join("manifest.json")).unwrap();
        let count = || std::fs::read_dir(&f.dir).unwrap().count();
        let files_before = count();
        let generation = rt.snapshot().generation;
        // Golden scores that the module does not reproduce: the health check fails.
        let mut bad = module(&tiny_model(1), &f.nets[0], 1, "b", 2);
        bad.golden.scores[0] += 0.5;
        let err = rt.update(&mut OsFs, &bad.encode(None).unwrap()).unwrap_err();
        assert!(matches!(err, Error::GoldenMismatch { .. }), "{err}");
        // Truncated bytes, a module of a base the device lacks, the module already running.
        let mut v2 = b_v2(&f);
        assert!(rt.update(&mut OsFs, &v2[..v2.len() - 1]).is_err());
        let foreign = module(&tiny_model(9), &ResNet::new(&tiny_model(9), &Device::Cpu).unwrap(), 1, "b", 2);
        assert!(rt.update(&mut OsFs, &foreign.encode(None).unwrap()).is_err());
        assert!(rt.update(&mut OsFs, &std::fs::read(f.dir.join("b.blob")).unwrap()).is_err());
        v2[200] ^= 1;
        assert!(rt.update(&mut OsFs, &v2).is_err());
        assert_eq!(std::fs::read(f.dir.join("manifest.json")).unwrap(), manifest_before);
        assert_eq!(count(), files_before, "no staged file left");
        assert_eq!(rt.snapshot().generation, generation);
        assert_eq!(served_file(&rt, "b"), "b.blob");
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    #[test]
    fn a_device_with_a_key_refuses_unsigned_updates() {
        let sk = classmod_blob::SigningKey::from_bytes(&[5; 32]);
        let f = fixture(Some(&sk));
        let rt = ModuleRuntime::open(&f.dir, config(None, Some(sk.verifying_key()))).unwrap();
        let unsigned = b_v2(&f);
        assert!(matches!(rt.update(&mut OsFs, &unsigned), Err(Error::Blob(classmod_blob::BlobError::Unsigned))));
        let signed = module(&tiny_model(1), &f.nets[0], 1, "b", 2).encode(Some(&sk)).unwrap();
        rt.update(&mut OsFs, &signed).unwrap();
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    #[test]
    fn modules_of_another_model_install_after_its_base() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        let other = tiny_model(7);
        let net = ResNet::new(&other, &Device::Cpu).unwrap();
        let b_other = module(&other, &net, 1, "b", 3).encode(None).unwrap();
        assert!(rt.update(&mut OsFs, &b_other).is_err(), "its base is not on the device yet");
        let (file, new) = rt.add_base(&mut OsFs, &crate::pack::base_blob::encode(&other, None).unwrap()).unwrap();
        assert!(new);
        assert_eq!(
            rt.add_base(&mut OsFs, &crate::pack::base_blob::encode(&other, None).unwrap()).unwrap(),
            (file, false)
        );
        rt.update(&mut OsFs, &b_other).unwrap();
        let snap = rt.snapshot();
        assert_eq!(snap.modules[0].base.key, ModelKey::of(&other).unwrap());
        // A restart finds the new base and module.
        drop(rt);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        assert!(rt.classify(&images(1)).is_ok());
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// One entry point for whatever blob arrives: a base is added, a module installed, bytes
    /// that are no blob refused with the format's error; the kind comes from the header alone.
    #[test]
    fn apply_update_dispatches_on_the_blob_kind() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        let other = tiny_model(7);
        let base = crate::pack::base_blob::encode(&other, None).unwrap();
        let module = module(&other, &ResNet::new(&other, &Device::Cpu).unwrap(), 1, "b", 3).encode(None).unwrap();
        assert_eq!(UpdateKind::of(&base), Some(UpdateKind::Base));
        assert_eq!(UpdateKind::of(&module[..16]), Some(UpdateKind::Module));
        assert_eq!(UpdateKind::of(b"CLSMBLOB"), None, "too short to say");
        assert_eq!(UpdateKind::of(&[0; 64]), None);
        assert!(matches!(rt.apply_update(&mut OsFs, &module), Err(Error::MissingBase { .. })), "its base is not here");
        assert!(matches!(rt.apply_update(&mut OsFs, &base).unwrap(), Applied::Base { new: true, .. }));
        assert!(matches!(rt.apply_update(&mut OsFs, &base).unwrap(), Applied::Base { new: false, .. }));
        match rt.apply_update(&mut OsFs, &module).unwrap() {
            Applied::Module(r) => assert_eq!(r.class_name, "b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rt.apply_update(&mut OsFs, &module), Err(Error::AlreadyInstalled { .. })));
        assert!(matches!(rt.apply_update(&mut OsFs, b"not a blob at all"), Err(Error::Blob(_))));
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// Writes everything but the manifest, which fails as on a full disk.
    struct ManifestFails;

    impl DurableFs for ManifestFails {
        fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            OsFs.write_file(path, bytes)
        }
        fn sync_file(&mut self, path: &Path) -> io::Result<()> {
            OsFs.sync_file(path)
        }
        fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
            if to.file_name().is_some_and(|n| n == crate::pack::manifest::FILE_NAME) {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            OsFs.rename(from, to)
        }
        fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
            OsFs.sync_dir(path)
        }
        fn remove(&mut self, path: &Path) -> io::Result<()> {
            OsFs.remove(path)
        }
    }

    /// Issue 13, item 6: v2, then v3 (v2 is now the rollback copy), then v2 again while the
    /// manifest cannot be written. The refusal used to delete the staged file, which was the
    /// rollback copy itself; now every file the manifest names is still there and checks out.
    #[test]
    fn a_refused_update_never_deletes_a_file_the_manifest_names() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        let v2 = b_v2(&f);
        let v3 = module(&tiny_model(1), &f.nets[0], 1, "b", 3).encode(None).unwrap();
        let r2 = rt.update(&mut OsFs, &v2).unwrap();
        let r3 = rt.update(&mut OsFs, &v3).unwrap();
        assert_eq!(r3.previous.as_deref(), Some(r2.file.as_str()));
        assert!(!f.dir.join("b.blob").exists(), "v1 is named no more once v3 commits: deleted");
        assert!(rt.update(&mut ManifestFails, &v2).is_err());
        let m = Manifest::read(&f.dir).unwrap();
        for file in m.files() {
            assert!(f.dir.join(file).is_file(), "{file} is named by the manifest and gone");
        }
        assert!(rt.check_rollback_copy("b").unwrap().is_some(), "the rollback copy checks out");
        rt.rollback(&mut OsFs, "b").unwrap();
        assert_eq!(served_file(&rt, "b"), r2.file);
        // A refused base leaves named files too.
        let other = crate::pack::base_blob::encode(&tiny_model(7), None).unwrap();
        assert!(rt.add_base(&mut ManifestFails, &other).is_err());
        assert!(Manifest::read(&f.dir).unwrap().files().all(|file| f.dir.join(file).is_file()));
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// Class b's module at `version`, from base `m` (1 or 2), with mask seed `drop`.
    fn b_at(f: &Fixture, m: u64, drop: usize, version: u64) -> Vec<u8> {
        let mut mb = module(&tiny_model(m), &f.nets[m as usize - 1], 1, "b", drop);
        mb.version = version;
        mb.encode(None).unwrap()
    }

    /// Issue 13, item 3: a validly made older module of a class is refused once a newer one was
    /// committed (v2 after v3, v1 after v3, another base's older `b`), across restarts; an equal
    /// version and a rollback of an unconfirmed update are no downgrades; `allow_downgrade` lets
    /// one through and the mark starts again from it.
    #[test]
    fn older_modules_are_refused_as_downgrades() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        rt.update(&mut OsFs, &b_at(&f, 1, 2, 3)).unwrap();
        rt.confirm(&mut OsFs, "b").unwrap();
        let manifest = std::fs::read(f.dir.join("manifest.json")).unwrap();
        for (blob, what) in [(b_at(&f, 1, 7, 2), "v2"), (b_at(&f, 1, 8, 1), "v1"), (b_at(&f, 2, 2, 2), "other base")] {
            let e = rt.update(&mut OsFs, &blob).unwrap_err();
            assert!(matches!(e, Error::Downgrade { highest: 3, .. }), "{what}: {e}");
            assert_eq!(std::fs::read(f.dir.join("manifest.json")).unwrap(), manifest, "{what}: nothing changed");
        }
        assert_eq!(
            rt.update(&mut OsFs, &b_at(&f, 1, 7, 2)).unwrap_err().to_string(),
            "class `b`: version 2 is older than version 3, the newest this device has committed (a downgrade)"
        );
        // After a restart the mark is still there (it is in the manifest).
        drop(rt);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        assert!(matches!(rt.update(&mut OsFs, &b_at(&f, 1, 7, 2)), Err(Error::Downgrade { .. })));
        // The same version again (another build of release 3) is no downgrade; v5 unconfirmed,
        // rolled back: back to release 3's mark, so a 4 is taken.
        rt.update(&mut OsFs, &b_at(&f, 1, 9, 3)).unwrap();
        rt.update(&mut OsFs, &b_at(&f, 1, 10, 5)).unwrap();
        assert!(matches!(rt.update(&mut OsFs, &b_at(&f, 1, 11, 4)), Err(Error::Downgrade { highest: 5, .. })));
        rt.rollback(&mut OsFs, "b").unwrap();
        let m = Manifest::read(&f.dir).unwrap();
        assert_eq!((m.module("b").unwrap().version, m.module("b").unwrap().highest_version), (3, 3));
        rt.update(&mut OsFs, &b_at(&f, 1, 11, 4)).unwrap();
        // Allowed on purpose: the mark follows the version accepted.
        drop(rt);
        let allow = config(None, None).with_downgrades(true);
        let rt = ModuleRuntime::open(&f.dir, allow).unwrap();
        rt.update(&mut OsFs, &b_at(&f, 1, 12, 1)).unwrap();
        let m = Manifest::read(&f.dir).unwrap();
        assert_eq!((m.module("b").unwrap().version, m.module("b").unwrap().highest_version), (1, 1));
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    #[test]
    fn rollback_and_confirm() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        let report = rt.update(&mut OsFs, &b_v2(&f)).unwrap();
        assert_eq!(report.previous.as_deref(), Some("b.blob"));
        assert_eq!(served_file(&rt, "b"), report.file);
        rt.rollback(&mut OsFs, "b").unwrap();
        assert_eq!(served_file(&rt, "b"), "b.blob");
        assert!(!f.dir.join(&report.file).exists(), "the rolled-back update is deleted");
        let err = rt.rollback(&mut OsFs, "b").unwrap_err();
        assert!(matches!(&err, Error::NothingToRollBack { class } if class == "b"), "{err}");
        assert_eq!(err.to_string(), "class `b` has no update to roll back");
        let report = rt.update(&mut OsFs, &b_v2(&f)).unwrap();
        rt.confirm(&mut OsFs, "b").unwrap();
        assert!(!f.dir.join("b.blob").exists(), "the confirmed update's rollback copy is deleted");
        let m = Manifest::read(&f.dir).unwrap();
        assert_eq!(m.module("b").unwrap().file, report.file);
        assert!(m.module("b").unwrap().previous.is_none());
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// Issue 36, item 8: after an update that moves class `a` to the other base, the rollback
    /// copy is checked on its own base (it was checked on the new module's, so `classmod verify`
    /// called a healthy device broken), the rollback serves it on that base, and a restart reads
    /// the manifest the same way.
    #[test]
    fn a_cross_base_update_keeps_its_rollback_copy_on_its_own_base() {
        let f = fixture(None);
        let (k1, k2) = (ModelKey::of(&tiny_model(1)).unwrap(), ModelKey::of(&tiny_model(2)).unwrap());
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        let a_on_2 = crate::testing::module(&tiny_model(2), &f.nets[1], 0, "a", 3).encode(None).unwrap();
        rt.update(&mut OsFs, &a_on_2).unwrap();
        let m = Manifest::read(&f.dir).unwrap();
        assert_eq!(
            (m.module("a").unwrap().base_key, m.module("a").unwrap().previous.as_ref().unwrap().base_key),
            (k2, Some(k1))
        );
        let copy = rt.check_rollback_copy("a").unwrap().expect("a rollback copy");
        assert_eq!(copy.base.key, k1);
        drop(rt);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        assert!(rt.check_rollback_copy("a").unwrap().is_some(), "after a restart too");
        rt.load("a").unwrap();
        rt.rollback(&mut OsFs, "a").unwrap();
        assert_eq!(served_file(&rt, "a"), "a.blob");
        assert_eq!(rt.snapshot().modules()[0].base.key, k1);
        assert_eq!(Manifest::read(&f.dir).unwrap().module("a").unwrap().base_key, k1);
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
