//! Runs the modules that share one base network together. Mask modules run as ONE batched
//! forward: k modules on a batch of B images is one pass of batch k*B over the shared weights,
//! each slice of the batch multiplied by its module's masks at every ReLU site (sites where every
//! module keeps every node are skipped); on the CPU the masks are applied inside the
//! convolutions' epilogues (NHWC bytes), elsewhere through the `ReluHook`. Compact modules run
//! the base's trunk once for the B images and then each module's small branch on it (on the CPU
//! path the branches' entry convolutions as one: `cpu/branches.rs`). Modules of
//! different bases (or kinds, or trunks) run as one group each.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::cpu::branches::CpuBranches;
use crate::cpu::conv::Plane;
use crate::cpu::net::{to_nhwc, SiteMasks};
use crate::model::branch::{cpu_branches, Branch, BranchWeights};
use crate::model::graph::ReluHook;
use crate::module::{score, ClassModule, GroupKind, NodeMask};
use crate::Result;
use crate::{Error, ResNet};

/// Modules of one base, ready to run together.
#[derive(Debug, Clone)]
pub struct ModuleGroup {
    base: ResNet,
    /// Shared with whoever loaded them (a served module's masks are not copied per snapshot).
    modules: Vec<Arc<ClassModule>>,
    /// How the group runs; one plan per module kind.
    plan: Plan,
}

/// How a group's modules run. A group holds modules of one kind, and each kind has its plan:
/// mask modules stack their images k times through the whole base; compact modules run the
/// trunk once and a branch per module.
#[derive(Debug, Clone)]
enum Plan {
    /// Mask modules: one forward of batch k*B, each slice masked at every site.
    Stacked(StackedPlan),
    /// Compact modules: the trunk of `trunk_stages` stages once, then one branch per module.
    Branched {
        /// Stages of the base the trunk covers.
        trunk_stages: usize,
        /// The modules' branches, in group order.
        branches: BranchPlan,
    },
}

/// A group's branches as its base's engine runs them.
#[derive(Debug, Clone)]
enum BranchPlan {
    /// The CPU path's: all entry convolutions as one, then each branch's blocks.
    Cpu(Arc<CpuBranches>),
    /// One branch after the other on candle's operations.
    Tensors(Vec<Branch>),
}

/// The stacked masks as 0/1 bytes: a served module's masks are its resident memory beyond the
/// shared base, so one byte a node, not four.
#[derive(Debug, Clone)]
enum StackedPlan {
    /// The CPU path's: per site `k * H*W*C` bytes in NHWC order, `None` where no module drops a
    /// node.
    Cpu(Arc<SiteMasks>),
    /// Per site `(k, 1, C, H, W)` byte tensors, widened at each site by the hook.
    Tensors(Vec<Option<Tensor>>),
}

/// Positive and negative logits of k modules on B images, module-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleOutputs {
    /// k, the number of modules.
    pub modules: usize,
    /// B, the number of images.
    pub batch: usize,
    /// Positive logits, `pos[m * batch + i]` for module m on image i.
    pub pos: Vec<f32>,
    /// Negative logits, in the same order.
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
    /// Groups `modules`, which must all be of one kind (and compact ones of one trunk) and fit
    /// `base` ([`ClassModule::fits`]).
    pub fn new(base: ResNet, modules: impl IntoIterator<Item = impl Into<Arc<ClassModule>>>) -> Result<Self> {
        let modules: Vec<Arc<ClassModule>> = modules.into_iter().map(Into::into).collect();
        let kind = modules.first().map_or(GroupKind::Mask, |m| m.kind.group_kind());
        for m in &modules {
            m.fits(&base)?;
            if m.kind.group_kind() != kind {
                return Err(Error::ModuleDoesNotFit {
                    class: m.class_name.clone(),
                    reason: format!("a {:?} module in a group of {kind:?} modules", m.kind.group_kind()),
                });
            }
        }
        let plan = match kind {
            GroupKind::Mask => {
                let masks: Vec<&NodeMask> = modules.iter().filter_map(|m| m.as_mask()).collect();
                let sites = base.relu_sites();
                Plan::Stacked(if base.cpu().is_some() {
                    StackedPlan::Cpu(Arc::new(Self::stack_nhwc(&masks, &sites)))
                } else {
                    StackedPlan::Tensors(Self::stack(&masks, &sites, base.device())?)
                })
            }
            GroupKind::Compact { trunk_stages } => {
                let spec = base.input_spec();
                let (mut h, mut w) = (spec.height, spec.width);
                for _ in 1..trunk_stages {
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                }
                let weights: Vec<&BranchWeights> = modules.iter().filter_map(|m| m.as_compact()).collect();
                let branches = if base.cpu().is_some() {
                    BranchPlan::Cpu(Arc::new(cpu_branches(&weights, Plane { height: h, width: w })?))
                } else {
                    let dtype = base.precision().dtype();
                    let built = weights.iter().map(|b| Branch::build(b, base.device())?.into_dtype(dtype));
                    BranchPlan::Tensors(built.collect::<Result<Vec<_>>>()?)
                };
                Plan::Branched { trunk_stages, branches }
            }
        };
        Ok(ModuleGroup { base, modules, plan })
    }

    /// Bytes the group's plan holds beyond the base: stacked masks, or built branches.
    pub fn plan_bytes(&self) -> u64 {
        match &self.plan {
            Plan::Stacked(StackedPlan::Cpu(m)) => m.sites.iter().flatten().map(|s| s.len() as u64).sum(),
            Plan::Stacked(StackedPlan::Tensors(ts)) => ts.iter().flatten().map(|t| t.elem_count() as u64).sum(),
            Plan::Branched { branches: BranchPlan::Cpu(b), .. } => b.weight_bytes(),
            Plan::Branched { branches: BranchPlan::Tensors(b), .. } => b.iter().map(Branch::resident_bytes).sum(),
        }
    }

    fn stack(
        modules: &[&NodeMask],
        sites: &[crate::model::graph::ReluSite],
        device: &Device,
    ) -> Result<Vec<Option<Tensor>>> {
        let k = modules.len();
        let mut out = Vec::with_capacity(sites.len());
        for (s, site) in sites.iter().enumerate() {
            if modules.iter().all(|m| m.sites[s].all_kept()) {
                out.push(None);
                continue;
            }
            let values: Vec<u8> = modules.iter().flat_map(|m| m.sites[s].to_u8()).collect();
            out.push(Some(Tensor::from_vec(values, (k, 1, site.channels, site.height, site.width), device)?));
        }
        Ok(out)
    }

    /// The masks in the CPU path's NHWC order: node `(c, y, x)` of module m at
    /// `(m*H*W + y*W + x)*C + c`.
    fn stack_nhwc(modules: &[&NodeMask], sites: &[crate::model::graph::ReluSite]) -> SiteMasks {
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

    /// The base network the modules share.
    pub fn base(&self) -> &ResNet {
        &self.base
    }

    /// The modules, in group order.
    pub fn modules(&self) -> &[Arc<ClassModule>] {
        &self.modules
    }

    /// Pooled features and base logits of every mask module on `x`: `(k*B, F)` and
    /// `(k*B, classes)`, module-major, from one forward of batch k*B. Compact modules have no
    /// base logits: see [`Self::features`].
    pub fn features_and_logits(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.modules.len().max(1);
        let stacked = match &self.plan {
            Plan::Stacked(stacked) => stacked,
            Plan::Branched { .. } => {
                return Err(Error::ModuleDoesNotFit {
                    class: self.modules.first().map_or_else(String::new, |m| m.class_name.clone()),
                    reason: "a compact module computes no base logits".into(),
                })
            }
        };
        let feats = match stacked {
            StackedPlan::Cpu(masks) => self.base.features_masked(x, masks)?,
            StackedPlan::Tensors(masks) => {
                let xs = if k == 1 { x.clone() } else { x.repeat((k, 1, 1, 1))? };
                self.base.features_hooked(&xs, &mut StackedMasks { masks, k })?
            }
        };
        let logits = self.base.linear(&feats)?;
        Ok((feats, logits))
    }

    /// The pooled features each module's head reads, per module `(B, F_m)` rows: the masked
    /// base's for mask modules, the branch's for compact ones.
    pub fn features(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        match &self.plan {
            Plan::Stacked(_) => {
                let (f, _) = self.features_and_logits(x)?;
                let f = f.flatten_all()?.to_vec1::<f32>()?;
                let per = f.len() / self.modules.len().max(1);
                Ok(f.chunks(per.max(1)).map(<[f32]>::to_vec).collect())
            }
            Plan::Branched { trunk_stages, branches } => self.branch_features(x, *trunk_stages, branches),
        }
    }

    /// Each branch's pooled features on `x`, the trunk computed once.
    fn branch_features(&self, x: &Tensor, trunk_stages: usize, branches: &BranchPlan) -> Result<Vec<Vec<f32>>> {
        match branches {
            BranchPlan::Cpu(branches) => {
                let (images, c, h, w) = x.dims4()?;
                let nhwc = to_nhwc(&x.flatten_all()?.to_vec1::<f32>()?, images, c, h * w);
                self.cpu_branch_features(&nhwc, images, trunk_stages, branches)
            }
            BranchPlan::Tensors(branches) => {
                let trunk = self.base.trunk(x, trunk_stages)?;
                branches.iter().map(|b| Ok(b.forward(&trunk)?.flatten_all()?.to_vec1::<f32>()?)).collect()
            }
        }
    }

    fn cpu_branch_features(
        &self,
        nhwc: &[f32],
        images: usize,
        trunk_stages: usize,
        branches: &CpuBranches,
    ) -> Result<Vec<Vec<f32>>> {
        let net = self.base.cpu().expect("a CPU-path plan is built for a CPU-path base");
        net.branched_features(nhwc, images, trunk_stages * self.base.config().blocks_per_stage, branches)
    }

    /// Runs every module on a normalised batch `x` (B, C, H, W): mask modules in one forward of
    /// batch k*B, compact modules on one trunk.
    pub fn run(&self, x: &Tensor) -> Result<ModuleOutputs> {
        let batch = x.dim(0)?;
        if self.modules.is_empty() {
            return Ok(ModuleOutputs { modules: 0, batch, pos: vec![], neg: vec![] });
        }
        if let Plan::Branched { trunk_stages, branches } = &self.plan {
            let feats = self.branch_features(x, *trunk_stages, branches)?;
            return Ok(self.head_outputs(&feats, batch));
        }
        let (feats, logits) = self.features_and_logits(x)?;
        let (feats, logits) = (feats.flatten_all()?.to_vec1::<f32>()?, logits.flatten_all()?.to_vec1::<f32>()?);
        Ok(self.outputs(&feats, &logits, batch))
    }

    /// Runs every module on `n` images of raw pixels (`n * C * H * W` bytes, CHW each),
    /// normalised the base's way. On the CPU path the pixels are normalised straight into the
    /// kernels' NHWC layout and the linear layer runs on plain rows: no tensor in between.
    pub fn run_pixels(&self, pixels: &[u8]) -> Result<ModuleOutputs> {
        let spec = self.base.input_spec();
        let batch = spec.images_in(pixels)?;
        if self.modules.is_empty() {
            return Ok(ModuleOutputs { modules: 0, batch, pos: vec![], neg: vec![] });
        }
        if self.base.cpu().is_some() {
            let mut x = vec![0f32; pixels.len()];
            spec.normalize_into_nhwc(pixels, &mut x);
            return match &self.plan {
                Plan::Stacked(StackedPlan::Cpu(masks)) => {
                    let (feats, logits) = self.base.cpu_features_and_logits(&x, batch, Some(masks))?;
                    Ok(self.outputs(&feats, &logits, batch))
                }
                Plan::Branched { trunk_stages, branches: BranchPlan::Cpu(branches) } => {
                    let feats = self.cpu_branch_features(&x, batch, *trunk_stages, branches)?;
                    Ok(self.head_outputs(&feats, batch))
                }
                Plan::Stacked(StackedPlan::Tensors(_)) | Plan::Branched { branches: BranchPlan::Tensors(_), .. } => {
                    unreachable!("a CPU-path base builds its plans for the CPU path")
                }
            };
        }
        let mut x = vec![0f32; pixels.len()];
        spec.normalize_into(pixels, &mut x);
        let x = Tensor::from_vec(x, (batch, spec.channels, spec.height, spec.width), self.base.device())?;
        self.run(&x)
    }

    /// Each module's head on its own features (`feats[m]`, B rows), which read no base logits.
    fn head_outputs(&self, feats: &[Vec<f32>], batch: usize) -> ModuleOutputs {
        let k = self.modules.len();
        let (mut pos, mut neg) = (Vec::with_capacity(k * batch), Vec::with_capacity(k * batch));
        for (module, f) in self.modules.iter().zip(feats) {
            let per = f.len() / batch.max(1);
            for row in f.chunks_exact(per.max(1)) {
                let (p, n) = module.head.logits(row, &[]);
                pos.push(p);
                neg.push(n);
            }
        }
        ModuleOutputs { modules: k, batch, pos, neg }
    }

    /// Each module's head on its rows of `feats` `(k*B, F)` and `logits` `(k*B, classes)`.
    fn outputs(&self, feats: &[f32], logits: &[f32], batch: usize) -> ModuleOutputs {
        let k = self.modules.len();
        let rows = k * batch;
        let (f, c) = (feats.len() / rows.max(1), logits.len() / rows.max(1));
        let mut pos = Vec::with_capacity(rows);
        let mut neg = Vec::with_capacity(rows);
        for (m, module) in self.modules.iter().enumerate() {
            for i in 0..batch {
                let j = m * batch + i;
                let (p, n) = module.head.logits(&feats[j * f..][..f], &logits[j * c..][..c]);
                pos.push(p);
                neg.push(n);
            }
        }
        ModuleOutputs { modules: k, batch, pos, neg }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_model::tiny_model;
    use crate::{ClassId, ModuleHead, ModuleKind};

    /// Masks applied inside the CPU path's convolutions (NHWC bytes) against the same masks
    /// applied by the hook to candle's operations (the reference), for three modules at once.
    #[test]
    fn masks_in_the_cpu_epilogue_match_masks_applied_by_the_hook() {
        let model = tiny_model(6);
        let fast = ResNet::new(&model, &Device::Cpu).unwrap();
        let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
        let sites = fast.relu_sites();
        let modules: Vec<ClassModule> = (0..3u32)
            .map(|id| {
                let mut mask = NodeMask::ones(&sites);
                for (s, site) in mask.sites.iter_mut().enumerate() {
                    // Module 2 keeps every node of the first site: that site then skips a module.
                    if id == 2 && s == 0 {
                        continue;
                    }
                    for i in (id as usize + s..site.len()).step_by(3 + id as usize) {
                        site.set(i, false);
                    }
                }
                ClassModule {
                    class_id: ClassId(id),
                    class_name: format!("c{id}"),
                    base_key: crate::ModelKey([0; 32]),
                    input: model.meta.input.clone(),
                    kind: ModuleKind::Mask(mask),
                    head: ModuleHead::Channel { class_index: id as usize },
                    min_score: None,
                }
            })
            .collect();
        let x: Vec<f32> = (0..4 * 64).map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0).collect();
        let x = Tensor::from_vec(x, (4, 1, 8, 8), &Device::Cpu).unwrap();
        let unmasked = fast.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let a = ModuleGroup::new(fast, modules.clone()).unwrap().run(&x).unwrap();
        let b = ModuleGroup::new(reference, modules.clone()).unwrap().run(&x).unwrap();
        for (p, q) in a.pos.iter().zip(&b.pos).chain(a.neg.iter().zip(&b.neg)) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        // Raw pixels through the CPU path's own normalisation and linear layer: the same outputs.
        let pixels: Vec<u8> = (0..4 * 64).map(|i| (i * 53 % 256) as u8).collect();
        let mut xn = vec![0f32; pixels.len()];
        model.meta.input.normalize_into(&pixels, &mut xn);
        let xn = Tensor::from_vec(xn, (4, 1, 8, 8), &Device::Cpu).unwrap();
        let fast = ResNet::new(&model, &Device::Cpu).unwrap();
        let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
        for group in
            [ModuleGroup::new(fast, modules.clone()).unwrap(), ModuleGroup::new(reference, modules.clone()).unwrap()]
        {
            let (p, t) = (group.run_pixels(&pixels).unwrap(), group.run(&xn).unwrap());
            for (u, v) in p.pos.iter().zip(&t.pos).chain(p.neg.iter().zip(&t.neg)) {
                assert!((u - v).abs() < 1e-5, "{u} vs {v}");
            }
        }
        // Module 0's positive logit on image 0 is class 0's logit of the masked network.
        assert!((a.pos[0] - unmasked[0][0]).abs() > 1e-4, "the masks changed nothing");
    }

    /// k compact modules in one group (one trunk, k branches) against each module alone, on the
    /// CPU path and on candle's operations, for small batches (whole) and large ones (slices in
    /// parallel), from tensors and from raw pixels; and the two engines against each other.
    #[test]
    fn a_compact_group_computes_what_its_modules_compute_alone() {
        use crate::testing::tiny_model::tiny_compact;
        let model = tiny_model(7);
        for stages in [1, 2] {
            let modules: Vec<ClassModule> =
                (0..3u32).map(|c| tiny_compact(&model, c, stages, [8, 16, 4][c as usize], 20 + c as u64)).collect();
            for images in [3usize, 17] {
                let pixels: Vec<u8> = (0..images * 64).map(|i| (i * 53 % 256) as u8).collect();
                let mut outputs = Vec::new();
                for cpu_path in [true, false] {
                    let net = ResNet::build(&model, &Device::Cpu, cpu_path).unwrap();
                    let group = ModuleGroup::new(net.clone(), modules.clone()).unwrap();
                    let together = group.run_pixels(&pixels).unwrap();
                    assert_eq!((together.modules, together.batch), (3, images));
                    for (m, module) in modules.iter().enumerate() {
                        let alone =
                            ModuleGroup::new(net.clone(), vec![module.clone()]).unwrap().run_pixels(&pixels).unwrap();
                        for i in 0..images {
                            let d = (together.pos[m * images + i] - alone.pos[i]).abs();
                            assert!(d < 1e-5, "stages {stages}, module {m}, image {i}: {d}");
                        }
                    }
                    let spec = net.input_spec();
                    let mut x = vec![0f32; pixels.len()];
                    spec.normalize_into(&pixels, &mut x);
                    let x = Tensor::from_vec(x, (images, 1, 8, 8), &Device::Cpu).unwrap();
                    let from_tensor = group.run(&x).unwrap();
                    for (a, b) in together.pos.iter().zip(&from_tensor.pos) {
                        assert!((a - b).abs() < 1e-5);
                    }
                    assert!(group.features_and_logits(&x).is_err(), "compact modules have no base logits");
                    outputs.push(together);
                }
                for (a, b) in outputs[0].pos.iter().zip(&outputs[1].pos) {
                    assert!((a - b).abs() < 1e-4, "CPU path {a} vs candle {b}");
                }
                assert!(outputs[0].pos.windows(2).any(|w| (w[0] - w[1]).abs() > 1e-3), "outputs that differ");
            }
        }
    }

    /// Half precision, on candle's CPU backend (the GPU path's code: weights converted at load,
    /// activations at the entry, masks and branches in the same type, features back to f32):
    /// the base, a mask group and a compact group against f32 within half precision's error,
    /// and the CPU path refusing it by name.
    #[test]
    fn half_precision_groups_compute_what_f32_groups_compute() {
        use crate::testing::tiny_model::tiny_compact;
        use crate::Precision;
        let model = tiny_model(8);
        let f32_net = ResNet::build(&model, &Device::Cpu, false).unwrap();
        let sites = f32_net.relu_sites();
        let mut mask = NodeMask::ones(&sites);
        for site in mask.sites.iter_mut() {
            for i in (0..site.len()).step_by(3) {
                site.set(i, false);
            }
        }
        let masked = ClassModule {
            class_id: ClassId(1),
            class_name: "c1".into(),
            base_key: crate::ModelKey([0; 32]),
            input: model.meta.input.clone(),
            kind: ModuleKind::Mask(mask),
            head: ModuleHead::Channel { class_index: 1 },
            min_score: None,
        };
        let compact: Vec<ClassModule> = (0..2u32).map(|c| tiny_compact(&model, c, 1, 8, 40 + c as u64)).collect();
        let pixels: Vec<u8> = (0..5 * 64).map(|i| (i * 53 % 256) as u8).collect();
        // bf16: candle's CPU backend has no bf16 matmul; tests/gpu.rs runs it on a GPU.
        for (precision, bound) in [(Precision::F16, 2e-2f32)] {
            let half = f32_net.clone().with_precision(precision).unwrap();
            assert_eq!(half.precision(), precision);
            assert!(half.resident_bytes() < f32_net.resident_bytes(), "half the bytes per weight");
            for modules in [vec![masked.clone()], compact.clone()] {
                let want = ModuleGroup::new(f32_net.clone(), modules.clone()).unwrap().run_pixels(&pixels).unwrap();
                let got = ModuleGroup::new(half.clone(), modules).unwrap().run_pixels(&pixels).unwrap();
                let worst = want.pos.iter().zip(&got.pos).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let scale = want.pos.iter().map(|a| a.abs()).fold(0f32, f32::max);
                assert!(worst > 0.0, "{precision}: nothing was computed in half precision");
                assert!(worst <= bound * scale.max(1.0), "{precision}: logits off by {worst} (scale {scale})");
            }
        }
        let cpu_path = ResNet::new(&model, &Device::Cpu).unwrap();
        let e = cpu_path.with_precision(Precision::F16).unwrap_err();
        assert!(matches!(e, Error::PrecisionUnsupported { .. }), "{e}");
        assert!(e.to_string().contains("the CPU path computes in f32 only"), "{e}");
    }

    /// Modules of one group are of one kind and trunk; a compact module needs a calibrated
    /// head on its own branch's features, and a branch for the base's trunk channels.
    #[test]
    fn groups_refuse_mixed_kinds_and_misfit_branches() {
        use crate::testing::tiny_model::tiny_compact;
        let model = tiny_model(7);
        let net = ResNet::new(&model, &Device::Cpu).unwrap();
        let mask = ClassModule {
            class_id: ClassId(0),
            class_name: "a".into(),
            base_key: crate::ModelKey([0; 32]),
            input: model.meta.input.clone(),
            kind: ModuleKind::Mask(NodeMask::ones(&net.relu_sites())),
            head: ModuleHead::Channel { class_index: 0 },
            min_score: None,
        };
        let (one, two) = (tiny_compact(&model, 1, 1, 8, 1), tiny_compact(&model, 2, 2, 8, 2));
        assert!(ModuleGroup::new(net.clone(), vec![mask.clone(), one.clone()]).is_err());
        assert!(ModuleGroup::new(net.clone(), vec![one.clone(), two.clone()]).is_err());
        let mut channel = one.clone();
        channel.head = ModuleHead::Channel { class_index: 1 };
        assert!(matches!(channel.fits(&net), Err(Error::ModuleDoesNotFit { .. })));
        let mut narrow = one.clone();
        narrow.head = ModuleHead::Calibrated { weight: vec![0.0; 16], bias: 0.0 };
        assert!(narrow.fits(&net).is_err(), "a head for the base's 16 features on an 8-wide branch");
        let other = tiny_compact(&crate::testing::tiny_model::tiny_model_b(1), 1, 2, 8, 3);
        assert!(other.fits(&net).is_ok(), "same widths, same fit");
        let spec = crate::BranchSpec { in_channels: 8, ..*one.as_compact().unwrap().spec() };
        let zeros = spec.tensor_shapes().into_iter().map(|(n, s)| (n, vec![0.0; s.iter().product()])).collect();
        let mut misfit = one.clone();
        misfit.kind = ModuleKind::Compact(crate::BranchWeights::new(spec, zeros).unwrap());
        assert!(misfit.fits(&net).is_err(), "a branch for 8 channels after a stage of 4");
    }
}
