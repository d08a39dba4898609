//! Observation: how often each node (ReLU output) is active (> 0) over a group of images.

use crate::HostError;
use candle_core::Tensor;
use classmod_runtime::host::ReluHook;
use classmod_runtime::host::ResNet;

use crate::dataset::ImageSet;
use crate::eval::batch_tensor;

/// Per ReLU site, per node: on how many of the observed images the node was active.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityCounts {
    pub images: usize,
    pub sites: Vec<Vec<u32>>,
}

impl ActivityCounts {
    pub fn add(&mut self, other: &ActivityCounts) {
        self.images += other.images;
        for (a, b) in self.sites.iter_mut().zip(&other.sites) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }
}

struct Counter {
    sites: Vec<Vec<u32>>,
}

impl ReluHook for Counter {
    fn after_relu(&mut self, site: usize, a: Tensor) -> candle_core::Result<Tensor> {
        let active = a.gt(0f32)?.to_dtype(candle_core::DType::U32)?.sum(0)?.flatten_all()?.to_vec1::<u32>()?;
        let counts = &mut self.sites[site];
        if counts.is_empty() {
            *counts = active;
        } else {
            counts.iter_mut().zip(&active).for_each(|(c, a)| *c += a);
        }
        Ok(a)
    }
}

/// Counts node activity of `model` over the images at `indices`.
pub fn count(model: &ResNet, set: &ImageSet, indices: &[usize], batch: usize) -> Result<ActivityCounts, HostError> {
    let sites = model.relu_sites();
    let mut counter = Counter { sites: vec![Vec::new(); sites.len()] };
    for chunk in indices.chunks(batch.max(1)) {
        let x = batch_tensor(set, chunk, model.input_spec(), model.device())?;
        model.features_hooked(&x, &mut counter)?;
    }
    let sites = counter
        .sites
        .into_iter()
        .zip(&sites)
        .map(|(c, s)| if c.is_empty() { vec![0; s.channels * s.height * s.width] } else { c })
        .collect();
    Ok(ActivityCounts { images: indices.len(), sites })
}
