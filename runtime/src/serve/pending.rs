//! One delivery of several blobs as one transaction (what a Mender artifact carries): every base
//! and module verified, staged and health-checked, then all switched by one manifest rename, as a
//! *pending* update. [`ModuleRuntime::commit_pending`] confirms it; [`ModuleRuntime::roll_back_pending`]
//! puts back exactly the entries it replaced and removes what it added. All or none: a failure at
//! any step leaves the manifest, the served set and the files as they were.
//!
//! Each step is idempotent, because an OTA client re-runs a state after a power loss: installing
//! the pending update again changes nothing, and committing or rolling back with nothing pending
//! is no error.

use std::collections::HashSet;

use crate::pack::atomic::{self, DurableFs};
use crate::pack::manifest::{Manifest, ManifestModule, PendingUpdate};
use crate::serve::update::{base_entry, module_entry, ModuleUpdate};
use crate::serve::{LoadedModule, ModuleRuntime};
use crate::{Error, Result};

/// What [`ModuleRuntime::install_pending`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingReport {
    /// The update's name (a Mender artifact's).
    pub id: String,
    /// Classes whose module it replaced.
    pub updated: Vec<String>,
    /// Classes it added.
    pub added: Vec<String>,
    /// Bases it added (their files).
    pub bases: Vec<String>,
    /// Modules it carried that the device already runs: nothing to change for them.
    pub unchanged: Vec<String>,
    /// The same update was pending already (a re-run of the install): nothing was written.
    pub already_pending: bool,
}

impl PendingReport {
    /// Whether the update changed nothing at all.
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.added.is_empty() && self.bases.is_empty()
    }
}

impl ModuleRuntime {
    /// Installs `blobs` (bases and modules, in any order) as the pending update `id`: all of
    /// them or none. Classes of the new modules that this runtime serves switch at once; new
    /// classes are recorded as served after restarts when `serve_new` says so. Refused while
    /// another update is pending ([`Error::UpdatePending`]); the same `id` again with the same
    /// modules is a no-op.
    pub fn install_pending(
        &self,
        fs: &mut dyn DurableFs,
        id: &str,
        blobs: &[&[u8]],
        serve_new: bool,
    ) -> Result<PendingReport> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        if let Some(p) = &manifest.pending {
            // The same update again (Mender re-runs a state after a crash) only when it is the
            // same contents: a different payload under its name was said installed and was not.
            if p.id == id {
                let installed: HashSet<&str> = (manifest.modules.iter().map(|m| m.content_hash.as_str()))
                    .chain(manifest.bases.iter().map(|b| b.content_hash.as_str()))
                    .collect();
                let hash = |b: &[u8]| {
                    classmod_blob::Blob::parse(b).ok().map(|b| crate::model::key::key_hex(&b.content_hash()))
                };
                if blobs.iter().all(|b| hash(b).is_some_and(|h| installed.contains(h.as_str()))) {
                    return Ok(PendingReport { id: id.into(), already_pending: true, ..Default::default() });
                }
                return Err(Error::PendingContentsDiffer { id: id.into() });
            }
            return Err(Error::UpdatePending { id: p.id.clone() });
        }
        let mut next = manifest.clone();
        let mut pending = PendingUpdate { id: id.into(), ..Default::default() };
        let mut report = PendingReport { id: id.into(), ..Default::default() };
        // Written so far, removed again if the transaction fails.
        let mut staged: Vec<std::path::PathBuf> = Vec::new();
        let result = (|| {
            // Bases first: modules of a new base need it in the manifest they are checked against.
            let (bases, modules): (Vec<&[u8]>, Vec<&[u8]>) =
                blobs.iter().partition(|b| crate::UpdateKind::of(b) == Some(crate::UpdateKind::Base));
            for bytes in bases {
                let entry = base_entry(self, bytes)?;
                if next.base(&entry.key).is_some() {
                    continue;
                }
                let path = self.dir().join(&entry.file);
                atomic::write_with(fs, &path, bytes).map_err(|e| Error::io(&path, e))?;
                staged.push(path);
                pending.bases.push(entry.key);
                report.bases.push(entry.file.clone());
                next.bases.push(entry);
            }
            // Each module is checked against the device as it was (and the update's bases): two
            // modules of one class are an error of the update, not a chain of two.
            let device = Manifest { bases: next.bases.clone(), ..manifest.clone() };
            let mut seen = HashSet::new();
            let mut loaded: Vec<LoadedModule> = Vec::new();
            for bytes in modules {
                let ModuleUpdate { entry, old } = match module_entry(self, &device, bytes) {
                    Ok(u) => u,
                    Err(Error::AlreadyInstalled { class }) => {
                        report.unchanged.push(class);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if !seen.insert(entry.class_name.clone()) {
                    return Err(Error::DuplicateClass { class: entry.class_name });
                }
                // The replaced entry is kept whole (its own rollback copy too): a rollback puts it
                // back as it was. The new entry needs no copy of its own.
                let entry = ManifestModule { previous: None, ..entry };
                let path = self.dir().join(&entry.file);
                if !next.names(&entry.file) {
                    atomic::write_with(fs, &path, bytes).map_err(|e| Error::io(&path, e))?;
                    staged.push(path.clone());
                }
                loaded.push(self.prepare(&next, &entry, &path)?);
                match old {
                    Some(o) => {
                        report.updated.push(entry.class_name.clone());
                        pending.before.push(o);
                        let x = next.modules.iter_mut().find(|x| x.class_name == entry.class_name);
                        *x.expect("the old entry is in the manifest") = entry;
                    }
                    None => {
                        report.added.push(entry.class_name.clone());
                        pending.added.push(entry.class_name.clone());
                        if serve_new {
                            next.added_classes.push(entry.class_name.clone());
                        }
                        next.modules.push(entry);
                    }
                }
            }
            if report.is_empty() {
                return Ok(None);
            }
            // The served classes switch together, within the memory budget.
            let mut modules = self.snapshot().modules.clone();
            let mut changed = false;
            for l in loaded {
                if let Some(m) = modules.iter_mut().find(|m| m.module.class_name == l.module.class_name) {
                    *m = std::sync::Arc::new(l);
                    changed = true;
                }
            }
            let snapshot = if changed { Some(self.next_snapshot(modules)?) } else { None };
            next.pending = Some(pending);
            Manifest::from_json(&serde_json::to_string(&next).expect("serialises"))?;
            next.write_with(fs, self.dir())?;
            Ok(snapshot)
        })();
        match result {
            Ok(snapshot) => {
                if !report.is_empty() {
                    *manifest = next;
                    self.note_seen();
                }
                if let Some(s) = snapshot {
                    self.install(s);
                }
                Ok(report)
            }
            Err(e) => {
                for p in staged {
                    let _ = fs.remove(&p);
                }
                Err(e)
            }
        }
    }

    /// Confirms the pending update: the entries it replaced and their files are forgotten.
    /// Returns its id; `None` when nothing was pending (nothing changes).
    pub fn commit_pending(&self, fs: &mut dyn DurableFs) -> Result<Option<String>> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        let Some(pending) = manifest.pending.clone() else { return Ok(None) };
        let mut next = manifest.clone();
        next.pending = None;
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        self.remove_unnamed(fs, &w.manifest, pending.before.iter().flat_map(|b| b.files()));
        Ok(Some(pending.id))
    }

    /// Undoes the pending update: every entry it replaced comes back as it was (served again if
    /// its class is served), what it added is removed. Returns its id; `None` when nothing was
    /// pending (nothing changes).
    pub fn roll_back_pending(&self, fs: &mut dyn DurableFs) -> Result<Option<String>> {
        let mut w = self.writer()?;
        let manifest = &mut *w.manifest;
        let Some(pending) = manifest.pending.clone() else { return Ok(None) };
        let mut next = manifest.clone();
        next.pending = None;
        let mut undone: Vec<String> = Vec::new();
        for before in &pending.before {
            if let Some(x) = next.modules.iter_mut().find(|x| x.class_name == before.class_name) {
                undone.push(x.file.clone());
                *x = before.clone();
            }
        }
        let added: HashSet<&str> = pending.added.iter().map(String::as_str).collect();
        undone.extend(next.modules.iter().filter(|x| added.contains(x.class_name.as_str())).map(|x| x.file.clone()));
        next.modules.retain(|x| !added.contains(x.class_name.as_str()));
        next.added_classes.retain(|c| !added.contains(c.as_str()));
        undone.extend(next.bases.iter().filter(|b| pending.bases.contains(&b.key)).map(|b| b.file.clone()));
        next.bases.retain(|b| !pending.bases.contains(&b.key));
        // The served set as it was: restored modules health-checked again, added ones unloaded.
        let mut modules = Vec::new();
        for m in self.snapshot().modules.iter() {
            let class = m.module.class_name.as_str();
            if added.contains(class) {
                continue;
            }
            match pending.before.iter().find(|b| b.class_name == class) {
                Some(b) => modules.push(std::sync::Arc::new(self.prepare(&next, b, &self.dir().join(&b.file))?)),
                None => modules.push(m.clone()),
            }
        }
        let snapshot = self.next_snapshot(modules)?;
        Manifest::from_json(&serde_json::to_string(&next).expect("serialises"))?;
        next.write_with(fs, self.dir())?;
        *manifest = next;
        self.note_seen();
        self.install(snapshot);
        self.remove_unnamed(fs, &w.manifest, undone.iter().map(String::as_str));
        Ok(Some(pending.id))
    }

    /// Checks, as loading does (file present, hash, signature, golden self-test), what a
    /// rollback of the pending update would serve again: each entry it replaced, and that
    /// entry's own rollback copy. Empty when nothing is pending.
    pub fn check_pending_restore(&self) -> Vec<(ManifestModule, Result<LoadedModule>)> {
        let manifest = self.lock_manifest();
        let Some(p) = &manifest.pending else { return Vec::new() };
        let entries = p.before.iter().flat_map(|b| std::iter::once(b.clone()).chain(b.rolled_back()));
        entries
            .map(|e| {
                let checked = self.prepare(&manifest, &e, &self.dir().join(&e.file));
                (e, checked)
            })
            .collect()
    }

    /// Removes those of `files` that `manifest` (durable already) no longer names; a failure
    /// leaves an orphan for [`ModuleRuntime::clean`].
    fn remove_unnamed<'a>(&self, fs: &mut dyn DurableFs, manifest: &Manifest, files: impl Iterator<Item = &'a str>) {
        for f in files {
            if !manifest.names(f) {
                let _ = fs.remove(&self.dir().join(f));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pack::atomic::OsFs;
    use crate::testing::tiny_model::tiny_model;
    use crate::testing::*;
    use crate::{Device, MinScore, ResNet, Rule};

    /// Every file of the directory, with its bytes.
    fn files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect()
    }

    fn served(rt: &ModuleRuntime) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = rt
            .snapshot()
            .modules
            .iter()
            .map(|m| (m.module.class_name.clone(), m.file.file_name().unwrap().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    }

    /// New releases of classes a and b (other masks), as blob bytes.
    fn a_b_v2(version: u64) -> (Vec<u8>, Vec<u8>) {
        let m1 = tiny_model(1);
        let net = ResNet::new(&m1, &Device::Cpu).unwrap();
        let (mut a, mut b) = (module(&m1, &net, 0, "a", 9), module(&m1, &net, 1, "b", 8));
        a.version = version;
        b.version = version;
        (a.encode(None).unwrap(), b.encode(None).unwrap())
    }

    #[test]
    fn a_pending_update_switches_all_its_modules_and_rolls_back_to_the_same_bytes() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        rt.load("b").unwrap();
        let (before_files, before_served) = (files(&f.dir), served(&rt));
        let (a2, b2) = a_b_v2(5);
        let r = rt.install_pending(&mut OsFs, "art-1", &[&a2, &b2], false).unwrap();
        assert_eq!(
            (r.updated.as_slice(), r.added.len(), r.already_pending),
            (&["a".to_string(), "b".into()][..], 0, false)
        );
        // Both switched together; the new modules' scores are served.
        let now = served(&rt);
        assert!(now.iter().all(|(_, file)| file.starts_with("class-00")), "{now:?}");
        let m1 = tiny_model(1);
        let net = ResNet::new(&m1, &Device::Cpu).unwrap();
        let b_new = module(&m1, &net, 1, "b", 8);
        let x = images(3);
        let got = rt.snapshot().classify(&x, Rule::Max, MinScore::Off).unwrap();
        let want = alone(&net, &b_new, &x);
        for (i, w) in want.iter().enumerate() {
            assert!((got.scores[i][1] - w).abs() < 1e-5, "image {i}: {} vs {w}", got.scores[i][1]);
        }
        let on_disk = Manifest::read(&f.dir).unwrap();
        assert_eq!(on_disk.pending.as_ref().map(|p| p.id.as_str()), Some("art-1"));
        // What a rollback would serve is sound; a file of it gone is found.
        let restore = rt.check_pending_restore();
        assert_eq!(restore.len(), 2);
        assert!(restore.iter().all(|(_, r)| r.is_ok()));
        let kept = std::fs::read(f.dir.join("a.blob")).unwrap();
        std::fs::remove_file(f.dir.join("a.blob")).unwrap();
        assert!(rt.check_pending_restore().iter().any(|(e, r)| e.file == "a.blob" && r.is_err()));
        std::fs::write(f.dir.join("a.blob"), kept).unwrap();
        // Re-run (a power loss before the client recorded the state): nothing changes.
        assert!(rt.install_pending(&mut OsFs, "art-1", &[&a2, &b2], false).unwrap().already_pending);
        // No other update while it is pending: neither another artifact nor the inbox.
        let (a3, _) = a_b_v2(6);
        assert!(matches!(rt.install_pending(&mut OsFs, "art-2", &[&a3], false), Err(Error::UpdatePending { .. })));
        assert!(matches!(rt.update(&mut OsFs, &a3), Err(Error::UpdatePending { .. })));
        // Rolled back: the same files, byte for byte, the same modules served.
        assert_eq!(rt.roll_back_pending(&mut OsFs).unwrap().as_deref(), Some("art-1"));
        assert_eq!(files(&f.dir), before_files);
        assert_eq!(served(&rt), before_served);
        assert_eq!(rt.roll_back_pending(&mut OsFs).unwrap(), None, "again: nothing pending");
        // Installed again and committed: the old files go, the new ones stay, after a restart too.
        rt.install_pending(&mut OsFs, "art-1", &[&a2, &b2], false).unwrap();
        assert_eq!(rt.commit_pending(&mut OsFs).unwrap().as_deref(), Some("art-1"));
        assert_eq!(rt.commit_pending(&mut OsFs).unwrap(), None);
        let after = files(&f.dir);
        assert!(!after.contains_key("a.blob") && !after.contains_key("b.blob"), "{:?}", after.keys());
        let committed = served(&rt);
        drop(rt);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        assert!(rt.clean(&mut OsFs).unwrap().is_empty());
        rt.load("a").unwrap();
        rt.load("b").unwrap();
        assert_eq!(served(&rt), committed);
        assert!(rt.manifest().pending.is_none());
        // An older release of a committed class fails the whole update.
        let (old_a, _) = a_b_v2(4);
        let (_, b6) = a_b_v2(6);
        let before = files(&f.dir);
        assert!(matches!(rt.install_pending(&mut OsFs, "art-0", &[&b6, &old_a], false), Err(Error::Downgrade { .. })));
        assert_eq!(files(&f.dir), before, "nothing staged is left");
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    #[test]
    fn an_update_that_adds_a_base_and_a_class_is_undone_whole_and_a_bad_one_changes_nothing() {
        let (m1, m2) = (tiny_model(1), tiny_model(2));
        let (n1, n2) = (ResNet::new(&m1, &Device::Cpu).unwrap(), ResNet::new(&m2, &Device::Cpu).unwrap());
        let dir = scratch();
        pack(&dir, &[&m1], &[&module(&m1, &n1, 0, "a", 3), &module(&m1, &n1, 1, "b", 5)], None);
        let rt = ModuleRuntime::open(&dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        let before = files(&dir);
        let base2 = crate::pack::base_blob::encode(&m2, None).unwrap();
        let c = module(&m2, &n2, 2, "c", 4).encode(None).unwrap();
        let (_, b2) = a_b_v2(3);
        // A module of a base neither the device nor the update has: refused, nothing changes.
        assert!(matches!(rt.install_pending(&mut OsFs, "x", &[&b2, &c], true), Err(Error::MissingBase { .. })));
        assert_eq!(files(&dir), before);
        // A module that fails its golden self-test (its golden scores tampered, so its hash is
        // recomputed: it verifies but does not match its base): refused, nothing changes.
        let mut bad = module(&m1, &n1, 1, "b", 8);
        bad.golden.scores[0] += 0.5;
        let bad = bad.encode(None).unwrap();
        assert!(matches!(rt.install_pending(&mut OsFs, "x", &[&bad], true), Err(Error::GoldenMismatch { .. })));
        assert_eq!(files(&dir), before);
        // Two modules of one class.
        assert!(matches!(rt.install_pending(&mut OsFs, "x", &[&b2, &bad], true), Err(Error::DuplicateClass { .. })));
        assert_eq!(files(&dir), before);
        // Base and module in any order: the base goes first.
        let r = rt.install_pending(&mut OsFs, "add-c", &[&c, &base2, &b2], true).unwrap();
        assert_eq!((r.added, r.updated, r.bases.len()), (vec!["c".to_string()], vec!["b".to_string()], 1));
        let m = rt.manifest();
        assert_eq!(m.added_classes, ["c"]);
        rt.load("c").unwrap();
        rt.roll_back_pending(&mut OsFs).unwrap();
        assert_eq!(files(&dir), before, "the base, the class and b's new module gone");
        assert!(!rt.serves("c") && rt.serves("a"));
        assert!(rt.manifest().added_classes.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A power cut at every step of install, then commit; and of install, then rollback: after
    /// a restart the directory serves all the old modules or all the new ones, never a mix.
    #[test]
    fn a_power_cut_at_any_step_leaves_all_old_or_all_new() {
        let (a2, b2) = a_b_v2(5);
        for finish in ["commit", "rollback"] {
            let f = fixture(None);
            let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
            let mut count = PowerCut { steps: 0, cut: usize::MAX };
            rt.install_pending(&mut count, "u", &[&a2, &b2], false).unwrap();
            let _ = if finish == "commit" { rt.commit_pending(&mut count) } else { rt.roll_back_pending(&mut count) };
            let total = count.steps;
            drop(rt);
            let _ = std::fs::remove_dir_all(&f.dir);
            let mut outcomes = Vec::new();
            for cut in 0..=total {
                let f = fixture(None);
                let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
                rt.load("a").unwrap();
                rt.load("b").unwrap();
                let mut fs = PowerCut { steps: 0, cut };
                if rt.install_pending(&mut fs, "u", &[&a2, &b2], false).is_ok() {
                    let _ = if finish == "commit" { rt.commit_pending(&mut fs) } else { rt.roll_back_pending(&mut fs) };
                }
                drop(rt);
                let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                rt.clean(&mut OsFs).unwrap();
                rt.load("a").unwrap_or_else(|e| panic!("{finish}, cut {cut}: a: {e}"));
                rt.load("b").unwrap_or_else(|e| panic!("{finish}, cut {cut}: b: {e}"));
                let new: Vec<bool> = served(&rt).iter().map(|(_, file)| file.starts_with("class-")).collect();
                assert!(new[0] == new[1], "{finish}, cut {cut}: a mix of old and new: {:?}", served(&rt));
                // Still pending after a cut in commit or rollback: the rerun finishes it.
                if rt.manifest().pending.is_some() {
                    let _ =
                        if finish == "commit" { rt.commit_pending(&mut OsFs) } else { rt.roll_back_pending(&mut OsFs) };
                    assert!(rt.manifest().pending.is_none());
                }
                for m in rt.manifest().modules {
                    rt.check_module(&m.class_name).unwrap_or_else(|e| panic!("{finish}, cut {cut}: {e}"));
                }
                outcomes.push(new[0]);
                let _ = std::fs::remove_dir_all(&f.dir);
            }
            eprintln!(
                "{finish}: power cut at each of {} steps -> new modules after restart: {outcomes:?}",
                outcomes.len()
            );
            assert!(!outcomes[0]);
            assert_eq!(*outcomes.last().unwrap(), finish == "commit");
        }
    }
}
