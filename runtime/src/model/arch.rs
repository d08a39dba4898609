//! What a model file (and a base blob) says its network is: a CIFAR ResNet by its few numbers
//! ([`ResNetConfig`], stored as every model file stored it before four-stage networks, so those
//! files' JSON, and with it their [`crate::ModelKey`]s and their modules, are unchanged), or any
//! other ResNet by its whole description ([`Network`]: torchvision's ImageNet ResNets, and the
//! smaller networks of their layout that tests and training build).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::config::{ResNetConfig, Shortcut};
use crate::model::network::{BlockKind, Network, Stem};
use crate::Error;
use crate::Result;

/// A model's architecture (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// A CIFAR ResNet-(6n+2): three stages of basic blocks after a 3x3 stem.
    Cifar(ResNetConfig),
    /// Any other ResNet, described whole (shortcut option B).
    Network(Network),
}

impl From<ResNetConfig> for Architecture {
    fn from(cfg: ResNetConfig) -> Self {
        Architecture::Cifar(cfg)
    }
}

impl From<Network> for Architecture {
    fn from(net: Network) -> Self {
        Architecture::Network(net)
    }
}

impl Architecture {
    /// The network the engines build.
    pub fn network(&self) -> Network {
        match self {
            Architecture::Cifar(cfg) => cfg.network(),
            Architecture::Network(net) => net.clone(),
        }
    }

    /// The CIFAR ResNet's numbers, for what only that family has (option-A shortcuts, the
    /// training engine's three stages).
    pub fn as_cifar(&self) -> Option<&ResNetConfig> {
        match self {
            Architecture::Cifar(cfg) => Some(cfg),
            Architecture::Network(_) => None,
        }
    }

    /// Checks every size against what this runtime builds.
    pub fn validate(&self) -> Result<()> {
        match self {
            Architecture::Cifar(cfg) => cfg.validate(),
            Architecture::Network(net) => {
                if net.shortcut != Shortcut::B {
                    // Option A pads channels the CIFAR way; only `ResNetConfig` describes it.
                    return Err(Error::InvalidArchitecture {
                        reason: "a network described whole takes projection shortcuts (option B)".into(),
                    });
                }
                net.validate()
            }
        }
    }

    /// Channels of the input images.
    pub fn in_channels(&self) -> usize {
        match self {
            Architecture::Cifar(cfg) => cfg.in_channels,
            Architecture::Network(net) => net.in_channels,
        }
    }

    /// Outputs of the classifier: one per class.
    pub fn num_classes(&self) -> usize {
        match self {
            Architecture::Cifar(cfg) => cfg.num_classes,
            Architecture::Network(net) => net.num_classes,
        }
    }

    /// The same architecture with `classes` outputs (a model fine-tuned on other classes).
    pub fn with_classes(&self, classes: usize) -> Self {
        match self {
            Architecture::Cifar(cfg) => Architecture::Cifar(ResNetConfig { num_classes: classes, ..cfg.clone() }),
            Architecture::Network(net) => Architecture::Network(Network { num_classes: classes, ..net.clone() }),
        }
    }

    /// Layers with weights, counted as the ResNet papers do: the stem, every convolution of
    /// every block (not the shortcuts) and the classifier.
    pub fn depth(&self) -> usize {
        let net = self.network();
        let convs: usize = net.stages.iter().map(|s| s.blocks * s.block.relu_sites()).sum();
        convs + 2
    }

    /// A short human name: `resnet20` (a CIFAR ResNet, as [`ResNetConfig::name`] gives it),
    /// torchvision's name where the network is one of its models but for its classes
    /// (`resnet50`, `wide_resnet50_2`), else the depth, the block kind and the stage widths
    /// (`resnet26-bottleneck[16,32,64,128]`).
    pub fn name(&self) -> String {
        match self {
            Architecture::Cifar(cfg) => cfg.name(),
            Architecture::Network(net) => {
                let depth = self.depth();
                for wpg in [64, 128] {
                    if Network::torchvision(depth, wpg, net.num_classes).ok().is_some_and(|tv| tv == *net) {
                        return if wpg == 64 { format!("resnet{depth}") } else { format!("wide_resnet{depth}_2") };
                    }
                }
                let kind = match net.stages.first().map(|s| s.block) {
                    Some(BlockKind::Bottleneck { .. }) => "bottleneck",
                    _ => "basic",
                };
                let stem = match net.stem {
                    Stem::Cifar3x3 { .. } => "-cifar-stem",
                    Stem::ImageNet7x7 { .. } => "",
                };
                let widths: Vec<String> = net.stages.iter().map(|s| s.channels.to_string()).collect();
                format!("resnet{depth}-{kind}{stem}[{}]", widths.join(","))
            }
        }
    }

    /// Every parameter tensor, by its canonical name, with its shape, in forward order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.network().tensor_shapes()
    }

    /// Multiply-accumulates of one forward pass on an `h` x `w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.network().macs(h, w)
    }
}

// Each kind serialises as its own JSON: a CIFAR ResNet exactly as model files have always stored
// it (their keys hash this text).
impl Serialize for Architecture {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Architecture::Cifar(cfg) => cfg.serialize(s),
            Architecture::Network(net) => net.serialize(s),
        }
    }
}

// Told apart by their keys: `blocks_per_stage` is a CIFAR ResNet's, `stages` a whole
// description's. (An untagged enum would say only that neither matched.)
impl<'de> Deserialize<'de> for Architecture {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        let has = |key: &str| value.get(key).is_some();
        if has("blocks_per_stage") {
            serde_json::from_value(value).map(Architecture::Cifar).map_err(D::Error::custom)
        } else if has("stages") {
            serde_json::from_value(value).map(Architecture::Network).map_err(D::Error::custom)
        } else {
            Err(D::Error::custom("an architecture needs `blocks_per_stage` (a CIFAR ResNet) or `stages`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIFAR ResNet's JSON is what model files stored before four-stage networks (so their
    /// keys stay); a network round-trips; names say what each is.
    #[test]
    fn both_kinds_round_trip_and_cifar_json_is_unchanged() {
        let cfg = ResNetConfig::cifar(20, 3, 10).unwrap();
        let arch = Architecture::from(cfg.clone());
        assert_eq!(serde_json::to_string(&arch).unwrap(), serde_json::to_string(&cfg).unwrap());
        assert_eq!(serde_json::from_str::<Architecture>(&serde_json::to_string(&cfg).unwrap()).unwrap(), arch);
        assert_eq!((arch.name(), arch.depth()), ("resnet20".to_string(), 20));

        for (depth, wpg, name) in [(18, 64, "resnet18"), (50, 64, "resnet50"), (101, 128, "wide_resnet101_2")] {
            let net = Architecture::from(Network::torchvision(depth, wpg, 7).unwrap());
            let json = serde_json::to_string(&net).unwrap();
            assert_eq!(serde_json::from_str::<Architecture>(&json).unwrap(), net);
            assert_eq!((net.name().as_str(), net.depth(), net.num_classes()), (name, depth, 7));
            net.validate().unwrap();
        }
        let mut small = Network::torchvision(50, 64, 7).unwrap();
        for (s, stage) in small.stages.iter_mut().enumerate() {
            stage.channels = 16 << s;
            stage.blocks = 1;
        }
        assert_eq!(Architecture::from(small).name(), "resnet14-bottleneck[16,32,64,128]");
        let err = serde_json::from_str::<Architecture>(r#"{"depth": 50}"#).unwrap_err().to_string();
        assert!(err.contains("blocks_per_stage"), "{err}");
        let option_a = Network { shortcut: Shortcut::A, ..Network::torchvision(18, 64, 7).unwrap() };
        assert!(Architecture::from(option_a).validate().is_err());
    }
}
