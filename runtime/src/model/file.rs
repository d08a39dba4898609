//! The self-describing model file: a safetensors file whose tensors carry canonical PyTorch names
//! (so PyTorch can still read it) and whose metadata says what the tensors are: architecture,
//! input spec and class names. `classmod import` and `classmod train` write it; every other
//! command and the device read it without needing any flags.
//!
//! Metadata keys (all values are strings, as safetensors requires):
//! | key | value |
//! |---|---|
//! | `classmod.format` | `model` |
//! | `classmod.version` | `1` |
//! | `classmod.arch` | JSON of [`Architecture`]: a CIFAR ResNet's numbers, or a whole [`crate::model::network::Network`] |
//! | `classmod.input` | JSON of [`InputSpec`] |
//! | `classmod.classes` | JSON list of class names, one per output |

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
#[cfg(feature = "host")]
use safetensors::SafeTensors;
use serde::{de::DeserializeOwned, Serialize};

use crate::model::arch::Architecture;
use crate::pack::atomic;
use crate::Result;
use crate::{Error, InputSpec};

/// Metadata key of the format name (`model`).
pub const KEY_FORMAT: &str = "classmod.format";
/// Metadata key of the format version.
pub const KEY_VERSION: &str = "classmod.version";
/// Metadata key of the architecture (JSON of [`Architecture`]).
pub const KEY_ARCH: &str = "classmod.arch";
/// Metadata key of the input spec (JSON of [`InputSpec`]).
pub const KEY_INPUT: &str = "classmod.input";
/// Metadata key of the class names (a JSON list, one per output).
pub const KEY_CLASSES: &str = "classmod.classes";
/// The format name model files carry.
pub const FORMAT_NAME: &str = "model";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The largest model file read (PyTorch's or ours): well above a CIFAR ResNet's few MB, far
/// below a device's memory; `/dev/zero` or a runaway file is refused, not read.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// What a model file says about its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// The network's architecture.
    pub arch: Architecture,
    /// The images it takes and how they are normalised.
    pub input: InputSpec,
    /// One name per output, in output order.
    pub class_names: Vec<String>,
}

impl ModelMeta {
    /// Checks the architecture, the input spec and that they agree with each other and the class names.
    pub fn validate(&self) -> Result<()> {
        self.arch.validate()?;
        self.input.validate()?;
        if self.input.channels != self.arch.in_channels() {
            return Err(Error::InconsistentModel {
                reason: format!(
                    "input spec has {} channels, the network takes {}",
                    self.input.channels,
                    self.arch.in_channels()
                ),
            });
        }
        if self.class_names.len() != self.arch.num_classes() {
            return Err(Error::InconsistentModel {
                reason: format!("{} class names for {} outputs", self.class_names.len(), self.arch.num_classes()),
            });
        }
        Ok(())
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (KEY_FORMAT.to_string(), FORMAT_NAME.to_string()),
            (KEY_VERSION.to_string(), FORMAT_VERSION.to_string()),
            (KEY_ARCH.to_string(), json(&self.arch)),
            (KEY_INPUT.to_string(), json(&self.input)),
            (KEY_CLASSES.to_string(), json(&self.class_names)),
        ])
    }

    fn from_metadata(md: &HashMap<String, String>) -> Result<Self> {
        let get = |key: &'static str| md.get(key).ok_or(Error::MissingMetadata { key });
        let format = get(KEY_FORMAT)?;
        if format != FORMAT_NAME {
            return Err(Error::BadMetadata { key: KEY_FORMAT, reason: format!("`{format}` is not `{FORMAT_NAME}`") });
        }
        let version = get(KEY_VERSION)?;
        if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(Error::UnsupportedVersion {
                format: "classmod model file",
                file: None,
                found: version.clone(),
                supported: FORMAT_VERSION,
            });
        }
        fn parse<T: DeserializeOwned>(key: &'static str, s: &str) -> Result<T> {
            serde_json::from_str(s).map_err(|e| Error::BadMetadata { key, reason: e.to_string() })
        }
        let meta = ModelMeta {
            arch: parse(KEY_ARCH, get(KEY_ARCH)?)?,
            input: parse(KEY_INPUT, get(KEY_INPUT)?)?,
            class_names: parse(KEY_CLASSES, get(KEY_CLASSES)?)?,
        };
        meta.validate()?;
        Ok(meta)
    }
}

/// serde_json cannot fail on our plain data types (no maps with non-string keys, no NaN floats
/// after validation); this keeps that fact in one place.
pub(crate) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// A model: its metadata and its parameter tensors (f32, canonical names, exactly the set that
/// [`Architecture::tensor_shapes`] lists).
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// Architecture, input spec and class names.
    pub meta: ModelMeta,
    /// Parameters by canonical PyTorch name.
    pub tensors: HashMap<String, Tensor>,
}

impl ModelFile {
    /// Builds a model from named tensors, checking that they are exactly the architecture's
    /// tensors with the right shapes (converted to f32).
    pub fn new(meta: ModelMeta, tensors: HashMap<String, Tensor>) -> Result<Self> {
        meta.validate()?;
        let tensors = check_tensors(&meta.arch, tensors)?;
        Ok(ModelFile { meta, tensors })
    }

    #[cfg(feature = "host")]
    /// Reads and validates a model file (a regular file of at most [`MAX_MODEL_BYTES`]).
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = crate::pack::regular::read(path, MAX_MODEL_BYTES)?;
        Self::from_bytes(&bytes, device).map_err(|e| e.in_file(path))
    }

    #[cfg(feature = "host")]
    /// Parses a model file held in memory. Any byte string is safe to pass.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::NotSafetensors { reason: e.to_string() })?;
        let md = header.metadata().clone().unwrap_or_default();
        let meta = ModelMeta::from_metadata(&md)?;
        let tensors = read_safetensors(bytes, device)?;
        Self::new(meta, tensors)
    }

    #[cfg(feature = "host")]
    /// Serialises to safetensors bytes (tensors sorted by name, as the format prescribes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let cpu: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_, candle_core::Error>>()?;
        safetensors::serialize(cpu, Some(self.meta.to_metadata()))
            .map_err(|e| Error::NotSafetensors { reason: e.to_string() })
    }

    #[cfg(feature = "host")]
    /// Writes the file crash-safely: a reader sees the old file or the new one, never a torn one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        atomic::write(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// The parameter `name`, or a typed error naming it. A model holds every tensor of its
    /// architecture ([`ModelFile::new`] checks), so a name it lacks is not one of them.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Misuse {
            what: format!("asked a {} for tensor `{name}`, which it does not have", self.meta.arch.name()),
        })
    }
}

#[cfg(feature = "host")]
/// Loads every tensor of a safetensors buffer as f32 (f16, bf16 and f64 are converted).
pub fn read_safetensors(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    use candle_core::safetensors::Load;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::NotSafetensors { reason: e.to_string() })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = view.dtype();
        let float = matches!(
            dtype,
            safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16 | safetensors::Dtype::F64
        );
        if !float {
            // Integer buffers such as BN's `num_batches_tracked` are kept so the caller can
            // decide; they are never used as weights.
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            return Err(Error::TensorDtype { name, expected: "a floating-point type", found: format!("{dtype:?}") });
        }
        let t = view.load(device)?.to_dtype(DType::F32)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Checks that `tensors` is exactly the architecture's set, with the right shapes and finite values.
pub fn check_tensors(arch: &Architecture, mut tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, shape) in arch.tensor_shapes() {
        let t = tensors
            .remove(&name)
            .ok_or_else(|| Error::MissingTensor { name: name.clone(), expected: shape.clone() })?;
        if t.dims() != shape.as_slice() {
            return Err(Error::TensorShape { name, expected: shape, found: t.dims().to_vec() });
        }
        let t = t.to_dtype(DType::F32)?;
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFinite { name });
        }
        if name.ends_with("running_var") {
            if let Some(&value) = values.iter().find(|v| **v < 0.0) {
                return Err(Error::NegativeVariance { name, value });
            }
        }
        out.insert(name, t);
    }
    if let Some(name) = tensors.keys().min().cloned() {
        let shape = tensors[&name].dims().to_vec();
        return Err(Error::UnexpectedTensor { name, shape, arch: arch.name() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shortcut;

    fn tiny() -> ModelFile {
        let arch = Architecture::from(crate::ResNetConfig {
            blocks_per_stage: 1,
            widths: [4, 8, 16],
            shortcut: Shortcut::B,
            in_channels: 1,
            num_classes: 3,
        });
        let tensors = arch
            .tensor_shapes()
            .into_iter()
            .map(|(n, s)| {
                let len: usize = s.iter().product();
                let v: Vec<f32> = (0..len).map(|i| 0.5 + (i % 5) as f32 * 0.1).collect();
                (n, Tensor::from_vec(v, s, &Device::Cpu).unwrap())
            })
            .collect();
        let input = InputSpec::new(1, 8, 8, vec![0.5], vec![0.25]);
        let meta = ModelMeta { arch, input, class_names: vec!["a".into(), "b".into(), "c".into()] };
        ModelFile::new(meta, tensors).unwrap()
    }

    #[test]
    fn round_trips() {
        let m = tiny();
        let back = ModelFile::from_bytes(&m.to_bytes().unwrap(), &Device::Cpu).unwrap();
        assert_eq!(back.meta, m.meta);
        for (n, t) in &m.tensors {
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = back.tensors[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b, "{n}");
        }
    }

    /// Every truncation and every single-byte change of the header is an error or a valid model,
    /// never a panic; truncations are always errors.
    #[test]
    fn corrupted_files_are_typed_errors() {
        let bytes = tiny().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(ModelFile::from_bytes(&bytes[..cut], &Device::Cpu).is_err(), "truncated at {cut}");
        }
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for i in 0..header_len {
            for v in [0u8, 0xff, bytes[i] ^ 0x20] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = ModelFile::from_bytes(&b, &Device::Cpu);
            }
        }
        // A NaN weight is refused by name.
        let mut b = bytes.clone();
        let n = b.len();
        b[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(ModelFile::from_bytes(&b, &Device::Cpu), Err(Error::NonFinite { .. })));
    }

    /// A negative running variance imported silently and then classified at chance (issue 13,
    /// item 10); it is refused by name.
    #[test]
    fn a_negative_running_variance_is_refused() {
        let m = tiny();
        let mut tensors = m.tensors.clone();
        let name = tensors.keys().find(|n| n.ends_with("running_var")).unwrap().clone();
        let t = &tensors[&name];
        let mut v = t.to_vec1::<f32>().unwrap();
        v[0] = -0.25;
        tensors.insert(name.clone(), Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap());
        match ModelFile::new(m.meta.clone(), tensors) {
            Err(Error::NegativeVariance { name: n, value }) => assert_eq!((n, value), (name, -0.25)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_errors_are_specific() {
        let m = tiny();
        let mut md = m.meta.to_metadata();
        md.insert(KEY_VERSION.into(), "2".into());
        let e = ModelMeta::from_metadata(&md).unwrap_err();
        assert!(matches!(e, Error::UnsupportedVersion { .. }));
        let e = e.in_file(Path::new("/models/m.safetensors"));
        assert_eq!(
            e.to_string(),
            "/models/m.safetensors: classmod model file of format version 2: this build reads version 1"
        );
        md.remove(KEY_ARCH);
        md.insert(KEY_VERSION.into(), "1".into());
        assert!(matches!(ModelMeta::from_metadata(&md), Err(Error::MissingMetadata { key: KEY_ARCH })));
        let mut md = m.meta.to_metadata();
        md.insert(KEY_CLASSES.into(), "[\"only-one\"]".into());
        assert!(matches!(ModelMeta::from_metadata(&md), Err(Error::InconsistentModel { .. })));
        md.insert(KEY_CLASSES.into(), "{".into());
        assert!(matches!(ModelMeta::from_metadata(&md), Err(Error::BadMetadata { .. })));
    }
}
