//! A base model as a blob (kind `Base`): metadata `{"format":"classmod-base","arch",...}` and one
//! f32 tensor per parameter, sorted by name. The header's `base_key` is the model's content key
//! ([`ModelKey`]), which its modules name.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use classmod_blob::{Blob, BlobKind, BlobWriter, DType, SigningKey};
use serde::{Deserialize, Serialize};

use crate::model::config::ResNetConfig;
use crate::model::file::json;
use crate::model::key::{input_key, sorted_params};
use crate::Result;
use crate::{Error, InputSpec, ModelFile, ModelKey, ModelMeta};

const FORMAT: &str = "classmod-base";

#[derive(Serialize, Deserialize)]
struct BaseMeta {
    format: String,
    arch: ResNetConfig,
    input: InputSpec,
    class_names: Vec<String>,
}

/// The blob of `model`, signed when `key` is given.
pub fn encode(model: &ModelFile, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    let meta = BaseMeta {
        format: FORMAT.into(),
        arch: model.meta.arch.clone(),
        input: model.meta.input.clone(),
        class_names: model.meta.class_names.clone(),
    };
    let mut w = BlobWriter::new(BlobKind::Base, ModelKey::of(model)?.0, input_key(&model.meta.input), json(&meta));
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
    let mut tensors = HashMap::new();
    for t in blob.tensors() {
        let values = t.to_f32()?;
        tensors.insert(t.name.to_string(), Tensor::from_vec(values, t.shape.clone(), device)?);
    }
    let model = ModelFile::new(meta, tensors)?;
    if ModelKey::of(&model)?.0 != blob.base_key() {
        return Err(Error::HeaderKeyMismatch { key: "base" });
    }
    if input_key(&model.meta.input) != blob.input_key() {
        return Err(Error::HeaderKeyMismatch { key: "input" });
    }
    Ok(model)
}
