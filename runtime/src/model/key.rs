//! What identifies a base model to its modules: [`ModelKey`], the BLAKE3 digest of what the model
//! computes (metadata and every parameter's name, shape and f32 values), independent of the
//! container it is stored in, so a module names the same base in memory, in a base blob's
//! header and in a manifest. Also the input key of blob headers and the hex form of digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::file::json;
use crate::{Error, InputSpec, ModelFile, ModelMeta, Result};

/// The content key of a base model (see the module comment). Written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey(pub [u8; 32]);

impl ModelKey {
    /// The key of `model`.
    pub fn of(model: &ModelFile) -> Result<ModelKey> {
        let mut h = KeyHasher::new(&model.meta);
        for (name, values, shape) in sorted_params(model)? {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.param(name, &shape, &bytes);
        }
        Ok(h.finish())
    }

    /// The first 16 hex digits, as base blob file names use them.
    pub fn short(&self) -> String {
        key_hex(&self.0[..8])
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&key_hex(&self.0))
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelKey({self})")
    }
}

impl FromStr for ModelKey {
    type Err = Error;

    /// 64 hex digits (either case).
    fn from_str(s: &str) -> Result<ModelKey> {
        let bad = || Error::BadKey { text: s.chars().take(80).collect() };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ModelKey(out))
    }
}

impl Serialize for ModelKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ModelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ModelKey, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The first 16 bytes of BLAKE3 of the input spec's JSON: equal specs, equal keys.
pub fn input_key(spec: &InputSpec) -> [u8; 16] {
    blake3::hash(json(spec).as_bytes()).as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

/// Lower-case hex of a key or digest.
pub fn key_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`ModelKey`] digested part by part: the metadata, then each parameter in name order as its
/// name, its shape and its f32 values' little-endian bytes. A base blob stores exactly those
/// bytes, so its key is digested from the mapping in whole tensors, without copying the values
/// out (`pack::base_blob::decode`).
pub(crate) struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub(crate) fn new(meta: &ModelMeta) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(json(&meta.arch).as_bytes());
        h.update(json(&meta.input).as_bytes());
        h.update(json(&meta.class_names).as_bytes());
        KeyHasher(h)
    }

    /// The next parameter (in name order), its values as f32 little-endian bytes.
    pub(crate) fn param(&mut self, name: &str, shape: &[usize], le_bytes: &[u8]) {
        let h = &mut self.0;
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for &d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        h.update(le_bytes);
    }

    pub(crate) fn finish(self) -> ModelKey {
        ModelKey(*self.0.finalize().as_bytes())
    }
}

/// (name, values, shape) of a parameter.
pub(crate) type Param<'a> = (&'a str, Vec<f32>, Vec<usize>);

/// Every parameter as f32 values, sorted by name: what the key digests and a base blob stores.
pub(crate) fn sorted_params(model: &ModelFile) -> Result<Vec<Param<'_>>> {
    let mut names: Vec<&String> = model.tensors.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = &model.tensors[n];
            Ok((n.as_str(), t.flatten_all()?.to_vec1::<f32>()?, t.dims().to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::tiny_model;

    #[test]
    fn keys_name_what_a_model_computes_and_round_trip_as_hex() {
        let (a, b) = (ModelKey::of(&tiny_model(1)).unwrap(), ModelKey::of(&tiny_model(2)).unwrap());
        assert_ne!(a, b);
        assert_eq!(ModelKey::of(&tiny_model(1)).unwrap(), a, "deterministic");
        let text = a.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ModelKey>().unwrap(), a);
        assert_eq!(text.to_uppercase().parse::<ModelKey>().unwrap(), a);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ModelKey>(&format!("\"{text}\"")).unwrap(), a);
        assert_eq!(a.short(), text[..16]);
        for bad in ["", "00", &text[..63], &format!("{}g", &text[..63]), &format!("{text}0"), "é".repeat(32).as_str()]
        {
            assert!(matches!(bad.parse::<ModelKey>(), Err(Error::BadKey { .. })), "{bad:?}");
        }
        assert!(serde_json::from_str::<ModelKey>("\"xyz\"").is_err());
    }
}
