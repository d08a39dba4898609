//! A base model as a blob (kind `Base`): metadata `{"format":"classmod-base","arch",...}` and one
//! f32 tensor per parameter, sorted by name. The header's `base_key` is the model's content key
//! ([`ModelKey`]), which its modules name.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use classmod_blob::{Blob, BlobKind, BlobWriter, DType, SigningKey};
use serde::{Deserialize, Serialize};

use crate::model::arch::Architecture;
use crate::model::file::json;
use crate::model::key::{input_key, sorted_params, KeyHasher};
use crate::Result;
use crate::{Error, InputSpec, ModelFile, ModelKey, ModelMeta};

const FORMAT: &str = "classmod-base";

#[derive(Serialize, Deserialize)]
struct BaseMeta {
    format: String,
    arch: Architecture,
    input: InputSpec,
    class_names: Vec<String>,
}

#[cfg(feature = "host")]
/// The blob of `model`, signed when `key` is given.
pub fn encode(model: &ModelFile, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    encode_as(model, ModelKey::of(model)?, key)
}

/// The blob of `model` with `base_key` in its header (its own key but in tests).
#[cfg(feature = "host")]
fn encode_as(model: &ModelFile, base_key: ModelKey, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    let meta = BaseMeta {
        format: FORMAT.into(),
        arch: model.meta.arch.clone(),
        input: model.meta.input.clone(),
        class_names: model.meta.class_names.clone(),
    };
    let mut w = BlobWriter::new(BlobKind::Base, base_key.0, input_key(&model.meta.input), json(&meta));
    for (name, values, shape) in sorted_params(model)? {
        w.tensor(name, DType::F32, &shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())?;
    }
    Ok(w.finish(key))
}

/// The model in a (parsed, verified) base blob, its tensors copied onto `device`. The model's
/// content must match the header's key.
pub fn decode(blob: &Blob, device: &Device) -> Result<ModelFile> {
    if blob.kind() != BlobKind::Base {
        return Err(Error::WrongBlobKind { expected: "base", found: "module" });
    }
    let meta: BaseMeta = serde_json::from_str(blob.meta())
        .map_err(|e| Error::BadMetadata { key: "base blob metadata", reason: e.to_string() })?;
    if meta.format != FORMAT {
        return Err(Error::BadMetadata { key: "format", reason: format!("`{}` is not `{FORMAT}`", meta.format) });
    }
    let meta = ModelMeta { arch: meta.arch, input: meta.input, class_names: meta.class_names };
    meta.validate()?;
    // The key from the mapped bytes, a whole tensor at a time, before a value is copied out: a
    // blob whose content is not its header's model is refused at hashing speed.
    let mut views: Vec<_> = blob.tensors().collect();
    views.sort_by(|a, b| a.name.cmp(b.name));
    let mut key = KeyHasher::new(&meta);
    for t in &views {
        t.expect(DType::F32, &t.shape)?;
        key.param(t.name, &t.shape, t.bytes);
    }
    if key.finish().0 != blob.base_key() {
        return Err(Error::HeaderKeyMismatch { key: "base" });
    }
    let mut tensors = HashMap::new();
    for t in views {
        tensors.insert(t.name.to_string(), Tensor::from_vec(t.to_f32()?, t.shape.clone(), device)?);
    }
    let model = ModelFile::new(meta, tensors)?;
    if input_key(&model.meta.input) != blob.input_key() {
        return Err(Error::HeaderKeyMismatch { key: "input" });
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::tiny_model;
    use classmod_blob::AlignedBytes;

    /// A base blob decodes to the model it was written from, the key digested from the mapped
    /// bytes being `ModelKey::of` that model (the digest over values copied out of tensors); a
    /// blob whose header names another model's key is refused before its tensors are built.
    #[test]
    fn a_base_blob_decodes_to_its_model_and_a_foreign_key_is_refused() {
        let (m, other) = (tiny_model(1), tiny_model(2));
        let bytes = AlignedBytes::new(&encode(&m, None).unwrap());
        let blob = Blob::parse(bytes.bytes()).unwrap();
        assert_eq!(ModelKey(blob.base_key()), ModelKey::of(&m).unwrap());
        let back = decode(&blob, &Device::Cpu).unwrap();
        assert_eq!(ModelKey::of(&back).unwrap(), ModelKey::of(&m).unwrap());
        for (name, t) in &m.tensors {
            let (a, b) =
                (t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), back.tensors[name].flatten_all().unwrap());
            assert_eq!(a, b.to_vec1::<f32>().unwrap(), "`{name}`");
        }
        let forged = AlignedBytes::new(&encode_as(&m, ModelKey::of(&other).unwrap(), None).unwrap());
        let blob = Blob::parse(forged.bytes()).unwrap();
        assert!(matches!(decode(&blob, &Device::Cpu), Err(Error::HeaderKeyMismatch { key: "base" })));
    }
}
