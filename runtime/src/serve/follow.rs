//! Following the manifest that another process commits: the Mender update module (or any writer
//! of the directory) switches modules by an atomic manifest rename, and a serving runtime takes
//! the new manifest up on its next look: the served classes whose module changed are swapped in
//! one snapshot, classes the manifest no longer has stop being served (unless they are all that
//! is served: a manifest change never leaves a device serving nothing), and classifications
//! never stop. A writer does the same before it changes anything ([`ModuleRuntime::writer`]).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::pack::dir_lock::DirLock;
use crate::pack::manifest::{Manifest, FILE_NAME};
use crate::serve::ModuleRuntime;
use crate::Result;

/// The manifest file's identity: a rename puts a new inode in its place, a rewrite in place
/// changes its size or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    pub(crate) fn of(dir: &Path) -> Option<Stamp> {
        let m = std::fs::symlink_metadata(dir.join(FILE_NAME)).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// What taking up another writer's manifest changed here.
#[derive(Debug, Default)]
pub struct Followed {
    /// Served classes now running the manifest's new module.
    pub swapped: Vec<String>,
    /// Served classes the manifest no longer has: no longer served.
    pub dropped: Vec<String>,
    /// Served classes the manifest no longer has, served on all the same: they were all that
    /// was served, and a manifest change never leaves a device serving nothing.
    pub kept: Vec<String>,
    /// Served classes whose new module could not be served (each with why): the old one serves
    /// on until a later manifest fixes it.
    pub failed: Vec<(String, String)>,
    /// Classes the manifest now records as added by an update (to be served) that were not.
    pub newly_added: Vec<String>,
    /// Classes whose downgrade mark the new manifest lowers, not by rolling back an update this
    /// runtime saw pending (a restored older manifest): each with the release its mark stays at.
    /// Without [`crate::ServingConfig::allow_downgrade`] the marks stay, and a served class's
    /// module older than its mark is not swapped in (it is in `failed`).
    pub marks_kept: Vec<(String, u64)>,
    /// The update pending in the new manifest, if any.
    pub pending: Option<String>,
}

impl Followed {
    /// Whether nothing served changed.
    pub fn is_quiet(&self) -> bool {
        self.swapped.is_empty()
            && self.dropped.is_empty()
            && self.kept.is_empty()
            && self.marks_kept.is_empty()
            && self.failed.is_empty()
            && self.newly_added.is_empty()
    }
}

impl ModuleRuntime {
    /// Takes up the manifest on disk if another process changed it since this runtime last read
    /// or wrote it; `None` when it did not, or when a writer holds the directory now (looked at
    /// again on the next call). Cheap when nothing changed: one `stat`.
    pub fn follow(&self) -> Result<Option<Followed>> {
        if !self.changed_on_disk() {
            return Ok(None);
        }
        // Not while a writer is at work: a rollback deletes the files it installed.
        let Some(_reading) = DirLock::try_shared(self.dir())? else { return Ok(None) };
        let mut manifest = self.lock_manifest();
        let stamp = Stamp::of(self.dir());
        let on_disk = Manifest::read_committed(self.dir())?;
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        if on_disk == *manifest {
            return Ok(None);
        }
        self.take_up(&mut manifest, on_disk).map(Some)
    }

    /// Raises the downgrade marks `on_disk` lowers below `manifest`'s (this runtime's) to where
    /// they were, unless the drop is a rollback of the update `manifest` has pending (a rollback
    /// restores the marks from before it) or downgrades are allowed; returns the classes raised.
    /// A manifest restored from a backup must not reopen the door to replayed old modules.
    fn keep_marks(&self, manifest: &Manifest, on_disk: &mut Manifest) -> Vec<(String, u64)> {
        if self.config().allow_downgrade {
            return vec![];
        }
        let rolled_back = manifest.pending.as_ref().filter(|p| on_disk.pending.as_ref().map(|q| &q.id) != Some(&p.id));
        let undone = |class: &str| {
            rolled_back
                .is_some_and(|p| p.before.iter().any(|b| b.class_name == class) || p.added.iter().any(|c| c == class))
        };
        let marks: std::collections::HashMap<&str, u64> =
            manifest.modules.iter().map(|m| (m.class_name.as_str(), m.highest_version.max(m.version))).collect();
        let mut kept = Vec::new();
        for e in &mut on_disk.modules {
            if let Some(&mark) = marks.get(e.class_name.as_str()) {
                if mark > e.highest_version && !undone(&e.class_name) {
                    e.highest_version = mark;
                    kept.push((e.class_name.clone(), mark));
                }
            }
        }
        kept
    }

    /// Whether the manifest file is not the one this runtime last read or wrote.
    pub(crate) fn changed_on_disk(&self) -> bool {
        Stamp::of(self.dir()) != *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the manifest file as it is now as this runtime's own.
    pub(crate) fn note_seen(&self) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Stamp::of(self.dir());
    }

    /// Makes `on_disk` this runtime's manifest, and serves what it says for the served classes.
    pub(crate) fn take_up(&self, manifest: &mut Manifest, mut on_disk: Manifest) -> Result<Followed> {
        let mut followed = Followed { pending: on_disk.pending.as_ref().map(|p| p.id.clone()), ..Default::default() };
        followed.marks_kept = self.keep_marks(manifest, &mut on_disk);
        let now = self.snapshot();
        let mut modules = Vec::with_capacity(now.modules.len());
        for m in &now.modules {
            let class = &m.module.class_name;
            match on_disk.module(class) {
                None => followed.dropped.push(class.clone()),
                Some(e) if self.dir().join(&e.file) == m.file => modules.push(m.clone()),
                Some(e) if followed.marks_kept.iter().any(|(c, _)| c == class) && e.version < e.highest_version => {
                    followed.failed.push((
                        class.clone(),
                        format!(
                            "its release {} is older than release {} this device committed (a restored older \
                             manifest?): a downgrade, refused without --allow-downgrade",
                            e.version, e.highest_version
                        ),
                    ));
                    modules.push(m.clone());
                }
                Some(e) => match self.prepare(&on_disk, e, &self.dir().join(&e.file)) {
                    Ok(l) => {
                        followed.swapped.push(class.clone());
                        modules.push(Arc::new(l));
                    }
                    Err(err) => {
                        followed.failed.push((class.clone(), err.to_string()));
                        modules.push(m.clone());
                    }
                },
            }
        }
        if modules.is_empty() && !now.modules.is_empty() {
            // Every served class gone (a manifest without them, a rollback of the only one): the
            // last good set serves on, its files mapped, until a manifest serves something.
            modules = now.modules.clone();
            followed.kept = std::mem::take(&mut followed.dropped);
        }
        followed.newly_added =
            on_disk.added_classes.iter().filter(|c| !manifest.added_classes.contains(c)).cloned().collect();
        if !followed.swapped.is_empty() || !followed.dropped.is_empty() {
            // The new set within the budget; else the old one serves on, said as failures.
            match self.next_snapshot(modules) {
                Ok(s) => {
                    self.install(s);
                }
                Err(e) => {
                    let why = e.to_string();
                    followed.failed.extend(followed.swapped.drain(..).map(|c| (c, why.clone())));
                }
            }
        }
        *manifest = on_disk;
        Ok(followed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::pack::atomic::OsFs;
    use crate::pack::dir_lock::DirLock;
    use crate::serve::ModuleRuntime;
    use crate::testing::tiny_model::tiny_model;
    use crate::testing::*;
    use crate::{Device, MinScore, ResNet, Rule};

    fn file_of(rt: &ModuleRuntime, class: &str) -> String {
        let snap = rt.snapshot();
        let m = snap.modules.iter().find(|m| m.module.class_name == class).expect("served");
        m.file.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// A serving runtime follows what another (an update module's) commits and rolls back,
    /// classifying all the while without one failure; it waits while the writer holds the lock.
    #[test]
    fn a_serving_runtime_follows_another_writer_without_dropping_a_classification() {
        let f = fixture(None);
        let serving = std::sync::Arc::new(ModuleRuntime::open(&f.dir, config(None, None)).unwrap());
        serving.load("a").unwrap();
        serving.load("b").unwrap();
        assert!(serving.follow().unwrap().is_none(), "nothing changed");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let load = {
            let (rt, stop) = (serving.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = rt.snapshot().classify(&images(2), Rule::Max, MinScore::Off).expect("every classification");
                    assert_eq!(r.classes, ["a", "b"]);
                    n += 1;
                }
                n
            })
        };
        let m1 = tiny_model(1);
        let net = ResNet::new(&m1, &Device::Cpu).unwrap();
        let (a2, b2) =
            (module(&m1, &net, 0, "a", 9).encode(None).unwrap(), module(&m1, &net, 1, "b", 8).encode(None).unwrap());
        let writer = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        let old_b = file_of(&serving, "b");
        writer.install_pending(&mut OsFs, "art", &[&a2, &b2], false).unwrap();
        // While a writer holds the directory, the reader does not look.
        let held = DirLock::exclusive(&f.dir).unwrap();
        assert!(serving.follow().unwrap().is_none());
        drop(held);
        let followed = serving.follow().unwrap().expect("a new manifest");
        assert_eq!(followed.swapped, ["a", "b"]);
        assert_eq!(followed.pending.as_deref(), Some("art"));
        assert_ne!(file_of(&serving, "b"), old_b);
        assert!(serving.follow().unwrap().is_none(), "taken up once");
        writer.roll_back_pending(&mut OsFs).unwrap();
        assert_eq!(serving.follow().unwrap().expect("rolled back").swapped, ["a", "b"]);
        assert_eq!(file_of(&serving, "b"), old_b);
        // The serving runtime's own change builds on the other writer's: it takes it up first.
        writer.install_pending(&mut OsFs, "art-2", &[&b2], false).unwrap();
        writer.commit_pending(&mut OsFs).unwrap();
        serving.update(&mut OsFs, &a2).unwrap();
        let m = crate::pack::manifest::Manifest::read(&f.dir).unwrap();
        assert!(m.module("b").unwrap().file.starts_with("class-001-b-"), "b's commit kept: {m:?}");
        assert_ne!(file_of(&serving, "b"), old_b, "and served");
        stop.store(true, Ordering::Relaxed);
        assert!(load.join().unwrap() > 0);
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// Issue 36, item 9: a manifest symlinked in from elsewhere was taken up silently. Writers
    /// replace the manifest by a rename, so a symlink in its place is nobody's commit: refused,
    /// and what is served stays.
    #[test]
    fn a_manifest_symlinked_from_elsewhere_is_not_taken_up() {
        let f = fixture(None);
        let serving = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        serving.load("b").unwrap();
        let mut m = crate::pack::manifest::Manifest::read(&f.dir).unwrap();
        m.modules.retain(|e| e.class_name != "b");
        let elsewhere = f.dir.with_extension("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        m.write(&elsewhere).unwrap();
        std::fs::remove_file(f.dir.join("manifest.json")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("manifest.json"), f.dir.join("manifest.json")).unwrap();
        let e = serving.follow().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(serving.snapshot().class_names(), ["b"]);
        let _ = std::fs::remove_dir_all(&f.dir);
        let _ = std::fs::remove_dir_all(&elsewhere);
    }

    /// Issue 36, item 9: a manifest restored from before a committed release (a backup put back)
    /// lowered the device's downgrade marks, reopening the door to replayed old modules. The
    /// follower keeps the marks, does not swap the older module in, and its next change refuses
    /// the old release; a rollback of the pending update it saw lowers them, as it should.
    #[test]
    fn a_restored_older_manifest_keeps_the_downgrade_marks() {
        let f = fixture(None);
        let serving = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        serving.load("b").unwrap();
        let before = std::fs::read(f.dir.join("manifest.json")).unwrap();
        let b_at = |drop: usize, version: u64| {
            let mut mb = module(&tiny_model(1), &f.nets[0], 1, "b", drop);
            mb.version = version;
            mb.encode(None).unwrap()
        };
        let writer = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        // A rollback of an update seen pending lowers the mark: no downgrade.
        writer.install_pending(&mut OsFs, "b-7", &[&b_at(8, 7)], false).unwrap();
        serving.follow().unwrap().expect("pending");
        writer.roll_back_pending(&mut OsFs).unwrap();
        let followed = serving.follow().unwrap().expect("rolled back");
        assert!(followed.marks_kept.is_empty(), "{followed:?}");
        // Release 5 committed, then the old manifest put back.
        writer.install_pending(&mut OsFs, "b-5", &[&b_at(8, 5)], false).unwrap();
        writer.commit_pending(&mut OsFs).unwrap();
        serving.follow().unwrap().expect("committed");
        let served = file_of(&serving, "b");
        std::fs::write(f.dir.join(".restore.tmp"), &before).unwrap();
        std::fs::rename(f.dir.join(".restore.tmp"), f.dir.join("manifest.json")).unwrap();
        let followed = serving.follow().unwrap().expect("restored");
        assert_eq!(followed.marks_kept, [("b".to_string(), 5)]);
        assert!(followed.failed.iter().any(|(c, why)| c == "b" && why.contains("a downgrade")), "{followed:?}");
        assert_eq!(file_of(&serving, "b"), served, "release 5 serves on");
        let e = serving.update(&mut OsFs, &b_at(3, 3)).unwrap_err();
        assert!(matches!(e, crate::Error::Downgrade { highest: 5, .. }), "{e}");
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
