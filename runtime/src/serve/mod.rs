//! The device's serving state: the set of loaded class modules, held as an immutable
//! [`Snapshot`] that every classification takes once and keeps for its whole run. Loading,
//! unloading or replacing a module builds a new snapshot and swaps it in atomically; a
//! classification therefore sees one consistent set of modules, never half old and half new,
//! and a replaced module's memory (and its base's, with the last module that uses it) is released
//! when the last snapshot holding it is dropped.
//!
//! Blobs are memory-mapped, verified (layout, hash, signature when the device has a key),
//! decoded, and checked against the manifest; a module also passes its golden self-test on its
//! base before it is served. A base is mapped once and shared by all its loaded modules.
//!
//! Several processes may share a directory: every change is made under the directory's
//! exclusive lock ([`DirLock`]) by a writer that first takes up what other writers committed
//! (see [`ModuleRuntime::follow`]); a process that serves follows the manifest the others write,
//! and with [`LockWait::Never`] never waits for another writer's lock.

mod added;
mod clean;
mod follow;
mod pending;
mod snapshot;
mod update;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::Precision;
use candle_core::Device;
use classmod_blob::VerifyingKey;

use crate::module::compose::MinScore;

use crate::module::compose::Rule;
use crate::pack::dir_lock::DirLock;
use crate::pack::manifest::{Manifest, ManifestModule};
use crate::pack::module_blob::SelfTest;
use crate::pack::packed_dir::{read_base, read_module};
use crate::Result;
use crate::{Error, ModelKey, ResNet};

pub use follow::Followed;
pub use pending::PendingReport;
pub use snapshot::{Classification, LoadedBase, LoadedModule, Snapshot};
pub use update::{declared_len, Applied, UpdateKind, UpdateReport, BLOB_HEADER_LEN, BLOB_MAGIC, BLOB_TRAILER_LEN};

/// How a device serves: [`ServingConfig::new`] and the `with_*` setters (fields are added over
/// releases, so it is never written out as a literal outside this crate).
#[derive(Clone)]
#[non_exhaustive]
pub struct ServingConfig {
    /// Where modules run.
    pub device: Device,
    /// What bases and modules compute in on `device` (f32 on the CPU; a GPU board's profile may
    /// ask for f16 or bf16). Golden self-tests then use [`Precision::golden_tolerance`].
    pub precision: Precision,
    /// Refuse blobs not signed by this key.
    pub key: Option<VerifyingKey>,
    /// Largest resident size of bases plus modules, bytes (the board profile's).
    pub budget_bytes: Option<u64>,
    /// How the served modules' scores pick a class.
    pub rule: Rule,
    /// The score a module must reach to claim an image ([`MinScore::Calibrated`]: each
    /// module's own).
    pub min_score: MinScore,
    /// Accept updates older than the newest committed release of their class (see
    /// [`Error::Downgrade`]); the class's mark then starts again from the version accepted.
    pub allow_downgrade: bool,
    /// What a change does while another process holds the directory's writer lock.
    pub lock_wait: LockWait,
    /// How much of each module's golden set its self-test runs (a device: its board's).
    pub self_test: SelfTest,
}

/// What a change (an update, a rollback, the start-up clean) does while another process holds
/// the device directory's writer lock ([`DirLock`]).
#[derive(Clone)]
pub enum LockWait {
    /// Wait until it is free. A wait that does not end at once is told to the notice (when
    /// given): who holds the lock, then how long the wait took, so that a writer never waits in
    /// silence (the Mender update module, `classmod` on a device directory).
    Wait(Option<LockNotice>),
    /// Never wait: the change fails at once with [`Error::DirectoryBusy`] (kind `Busy`), to be
    /// tried again. A serving device: its classifications never stop for another writer.
    Never,
}

/// Where a writer that waits for the lock says so (a line each: who holds it, how long it took).
pub type LockNotice = Arc<dyn Fn(&str) + Send + Sync>;

impl LockWait {
    /// Waits, telling each line of a wait to `notice`.
    pub fn telling(notice: impl Fn(&str) + Send + Sync + 'static) -> LockWait {
        LockWait::Wait(Some(Arc::new(notice)))
    }

    /// The directory's lock, exclusively, as this policy says (every writer of a device
    /// directory takes it so: the runtime's changes, `classmod pack`).
    pub fn take(&self, dir: &Path) -> Result<DirLock> {
        if let Some(lock) = DirLock::try_exclusive(dir)? {
            return Ok(lock);
        }
        let held_by = describe_holders(dir);
        match self {
            LockWait::Never => Err(Error::DirectoryBusy { dir: dir.to_path_buf(), held_by }),
            LockWait::Wait(notice) => {
                let tell = |line: String| {
                    if let Some(n) = notice {
                        n(&line)
                    }
                };
                tell(format!("{}: another process is changing the directory{held_by}: waiting for it", dir.display()));
                let t = std::time::Instant::now();
                let lock = DirLock::exclusive(dir)?;
                tell(format!(
                    "{}: the directory is free again after {:.1} s",
                    dir.display(),
                    t.elapsed().as_secs_f64()
                ));
                Ok(lock)
            }
        }
    }
}

/// ` (held by PID NAME, ...)` for the holders of `dir`'s lock, or empty when unknown.
fn describe_holders(dir: &Path) -> String {
    let holders = DirLock::holders(dir);
    if holders.is_empty() {
        return String::new();
    }
    let named: Vec<String> = holders.iter().map(|(pid, name)| format!("{pid} {name}").trim_end().to_string()).collect();
    format!(" (held by process {})", named.join(", "))
}

impl ServingConfig {
    /// Serving on `device` in f32, unsigned blobs accepted, no memory budget, the highest score
    /// answering, each module's calibrated minimum score, no downgrades.
    pub fn new(device: Device) -> Self {
        ServingConfig {
            device,
            precision: Precision::F32,
            key: None,
            budget_bytes: None,
            rule: Rule::Max,
            min_score: MinScore::Calibrated,
            allow_downgrade: false,
            lock_wait: LockWait::Wait(None),
            self_test: SelfTest::default(),
        }
    }

    /// What bases and modules compute in.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Refuse blobs not signed by `key` (`None`: accept unsigned blobs).
    pub fn with_key(mut self, key: Option<VerifyingKey>) -> Self {
        self.key = key;
        self
    }

    /// The largest resident size of bases plus modules (`None`: no limit).
    pub fn with_budget(mut self, bytes: Option<u64>) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// How the served modules' scores pick a class.
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rule = rule;
        self
    }

    /// The score a module must reach to claim an image.
    pub fn with_min_score(mut self, min_score: MinScore) -> Self {
        self.min_score = min_score;
        self
    }

    /// Whether updates older than the newest committed release of their class are accepted.
    pub fn with_downgrades(mut self, allow: bool) -> Self {
        self.allow_downgrade = allow;
        self
    }

    /// What a change does while another process holds the directory's writer lock.
    pub fn with_lock_wait(mut self, wait: LockWait) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How much of each module's golden set its self-test runs, and how many images at a time.
    pub fn with_self_test(mut self, test: SelfTest) -> Self {
        self.self_test = test;
        self
    }
}

/// The serving runtime over one packed directory.
pub struct ModuleRuntime {
    dir: PathBuf,
    config: ServingConfig,
    current: RwLock<Arc<Snapshot>>,
    /// Serialises changes (each builds on the snapshot before it).
    edit: Mutex<Manifest>,
    /// Bases in memory, found again while any snapshot still holds them.
    bases: Mutex<Vec<Weak<LoadedBase>>>,
    /// The manifest file as this runtime last read or wrote it: a different one on disk is
    /// another writer's (see [`ModuleRuntime::follow`]).
    seen: Mutex<Option<follow::Stamp>>,
}

/// A change being made: the directory's exclusive lock and this runtime's manifest, taken up
/// from disk. Dropping it releases both. Whoever writes the manifest under it calls
/// [`ModuleRuntime::note_seen`], so that following does not take the write for another's.
pub(crate) struct Writer<'a> {
    _lock: DirLock,
    pub(crate) manifest: std::sync::MutexGuard<'a, Manifest>,
}

impl ModuleRuntime {
    /// Opens a packed directory (its `manifest.json`); nothing is mapped yet.
    pub fn open(dir: &Path, config: ServingConfig) -> Result<ModuleRuntime> {
        let stamp = follow::Stamp::of(dir);
        let manifest = Manifest::read(dir)?;
        Ok(ModuleRuntime {
            dir: dir.to_path_buf(),
            config,
            current: RwLock::new(Arc::new(Snapshot::build(0, Vec::new())?)),
            edit: Mutex::new(manifest),
            bases: Mutex::new(Vec::new()),
            seen: Mutex::new(stamp),
        })
    }

    /// Starts a change: takes the directory's exclusive lock (waiting for it or not, as the
    /// config's [`LockWait`] says), then takes up the manifest another process may have committed
    /// meanwhile (serving its new modules), so that the change builds on what is on disk.
    pub(crate) fn writer(&self) -> Result<Writer<'_>> {
        let mut manifest = self.lock_manifest();
        let lock = self.config.lock_wait.take(&self.dir)?;
        if self.changed_on_disk() {
            // Not the change's fault: whoever asked for it tries again (a device keeps its update).
            let on_disk = Manifest::read_committed(&self.dir).map_err(|e| Error::DeviceManifest(Box::new(e)))?;
            if on_disk != *manifest {
                self.take_up(&mut manifest, on_disk)?;
            }
            self.note_seen();
        }
        Ok(Writer { _lock: lock, manifest })
    }

    /// The packed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The classes a device could load.
    pub fn available(&self) -> Vec<String> {
        self.edit.lock().unwrap_or_else(|e| e.into_inner()).modules.iter().map(|m| m.class_name.clone()).collect()
    }

    /// The manifest as it stands (updates included).
    pub fn manifest(&self) -> Manifest {
        self.lock_manifest().clone()
    }

    /// Checks the base blob of `key` as loading does (mapping, hash, signature, manifest hash,
    /// weights against its key), without serving anything.
    pub fn check_base(&self, key: &ModelKey) -> Result<Arc<LoadedBase>> {
        let manifest = self.lock_manifest();
        self.base(&manifest, key)
    }

    /// Checks the module of `class` as loading does (its base too, and the golden self-test),
    /// without serving it.
    pub fn check_module(&self, class: &str) -> Result<LoadedModule> {
        let manifest = self.lock_manifest();
        let entry = manifest.module(class).ok_or_else(|| Error::UnknownClass(class.to_string()))?;
        self.prepare(&manifest, entry, &self.dir.join(&entry.file))
    }

    /// [`ModuleRuntime::check_module`] of an entry of [`ModuleRuntime::manifest`] (or of
    /// [`ManifestModule::rolled_back`], a rollback copy), found without a search: a check of
    /// every entry is linear in them (by class name it was quadratic: 100,003 entries took
    /// `classmod verify` 94 s).
    pub fn check_module_entry(&self, entry: &ManifestModule) -> Result<LoadedModule> {
        let manifest = self.lock_manifest();
        self.prepare(&manifest, entry, &self.dir.join(&entry.file))
    }

    /// Checks the rollback copy that `class`'s unconfirmed update keeps, as [`check_module`]
    /// checks the active file (it exists, its hash is the manifest's, it decodes and passes its
    /// self-test); `None` when the class has no rollback copy.
    ///
    /// [`check_module`]: ModuleRuntime::check_module
    pub fn check_rollback_copy(&self, class: &str) -> Result<Option<LoadedModule>> {
        let manifest = self.lock_manifest();
        let entry = manifest.module(class).ok_or_else(|| Error::UnknownClass(class.to_string()))?;
        let Some(copy) = entry.rolled_back() else { return Ok(None) };
        self.prepare(&manifest, &copy, &self.dir.join(&copy.file)).map(Some)
    }

    /// The current snapshot: hold it for one classification.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Classifies with the current snapshot.
    pub fn classify(&self, pixels: &[u8]) -> Result<Classification> {
        self.snapshot().classify(pixels, self.config.rule, self.config.min_score)
    }

    fn base(&self, manifest: &Manifest, key: &ModelKey) -> Result<Arc<LoadedBase>> {
        let mut cache = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|w| w.strong_count() > 0);
        if let Some(b) = cache.iter().filter_map(Weak::upgrade).find(|b| b.key == *key) {
            return Ok(b);
        }
        let model = read_base(&self.dir, manifest, key, self.config.key.as_ref(), &self.config.device)?;
        let net = ResNet::new(&model, &self.config.device)?.with_precision(self.config.precision)?;
        let base = Arc::new(LoadedBase { key: *key, resident_bytes: net.resident_bytes(), net });
        cache.push(Arc::downgrade(&base));
        Ok(base)
    }

    fn lock_manifest(&self) -> std::sync::MutexGuard<'_, Manifest> {
        self.edit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How this runtime serves.
    pub fn config(&self) -> &ServingConfig {
        &self.config
    }

    /// Maps, verifies, decodes and self-tests the module blob `file` (for `entry`'s class).
    fn prepare(&self, manifest: &Manifest, entry: &ManifestModule, file: &Path) -> Result<LoadedModule> {
        let mb = read_module(file, entry, self.config.key.as_ref())?;
        let base = self.base(manifest, &entry.base_key)?;
        let (self_test_diff, golden_images) = mb.self_test(&base.net, &base.key, self.config.self_test)?;
        let resident_bytes = mb.module.resident_bytes();
        // The golden images and the site list go with `mb`: only the module is kept.
        let module = Arc::new(mb.module);
        Ok(LoadedModule { module, file: file.to_path_buf(), base, self_test_diff, golden_images, resident_bytes })
    }

    /// The snapshot that would serve `modules`, if they fit the budget (nothing is swapped yet).
    fn next_snapshot(&self, modules: Vec<Arc<LoadedModule>>) -> Result<Arc<Snapshot>> {
        let generation = self.snapshot().generation + 1;
        let next = Arc::new(Snapshot::build(generation, modules)?);
        if let Some(budget) = self.config.budget_bytes {
            let need = next.resident_bytes();
            if need > budget {
                return Err(Error::BudgetExceeded { need, budget });
            }
        }
        Ok(next)
    }

    fn install(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        next
    }

    /// Swaps in `modules` as the next snapshot, if they fit the budget.
    fn commit(&self, modules: Vec<Arc<LoadedModule>>) -> Result<Arc<Snapshot>> {
        Ok(self.install(self.next_snapshot(modules)?))
    }

    /// The snapshot with `loaded` replacing its class's module (or added), budget checked, not
    /// yet installed. Callers hold the manifest lock.
    fn with_module(&self, loaded: LoadedModule) -> Result<Arc<Snapshot>> {
        let mut modules = self.snapshot().modules.clone();
        let name = loaded.module.class_name.clone();
        match modules.iter().position(|m| m.module.class_name == name) {
            Some(i) => modules[i] = Arc::new(loaded),
            None => modules.push(Arc::new(loaded)),
        }
        self.next_snapshot(modules)
    }

    /// Whether `class` is being served.
    pub fn serves(&self, class: &str) -> bool {
        self.snapshot().modules.iter().any(|m| m.module.class_name == class)
    }

    /// Loads the module of `class` (by name) and serves it from the next classification on.
    /// On any error nothing changes.
    pub fn load(&self, class: &str) -> Result<Arc<Snapshot>> {
        let manifest = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.snapshot();
        if now.modules.iter().any(|m| m.module.class_name == class) {
            return Ok(now);
        }
        let entry = manifest.module(class).ok_or_else(|| Error::UnknownClass(class.to_string()))?.clone();
        let loaded = Arc::new(self.prepare(&manifest, &entry, &self.dir.join(&entry.file))?);
        let mut modules = now.modules.clone();
        modules.push(loaded);
        self.commit(modules)
    }

    /// Stops serving `class`; its memory goes when the last classification using it ends.
    pub fn unload(&self, class: &str) -> Result<Arc<Snapshot>> {
        let _manifest = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.snapshot();
        if !now.modules.iter().any(|m| m.module.class_name == class) {
            return Err(Error::UnknownClass(class.to_string()));
        }
        let modules = now.modules.iter().filter(|m| m.module.class_name != class).cloned().collect();
        self.commit(modules)
    }

    /// Replaces the served module of `entry.class_name` (loaded or not) by the blob at `file`,
    /// which must match `entry`; records `entry` in the in-memory manifest. Nothing changes on error.
    pub fn replace(&self, entry: &ManifestModule, file: &Path) -> Result<Arc<Snapshot>> {
        let mut manifest = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = self.prepare(&manifest, entry, file)?;
        let snap = self.install(self.with_module(loaded)?);
        match manifest.modules.iter_mut().find(|m| m.class_name == entry.class_name) {
            Some(m) => *m = entry.clone(),
            None => manifest.modules.push(entry.clone()),
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::tiny_model;
    use crate::testing::*;
    use crate::ModuleBlob;
    use classmod_blob::SigningKey;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn loads_only_what_is_asked_and_classifies_like_the_modules_alone() {
        let f = fixture(None);
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        assert_eq!(rt.available(), ["a", "b", "c"]);
        assert!(rt.classify(&images(1)).is_err(), "nothing loaded yet");
        rt.load("a").unwrap();
        rt.load("c").unwrap();
        let before = rt.snapshot().generation;
        assert_eq!(rt.load("a").unwrap().generation, before, "loading a loaded class changes nothing");
        let px = images(3);
        let r = rt.classify(&px).unwrap();
        assert_eq!(r.classes, ["a", "c"]);
        let (sa, sc) = (alone(&f.nets[0], &f.a, &px), alone(&f.nets[1], &f.c, &px));
        for i in 0..3 {
            assert!((r.scores[i][0] - sa[i]).abs() < 1e-5 && (r.scores[i][1] - sc[i]).abs() < 1e-5);
            assert_eq!(
                r.predictions[i],
                Some(usize::from(sc[i] > sa[i])),
                "modules without a minimum claim every image"
            );
        }
        // A minimum between the two scores: only the class above it may claim the image; above
        // both, the image is none of the loaded classes.
        let snap = rt.snapshot();
        for i in 0..3 {
            let (lo, hi) = (sa[i].min(sc[i]), sa[i].max(sc[i]));
            let one = snap.classify(&px, Rule::Max, MinScore::Fixed((lo + hi) / 2.0)).unwrap();
            assert_eq!(one.predictions[i], Some(usize::from(sc[i] > sa[i])));
            let none = snap.classify(&px, Rule::Max, MinScore::Fixed((hi + 1.0) / 2.0)).unwrap();
            assert_eq!(none.predictions[i], None, "image {i}: scores {lo} and {hi}");
        }
        drop(snap);
        let two_bases = rt.snapshot().resident_bytes();
        rt.load("b").unwrap();
        let with_b = rt.snapshot().resident_bytes();
        let mask = f.b.module.as_mask().unwrap();
        // A byte a node as the group stacks them, plus the bits (whole u64 words per site).
        let b_bytes =
            mask.total_nodes() as u64 + mask.sites.iter().map(|s| s.len().div_ceil(64) as u64 * 8).sum::<u64>();
        assert_eq!(with_b - two_bases, b_bytes, "b shares a's base: only its masks are added");
        rt.unload("a").unwrap();
        rt.unload("b").unwrap();
        assert!(matches!(rt.unload("b"), Err(Error::UnknownClass(_))));
        assert!(matches!(rt.load("zebra"), Err(Error::UnknownClass(_))));
        // Base 0 is released with its last module (no snapshot holds it any more).
        let live: Vec<ModelKey> = rt.bases.lock().unwrap().iter().filter_map(Weak::upgrade).map(|b| b.key).collect();
        assert_eq!(live.len(), 1, "only c's base stays mapped");
        let _ = std::fs::remove_dir_all(&f.dir);
    }

    /// A four-stage base of torchvision's layout (the ImageNet stem and its max-pool,
    /// bottleneck blocks) through the whole device path: its base blob and mask modules packed
    /// and loaded (each module's golden self-test on that base), classified as each module
    /// alone, a module updated in the field while served, and the update kept over a restart.
    #[test]
    fn a_four_stage_bottleneck_base_packs_serves_and_takes_a_field_update() {
        let m = crate::testing::tiny_model::tiny_torchvision(21, true, [1, 2, 1, 1], 28);
        let net = ResNet::new(&m, &Device::Cpu).unwrap();
        let (a, b) = (module(&m, &net, 0, "a", 3), module(&m, &net, 1, "b", 5));
        let dir = scratch();
        pack(&dir, &[&m], &[&a, &b], None);
        let rt = ModuleRuntime::open(&dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        rt.load("b").unwrap();
        let px = images_of(&m.meta.input, 3);
        let close = |got: &[Vec<f32>], col: usize, want: &[f32]| {
            got.iter().zip(want).all(|(row, w)| (row[col] - w).abs() < 1e-4 * (1.0 + w.abs()))
        };
        let r = rt.classify(&px).unwrap();
        assert_eq!(r.classes, ["a", "b"]);
        assert!(close(&r.scores, 0, &alone(&net, &a, &px)) && close(&r.scores, 1, &alone(&net, &b, &px)));
        // b's next release, another mask, arrives as a blob while b is served.
        let mut b2 = module(&m, &net, 1, "b", 2);
        b2.version = 1;
        match rt.apply_update(&mut crate::OsFs, &b2.encode(None).unwrap()).unwrap() {
            Applied::Module(report) => assert_eq!(report.class_name, "b"),
            other => panic!("{other:?}"),
        }
        let want = alone(&net, &b2, &px);
        let old = alone(&net, &b, &px);
        assert!(old.iter().zip(&want).any(|(o, w)| (o - w).abs() > 1e-4), "b2 scores differently from b");
        assert!(close(&rt.classify(&px).unwrap().scores, 1, &want), "the update is served at once");
        drop(rt);
        let rt = ModuleRuntime::open(&dir, config(None, None)).unwrap();
        rt.load("b").unwrap();
        assert!(close(&rt.classify(&px).unwrap().scores, 0, &want), "and after a restart");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn budget_refusal_and_bad_files_change_nothing() {
        // Mask modules only; then a mask module beside compact ones (b on a's base, c on another).
        for f in [fixture(None), compact_fixture()] {
            let probe = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
            let one = probe.load("a").unwrap().resident_bytes();
            let rt = ModuleRuntime::open(&f.dir, config(Some(one + 10), None)).unwrap();
            rt.load("a").unwrap();
            for class in ["b", "c"] {
                let err = rt.load(class).err().unwrap();
                assert!(matches!(err, Error::BudgetExceeded { .. }), "{class}: {err}");
                assert!(err.to_string().contains("budget"));
                assert_eq!(rt.snapshot().class_names(), ["a"], "nothing loaded half-way");
            }
            // A module blob corrupted on disk is refused at load; the served set stays.
            let path = f.dir.join("b.blob");
            let mut bytes = std::fs::read(&path).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
            rt.load("a").unwrap();
            let generation = rt.snapshot().generation;
            assert!(rt.load("b").is_err());
            assert_eq!((rt.snapshot().generation, rt.snapshot().class_names()), (generation, vec!["a".to_string()]));
            let _ = std::fs::remove_dir_all(&f.dir);
        }
    }

    #[test]
    fn classes_of_models_with_other_normalisation_serve_together_and_other_shapes_are_refused() {
        let m1 = tiny_model(1);
        // Another model normalising the same 8x8 images its own way, and one taking 16x16 images.
        let mut m3 = tiny_model(3);
        m3.meta.input.mean = vec![0.3];
        m3.meta.input.std = vec![0.5];
        let mut m4 = tiny_model(4);
        (m4.meta.input.height, m4.meta.input.width) = (16, 16);
        let nets = [&m1, &m3, &m4].map(|m| ResNet::new(m, &Device::Cpu).unwrap());
        let a = module(&m1, &nets[0], 0, "a", 3);
        let d = module(&m3, &nets[1], 1, "d", 4);
        let e = module(&m4, &nets[2], 2, "e", 5);
        let dir = scratch();
        pack(&dir, &[&m1, &m3, &m4], &[&a, &d, &e], None);
        let rt = ModuleRuntime::open(&dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        rt.load("d").unwrap();
        // Reference: each module alone on the same raw pixels, normalised with its own spec.
        let px = images(3);
        let r = rt.classify(&px).unwrap();
        let (sa, sd) = (alone(&nets[0], &a, &px), alone(&nets[1], &d, &px));
        for i in 0..3 {
            assert!((r.scores[i][0] - sa[i]).abs() < 1e-5 && (r.scores[i][1] - sd[i]).abs() < 1e-5, "image {i}");
        }
        // A class taking 16x16 images cannot share the 8x8 batch: refused, nothing changes.
        let before = rt.snapshot().generation;
        let err = rt.load("e").err().unwrap();
        assert!(matches!(err, Error::IncompatibleInput { .. }), "{err}");
        assert!(err.to_string().contains("1x16x16") && err.to_string().contains("1x8x8"), "{err}");
        assert_eq!((rt.snapshot().generation, rt.snapshot().class_names()), (before, vec!["a".into(), "d".into()]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_device_with_a_key_serves_only_blobs_it_signed() {
        let sk = SigningKey::from_bytes(&[4; 32]);
        let signed = fixture(Some(&sk));
        let rt = ModuleRuntime::open(&signed.dir, config(None, Some(sk.verifying_key()))).unwrap();
        rt.load("a").unwrap();
        let unsigned = fixture(None);
        let rt = ModuleRuntime::open(&unsigned.dir, config(None, Some(sk.verifying_key()))).unwrap();
        let Err(err) = rt.load("a") else { panic!("an unsigned blob was served") };
        assert!(matches!(&err, Error::BadBlob { error: classmod_blob::BlobError::Unsigned, .. }), "{err}");
        assert!(err.to_string().contains("a.blob: "), "the error names the file: {err}");
        let _ = std::fs::remove_dir_all(&signed.dir);
        let _ = std::fs::remove_dir_all(&unsigned.dir);
    }

    /// Readers classify continuously while a writer swaps b between two versions and loads and
    /// unloads c hundreds of times: every result is one consistent set ({a, b} or {a, b, c}, b in
    /// one version), each score equal to that module alone; generations never go back.
    #[test]
    fn hot_swap_under_load_is_consistent() {
        let f = fixture(None);
        let b2 = module(&tiny_model(1), &f.nets[0], 1, "b", 2);
        hot_swap_under_load(f, b2);
    }

    /// The same with compact modules: a mask module and a compact one of one base (two groups
    /// of one base in every snapshot) and a compact one of another, b swapped between two
    /// compact versions; and a compact module's resident bytes are what the snapshot adds.
    #[test]
    fn mask_and_compact_modules_serve_together_and_swap_under_load() {
        let f = compact_fixture();
        let rt = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        rt.load("a").unwrap();
        let before = rt.snapshot().resident_bytes();
        rt.load("b").unwrap();
        assert_eq!(rt.snapshot().resident_bytes() - before, f.b.module.resident_bytes(), "b shares a's base");
        drop(rt);
        let b2 = compact_module(&tiny_model(1), &f.nets[0], 1, "b", 21);
        hot_swap_under_load(f, b2);
    }

    /// Readers classify while a writer swaps b with `b2` and back and loads and unloads c.
    fn hot_swap_under_load(f: Fixture, b2: ModuleBlob) {
        let b2_entry = write_module(&f.dir, &b2, "b-v2.blob", None);
        let b1_entry = Manifest::read(&f.dir).unwrap().module("b").unwrap().clone();
        let rt = Arc::new(ModuleRuntime::open(&f.dir, config(None, None)).unwrap());
        rt.load("a").unwrap();
        rt.load("b").unwrap();
        let px = images(2);
        let want_a = alone(&f.nets[0], &f.a, &px);
        let want_b = [alone(&f.nets[0], &f.b, &px), alone(&f.nets[0], &b2, &px)];
        let want_c = alone(&f.nets[1], &f.c, &px);
        assert_ne!(want_b[0], want_b[1], "the two versions of b are distinguishable");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (rt, stop, px, started) = (rt.clone(), stop.clone(), px.clone(), started.clone());
                let (want_a, want_b, want_c) = (want_a.clone(), want_b.clone(), want_c.clone());
                std::thread::spawn(move || {
                    let (mut seen, mut last) = (0usize, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let r = rt.classify(&px).unwrap();
                        assert!(r.generation >= last, "generations never go back");
                        last = r.generation;
                        let close = |x: f32, y: f32| (x - y).abs() < 1e-5;
                        assert!(r.classes == ["a", "b"] || r.classes == ["a", "b", "c"], "{:?}", r.classes);
                        let version = (0..2).find(|&v| (0..2).all(|i| close(r.scores[i][1], want_b[v][i])));
                        assert!(version.is_some(), "b is wholly one version: {:?}", r.scores);
                        for i in 0..2 {
                            assert!(close(r.scores[i][0], want_a[i]));
                            if r.classes.len() == 3 {
                                assert!(close(r.scores[i][2], want_c[i]));
                            }
                        }
                        if seen == 0 {
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        while started.load(Ordering::Relaxed) < 3 {
            std::thread::yield_now();
        }
        for i in 0..300 {
            let entry = if i % 2 == 0 { &b2_entry } else { &b1_entry };
            rt.replace(entry, &f.dir.join(&entry.file)).unwrap();
            if i % 3 == 0 {
                rt.load("c").unwrap();
            } else if rt.snapshot().modules.len() == 3 {
                rt.unload("c").unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let seen: usize = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(seen > 0);
        assert!(rt.snapshot().generation >= 300);
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}
