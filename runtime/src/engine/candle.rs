//! candle's operations as an [`Engine`]: NCHW tensors on the network's device (a GPU, or the
//! CPU as the reference the CPU path is tested against), in f32 or, on a GPU, half precision.
//! Mask modules multiply their masks in at every site through the [`ReluHook`]; compact modules'
//! branches run one after the other on the trunk, which stays on the device.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use super::{per_module, Activation, Engine, GroupFeatures, GroupPlan, Images, Normalized};
use crate::model::graph::{NoHook, ReluHook};
use crate::model::layers::{Block, StemLayers};
use crate::model::linear::Linear;
use crate::model::network::ReluSite;
use crate::module::NodeMask;
use crate::{Branch, BranchWeights, InputSpec, Precision, Result};

/// The folded layers, shared by the plans built on them.
#[derive(Debug)]
struct Layers {
    stem: StemLayers,
    blocks: Vec<Block>,
}

/// candle's engine.
#[derive(Debug, Clone)]
pub(crate) struct CandleEngine {
    layers: Arc<Layers>,
    device: Device,
    precision: Precision,
    /// (H, W) of the input images.
    input: (usize, usize),
}

impl CandleEngine {
    /// `stem` and `blocks` (on `device`) for `input` = (H, W) images, computing in f32.
    pub(crate) fn new(stem: StemLayers, blocks: Vec<Block>, device: &Device, input: (usize, usize)) -> Self {
        let layers = Arc::new(Layers { stem, blocks });
        CandleEngine { layers, device: device.clone(), precision: Precision::F32, input }
    }

    /// The images as an NCHW tensor on the device: as they are, or NHWC values laid out once.
    fn tensor(&self, x: &Images) -> Result<Tensor> {
        Ok(match *x {
            Images::Nchw(t) => t.to_device(&self.device)?,
            Images::Nhwc { values, count } => {
                let ((h, w), c) = (self.input, self.layers.stem.conv.in_channels());
                Tensor::from_slice(values, (count, h, w, c), &self.device)?.permute((0, 3, 1, 2))?.contiguous()?
            }
        })
    }

    /// The stem and the first `blocks` blocks, `hook` seeing every site; f32 NCHW out.
    fn run(&self, x: &Tensor, blocks: usize, hook: &mut dyn ReluHook) -> Result<Tensor> {
        Ok(self.layers.run(x, 0..blocks, true, hook)?.to_dtype(DType::F32)?)
    }
}

impl Layers {
    /// Blocks `range` from `x`: the network's input, the stem first, when `from_input`; else the
    /// activation before `range.start`.
    fn run(
        &self,
        x: &Tensor,
        range: std::ops::Range<usize>,
        from_input: bool,
        hook: &mut dyn ReluHook,
    ) -> candle_core::Result<Tensor> {
        let mut x = if from_input {
            // The network's precision starts at its entry (a no-op in f32).
            let x = x.to_dtype(self.stem.conv.dtype())?;
            self.stem.forward_hooked(&x, hook)?
        } else {
            x.clone()
        };
        let mut site = 1 + self.blocks[..range.start].iter().map(Block::relu_sites).sum::<usize>();
        for block in &self.blocks[range] {
            x = block.forward_hooked(&x, site, hook)?;
            site += block.relu_sites();
        }
        Ok(x)
    }
}

/// Pooled `(B, C)` rows of an NCHW f32 activation.
fn pooled(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

/// An NCHW f32 tensor as an NHWC activation on the host.
fn activation(x: &Tensor) -> Result<Activation> {
    let (images, channels, height, width) = x.dims4()?;
    let values = x.permute((0, 2, 3, 1))?.contiguous()?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Activation { values, images, height, width, channels })
}

impl Engine for CandleEngine {
    fn weight_bytes(&self) -> u64 {
        self.layers.stem.conv.weight_bytes() + self.layers.blocks.iter().map(Block::weight_bytes).sum::<u64>()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn with_precision(&self, precision: Precision) -> Result<Arc<dyn Engine>> {
        let dtype = precision.dtype();
        let stem = self.layers.stem.to_dtype(dtype)?;
        let blocks = self.layers.blocks.iter().map(|b| b.to_dtype(dtype)).collect::<candle_core::Result<Vec<_>>>()?;
        let layers = Arc::new(Layers { stem, blocks });
        Ok(Arc::new(CandleEngine { layers, device: self.device.clone(), precision, input: self.input }))
    }

    fn normalize(&self, spec: &InputSpec, pixels: &[u8], count: usize) -> Result<Normalized> {
        let mut x = vec![0f32; pixels.len()];
        spec.normalize_into(pixels, &mut x);
        Ok(Normalized::Nchw(Tensor::from_vec(x, (count, spec.channels, spec.height, spec.width), &self.device)?))
    }

    fn features(&self, x: Images, hook: &mut dyn ReluHook) -> Result<Vec<f32>> {
        let x = self.tensor(&x)?;
        pooled(&self.run(&x, self.layers.blocks.len(), hook)?)
    }

    fn trunk(&self, x: Images, blocks: usize) -> Result<Activation> {
        activation(&self.run(&self.tensor(&x)?, blocks, &mut NoHook)?)
    }

    fn trunk_and_features(&self, x: Images, blocks: usize) -> Result<(Activation, Vec<f32>)> {
        let trunk = self.layers.run(&self.tensor(&x)?, 0..blocks, true, &mut NoHook)?;
        let rest = self.layers.run(&trunk, blocks..self.layers.blocks.len(), false, &mut NoHook)?;
        Ok((activation(&trunk.to_dtype(DType::F32)?)?, pooled(&rest.to_dtype(DType::F32)?)?))
    }

    fn plan_masks(&self, masks: &[&NodeMask], sites: &[ReluSite]) -> Result<Arc<dyn GroupPlan>> {
        let k = masks.len();
        let mut stacked = Vec::with_capacity(sites.len());
        for (s, site) in sites.iter().enumerate() {
            if masks.iter().all(|m| m.sites[s].all_kept()) {
                stacked.push(None);
                continue;
            }
            // One byte a node, widened to the activations' type at each site.
            let values: Vec<u8> = masks.iter().flat_map(|m| m.sites[s].to_u8()).collect();
            stacked.push(Some(Tensor::from_vec(values, (k, 1, site.channels, site.height, site.width), &self.device)?));
        }
        Ok(Arc::new(MaskPlan { engine: self.clone(), masks: stacked, modules: k }))
    }

    fn plan_branches(
        &self,
        branches: &[&BranchWeights],
        trunk_blocks: usize,
        _plane: (usize, usize),
    ) -> Result<Arc<dyn GroupPlan>> {
        let dtype = self.precision.dtype();
        let built = branches.iter().map(|b| Branch::build(b, &self.device)?.into_dtype(dtype));
        Ok(Arc::new(BranchPlan { engine: self.clone(), trunk_blocks, branches: built.collect::<Result<_>>()? }))
    }
}

/// Mask modules on candle's operations: the batch stacked k times, each copy multiplied by its
/// module's masks at every site (per site `(k, 1, C, H, W)` bytes; `None` where no module drops
/// a node).
#[derive(Debug)]
struct MaskPlan {
    engine: CandleEngine,
    masks: Vec<Option<Tensor>>,
    modules: usize,
}

struct StackedMasks<'a> {
    masks: &'a [Option<Tensor>],
    k: usize,
}

impl ReluHook for StackedMasks<'_> {
    fn after_relu(&mut self, site: usize, a: Tensor) -> candle_core::Result<Tensor> {
        match self.masks.get(site).and_then(Option::as_ref) {
            None => Ok(a),
            Some(m) => {
                let (kb, c, h, w) = a.dims4()?;
                let m = m.to_dtype(a.dtype())?;
                a.reshape((self.k, kb / self.k, c, h, w))?.broadcast_mul(&m)?.reshape((kb, c, h, w))
            }
        }
    }
}

impl GroupPlan for MaskPlan {
    fn bytes(&self) -> u64 {
        self.masks.iter().flatten().map(|t| t.elem_count() as u64).sum()
    }

    fn features(&self, x: Images, linear: &Linear) -> Result<GroupFeatures> {
        let k = self.modules;
        let x = self.engine.tensor(&x)?;
        let images = x.dim(0)?;
        let xs = if k == 1 { x } else { x.repeat((k, 1, 1, 1))? };
        let blocks = self.engine.layers.blocks.len();
        let feats = pooled(&self.engine.run(&xs, blocks, &mut StackedMasks { masks: &self.masks, k })?)?;
        let logits = linear.apply(&feats, k * images);
        Ok(GroupFeatures { features: per_module(&feats, k), logits: Some(per_module(&logits, k)) })
    }
}

/// Compact modules on candle's operations: the trunk once (kept on the device), then each
/// branch.
#[derive(Debug)]
struct BranchPlan {
    engine: CandleEngine,
    trunk_blocks: usize,
    branches: Vec<Branch>,
}

impl GroupPlan for BranchPlan {
    fn bytes(&self) -> u64 {
        self.branches.iter().map(Branch::resident_bytes).sum()
    }

    fn features(&self, x: Images, _: &Linear) -> Result<GroupFeatures> {
        let trunk = self.engine.run(&self.engine.tensor(&x)?, self.trunk_blocks, &mut NoHook)?;
        let features = self
            .branches
            .iter()
            .map(|b| Ok(b.forward(&trunk)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<_>>()?;
        Ok(GroupFeatures { features, logits: None })
    }
}
