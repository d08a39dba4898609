//! The seam between a network and the machine that runs it, in the manner of candle's
//! `BackendStorage`: one trait, [`Engine`], that each engine implements once, for the base
//! network and for each module kind. A [`crate::ResNet`] holds one engine, chosen where the
//! network is built (the CPU path on the CPU, candle's operations elsewhere); a
//! [`crate::ModuleGroup`] asks its base's engine for the plan of its modules' kind
//! ([`Engine::plan_masks`], [`Engine::plan_branches`]), so a plan always runs on the engine that
//! built it and no state pairs a CPU base with a tensor plan.
//!
//! `cpu.rs` is the CPU path's engine (NHWC slices, the runtime's own kernels); `candle.rs` runs
//! candle's operations (NCHW tensors; the GPU path, half precision, and the reference the CPU
//! path is tested against). Images reach an engine in either layout ([`Images`]) and each converts
//! at most once, to its own; activations leave it as NHWC rows ([`Activation`]).

pub(crate) mod candle;
pub(crate) mod cpu;

use std::fmt::Debug;
use std::sync::Arc;

use candle_core::Tensor;

use crate::model::graph::ReluHook;
use crate::model::linear::Linear;
use crate::model::network::ReluSite;
use crate::module::NodeMask;
use crate::{BranchWeights, InputSpec, Precision, Result};

/// A batch of normalised images, as the caller has it.
#[derive(Debug, Clone, Copy)]
pub enum Images<'a> {
    /// `count` images, NHWC values (what pixels are normalised into for the CPU path).
    Nhwc {
        /// `count * H * W * C` values.
        values: &'a [f32],
        /// Images in the batch.
        count: usize,
    },
    /// An NCHW tensor `(B, C, H, W)`: PyTorch's layout, the host's batches.
    Nchw(&'a Tensor),
}

impl Images<'_> {
    /// Images in the batch.
    pub fn count(&self) -> usize {
        match self {
            Images::Nhwc { count, .. } => *count,
            Images::Nchw(t) => t.dims().first().copied().unwrap_or(0),
        }
    }
}

/// Raw pixels normalised for one engine, in the layout it computes in.
pub(crate) enum Normalized {
    /// NHWC values of `count` images.
    Nhwc(Vec<f32>, usize),
    /// An NCHW tensor on the engine's device.
    Nchw(Tensor),
}

impl Normalized {
    pub(crate) fn images(&self) -> Images<'_> {
        match self {
            Normalized::Nhwc(values, count) => Images::Nhwc { values, count: *count },
            Normalized::Nchw(t) => Images::Nchw(t),
        }
    }
}

/// An activation inside a network (a trunk's output): NHWC values of `images` images, after
/// the ReLU that ends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// `images * height * width * channels` values, NHWC.
    pub values: Vec<f32>,
    /// Images in the batch.
    pub images: usize,
    /// Rows of the plane.
    pub height: usize,
    /// Columns of the plane.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

impl Activation {
    /// The values in NCHW order (what a PyTorch-layout consumer reads).
    pub fn to_nchw(&self) -> Vec<f32> {
        crate::cpu::net::to_nchw(&self.values, self.images, self.channels, self.height * self.width)
    }
}

/// What a group of modules computes before their heads: each module's pooled features (`B` rows
/// of its own width), and for kinds whose heads read the base's logits, each module's logits
/// (`B` rows of `classes`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupFeatures {
    /// Per module, `B * F_m` values.
    pub features: Vec<Vec<f32>>,
    /// Per module, `B * classes` values; `None` for kinds that compute no base logits.
    pub logits: Option<Vec<Vec<f32>>>,
}

/// One engine: how the convolutions of a base, and of the modules on it, run.
pub(crate) trait Engine: Debug + Send + Sync {
    /// Bytes of convolution weights held, in the engine's own form.
    fn weight_bytes(&self) -> u64;

    /// What the convolutions compute in.
    fn precision(&self) -> Precision;

    /// The same network computing in `precision` (weights converted once).
    fn with_precision(&self, precision: Precision) -> Result<Arc<dyn Engine>>;

    /// `pixels` (`count` images of the input spec's CHW bytes) normalised into this engine's
    /// layout.
    fn normalize(&self, spec: &InputSpec, pixels: &[u8], count: usize) -> Result<Normalized>;

    /// Pooled features `(B, F)` of normalised images `x` (checked by the caller), `hook`
    /// seeing every ReLU site.
    fn features(&self, x: Images, hook: &mut dyn ReluHook) -> Result<Vec<f32>>;

    /// The activation after the stem and the first `blocks` blocks.
    fn trunk(&self, x: Images, blocks: usize) -> Result<Activation>;

    /// The trunk's activation after `blocks` blocks and the pooled features of the whole
    /// network, in one pass.
    fn trunk_and_features(&self, x: Images, blocks: usize) -> Result<(Activation, Vec<f32>)>;

    /// The plan of a group of mask modules (`masks` over the base's `sites`).
    fn plan_masks(&self, masks: &[&NodeMask], sites: &[ReluSite]) -> Result<Arc<dyn GroupPlan>>;

    /// The plan of a group of compact modules whose branches start after `trunk_blocks` blocks,
    /// on the trunk's plane `(height, width)`.
    fn plan_branches(
        &self,
        branches: &[&BranchWeights],
        trunk_blocks: usize,
        plane: (usize, usize),
    ) -> Result<Arc<dyn GroupPlan>>;

    /// The CPU path's network, for tests that reach into it.
    #[cfg(test)]
    fn cpu_net(&self) -> Option<&crate::cpu::net::CpuNet> {
        None
    }
}

/// A group's modules as one engine runs them.
pub(crate) trait GroupPlan: Debug + Send + Sync {
    /// Bytes the plan holds beyond the base (stacked masks, built branches).
    fn bytes(&self) -> u64;

    /// The modules' features (and base logits, where their kind reads them) on normalised
    /// images `x`; `linear` is the base's classifier.
    fn features(&self, x: Images, linear: &Linear) -> Result<GroupFeatures>;
}

/// `rows` (`k * B` rows of `width`, module-major) as k blocks of `B` rows.
pub(crate) fn per_module(rows: &[f32], modules: usize) -> Vec<Vec<f32>> {
    let per = rows.len() / modules.max(1);
    (0..modules).map(|m| rows[m * per..][..per].to_vec()).collect()
}
