//! Runs mask modules that share one base network as ONE batched forward: k modules on a batch of
//! B images is one pass of batch k*B over the shared weights, each slice of the batch multiplied
//! by its module's masks at every ReLU site (sites where every module keeps every node are
//! skipped). Modules of different bases run as one group per base.

use candle_core::{Device, Tensor};

use crate::class_module::{score, ClassModule, ModuleHead};
use crate::resnet::ReluHook;
use crate::{ModelError, ResNet};

/// Modules of one base, ready to run together.
#[derive(Debug, Clone)]
pub struct ModuleGroup {
    base: ResNet,
    modules: Vec<ClassModule>,
    /// Per ReLU site: the stacked masks `(k, 1, C, H, W)` as 0/1 bytes, or `None` if no module
    /// drops a node there. Bytes, not f32: a served module's masks are its resident memory beyond
    /// the shared base (1 byte a node instead of 4), and widening them at each site costs little
    /// beside the convolution that precedes it.
    masks: Vec<Option<Tensor>>,
}

/// Positive and negative logits of k modules on B images, module-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleOutputs {
    pub modules: usize,
    pub batch: usize,
    pub pos: Vec<f32>,
    pub neg: Vec<f32>,
}

impl ModuleOutputs {
    /// `sigmoid(pos - neg)` of module `m` on image `i`.
    pub fn score(&self, m: usize, i: usize) -> f32 {
        let j = m * self.batch + i;
        score(self.pos[j], self.neg[j])
    }

    /// Whether module `m` votes for its class on image `i` (positive logit beats negative).
    pub fn votes(&self, m: usize, i: usize) -> bool {
        let j = m * self.batch + i;
        self.pos[j] > self.neg[j]
    }
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

impl ModuleGroup {
    /// Groups `modules`, which must all be mask modules of `base` (same input spec, masks of its
    /// shape).
    pub fn new(base: ResNet, modules: Vec<ClassModule>) -> Result<Self, ModelError> {
        let sites = base.relu_sites();
        for m in &modules {
            if &m.input != base.input_spec() {
                return Err(ModelError::BadConfig(format!(
                    "module `{}` has another input spec than its base",
                    m.class_name
                )));
            }
            if !m.mask().matches(&sites) {
                return Err(ModelError::BadConfig(format!(
                    "module `{}`: its masks do not fit the base network",
                    m.class_name
                )));
            }
            // Indices and sizes from a file are checked here, so execution never indexes out of range.
            let (classes, features) = (base.config().num_classes, base.config().widths[2]);
            if m.class_id.0 as usize >= classes {
                return Err(ModelError::BadConfig(format!(
                    "module `{}`: class id {} but the base has {classes} classes",
                    m.class_name, m.class_id.0
                )));
            }
            match &m.head {
                ModuleHead::Channel { class_index } if *class_index >= classes => {
                    return Err(ModelError::BadConfig(format!(
                        "module `{}`: head reads logit {class_index} of {classes}",
                        m.class_name
                    )));
                }
                ModuleHead::Calibrated { weight, .. } if weight.len() != features => {
                    return Err(ModelError::BadConfig(format!(
                        "module `{}`: calibrated head has {} weights for {features} features",
                        m.class_name,
                        weight.len()
                    )));
                }
                _ => {}
            }
        }
        let device = base.device().clone();
        let masks = Self::stack(&modules, &sites, &device)?;
        Ok(ModuleGroup { base, modules, masks })
    }

    fn stack(
        modules: &[ClassModule],
        sites: &[crate::resnet::ReluSite],
        device: &Device,
    ) -> Result<Vec<Option<Tensor>>, ModelError> {
        let k = modules.len();
        let mut out = Vec::with_capacity(sites.len());
        for (s, site) in sites.iter().enumerate() {
            if modules.iter().all(|m| m.mask().sites[s].all_kept()) {
                out.push(None);
                continue;
            }
            let values: Vec<u8> = modules.iter().flat_map(|m| m.mask().sites[s].to_u8()).collect();
            out.push(Some(Tensor::from_vec(values, (k, 1, site.channels, site.height, site.width), device)?));
        }
        Ok(out)
    }

    pub fn base(&self) -> &ResNet {
        &self.base
    }

    pub fn modules(&self) -> &[ClassModule] {
        &self.modules
    }

    /// Pooled features and base logits of every module on `x`: `(k*B, F)` and `(k*B, classes)`,
    /// module-major, from one forward of batch k*B.
    pub fn features_and_logits(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let k = self.modules.len().max(1);
        let xs = if k == 1 { x.clone() } else { x.repeat((k, 1, 1, 1))? };
        let feats = self.base.features_hooked(&xs, &mut StackedMasks { masks: &self.masks, k })?;
        let logits = self.base.linear(&feats)?;
        Ok((feats, logits))
    }

    /// Runs every module on a normalised batch `x` (B, C, H, W) in one forward of batch k*B.
    pub fn run(&self, x: &Tensor) -> Result<ModuleOutputs, ModelError> {
        let k = self.modules.len();
        let batch = x.dim(0)?;
        if k == 0 {
            return Ok(ModuleOutputs { modules: 0, batch, pos: vec![], neg: vec![] });
        }
        let (feats, logits) = self.features_and_logits(x)?;
        let (feats, logits) = (feats.to_vec2::<f32>()?, logits.to_vec2::<f32>()?);
        let mut pos = Vec::with_capacity(k * batch);
        let mut neg = Vec::with_capacity(k * batch);
        for (m, module) in self.modules.iter().enumerate() {
            for i in 0..batch {
                let (p, n) = module.head.logits(&feats[m * batch + i], &logits[m * batch + i]);
                pos.push(p);
                neg.push(n);
            }
        }
        Ok(ModuleOutputs { modules: k, batch, pos, neg })
    }
}
