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

/// Imports a PyTorch safetensors buffer.
pub fn import_bytes(bytes: &[u8], opts: &ImportOptions) -> Result<ModelFile, HostError> {
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
        mean: opts.mean.clone().unwrap_or_else(|| vec![0.0; c]),
        std: opts.std.clone().unwrap_or_else(|| vec![1.0; c]),
    };
    let class_names = opts.class_names.clone().unwrap_or_else(|| generic_class_names(arch.num_classes));
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

    #[test]
    fn generic_names_round_trip() {
        assert!(are_generic(&generic_class_names(3)));
        assert!(!are_generic(&["cat".to_string()]));
    }
}
