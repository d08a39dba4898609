//! The CPU path as an [`Engine`]: the base's folded layers packed once for their planes
//! (`crate::cpu`), images in NHWC, mask modules' masks as NHWC bytes applied inside the
//! convolutions' epilogues (the layers before the first masked site computed once for the whole
//! group), compact modules' branches packed together on their trunk.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::{per_module, Activation, Engine, GroupFeatures, GroupPlan, Images, Normalized};
use crate::cpu::branches::CpuBranches;
use crate::cpu::conv::{PackedConv, Plane};
use crate::cpu::net::{to_nchw, to_nhwc, CpuBlock, CpuNet, CpuShortcut, SiteMasks, SiteVisitor};
use crate::model::graph::ReluHook;
use crate::model::layers::{Block, BlockShortcut, StemLayers};
use crate::model::linear::Linear;
use crate::model::network::ReluSite;
use crate::module::NodeMask;
use crate::{Branch, BranchWeights, Error, InputSpec, Precision, Result};

/// The CPU path's engine; the packed network is shared by the plans built on it.
#[derive(Debug, Clone)]
pub(crate) struct CpuEngine {
    net: Arc<CpuNet>,
}

impl CpuEngine {
    /// `stem` and `blocks` packed for input plane `input`.
    pub(crate) fn new(stem: &StemLayers, blocks: &[Block], input: Plane) -> Result<Self> {
        let packed = stem.conv.packed(input)?;
        let mut first = packed.out_plane(input);
        if stem.max_pool {
            first = crate::cpu::pool::max_pooled(first);
        }
        let blocks = packed_blocks(blocks, first)?;
        let net = CpuNet { stem: packed, stem_pool: stem.max_pool, blocks, input, small_batch: Default::default() };
        Ok(CpuEngine { net: Arc::new(net) })
    }
}

/// `blocks` on the CPU path, the first taking plane `p`.
pub(crate) fn packed_blocks(blocks: &[Block], mut p: Plane) -> candle_core::Result<Vec<CpuBlock>> {
    // Every convolution's input plane is fixed by the model's: follow it through the blocks.
    blocks
        .iter()
        .map(|b| {
            let shortcut = match &b.shortcut {
                BlockShortcut::Identity => CpuShortcut::Identity,
                BlockShortcut::SubsamplePad { stride, pad } => CpuShortcut::SubsamplePad { stride: *stride, pad: *pad },
                BlockShortcut::Projection(s) => CpuShortcut::Projection(s.packed(p)?),
            };
            let convs = b
                .convs
                .iter()
                .map(|c| {
                    let packed = c.packed(p)?;
                    p = packed.out_plane(p);
                    Ok(packed)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(CpuBlock { convs, shortcut })
        })
        .collect()
}

/// The images as NHWC values: borrowed when they are, converted once from an NCHW tensor.
fn nhwc<'a>(x: &Images<'a>) -> Result<(std::borrow::Cow<'a, [f32]>, usize)> {
    Ok(match *x {
        Images::Nhwc { values, count } => (values.into(), count),
        Images::Nchw(t) => {
            let (b, c, h, w) = t.dims4()?;
            let values = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
            (to_nhwc(&values, b, c, h * w).into(), b)
        }
    })
}

fn activation((values, p, channels): (Vec<f32>, Plane, usize), images: usize) -> Activation {
    Activation { values, images, height: p.height, width: p.width, channels }
}

/// A [`ReluHook`] called from the CPU path: each NHWC site activation as an NCHW tensor, and
/// what the hook returns copied back if it is another tensor (decomposition's observers; the
/// conversion is theirs, serving never pays it).
struct HookVisitor<'a> {
    hook: &'a mut dyn ReluHook,
}

impl SiteVisitor for HookVisitor<'_> {
    fn visit(&mut self, site: usize, act: &mut [f32], [b, h, w, c]: [usize; 4]) -> Result<()> {
        let t = Tensor::from_vec(to_nchw(act, b, c, h * w), (b, c, h, w), &Device::Cpu)?;
        let id = t.id();
        let out = self.hook.after_relu(site, t)?;
        if out.id() != id {
            if out.dims() != [b, c, h, w] {
                return Err(Error::HookChangedShape { site });
            }
            act.copy_from_slice(&to_nhwc(&out.flatten_all()?.to_vec1::<f32>()?, b, c, h * w));
        }
        Ok(())
    }
}

impl Engine for CpuEngine {
    fn weight_bytes(&self) -> u64 {
        self.net.weight_bytes()
    }

    fn precision(&self) -> Precision {
        Precision::F32
    }

    fn with_precision(&self, precision: Precision) -> Result<Arc<dyn Engine>> {
        if precision == Precision::F32 {
            return Ok(Arc::new(self.clone()));
        }
        Err(Error::PrecisionUnsupported {
            precision,
            device: "the CPU".into(),
            reason: "the CPU path computes in f32 only; half precision is for a GPU (--device cuda)".into(),
        })
    }

    fn normalize(&self, spec: &InputSpec, pixels: &[u8], count: usize) -> Result<Normalized> {
        let mut x = vec![0f32; pixels.len()];
        spec.normalize_into_nhwc(pixels, &mut x);
        Ok(Normalized::Nhwc(x, count))
    }

    fn features(&self, x: Images, hook: &mut dyn ReluHook) -> Result<Vec<f32>> {
        let (x, images) = nhwc(&x)?;
        if hook.is_identity() {
            self.net.features(&x, images, None, None)
        } else {
            self.net.features(&x, images, None, Some(&mut HookVisitor { hook }))
        }
    }

    fn trunk(&self, x: Images, blocks: usize) -> Result<Activation> {
        let (x, images) = nhwc(&x)?;
        Ok(activation(self.net.trunk(&x, images, blocks)?, images))
    }

    fn trunk_and_features(&self, x: Images, blocks: usize) -> Result<(Activation, Vec<f32>)> {
        let (x, images) = nhwc(&x)?;
        let (act, p, c, feats) = self.net.trunk_and_features(&x, images, blocks)?;
        Ok((activation((act, p, c), images), feats))
    }

    fn plan_masks(&self, masks: &[&NodeMask], sites: &[ReluSite]) -> Result<Arc<dyn GroupPlan>> {
        Ok(Arc::new(MaskPlan { net: self.net.clone(), masks: stack_nhwc(masks, sites) }))
    }

    fn plan_branches(
        &self,
        branches: &[&BranchWeights],
        trunk_blocks: usize,
        (height, width): (usize, usize),
    ) -> Result<Arc<dyn GroupPlan>> {
        let branches = cpu_branches(branches, Plane { height, width })?;
        Ok(Arc::new(BranchPlan { net: self.net.clone(), trunk_blocks, branches }))
    }

    #[cfg(test)]
    fn cpu_net(&self) -> Option<&CpuNet> {
        Some(&self.net)
    }
}

/// The masks in the CPU path's NHWC order: node `(c, y, x)` of module m at
/// `(m*H*W + y*W + x)*C + c`; `None` at a site where every module keeps every node. One byte a
/// node: a served module's masks are its resident memory beyond the shared base.
fn stack_nhwc(modules: &[&NodeMask], sites: &[ReluSite]) -> SiteMasks {
    let sites = sites
        .iter()
        .enumerate()
        .map(|(s, site)| {
            if modules.iter().all(|m| m.sites[s].all_kept()) {
                return None;
            }
            let (c, pixels) = (site.channels, site.height * site.width);
            let mut out = vec![0u8; modules.len() * pixels * c];
            for (m, module) in modules.iter().enumerate() {
                let nchw = module.sites[s].to_u8();
                let dst = &mut out[m * pixels * c..][..pixels * c];
                for ch in 0..c {
                    for (i, &v) in nchw[ch * pixels..][..pixels].iter().enumerate() {
                        dst[i * c + ch] = v;
                    }
                }
            }
            Some(out)
        })
        .collect();
    SiteMasks { sites, modules: modules.len() }
}

/// Mask modules on the CPU path: one forward of batch k*B, each module's slice masked in the
/// convolutions' epilogues, the layers before the first masked site computed once for the B
/// images.
#[derive(Debug)]
struct MaskPlan {
    net: Arc<CpuNet>,
    masks: SiteMasks,
}

impl GroupPlan for MaskPlan {
    fn bytes(&self) -> u64 {
        self.masks.sites.iter().flatten().map(|s| s.len() as u64).sum()
    }

    fn features(&self, x: Images, linear: &Linear) -> Result<GroupFeatures> {
        let (x, images) = nhwc(&x)?;
        let k = self.masks.modules;
        let feats = self.net.masked_features(&x, images, &self.masks)?;
        let logits = linear.apply(&feats, k * images);
        Ok(GroupFeatures { features: per_module(&feats, k), logits: Some(per_module(&logits, k)) })
    }
}

/// Compact modules on the CPU path: the trunk once, then every branch on it.
#[derive(Debug)]
struct BranchPlan {
    net: Arc<CpuNet>,
    trunk_blocks: usize,
    branches: CpuBranches,
}

impl GroupPlan for BranchPlan {
    fn bytes(&self) -> u64 {
        self.branches.weight_bytes()
    }

    fn features(&self, x: Images, _: &Linear) -> Result<GroupFeatures> {
        let (x, images) = nhwc(&x)?;
        let features = self.net.branched_features(&x, images, self.trunk_blocks, &self.branches)?;
        Ok(GroupFeatures { features, logits: None })
    }
}

/// The branches of `weights` packed together for the CPU path on a trunk activation of plane
/// `plane`: their entry convolutions as one (output channels side by side, in order), then each
/// branch's blocks.
pub(crate) fn cpu_branches(weights: &[&BranchWeights], plane: Plane) -> Result<CpuBranches> {
    let Some(in_channels) = weights.first().map(|w| w.spec().in_channels) else {
        return Err(Error::Misuse { what: "a group of no branches".into() });
    };
    if let Some(w) = weights.iter().find(|w| w.spec().in_channels != in_channels) {
        return Err(Error::InvalidArchitecture {
            reason: format!("a branch from {} channels among branches from {in_channels}", w.spec().in_channels),
        });
    }
    let (mut kernel, mut bias) = (Vec::new(), Vec::new());
    for w in weights {
        kernel.extend_from_slice(w.values("entry.weight"));
        bias.extend_from_slice(w.values("entry.bias"));
    }
    let total = bias.len();
    let stride = weights[0].spec().entry_stride();
    if let Some(w) = weights.iter().find(|w| w.spec().entry_stride() != stride) {
        return Err(Error::InvalidArchitecture {
            reason: format!(
                "a branch whose entry has stride {} among ones of stride {stride}",
                w.spec().entry_stride()
            ),
        });
    }
    let entry = PackedConv::for_plane(&kernel, bias, [total, in_channels, 3, 3], stride, 1, plane);
    let after_entry = entry.out_plane(plane);
    let branches = weights
        .iter()
        .map(|w| {
            let b = Branch::build(w, &Device::Cpu)?;
            Ok((w.spec().width, packed_blocks(b.blocks(), after_entry)?))
        })
        .collect::<Result<Vec<_>>>()?;
    CpuBranches::new(entry, plane, branches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::{tiny_model, tiny_model_b};
    use crate::ResNet;

    /// Three modules' masks dropping nodes from site `first` on (none before it).
    fn masks_from(sites: &[ReluSite], first: usize) -> Vec<NodeMask> {
        (0..3usize)
            .map(|m| {
                let mut mask = NodeMask::ones(sites);
                for (s, site) in mask.sites.iter_mut().enumerate().skip(first) {
                    for i in (m + s..site.len()).step_by(3 + m) {
                        site.set(i, false);
                    }
                }
                mask
            })
            .collect()
    }

    /// The mask plan computes the layers before the first masked site once for the B images
    /// (the stem alone when the stem's site is masked, the stem and the unmasked blocks
    /// otherwise, the whole network when nothing is masked) and gives the same bits as the
    /// whole network run on the k*B stacked images with every site masked in the epilogues (the
    /// way every layer ran k times before), for batches small enough to run whole and large
    /// enough to slice, on both shortcut options and a bottleneck network with the ImageNet
    /// stem (whose site lies before its max-pool: masked there, nothing is shared).
    #[test]
    fn layers_before_the_first_masked_site_run_once_and_change_nothing() {
        let bottleneck = crate::testing::tiny_model::tiny_torchvision(12, true, [1, 1, 1, 1], 28);
        for model in [tiny_model(9), tiny_model_b(10), bottleneck] {
            let len = model.meta.input.image_len();
            let net = ResNet::new(&model, &Device::Cpu).unwrap();
            let cpu = net.engine().cpu_net().unwrap();
            let sites = net.relu_sites();
            for first in [0, 1, 3, 5, sites.len()] {
                let masks = masks_from(&sites, first);
                let refs: Vec<&NodeMask> = masks.iter().collect();
                let stacked = stack_nhwc(&refs, &sites);
                assert_eq!(stacked.sites.iter().position(Option::is_some), (first < sites.len()).then_some(first));
                for images in [1, 2, 9] {
                    let x: Vec<f32> = (0..images * len).map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0).collect();
                    let once = cpu.masked_features(&x, images, &stacked).unwrap();
                    let every = cpu.features(&x.repeat(3), 3 * images, Some(&stacked), None).unwrap();
                    assert_eq!(once, every, "first masked site {first}, {images} images");
                }
            }
        }
    }
}
