//! The manifest of a device's module directory (`manifest.json`): which blob file holds which
//! base model and which class module, with each file's content hash. The device runtime reads it
//! to map only the modules it is asked for; each blob is still verified on its own (hash,
//! signature), and its hash must equal the manifest's.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pack::atomic;
use crate::Result;

/// The largest manifest read: 100,000 entries take about 40 MB.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;
use crate::{Error, ModelKey};

/// The manifest's file name in a packed directory.
pub const FILE_NAME: &str = "manifest.json";
const FORMAT: &str = "classmod-manifest";
const VERSION: u32 = 1;

/// A base model blob of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBase {
    /// Its file, a plain name in the directory.
    pub file: String,
    /// The model's key.
    pub key: ModelKey,
    /// Hex BLAKE3 content hash of the blob (its trailer's).
    pub content_hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The base's class names, one per output.
    pub class_names: Vec<String>,
}

/// A class module blob of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestModule {
    /// Its file, a plain name in the directory.
    pub file: String,
    /// The class it answers for.
    pub class_name: String,
    /// The class's output index in its base.
    pub class_id: u32,
    /// Hex key of the base it runs on (a [`ManifestBase::key`] of this manifest).
    pub base_key: ModelKey,
    /// Hex BLAKE3 content hash of the blob (its trailer's).
    pub content_hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its [`ModuleBlob::version`](crate::ModuleBlob::version) (0 in manifests before versions).
    #[serde(default)]
    pub version: u64,
    /// The newest version of the class this device has committed: an older module is refused
    /// (downgrade protection). Written by the same atomic rename as the module.
    #[serde(default)]
    pub highest_version: u64,
    /// After a field update, until it is confirmed: the module it replaced (the rollback copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousModule>,
}

impl ManifestModule {
    /// Its file and its rollback copy's, if any.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.file.as_str()).chain(self.previous.as_ref().map(|p| p.file.as_str()))
    }

    /// The entry after a rollback: the rollback copy active again, with nothing to roll back to;
    /// `None` without a rollback copy.
    pub fn rolled_back(&self) -> Option<ManifestModule> {
        let p = self.previous.as_ref()?;
        Some(ManifestModule {
            file: p.file.clone(),
            content_hash: p.content_hash.clone(),
            bytes: p.bytes,
            version: p.version,
            highest_version: p.highest_version,
            base_key: p.base_key.unwrap_or(self.base_key),
            class_id: p.class_id.unwrap_or(self.class_id),
            previous: None,
            ..self.clone()
        })
    }
}

/// The module an unconfirmed update replaced, kept on disk for rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousModule {
    /// The rollback copy's file.
    pub file: String,
    /// Its hex content hash.
    pub content_hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its version.
    #[serde(default)]
    pub version: u64,
    /// The class's highest committed version before the update: a rollback restores it (rolling
    /// back an unconfirmed update is not a downgrade, and leaves no trace of the update).
    #[serde(default)]
    pub highest_version: u64,
    /// The base the rollback copy runs on: an update may move a class to another base
    /// (ResNet-20's `cat` replaced by ResNet-56's). Absent in manifests written before
    /// 2026-12-08: the entry's own, as those readers assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_key: Option<ModelKey>,
    /// The class's output index in that base (absent: the entry's own, as for `base_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_id: Option<u32>,
}

/// An update installed as one transaction (all the blobs of a Mender artifact) and not yet
/// committed or rolled back: exactly what a rollback puts back. One at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PendingUpdate {
    /// Its name (the Mender artifact's).
    pub id: String,
    /// The entries it replaced, as they were (each with its own rollback copy, if any).
    #[serde(default)]
    pub before: Vec<ManifestModule>,
    /// The classes it added.
    #[serde(default)]
    pub added: Vec<String>,
    /// The bases it added.
    #[serde(default)]
    pub bases: Vec<ModelKey>,
}

/// What a packed directory holds: its base blobs and one module blob per class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `classmod-manifest`.
    pub format: String,
    /// The manifest format version (1).
    pub version: u32,
    /// The base models.
    pub bases: Vec<ManifestBase>,
    /// The class modules, one per class.
    pub modules: Vec<ManifestModule>,
    /// Classes that updates added and the device serves beside those it is started with: part of
    /// the device's state, so that a restart with the same command line serves them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_classes: Vec<String>,
    /// The update installed as one transaction that waits to be committed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingUpdate>,
}

/// `class-007-horse`: the stem of a module's file name (unsafe characters replaced).
pub fn file_stem(class_id: u32, class_name: &str) -> String {
    let name: String =
        class_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("class-{class_id:03}-{name}")
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadMetadata { key: "manifest", reason: reason.into() }
}

/// A file named by a manifest must be a plain name in the manifest's directory.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().is_some_and(|f| f == name)
}

impl Manifest {
    /// A manifest of the current format listing `bases` and `modules`.
    pub fn new(bases: Vec<ManifestBase>, modules: Vec<ManifestModule>) -> Manifest {
        Manifest { format: FORMAT.into(), version: VERSION, bases, modules, added_classes: Vec::new(), pending: None }
    }

    /// Parses and checks a manifest: format and version, plain file names, no duplicate files or
    /// classes, every module's base listed.
    pub fn from_json(text: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!("format `{}` is not `{FORMAT}`", m.format)));
        }
        if m.version != VERSION {
            return Err(Error::UnsupportedVersion {
                format: "manifest",
                file: None,
                found: m.version.to_string(),
                supported: VERSION,
            });
        }
        // Sets, not lists: a device directory of tens of thousands of entries is checked in
        // linear time (lists took 13 s at 60,000 entries).
        let mut files: HashSet<&str> = HashSet::new();
        for f in m.current_files() {
            if !plain_file_name(f) {
                return Err(bad(format!("`{f}` is not a plain file name in the manifest's directory")));
            }
            if !files.insert(f) {
                return Err(bad(format!("`{f}` is listed twice")));
            }
        }
        let bases: HashSet<ModelKey> = m.bases.iter().map(|b| b.key).collect();
        let mut classes: HashSet<&str> = HashSet::new();
        for x in &m.modules {
            if !classes.insert(x.class_name.as_str()) {
                return Err(bad(format!("class `{}` has two modules", x.class_name)));
            }
            if x.highest_version < x.version {
                return Err(bad(format!(
                    "module `{}` is version {} but the highest committed is {}",
                    x.class_name, x.version, x.highest_version
                )));
            }
            if !bases.contains(&x.base_key) {
                return Err(bad(format!("module `{}` needs a base that is not listed", x.class_name)));
            }
            if x.previous.as_ref().and_then(|p| p.base_key).is_some_and(|k| !bases.contains(&k)) {
                return Err(bad(format!("the rollback copy of `{}` needs a base that is not listed", x.class_name)));
            }
        }
        let mut added: HashSet<&str> = HashSet::new();
        for c in &m.added_classes {
            if !classes.contains(c.as_str()) {
                return Err(bad(format!("added class `{c}` has no module")));
            }
            if !added.insert(c) {
                return Err(bad(format!("added class `{c}` is listed twice")));
            }
        }
        if let Some(p) = &m.pending {
            for b in &p.before {
                if !plain_file_name(&b.file) || b.previous.as_ref().is_some_and(|x| !plain_file_name(&x.file)) {
                    return Err(bad(format!("pending update `{}`: a file is not a plain name", p.id)));
                }
                if !bases.contains(&b.base_key) {
                    return Err(bad(format!(
                        "pending update `{}`: `{}` needs a base that is not listed",
                        p.id, b.class_name
                    )));
                }
            }
            for c in p.before.iter().map(|b| &b.class_name).chain(&p.added) {
                if !classes.contains(c.as_str()) {
                    return Err(bad(format!("pending update `{}`: class `{c}` has no module", p.id)));
                }
            }
            if let Some(k) = p.bases.iter().find(|k| !bases.contains(k)) {
                return Err(bad(format!("pending update `{}`: base {} is not listed", p.id, k.short())));
            }
        }
        Ok(m)
    }

    /// Reads and checks `dir/manifest.json` (a symlink to one is followed: a deployment may set
    /// one up before anything is written).
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE_NAME);
        let text = crate::pack::regular::read_to_string(&path, MAX_MANIFEST_BYTES)?;
        Self::from_json(&text).map_err(|e| e.in_file(&path))
    }

    /// [`Manifest::read`] of a manifest another writer committed, which is the directory's own
    /// file (writers replace it by a rename): a symlink put in its place, to a manifest from
    /// elsewhere, is refused, not taken up.
    pub fn read_committed(dir: &Path) -> Result<Manifest> {
        use crate::pack::regular::{read_to_string_with, Symlinks};
        let path = dir.join(FILE_NAME);
        let text = read_to_string_with(&path, MAX_MANIFEST_BYTES, Symlinks::Refuse)?;
        Self::from_json(&text).map_err(|e| e.in_file(&path))
    }

    /// Written crash-safely.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_with(&mut atomic::OsFs, dir)
    }

    /// Written crash-safely through `fs`.
    pub fn write_with(&self, fs: &mut dyn atomic::DurableFs, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let text = serde_json::to_string_pretty(self).expect("plain data serialises");
        atomic::write_with(fs, &path, text.as_bytes()).map_err(|e| Error::io(&path, e))
    }

    /// Every file the manifest names: bases, modules, rollback copies and what a pending update
    /// would restore (a file may come twice: a module re-delivered as its own rollback copy).
    /// None of them may be deleted while a durable manifest names it.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        let restore = self.pending.iter().flat_map(|p| p.before.iter().flat_map(ManifestModule::files));
        self.current_files().chain(restore)
    }

    /// The files of the directory as it serves now, each once: bases, modules, rollback copies.
    fn current_files(&self) -> impl Iterator<Item = &str> {
        self.bases.iter().map(|b| b.file.as_str()).chain(self.modules.iter().flat_map(ManifestModule::files))
    }

    /// Whether the manifest names `file` (see [`Manifest::files`]).
    pub fn names(&self, file: &str) -> bool {
        self.files().any(|f| f == file)
    }

    /// The module entry of `class_name`.
    pub fn module(&self, class_name: &str) -> Option<&ManifestModule> {
        self.modules.iter().find(|m| m.class_name == class_name)
    }

    /// The base entry of hex key `key`.
    pub fn base(&self, key: &ModelKey) -> Option<&ManifestBase> {
        self.bases.iter().find(|b| b.key == *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::new(
            vec![ManifestBase {
                file: "base.blob".into(),
                key: ModelKey([7; 32]),
                content_hash: "h".into(),
                bytes: 10,
                class_names: vec!["cat".into(), "dog".into()],
            }],
            vec![ManifestModule {
                file: "cat.blob".into(),
                class_name: "cat".into(),
                class_id: 0,
                base_key: ModelKey([7; 32]),
                content_hash: "h2".into(),
                bytes: 5,
                version: 3,
                highest_version: 4,
                previous: None,
            }],
        )
    }

    #[test]
    fn round_trips_and_refuses_what_a_device_must_not_follow() {
        let mut m = sample();
        m.added_classes = vec!["cat".into()];
        assert_eq!(Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        for (edit, what) in [
            (("cat.blob", "../cat.blob"), "path traversal"),
            (("cat.blob", "/etc/passwd"), "absolute path"),
            (("cat.blob", "base.blob"), "a file listed twice"),
            (
                (
                    &format!("\"base_key\":\"{}\"", ModelKey([7; 32])),
                    &format!("\"base_key\":\"{}\"", ModelKey([8; 32])),
                ),
                "a module without its base",
            ),
            (
                (&format!("\"base_key\":\"{}\"", ModelKey([7; 32])), "\"base_key\":\"k\""),
                "a key that is not 64 hex digits",
            ),
            (("classmod-manifest", "other"), "another format"),
            (("\"added_classes\":[\"cat\"]", "\"added_classes\":[\"dog\"]"), "an added class without a module"),
            (("\"added_classes\":[\"cat\"]", "\"added_classes\":[\"cat\",\"cat\"]"), "an added class twice"),
            (("\"highest_version\":4", "\"highest_version\":2"), "a version above the highest"),
            (("\"version\":1", "\"version\":2"), "another version"),
        ] {
            let text = serde_json::to_string(&m).unwrap().replace(edit.0, edit.1);
            assert!(Manifest::from_json(&text).is_err(), "{what} accepted: {text}");
        }
        assert!(Manifest::from_json("{").is_err());
        let text = serde_json::to_string(&m).unwrap();
        for cut in 0..text.len() {
            assert!(Manifest::from_json(&text[..cut]).is_err());
        }
    }

    /// A device directory of 100,000 modules is checked whole (linear time: issue 13, item 13,
    /// found 60,000 entries taking 13 s), and a duplicate at the very end is still found.
    #[test]
    fn large_manifests_are_checked_whole() {
        let mut m = sample();
        let one = m.modules[0].clone();
        m.modules = (0..100_000)
            .map(|i| ManifestModule { file: format!("m{i}.blob"), class_name: format!("c{i}"), ..one.clone() })
            .collect();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(Manifest::from_json(&text).unwrap().modules.len(), 100_000);
        m.modules.push(ManifestModule { file: "last.blob".into(), class_name: "c7".into(), ..one });
        let e = Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("class `c7` has two modules"), "{e}");
    }
}
