//! A base model as a blob (kind `Base`): metadata `{"format":"classmod-base","arch",...}` and one
//! f32 tensor per parameter, sorted by name. The header's `base_key` is the model's content key
//! ([`model_key`]), which its modules name.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use classmod_blob::{Blob, BlobKind, BlobWriter, DType, SigningKey};
use serde::{Deserialize, Serialize};

use crate::model::config::ResNetConfig;
use crate::model::file::json;
use crate::Result;
use crate::{Error, InputSpec, ModelFile, ModelMeta};

const FORMAT: &str = "classmod-base";

#[derive(Serialize, Deserialize)]
struct BaseMeta {
    format: String,
    arch: ResNetConfig,
    input: InputSpec,
    class_names: Vec<String>,
}

/// Digest of what a model computes: its metadata and every tensor (name, shape, f32 values),
/// independent of the container it is stored in.
pub fn model_key(model: &ModelFile) -> Result<[u8; 32], Error> {
    let mut h = blake3::Hasher::new();
    h.update(json(&model.meta.arch).as_bytes());
    h.update(json(&model.meta.input).as_bytes());
    h.update(json(&model.meta.class_names).as_bytes());
    for (name, values, shape) in sorted_f32(model)? {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        for v in values {
            h.update(&v.to_le_bytes());
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// The first 16 bytes of BLAKE3 of the input spec's JSON: equal specs, equal keys.
pub fn input_key(spec: &InputSpec) -> [u8; 16] {
    blake3::hash(json(spec).as_bytes()).as_bytes()[..16].try_into().expect("16 of 32 bytes")
}

/// Hex form of a key or hash, as modules name their base.
pub fn key_hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// (name, values, shape) of a parameter.
type Param<'a> = (&'a str, Vec<f32>, Vec<usize>);

fn sorted_f32(model: &ModelFile) -> Result<Vec<Param<'_>>> {
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

/// The blob of `model`, signed when `key` is given.
pub fn encode(model: &ModelFile, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    let meta = BaseMeta {
        format: FORMAT.into(),
        arch: model.meta.arch.clone(),
        input: model.meta.input.clone(),
        class_names: model.meta.class_names.clone(),
    };
    let mut w = BlobWriter::new(BlobKind::Base, model_key(model)?, input_key(&model.meta.input), json(&meta));
    for (name, values, shape) in sorted_f32(model)? {
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
    if model_key(&model)? != blob.base_key() {
        return Err(Error::HeaderKeyMismatch { key: "base" });
    }
    if input_key(&model.meta.input) != blob.input_key() {
        return Err(Error::HeaderKeyMismatch { key: "input" });
    }
    Ok(model)
}
