//! The on-disk form of a class module until the memory-mapped blob format replaces it: a small
//! safetensors file holding the node masks (packed bits, `U8`) and the head, whose metadata names
//! the class, the input spec and the base model file it runs on (by file name and content
//! digest). The base model is stored once per directory, beside its modules.
//!
//! | metadata key | value |
//! |---|---|
//! | `classmod.format` / `classmod.version` | `module` / `1` |
//! | `classmod.kind` | the module kind (`mask`); absent in files written before kinds were tagged |
//! | `classmod.class_id`, `classmod.class_name` | the class's output index in its model, its name |
//! | `classmod.base_file`, `classmod.base_key` | base model file name (same directory), BLAKE3 hex of its bytes |
//! | `classmod.input` | JSON of the input spec |
//! | `classmod.head` | `{"kind":"channel","class_index":i}` or `{"kind":"calibrated"}` (tensors `head.weight` F32 \[F\], `head.bias` F32 \[1\]) |
//! | `classmod.sites` | JSON list of `[name, channels, height, width]`, one per ReLU site; tensor `mask.NNN` (U8, packed bits) per site |

use std::collections::HashMap;
use std::path::Path;

use crate::model::file::json;
use crate::model::graph::ReluSite;
use crate::module::ClassModule;
use crate::pack::atomic;
use crate::pack::parts::{self, HeadMeta, ModuleIdentity, SiteMeta};
use crate::Result;
use crate::{Error, InputSpec};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const FORMAT: &str = "module";
const VERSION: &str = "1";

/// A module as stored, with the name of its base model file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModule {
    /// The module.
    pub module: ClassModule,
    /// File name of its base model, in the same directory.
    pub base_file: String,
}

/// BLAKE3 digest (hex) of a base model file's bytes: the compatibility key of its modules.
pub fn base_key(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn bad(key: &'static str, reason: impl Into<String>) -> Error {
    Error::BadMetadata { key, reason: reason.into() }
}

impl StoredModule {
    /// The file's bytes; `sites` are the base's ReLU sites.
    pub fn to_bytes(&self, sites: &[ReluSite]) -> Result<Vec<u8>> {
        let m = &self.module;
        let (head, site_meta, tensors) = parts::encode(m, sites)?;
        let metadata = HashMap::from([
            ("classmod.format".to_string(), FORMAT.to_string()),
            ("classmod.version".to_string(), VERSION.to_string()),
            ("classmod.kind".to_string(), m.kind.name().to_string()),
            ("classmod.class_id".to_string(), m.class_id.0.to_string()),
            ("classmod.class_name".to_string(), m.class_name.clone()),
            ("classmod.base_file".to_string(), self.base_file.clone()),
            ("classmod.base_key".to_string(), m.base_key.clone()),
            ("classmod.input".to_string(), json(&m.input)),
            ("classmod.head".to_string(), json(&head)),
            ("classmod.sites".to_string(), json(&site_meta)),
        ]);
        let views = tensors
            .iter()
            .map(|t| {
                let dtype = if t.u8 { Dtype::U8 } else { Dtype::F32 };
                Ok((
                    t.name.clone(),
                    TensorView::new(dtype, t.shape.clone(), &t.bytes)
                        .map_err(|e| Error::NotSafetensors { reason: e.to_string() })?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::NotSafetensors { reason: e.to_string() })
    }

    /// Writes the file crash-safely.
    pub fn write(&self, path: &Path, sites: &[ReluSite]) -> Result<()> {
        let bytes = self.to_bytes(sites)?;
        atomic::write(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// Reads and parses a module file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes)
    }

    /// Parses a module file; any byte string is safe to pass.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::NotSafetensors { reason: e.to_string() })?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::NotSafetensors { reason: e.to_string() })?;
        let md = header.metadata().clone().unwrap_or_default();
        let get = |key: &'static str| md.get(key).ok_or(Error::MissingMetadata { key });
        if get("classmod.format")? != FORMAT {
            return Err(bad("classmod.format", format!("`{}` is not `{FORMAT}`", md["classmod.format"])));
        }
        if get("classmod.version")? != VERSION {
            return Err(Error::UnsupportedVersion { found: md["classmod.version"].clone(), supported: 1 });
        }
        parts::check_kind(md.get("classmod.kind").map(String::as_str))?;
        fn parse<T: serde::de::DeserializeOwned>(key: &'static str, s: &str) -> Result<T> {
            serde_json::from_str(s).map_err(|e| bad(key, e.to_string()))
        }
        let class_id = get("classmod.class_id")?.parse::<u32>().map_err(|e| bad("classmod.class_id", e.to_string()))?;
        let input: InputSpec = parse("classmod.input", get("classmod.input")?)?;
        let head: HeadMeta = parse("classmod.head", get("classmod.head")?)?;
        let site_meta: SiteMeta = parse("classmod.sites", get("classmod.sites")?)?;
        let tensor = |name: &str, u8: bool| -> Result<Vec<u8>> {
            let t = st.tensor(name).map_err(|_| Error::MissingTensor { name: name.into(), expected: vec![] })?;
            if t.dtype() != if u8 { Dtype::U8 } else { Dtype::F32 } {
                let expected = if u8 { "u8" } else { "f32" };
                return Err(Error::TensorDtype { name: name.into(), expected, found: format!("{:?}", t.dtype()) });
            }
            Ok(t.data().to_vec())
        };
        let id = ModuleIdentity {
            class_id,
            class_name: get("classmod.class_name")?.clone(),
            base_key: get("classmod.base_key")?.clone(),
            input,
        };
        Ok(StoredModule {
            module: parts::decode(id, head, site_meta, tensor)?,
            base_file: get("classmod.base_file")?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClassId, ModuleHead, ModuleKind, NodeMask};

    fn sites() -> Vec<ReluSite> {
        vec![
            ReluSite { name: "relu0".into(), channels: 2, height: 4, width: 4 },
            ReluSite { name: "layer1.0.out".into(), channels: 3, height: 3, width: 3 },
        ]
    }

    fn stored(head: ModuleHead) -> StoredModule {
        let mut mask = NodeMask::ones(&sites());
        mask.sites[1].set(4, false);
        StoredModule {
            module: ClassModule {
                class_id: ClassId(7),
                class_name: "horse".into(),
                base_key: base_key(b"base"),
                input: InputSpec::cifar10_imagenet_stats(),
                kind: ModuleKind::Mask(mask),
                head,
            },
            base_file: "base.safetensors".into(),
        }
    }

    #[test]
    fn round_trips_both_heads() {
        for head in [
            ModuleHead::Channel { class_index: 7 },
            ModuleHead::Calibrated { weight: vec![0.5, -1.0, 2.0], bias: 0.25 },
        ] {
            let s = stored(head);
            let back = StoredModule::from_bytes(&s.to_bytes(&sites()).unwrap()).unwrap();
            assert_eq!(back, s);
        }
    }

    /// Every truncation is an error; every single-byte change of the header is an error or a
    /// module, never a panic.
    #[test]
    fn corrupted_module_files_are_typed_errors() {
        let bytes =
            stored(ModuleHead::Calibrated { weight: vec![0.5, -1.0, 2.0], bias: 0.25 }).to_bytes(&sites()).unwrap();
        for cut in 0..bytes.len() {
            assert!(StoredModule::from_bytes(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for i in 0..header {
            for v in [0u8, 0xff, bytes[i] ^ 0x01] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = StoredModule::from_bytes(&b);
            }
        }
    }

    #[test]
    fn another_format_version_is_refused() {
        let bytes = stored(ModuleHead::Channel { class_index: 7 }).to_bytes(&sites()).unwrap();
        let pat = b"\"classmod.version\":\"1\"";
        let at = bytes.windows(pat.len()).position(|w| w == pat).expect("version in the header");
        let mut b = bytes.clone();
        b[at + pat.len() - 2] = b'9';
        assert!(matches!(StoredModule::from_bytes(&b), Err(Error::UnsupportedVersion { .. })));
    }
}
