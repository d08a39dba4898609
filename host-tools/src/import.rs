//! `classmod import`: turns a PyTorch-exported safetensors file into a self-describing model.
//! Architecture detection reads tensor names and shapes only; the canonical names are the
//! CIFAR-lineage ones (`shortcut.0/1`, `linear`), so torchvision-lineage names (`downsample.0/1`,
//! `fc`) and DataParallel's `module.` prefix are rewritten first.

use crate::HostError;
use std::collections::HashMap;

use classmod_runtime::host::{check_tensors, read_safetensors};
use classmod_runtime::host::{Architecture, BlockKind, Network, Stage, Stem};
use classmod_runtime::host::{ModelFile, ModelMeta, ResNetConfig, Shortcut, Tensor};
use classmod_runtime::{Device, InputSpec, Resize};

/// What the user says about the model beyond its tensors.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The architecture expected (`resnet20`, `resnet50`, `wide_resnet50_2`: a depth, or the
    /// name the tensors must give); `None` = whatever they describe.
    pub arch: Option<String>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub class_names: Option<Vec<String>>,
    /// Input height and width; `None` = 224x224 for a network with the ImageNet stem (with
    /// torchvision's resize to 256 and centre crop), else 32x32 for 3 channels, 28x28 for 1.
    pub input_size: Option<(usize, usize)>,
    /// How images of another size are made the input's; `None` = torchvision's resize to 256/224
    /// of the input and centre crop for a network with the ImageNet stem, else a stretch.
    pub resize: Option<Resize>,
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

/// Detects the architecture from canonical tensor names and shapes: a CIFAR ResNet-(6n+2) (a
/// 3x3 stem and three stages of as many basic blocks, either shortcut option) as its few numbers,
/// anything else of the ResNet family as a whole [`Network`]: torchvision's ResNet-18/34
/// (basic blocks) and ResNet-50/101/152 and wide ResNets (bottleneck blocks, the stride on the
/// 3x3 as torchvision places it) after the 7x7 stem, the four-stage CIFAR variants after a 3x3
/// one. The classes come from `linear`'s rows. A layout none of these runs (grouped
/// convolutions, a missing stage) is an error naming the tensor and what was expected.
pub fn detect_arch(tensors: &HashMap<String, Tensor>) -> Result<Architecture, HostError> {
    let shape_error = |name: &str, expected: Vec<usize>, found: Vec<usize>| -> HostError {
        classmod_runtime::Error::TensorShape { name: name.into(), expected, found }.into()
    };
    let stem = dims(tensors, "conv1.weight")?;
    let (stem_channels, in_channels, stem) = match stem[..] {
        [c, i, 3, 3] => (c, i, Stem::Cifar3x3 { channels: c }),
        [c, i, 7, 7] => (c, i, Stem::ImageNet7x7 { channels: c }),
        _ => return Err(shape_error("conv1.weight", vec![64, 3, 7, 7], stem)),
    };
    let linear = dims(tensors, "linear.weight")?;
    let [num_classes, _] = linear[..] else {
        return Err(shape_error("linear.weight", vec![1000, 512], linear));
    };
    let stage_count = (1..).take_while(|s| tensors.contains_key(&format!("layer{s}.0.conv1.weight"))).count();
    if !(1..=8).contains(&stage_count) {
        return Err(HostError::Import {
            reason: format!("{stage_count} stages (`layer1.0.conv1.weight` ...): a ResNet has 1 to 8"),
        });
    }
    let mut stages = Vec::with_capacity(stage_count);
    for s in 1..=stage_count {
        let blocks = (0..).take_while(|b| tensors.contains_key(&format!("layer{s}.{b}.conv1.weight"))).count();
        let conv = |b: usize, i: usize| dims(tensors, &format!("layer{s}.{b}.conv{i}.weight"));
        let bottleneck = tensors.contains_key(&format!("layer{s}.0.conv3.weight"));
        let conv1 = conv(0, 1)?;
        if bottleneck && conv1.get(2) != Some(&1) {
            // A bottleneck opens with a 1x1: a third convolution after a 3x3 is a stray tensor.
            return Err(HostError::Import {
                reason: format!(
                    "unexpected tensor `layer{s}.0.conv3.weight`: `layer{s}.0.conv1.weight` is {conv1:?}, \
                     a basic block's, where a bottleneck's is 1x1"
                ),
            });
        }
        let (block, channels) = if bottleneck {
            let width = conv(0, 1)?.first().copied().unwrap_or(0);
            (BlockKind::Bottleneck { width }, conv(0, 3)?.first().copied().unwrap_or(0))
        } else {
            (BlockKind::Basic, conv(0, 1)?.first().copied().unwrap_or(0))
        };
        let stage = Stage { block, blocks, channels, stride: if s == 1 { 1 } else { 2 } };
        // A grouped 3x3 (ResNeXt) takes width/groups channels: name it, as nothing here runs it.
        let inner = stage.inner_width();
        let name = format!("layer{s}.0.conv2.weight");
        let conv2 = conv(0, 2)?;
        if conv2.len() == 4 && conv2[0] == inner && conv2[1] != inner && conv2[1] > 0 && inner.is_multiple_of(conv2[1])
        {
            return Err(HostError::Import {
                reason: format!(
                    "`{name}` is {conv2:?}: a grouped convolution of {} groups (ResNeXt), which classmod does not run; \
                     expected [{inner}, {inner}, 3, 3]",
                    inner / conv2[1]
                ),
            });
        }
        stages.push(stage);
    }
    let shortcut = if tensors.keys().any(|k| k.contains(".shortcut.")) { Shortcut::B } else { Shortcut::A };
    let cifar = stem == Stem::Cifar3x3 { channels: stem_channels }
        && stage_count == 3
        && stages.iter().all(|s| s.block == BlockKind::Basic && s.blocks == stages[0].blocks)
        && stem_channels == stages[0].channels;
    let arch: Architecture = if cifar {
        let widths = [stages[0].channels, stages[1].channels, stages[2].channels];
        ResNetConfig { blocks_per_stage: stages[0].blocks, widths, shortcut, in_channels, num_classes }.into()
    } else if shortcut == Shortcut::A {
        return Err(HostError::Import {
            reason: format!(
                "no projection shortcut (`layer2.0.downsample.0.weight`) in a network of {stage_count} stages: \
                 option-A shortcuts are the three-stage CIFAR ResNets' only"
            ),
        });
    } else {
        Network { in_channels, stem, stages, shortcut, num_classes }.into()
    };
    arch.validate()?;
    Ok(arch)
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
    if let Some(want) = &opts.arch {
        // `resnetN` asks for a depth (either shortcut, any widths); other names must match.
        let depth = want.strip_prefix("resnet").and_then(|d| d.parse::<usize>().ok());
        if depth.map_or(*want != arch.name(), |d| d != arch.depth()) {
            return Err(HostError::Import {
                reason: format!("--arch says {want}, the tensors describe {} ({} layers)", arch.name(), arch.depth()),
            });
        }
    }
    let c = arch.in_channels();
    let imagenet = matches!(arch.network().stem, Stem::ImageNet7x7 { .. });
    let (height, width) = opts.input_size.unwrap_or(match (imagenet, c) {
        (true, _) => (224, 224),
        (false, 1) => (28, 28),
        (false, _) => (32, 32),
    });
    // torchvision's input for its models (ImageNet statistics, resize and centre crop), unless
    // the options or the file say otherwise.
    let plain = InputSpec::new(c, height, width, vec![0.0; c], vec![1.0; c]);
    let defaults = match (imagenet, c) {
        (true, 3) => InputSpec::imagenet(height, width),
        (true, _) => InputSpec { resize: Resize::torchvision(height, width), ..plain },
        (false, _) => plain,
    };
    let input = InputSpec {
        mean: opts.mean.clone().or(from_file.mean).unwrap_or(defaults.mean),
        std: opts.std.clone().or(from_file.std).unwrap_or(defaults.std),
        resize: opts.resize.unwrap_or(defaults.resize),
        ..defaults
    };
    let class_names =
        opts.class_names.clone().or(from_file.class_names).unwrap_or_else(|| generic_class_names(arch.num_classes()));
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

    /// Zero tensors of `net`'s shapes under torchvision's names (`downsample`, `fc`).
    fn torchvision_tensors(net: &Network) -> HashMap<String, Tensor> {
        net.tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let name = name.replace(".shortcut.", ".downsample.").replace("linear.", "fc.");
                (canonical_name(&name).unwrap(), Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap())
            })
            .collect()
    }

    /// torchvision's layouts are told apart by their tensors alone: ResNet-18 and ResNet-50 by
    /// name, a four-stage network of a 3x3 stem as a whole description, CIFAR's three stages as
    /// a CIFAR ResNet; what no engine runs is refused naming the tensor and what was expected.
    #[test]
    fn torchvision_layouts_are_detected_and_others_refused_by_name() {
        for (depth, wpg, name) in [(18, 64, "resnet18"), (50, 64, "resnet50"), (50, 128, "wide_resnet50_2")] {
            let net = Network::torchvision(depth, wpg, 37).unwrap();
            let arch = detect_arch(&torchvision_tensors(&net)).unwrap();
            assert_eq!((arch.name().as_str(), arch.network()), (name, net));
        }
        // kuangliu's CIFAR ResNet-18: torchvision's stages after a 3x3 stem.
        let mut cifar18 = Network::torchvision(18, 64, 10).unwrap();
        cifar18.stem = Stem::Cifar3x3 { channels: 64 };
        assert_eq!(detect_arch(&torchvision_tensors(&cifar18)).unwrap().network(), cifar18);
        let r20 = ResNetConfig { shortcut: Shortcut::B, ..ResNetConfig::cifar(20, 3, 10).unwrap() };
        assert_eq!(detect_arch(&torchvision_tensors(&r20.network())).unwrap(), Architecture::Cifar(r20));

        // ResNeXt-50 32x4d: layer1's 3x3 is grouped (128 channels in 32 groups of 4).
        let mut resnext = torchvision_tensors(&Network::torchvision(50, 128, 10).unwrap());
        let grouped = Tensor::zeros((128, 4, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        resnext.insert("layer1.0.conv2.weight".into(), grouped);
        let err = detect_arch(&resnext).unwrap_err().to_string();
        assert!(
            err.contains("`layer1.0.conv2.weight`") && err.contains("32 groups") && err.contains("[128, 128, 3, 3]"),
            "{err}"
        );
        // A 5x5 stem: named, with the shape expected.
        let mut odd = torchvision_tensors(&Network::torchvision(18, 64, 10).unwrap());
        odd.insert("conv1.weight".into(), Tensor::zeros((64, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap());
        let err = detect_arch(&odd).unwrap_err().to_string();
        assert!(err.contains("conv1.weight") && err.contains("[64, 3, 7, 7]"), "{err}");
        // Four stages without projections: option A is CIFAR's three-stage family only.
        let mut no_projection = torchvision_tensors(&Network::torchvision(18, 64, 10).unwrap());
        no_projection.retain(|name, _| !name.contains(".shortcut."));
        let err = detect_arch(&no_projection).unwrap_err().to_string();
        assert!(err.contains("layer2.0.downsample.0.weight"), "{err}");
        // A missing tensor in the middle of a stage: the import names it.
        let mut torn = torchvision_tensors(&Network::torchvision(50, 64, 10).unwrap());
        torn.remove("layer3.2.bn2.running_var");
        let meta_err = check_tensors(&detect_arch(&torn).unwrap(), torn).unwrap_err().to_string();
        assert!(meta_err.contains("layer3.2.bn2.running_var"), "{meta_err}");
    }

    #[test]
    fn generic_names_round_trip() {
        assert!(are_generic(&generic_class_names(3)));
        assert!(!are_generic(&["cat".to_string()]));
    }
}
