//! The parts of a stored class module that do not depend on the container: the head, site and
//! branch descriptions (JSON) and the tensors (packed mask bits per ReLU site for a mask module,
//! the folded branch weights `branch.*` for a compact one, head weights). Shared by the module
//! blob ([`crate::pack::module_blob`]); one encoding per module kind.

use serde::{Deserialize, Serialize};

use crate::model::branch::{BranchSpec, BranchWeights};
use crate::model::network::ReluSite;
use crate::module::mask::{NodeMask, SiteMask};
use crate::module::{ClassId, ClassModule, ModuleHead, ModuleKind};
use crate::Result;
use crate::{Error, InputSpec, ModelKey};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum HeadMeta {
    Channel { class_index: usize },
    Calibrated,
}

/// The module kind a container names (`None`: written before kinds were tagged, a mask), refused
/// by name when this build does not run it, before anything else of the module is parsed.
pub(crate) fn check_kind(kind: Option<&str>) -> Result<()> {
    match kind {
        None | Some("mask") | Some("compact") => Ok(()),
        Some(other) => Err(Error::UnknownModuleKind { kind: other.into(), known: ModuleKind::KNOWN }),
    }
}

/// `[name, channels, height, width]` of each ReLU site, in network order.
pub(crate) type SiteMeta = Vec<(String, usize, usize, usize)>;

/// A tensor of a stored module: bytes are little-endian; `u8` = packed mask bits, else f32.
pub(crate) struct PartTensor {
    pub name: String,
    pub u8: bool,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub(crate) fn mask_name(site: usize) -> String {
    format!("mask.{site:03}")
}

/// The stored parts of a module besides its tensors.
pub(crate) struct PartsMeta {
    pub head: HeadMeta,
    /// The ReLU sites a mask module's masks follow (empty for a compact module).
    pub sites: SiteMeta,
    /// A compact module's branch.
    pub branch: Option<BranchSpec>,
}

#[cfg(feature = "host")]
/// Head, site and branch descriptions and the tensors of `m`; a mask module's masks must fit
/// `sites` (which a compact module does not use).
pub(crate) fn encode(m: &ClassModule, sites: &[ReluSite]) -> Result<(PartsMeta, Vec<PartTensor>)> {
    let (site_meta, branch, mut tensors) = match &m.kind {
        ModuleKind::Mask(mask) => {
            if !mask.matches(sites) {
                return Err(Error::ModuleDoesNotFit {
                    class: m.class_name.clone(),
                    reason: "its masks do not fit the given sites".into(),
                });
            }
            let site_meta = sites.iter().map(|s| (s.name.clone(), s.channels, s.height, s.width)).collect();
            let tensors: Vec<PartTensor> = mask
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let bytes = s.to_bytes();
                    PartTensor { name: mask_name(i), u8: true, shape: vec![bytes.len()], bytes }
                })
                .collect();
            (site_meta, None, tensors)
        }
        ModuleKind::Compact(b) => {
            let tensors = b
                .tensors()
                .map(|(name, shape, values)| PartTensor {
                    name: format!("branch.{name}"),
                    u8: false,
                    shape,
                    bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                })
                .collect();
            (Vec::new(), Some(*b.spec()), tensors)
        }
    };
    let head = match &m.head {
        ModuleHead::Channel { class_index } => HeadMeta::Channel { class_index: *class_index },
        ModuleHead::Calibrated { weight, bias } => {
            tensors.push(PartTensor {
                name: "head.weight".into(),
                u8: false,
                shape: vec![weight.len()],
                bytes: weight.iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
            tensors.push(PartTensor {
                name: "head.bias".into(),
                u8: false,
                shape: vec![1],
                bytes: bias.to_le_bytes().to_vec(),
            });
            HeadMeta::Calibrated
        }
    };
    Ok((PartsMeta { head, sites: site_meta, branch }, tensors))
}

fn f32s(b: Vec<u8>) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// What identifies a module besides its parts.
pub(crate) struct ModuleIdentity {
    pub class_id: u32,
    pub class_name: String,
    pub base_key: ModelKey,
    pub input: InputSpec,
}

/// Rebuilds a module of kind `kind` (`None`: a mask); `tensor(name, is_u8)` returns a stored
/// tensor's bytes or an error.
pub(crate) fn decode(
    id: ModuleIdentity,
    kind: Option<&str>,
    parts: PartsMeta,
    tensor: impl Fn(&str, bool) -> Result<Vec<u8>>,
) -> Result<ClassModule> {
    id.input.validate()?;
    let kind = match (kind, parts.branch) {
        (None | Some("mask"), None) => ModuleKind::Mask(decode_mask(parts.sites, &tensor)?),
        (Some("compact"), Some(spec)) => {
            spec.validate()?;
            let values = spec
                .tensor_shapes()
                .into_iter()
                .map(|(name, _)| Ok((name.clone(), f32s(tensor(&format!("branch.{name}"), false)?))))
                .collect::<Result<_>>()?;
            ModuleKind::Compact(BranchWeights::new(spec, values)?)
        }
        (kind, branch) => {
            return Err(Error::BadMetadata {
                key: "branch",
                reason: format!(
                    "a {} module {} a branch",
                    kind.unwrap_or("mask"),
                    if branch.is_some() { "with" } else { "without" }
                ),
            })
        }
    };
    let head = match parts.head {
        HeadMeta::Channel { class_index } => ModuleHead::Channel { class_index },
        HeadMeta::Calibrated => {
            let weight = f32s(tensor("head.weight", false)?);
            let bias = f32s(tensor("head.bias", false)?);
            let [bias] = bias[..] else {
                return Err(Error::TensorLength { name: "head.bias".into(), expected: vec![1], found: bias.len() });
            };
            if weight.iter().chain([&bias]).any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { name: "head".into() });
            }
            ModuleHead::Calibrated { weight, bias }
        }
    };
    Ok(ClassModule {
        class_id: ClassId(id.class_id),
        class_name: id.class_name,
        base_key: id.base_key,
        input: id.input,
        kind,
        head,
        min_score: None,
    })
}

fn decode_mask(site_meta: SiteMeta, tensor: &impl Fn(&str, bool) -> Result<Vec<u8>>) -> Result<NodeMask> {
    let mut sites = Vec::with_capacity(site_meta.len());
    for (i, (name, c, h, w)) in site_meta.into_iter().enumerate() {
        if c.checked_mul(h).and_then(|n| n.checked_mul(w)).is_none_or(|n| n == 0 || n > 1 << 32) {
            return Err(Error::BadMetadata {
                key: "sites",
                reason: format!("site {name} has an invalid shape {c}x{h}x{w}"),
            });
        }
        let site = ReluSite { name, channels: c, height: h, width: w };
        sites.push(SiteMask::from_bytes(&site, &tensor(&mask_name(i), true)?)?);
    }
    Ok(NodeMask { sites })
}
