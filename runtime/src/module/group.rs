//! Runs the modules that share one base network together. The group asks its base's engine
//! for the plan of its modules' kind (`crate::engine`): mask modules run as ONE batched forward
//! (k modules on a batch of B images is one pass of batch k*B over the shared weights, each
//! slice of the batch multiplied by its module's masks at every ReLU site; the layers before the
//! first masked site computed once on the CPU path); compact modules run the base's trunk once
//! for the B images and then each module's small branch on it. Modules of different bases (or
//! kinds, or trunks) run as one group each.

use std::sync::Arc;

use candle_core::Tensor;

use crate::engine::{GroupFeatures, GroupPlan, Images};
use crate::module::{score, ClassModule, GroupKind, NodeMask};
use crate::Result;
use crate::{BranchWeights, Error, ResNet};

/// Modules of one base, ready to run together.
#[derive(Debug, Clone)]
pub struct ModuleGroup {
    base: ResNet,
    /// Shared with whoever loaded them (a served module's masks are not copied per snapshot).
    modules: Vec<Arc<ClassModule>>,
    /// How the group runs, built by the base's engine for the modules' kind.
    plan: Arc<dyn GroupPlan>,
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
        let engine = base.engine();
        let plan = match kind {
            GroupKind::Mask => {
                let masks: Vec<&NodeMask> = modules.iter().filter_map(|m| m.as_mask()).collect();
                engine.plan_masks(&masks, &base.relu_sites())?
            }
            GroupKind::Compact { trunk } => {
                let weights: Vec<&BranchWeights> = modules.iter().filter_map(|m| m.as_compact()).collect();
                let blocks = base.network().blocks_until_end(trunk)?;
                let spec = base.input_spec();
                let plane = base.network().plane_after_blocks(blocks, spec.height, spec.width);
                engine.plan_branches(&weights, blocks, plane)?
            }
        };
        Ok(ModuleGroup { base, modules, plan })
    }

    /// Bytes the group's plan holds beyond the base: stacked masks, or built branches.
    pub fn plan_bytes(&self) -> u64 {
        self.plan.bytes()
    }

    /// The base network the modules share.
    pub fn base(&self) -> &ResNet {
        &self.base
    }

    /// The modules, in group order.
    pub fn modules(&self) -> &[Arc<ClassModule>] {
        &self.modules
    }

    /// What the plan computes on `x`, after checking its shape; nothing for an empty group.
    fn computed(&self, x: Images) -> Result<Option<GroupFeatures>> {
        self.base.check_images(&x)?;
        if self.modules.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.plan.features(x, self.base.linear_layer())?))
    }

    /// Pooled features and base logits of every mask module on `x`: `(k*B, F)` and
    /// `(k*B, classes)`, module-major, from one forward of batch k*B. Compact modules have no
    /// base logits (an error names the misuse): see [`Self::features`].
    pub fn features_and_logits(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let batch = x.dim(0)?;
        let k = self.modules.len();
        let Some(out) = self.computed(Images::Nchw(x))? else {
            let none = Tensor::zeros((0, 0), candle_core::DType::F32, x.device())?;
            return Ok((none.clone(), none));
        };
        let Some(logits) = out.logits else {
            return Err(Error::Misuse {
                what: "base logits asked of a group of compact modules, which compute none".into(),
            });
        };
        let rows = |v: Vec<Vec<f32>>| -> Result<Tensor> {
            let flat = v.concat();
            let per = flat.len() / (k * batch).max(1);
            Ok(Tensor::from_vec(flat, (k * batch, per), x.device())?)
        };
        Ok((rows(out.features)?, rows(logits)?))
    }

    /// The pooled features each module's head reads, per module `(B, F_m)` rows: the masked
    /// base's for mask modules, the branch's for compact ones.
    pub fn features(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(self.computed(Images::Nchw(x))?.map_or_else(Vec::new, |out| out.features))
    }

    /// Runs every module on a normalised batch `x` (B, C, H, W): mask modules in one forward of
    /// batch k*B, compact modules on one trunk.
    pub fn run(&self, x: &Tensor) -> Result<ModuleOutputs> {
        let batch = x.dim(0)?;
        Ok(self.outputs(self.computed(Images::Nchw(x))?, batch))
    }

    /// Runs every module on `n` images of raw pixels (`n * C * H * W` bytes, CHW each),
    /// normalised the base's way straight into its engine's layout (on the CPU path NHWC, and
    /// the linear layer on plain rows: no tensor in between).
    pub fn run_pixels(&self, pixels: &[u8]) -> Result<ModuleOutputs> {
        let spec = self.base.input_spec();
        let batch = spec.images_in(pixels)?;
        if self.modules.is_empty() {
            return Ok(self.outputs(None, batch));
        }
        let x = self.base.engine().normalize(spec, pixels, batch)?;
        Ok(self.outputs(self.computed(x.images())?, batch))
    }

    /// Each module's head on its rows of features (and base logits, where its kind reads them).
    fn outputs(&self, computed: Option<GroupFeatures>, batch: usize) -> ModuleOutputs {
        let k = self.modules.len();
        let (mut pos, mut neg) = (Vec::with_capacity(k * batch), Vec::with_capacity(k * batch));
        if let Some(GroupFeatures { features, logits }) = computed {
            for (m, (module, f)) in self.modules.iter().zip(&features).enumerate() {
                let per = f.len() / batch.max(1);
                let l = logits.as_ref().map(|l| &l[m]);
                let classes = l.map_or(0, |l| l.len() / batch.max(1));
                for i in 0..batch {
                    let row = &f[i * per..][..per];
                    let base_logits = l.map_or(&[][..], |l| &l[i * classes..][..classes]);
                    let (p, n) = module.head.logits(row, base_logits);
                    pos.push(p);
                    neg.push(n);
                }
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
    use candle_core::Device;

    /// Masks applied inside the CPU path's convolutions (NHWC bytes) against the same masks
    /// applied by the hook to candle's operations (the reference), for three modules at once;
    /// on a CIFAR ResNet and on a four-stage bottleneck network with the ImageNet stem (its site
    /// 0 before the max-pool).
    #[test]
    fn masks_in_the_cpu_epilogue_match_masks_applied_by_the_hook() {
        for model in [tiny_model(6), crate::testing::tiny_model::tiny_torchvision(6, true, [1, 2, 1, 1], 28)] {
            masks_match_on(&model);
        }
    }

    fn masks_match_on(model: &crate::ModelFile) {
        let model = model.clone();
        let spec = model.meta.input.clone();
        let dims = (4, spec.channels, spec.height, spec.width);
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
        let x: Vec<f32> = (0..4 * spec.image_len()).map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0).collect();
        let x = Tensor::from_vec(x, dims, &Device::Cpu).unwrap();
        let unmasked = fast.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let a = ModuleGroup::new(fast, modules.clone()).unwrap().run(&x).unwrap();
        let b = ModuleGroup::new(reference, modules.clone()).unwrap().run(&x).unwrap();
        for (p, q) in a.pos.iter().zip(&b.pos).chain(a.neg.iter().zip(&b.neg)) {
            // The 1e-4 of the logit: the bottleneck network's run deeper than ResNet-8's.
            assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
        }
        // Raw pixels through the CPU path's own normalisation and linear layer: the same outputs.
        let pixels: Vec<u8> = (0..4 * spec.image_len()).map(|i| (i * 53 % 256) as u8).collect();
        let mut xn = vec![0f32; pixels.len()];
        model.meta.input.normalize_into(&pixels, &mut xn);
        let xn = Tensor::from_vec(xn, dims, &Device::Cpu).unwrap();
        let fast = ResNet::new(&model, &Device::Cpu).unwrap();
        let reference = ResNet::build(&model, &Device::Cpu, false).unwrap();
        for group in
            [ModuleGroup::new(fast, modules.clone()).unwrap(), ModuleGroup::new(reference, modules.clone()).unwrap()]
        {
            let (p, t) = (group.run_pixels(&pixels).unwrap(), group.run(&xn).unwrap());
            for (u, v) in p.pos.iter().zip(&t.pos).chain(p.neg.iter().zip(&t.neg)) {
                assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{u} vs {v}");
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
        use crate::testing::tiny_model::{tiny_model_14, tiny_torchvision};
        compact_groups_on(&tiny_model_14(7), &[(1, 0), (2, 0), (1, 1), (2, 1)]);
        // A four-stage bottleneck base with the ImageNet stem: trunks of one to three stages.
        compact_groups_on(&tiny_torchvision(7, true, [1, 2, 1, 1], 32), &[(1, 0), (2, 0), (1, 1), (3, 0)]);
    }

    fn compact_groups_on(model: &crate::ModelFile, ends: &[(usize, usize)]) {
        use crate::model::network::TrunkEnd;
        use crate::testing::tiny_model::compact_after;
        let model = model.clone();
        let input = model.meta.input.clone();
        for &(stages, blocks) in ends {
            let end = TrunkEnd { stages, blocks };
            let modules: Vec<ClassModule> =
                (0..3u32).map(|c| compact_after(&model, c, end, [8, 16, 4][c as usize], 2, 20 + c as u64)).collect();
            for images in [3usize, 17] {
                let pixels: Vec<u8> = (0..images * input.image_len()).map(|i| (i * 53 % 256) as u8).collect();
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
                            assert!(d < 1e-5 * (1.0 + alone.pos[i].abs()), "{end:?}, module {m}, image {i}: {d}");
                        }
                    }
                    let spec = net.input_spec();
                    let mut x = vec![0f32; pixels.len()];
                    spec.normalize_into(&pixels, &mut x);
                    let x =
                        Tensor::from_vec(x, (images, input.channels, input.height, input.width), &Device::Cpu).unwrap();
                    let from_tensor = group.run(&x).unwrap();
                    for (a, b) in together.pos.iter().zip(&from_tensor.pos) {
                        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
                    }
                    assert!(group.features_and_logits(&x).is_err(), "compact modules have no base logits");
                    outputs.push(together);
                }
                for (a, b) in outputs[0].pos.iter().zip(&outputs[1].pos) {
                    assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "CPU path {a} vs candle {b}");
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
        // One trunk a group: two stages, and two stages and a block of the third, do not mix.
        let deeper = crate::testing::tiny_model::tiny_model_14(7);
        let deep_net = ResNet::new(&deeper, &Device::Cpu).unwrap();
        let after = |blocks, class| {
            let end = crate::model::network::TrunkEnd { stages: 2, blocks };
            crate::testing::tiny_model::compact_after(&deeper, class, end, 8, 1, 5)
        };
        assert!(ModuleGroup::new(deep_net.clone(), vec![after(1, 0), after(1, 1)]).is_ok());
        assert!(ModuleGroup::new(deep_net.clone(), vec![after(0, 0), after(1, 1)]).is_err());
        assert!(after(1, 0).fits(&net).is_err(), "ResNet-8's stage 3 has no block to run before the branch");
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
