//! Trunk activations computed once: a frozen trunk (the stem and the first stages of a base)
//! runs over a set of images and its activations are kept with the labels (and, for a
//! distillation, the teacher's logits), so that what trains on top of it (compact branches by
//! distillation, [`super::distill`]; the last stages of a fine-tuned network) never runs the
//! trunk again. One layout change, here: the engine gives the
//! trunk as NHWC rows, kept per image as `(C, H, W)` planes; a minibatch gathers them straight
//! into the channel-major `(C, B, H, W)` the training engine reads.

use classmod_runtime::host::Images;
use classmod_runtime::host::{ResNet, TrunkEnd};
use indicatif::ProgressBar;

use classmod_train::layers::Plane;

use crate::dataset::ImageSet;
use crate::eval::batch_nhwc;
use crate::HostError;

/// Trunk activations and teacher logits of a set of images, computed once.
pub struct TrunkCache {
    /// `n * per` values, NCHW per image.
    acts: Vec<f32>,
    /// (C, H, W) of one activation.
    shape: (usize, usize, usize),
    /// `n * classes` logits of the teacher (the base itself, or another model of its classes);
    /// empty in a cache of features only.
    logits: Vec<f32>,
    labels: Vec<u32>,
}

/// Whose logits a cache keeps beside the activations.
#[derive(Clone, Copy)]
enum Logits<'a> {
    /// None: features and labels only.
    None,
    /// The network's whose trunk runs.
    Own,
    /// Another network's (of the same classes).
    Of(&'a ResNet),
}

impl TrunkCache {
    /// `net`'s trunk activations (up to `end`) of the images `indices` of `set`, with the logits
    /// of `teacher` (each network normalising the images its own way), or of `net` itself.
    pub fn build(
        net: &ResNet,
        teacher: Option<&ResNet>,
        set: &ImageSet,
        indices: &[usize],
        end: TrunkEnd,
        progress: &ProgressBar,
    ) -> Result<Self, HostError> {
        let logits = teacher.map_or(Logits::Own, Logits::Of);
        Self::collect(net, logits, set, indices, end, progress)
    }

    /// `net`'s trunk activations of the images `indices` of `set` and their labels, without
    /// logits: what the stages after a frozen trunk train on.
    pub fn features(
        net: &ResNet,
        set: &ImageSet,
        indices: &[usize],
        stages: usize,
        progress: &ProgressBar,
    ) -> Result<Self, HostError> {
        Self::collect(net, Logits::None, set, indices, stages.into(), progress)
    }

    fn collect(
        net: &ResNet,
        teacher: Logits,
        set: &ImageSet,
        indices: &[usize],
        end: TrunkEnd,
        progress: &ProgressBar,
    ) -> Result<Self, HostError> {
        let mut cache = TrunkCache { acts: Vec::new(), shape: (0, 0, 0), logits: Vec::new(), labels: Vec::new() };
        for chunk in indices.chunks(256) {
            let x = batch_nhwc(set, chunk, net.input_spec());
            let images = Images::Nhwc { values: &x, count: chunk.len() };
            let (t, logits) = match teacher {
                Logits::None => (net.trunk(images, end)?, Vec::new()),
                Logits::Own => net.trunk_and_logits(images, end)?,
                Logits::Of(teacher) => {
                    let xt = batch_nhwc(set, chunk, teacher.input_spec());
                    (net.trunk(images, end)?, teacher.logits(Images::Nhwc { values: &xt, count: chunk.len() })?)
                }
            };
            if cache.acts.is_empty() {
                // One allocation for the whole cache (tens of GB would otherwise be doubled by
                // the growth of a vector).
                cache.acts.reserve_exact(indices.len() * t.channels * t.height * t.width);
            }
            // The one change of layout: planes, which a minibatch gathers channel-major.
            cache.shape = (t.channels, t.height, t.width);
            cache.acts.extend(t.to_nchw());
            cache.logits.extend(logits);
            cache.labels.extend(chunk.iter().map(|&i| set.labels[i]));
            progress.inc(chunk.len() as u64);
        }
        Ok(cache)
    }

    /// A cache of the given parts (tests that need no network).
    #[cfg(test)]
    pub(crate) fn from_parts(acts: Vec<f32>, shape: (usize, usize, usize), logits: Vec<f32>, labels: Vec<u32>) -> Self {
        TrunkCache { acts, shape, logits, labels }
    }

    /// Images cached.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no image is cached.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// (C, H, W) of one activation.
    pub fn shape(&self) -> (usize, usize, usize) {
        self.shape
    }

    /// Each image's label.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The teacher's logit of class `class` for image `row` (`None` in a cache of features, or
    /// out of range).
    pub fn teacher_logit(&self, row: usize, class: usize) -> Option<f32> {
        let classes = self.logits.len() / self.len().max(1);
        (class < classes).then(|| self.logits.get(row * classes + class).copied()).flatten()
    }

    /// Bytes the activations take.
    pub fn bytes(&self) -> usize {
        self.acts.len() * std::mem::size_of::<f32>()
    }

    /// Values of one activation.
    pub fn per(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }

    /// The activations (channel-major, `(C, B, H, W)`), teacher logits (none in a cache of
    /// features) and labels of the images `rows`, into the buffers given (cleared first; kept
    /// across steps so a training loop allocates nothing).
    pub fn gather(&self, rows: &[usize], acts: &mut Vec<f32>, teacher: &mut Vec<f32>, labels: &mut Vec<u32>) {
        let (per, classes) = (self.per(), self.logits.len() / self.len().max(1));
        let hw = self.shape.1 * self.shape.2;
        acts.clear();
        teacher.clear();
        labels.clear();
        for ch in 0..self.shape.0 {
            for &r in rows {
                acts.extend_from_slice(&self.acts[r * per + ch * hw..][..hw]);
            }
        }
        for &r in rows {
            teacher.extend_from_slice(&self.logits[r * classes..][..classes]);
            labels.push(self.labels[r]);
        }
    }

    /// The plane of a minibatch of `batch` images.
    pub fn plane(&self, batch: usize) -> Plane {
        Plane { batch, height: self.shape.1, width: self.shape.2 }
    }
}
