//! The manifest of a device's module directory (`manifest.json`): which blob file holds which
//! base model and which class module, with each file's content hash. The device runtime reads it
//! to map only the modules it is asked for; each blob is still verified on its own (hash,
//! signature), and its hash must equal the manifest's.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pack::atomic;
use crate::ModelError;

pub const FILE_NAME: &str = "manifest.json";
const FORMAT: &str = "classmod-manifest";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBase {
    pub file: String,
    /// Hex model key ([`crate::pack::base_blob::model_key`]).
    pub key: String,
    /// Hex BLAKE3 content hash of the blob (its trailer's).
    pub content_hash: String,
    pub bytes: u64,
    pub class_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestModule {
    pub file: String,
    pub class_name: String,
    /// The class's output index in its base.
    pub class_id: u32,
    pub base_key: String,
    pub content_hash: String,
    pub bytes: u64,
    /// After a field update, until it is confirmed: the module it replaced (the rollback copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousModule>,
}

/// The module an unconfirmed update replaced, kept on disk for rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousModule {
    pub file: String,
    pub content_hash: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub bases: Vec<ManifestBase>,
    pub modules: Vec<ManifestModule>,
}

/// `class-007-horse`: the stem of a module's file name (unsafe characters replaced).
pub fn file_stem(class_id: u32, class_name: &str) -> String {
    let name: String =
        class_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("class-{class_id:03}-{name}")
}

fn bad(reason: impl Into<String>) -> ModelError {
    ModelError::BadMetadata { key: "manifest", reason: reason.into() }
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
    pub fn new(bases: Vec<ManifestBase>, modules: Vec<ManifestModule>) -> Manifest {
        Manifest { format: FORMAT.into(), version: VERSION, bases, modules }
    }

    /// Parses and checks a manifest: format and version, plain file names, no duplicate files or
    /// classes, every module's base listed.
    pub fn from_json(text: &str) -> Result<Manifest, ModelError> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!("format `{}` is not `{FORMAT}`", m.format)));
        }
        if m.version != VERSION {
            return Err(ModelError::UnsupportedVersion { found: m.version.to_string(), supported: VERSION });
        }
        let mut files: Vec<&str> = Vec::new();
        let previous = m.modules.iter().filter_map(|x| x.previous.as_ref().map(|p| &p.file));
        for f in m.bases.iter().map(|b| &b.file).chain(m.modules.iter().map(|x| &x.file)).chain(previous) {
            if !plain_file_name(f) {
                return Err(bad(format!("`{f}` is not a plain file name in the manifest's directory")));
            }
            if files.contains(&f.as_str()) {
                return Err(bad(format!("`{f}` is listed twice")));
            }
            files.push(f);
        }
        let mut classes: Vec<&str> = Vec::new();
        for x in &m.modules {
            if classes.contains(&x.class_name.as_str()) {
                return Err(bad(format!("class `{}` has two modules", x.class_name)));
            }
            classes.push(&x.class_name);
            if !m.bases.iter().any(|b| b.key == x.base_key) {
                return Err(bad(format!("module `{}` needs a base that is not listed", x.class_name)));
            }
        }
        Ok(m)
    }

    pub fn read(dir: &Path) -> Result<Manifest, ModelError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        Self::from_json(&text)
    }

    /// Written crash-safely.
    pub fn write(&self, dir: &Path) -> Result<(), ModelError> {
        self.write_with(&mut atomic::OsFs, dir)
    }

    /// Written crash-safely through `fs`.
    pub fn write_with(&self, fs: &mut dyn atomic::DurableFs, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(FILE_NAME);
        let text = serde_json::to_string_pretty(self).expect("plain data serialises");
        atomic::write_with(fs, &path, text.as_bytes()).map_err(|e| ModelError::io(&path, e))
    }

    pub fn module(&self, class_name: &str) -> Option<&ManifestModule> {
        self.modules.iter().find(|m| m.class_name == class_name)
    }

    pub fn base(&self, key: &str) -> Option<&ManifestBase> {
        self.bases.iter().find(|b| b.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::new(
            vec![ManifestBase {
                file: "base.blob".into(),
                key: "k".into(),
                content_hash: "h".into(),
                bytes: 10,
                class_names: vec!["cat".into(), "dog".into()],
            }],
            vec![ManifestModule {
                file: "cat.blob".into(),
                class_name: "cat".into(),
                class_id: 0,
                base_key: "k".into(),
                content_hash: "h2".into(),
                bytes: 5,
                previous: None,
            }],
        )
    }

    #[test]
    fn round_trips_and_refuses_what_a_device_must_not_follow() {
        let m = sample();
        assert_eq!(Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        for (edit, what) in [
            (("cat.blob", "../cat.blob"), "path traversal"),
            (("cat.blob", "/etc/passwd"), "absolute path"),
            (("cat.blob", "base.blob"), "a file listed twice"),
            (("\"base_key\":\"k\"", "\"base_key\":\"other\""), "a module without its base"),
            (("classmod-manifest", "other"), "another format"),
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
}
