//! `classmod import`: turns a PyTorch-exported safetensors file into a self-describing model.
//! Architecture detection reads tensor names and shapes only; the canonical names are the
//! CIFAR-lineage ones (`shortcut.0/1`, `linear`), so torchvision-lineage names (`downsample.0/1`,
//! `fc`) and DataParallel's `module.` prefix are rewritten first.

use crate::HostError;
use std::collections::HashMap;

use classmod_runtime::host::{check_tensors, read_safetensors};
use classmod_runtime::host::{ModelFile, ModelMeta, ResNetConfig, Shortcut, Tensor};
use classmod_runtime::{Device, InputSpec};

/// What the user says about the model beyond its tensors.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Expected depth, e.g. 20 for `resnet20`; `None` = detect.
    pub depth: Option<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub class_names: Option<Vec<String>>,
    /// Input height and width; `None` = 32x32 for 3 channels, 28x28 for 1 channel.
    pub input_size: Option<(usize, usize)>,
}

/// Generic names given to classes of a model imported without `--class-names`.
pub fn generic_class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

/// Whether `names` are the generic ones (datasets then fall back to their own order).
pub fn are_generic(names: &[String]) -> bool {
    names.iter().enumerate().all(|(i, n)| *n == format!("class{i}"))
}

/// Canonical name of a PyTorch parameter, or `None` for tensors that carry no weights.
fn canonical_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    if name.ends_with("num_batches_tracked") {
        return None;
    }
    let name = name.replace(".downsample.", ".shortcut.");
    Some(match name.strip_prefix("fc.") {
        Some(rest) => format!("linear.{rest}"),
        None => name,
    })
}

fn dims(tensors: &HashMap<String, Tensor>, name: &str) -> Result<Vec<usize>, HostError> {
    tensors.get(name).map(|t| t.dims().to_vec()).ok_or_else(|| HostError::MissingTensor { name: name.to_string() })
}

/// Detects the architecture from canonical tensor names and shapes.
pub fn detect_arch(tensors: &HashMap<String, Tensor>) -> Result<ResNetConfig, HostError> {
    let stem = dims(tensors, "conv1.weight")?;
    let [_, in_channels, 3, 3] = stem[..] else {
        return Err(classmod_runtime::Error::TensorShape {
            name: "conv1.weight".into(),
            expected: vec![16, 3, 3, 3],
            found: stem,
        }
        .into());
    };
    let linear = dims(tensors, "linear.weight")?;
    let [num_classes, _] = linear[..] else {
        return Err(classmod_runtime::Error::TensorShape {
            name: "linear.weight".into(),
            expected: vec![10, 64],
            found: linear,
        }
        .into());
    };
    let mut widths = [0; 3];
    let mut blocks = [0; 3];
    for s in 0..3 {
        let first = format!("layer{}.0.conv1.weight", s + 1);
        widths[s] = *dims(tensors, &first)?.first().unwrap_or(&0);
        blocks[s] = (0..).take_while(|b| tensors.contains_key(&format!("layer{}.{b}.conv1.weight", s + 1))).count();
    }
    if blocks[1] != blocks[0] || blocks[2] != blocks[0] {
        return Err(HostError::Import {
            reason: format!("stages have {blocks:?} blocks; a CIFAR ResNet has the same number in each"),
        });
    }
    let shortcut = if tensors.keys().any(|k| k.contains(".shortcut.")) { Shortcut::B } else { Shortcut::A };
    let cfg = ResNetConfig { blocks_per_stage: blocks[0], widths, shortcut, in_channels, num_classes };
    cfg.validate()?;
    Ok(cfg)
}

/// What a PyTorch file's own safetensors metadata says of its input and classes: the keys `mean`
/// and `std` (per channel, of pixels scaled to [0, 1]) and `classes`, comma-separated, as export
/// scripts commonly write them (../shared's chenyaofo CIFAR-100 models do). An import uses them
/// where no option gives them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileMetadata {
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub class_names: Option<Vec<String>>,
}

/// The [`FileMetadata`] of a safetensors buffer (none of it when the header has no metadata); a
/// value that is not a list of numbers is an error naming its key.
pub fn file_metadata(bytes: &[u8]) -> Result<FileMetadata, HostError> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| classmod_runtime::Error::NotSafetensors { reason: e.to_string() })?;
    let Some(md) = header.metadata() else { return Ok(FileMetadata::default()) };
    let numbers = |key: &str| -> Result<Option<Vec<f32>>, HostError> {
        md.get(key)
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().parse::<f32>().ok().filter(|f| f.is_finite()))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| HostError::Import {
                        reason: format!("metadata `{key}` = `{v}` is not a list of numbers"),
                    })
            })
            .transpose()
    };
    let class_names = ["classes", "class_names"]
        .iter()
        .find_map(|k| md.get(*k))
        .map(|v| v.split(',').map(|c| c.trim().to_string()).collect());
    Ok(FileMetadata { mean: numbers("mean")?, std: numbers("std")?, class_names })
}

/// Imports a PyTorch safetensors buffer; normalisation and class names the options leave out
/// come from the file's own metadata when it has them ([`file_metadata`]).
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<ModelFile, HostError> {
    let from_file = file_metadata(bytes)?;
    let raw = read_safetensors(bytes, &Device::Cpu)?;
    let mut tensors = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        if let Some(c) = canonical_name(&name) {
            tensors.insert(c, t);
        }
    }
    let arch = detect_arch(&tensors)?;
    if let Some(d) = opts.depth {
        if d != arch.depth() {
            return Err(HostError::Import {
                reason: format!(
                    "--arch says resnet{d}, the tensors describe {} ({} blocks per stage)",
                    arch.name(),
                    arch.blocks_per_stage
                ),
            });
        }
    }
    let c = arch.in_channels;
    let (height, width) = opts.input_size.unwrap_or(if c == 1 { (28, 28) } else { (32, 32) });
    let input = InputSpec {
        channels: c,
        height,
        width,
        mean: opts.mean.clone().or(from_file.mean).unwrap_or_else(|| vec![0.0; c]),
        std: opts.std.clone().or(from_file.std).unwrap_or_else(|| vec![1.0; c]),
    };
    let class_names =
        opts.class_names.clone().or(from_file.class_names).unwrap_or_else(|| generic_class_names(arch.num_classes));
    let meta = ModelMeta { arch, input, class_names };
    // check_tensors names the first missing, unexpected or mis-shaped tensor.
    let tensors = check_tensors(&meta.arch, tensors)?;
    Ok(ModelFile::new(meta, tensors)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonicalised() {
        assert_eq!(canonical_name("module.layer1.0.conv1.weight").as_deref(), Some("layer1.0.conv1.weight"));
        assert_eq!(
            canonical_name("layer2.0.downsample.1.running_var").as_deref(),
            Some("layer2.0.shortcut.1.running_var")
        );
        assert_eq!(canonical_name("fc.bias").as_deref(), Some("linear.bias"));
        assert_eq!(canonical_name("module.bn1.num_batches_tracked"), None);
    }

    /// A file's metadata fills what the options leave out; a malformed value names its key.
    #[test]
    fn normalisation_and_classes_come_from_the_file_metadata() {
        let t = candle_core::Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        let file = |md: &[(&str, &str)]| {
            let md = md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            safetensors::serialize([("x", t.clone())], Some(md)).unwrap()
        };
        let md =
            file_metadata(&file(&[("mean", "0.5, 0.25,0.125"), ("std", "1,2,4"), ("classes", "cat,dog")])).unwrap();
        assert_eq!(md.mean, Some(vec![0.5, 0.25, 0.125]));
        assert_eq!(md.std, Some(vec![1.0, 2.0, 4.0]));
        assert_eq!(md.class_names, Some(vec!["cat".to_string(), "dog".to_string()]));
        assert_eq!(file_metadata(&file(&[("arch", "resnet20")])).unwrap(), FileMetadata::default());
        let err = file_metadata(&file(&[("std", "1,two,3")])).unwrap_err().to_string();
        assert!(err.contains("`std`"), "{err}");
    }

    #[test]
    fn generic_names_round_trip() {
        assert!(are_generic(&generic_class_names(3)));
        assert!(!are_generic(&["cat".to_string()]));
    }
}
