//! Compact modules' branches on the CPU path, run together on their trunk's activation. Every
//! branch of a group starts with an entry convolution of that same activation, so the entries
//! run as ONE packed convolution with the branches' output channels side by side: one padded copy
//! of the activation and one pass of the micro-kernels over `sum(width)` channels instead of k
//! passes over `width` (at ten ResNet-20 branches the entries were a third of the branches'
//! time). Each branch's blocks then run on its own channels of that output; for a small batch,
//! the branches run in parallel rather than each convolution's tiles.

use rayon::prelude::*;

use super::conv::{PackedConv, Plane, Threads};
use super::net::{CpuBlock, Pass};
use super::pool::average_pool;
use crate::{Error, Result};

/// The branches of one group, packed for one trunk plane.
#[derive(Debug, Clone)]
pub struct CpuBranches {
    /// Every branch's entry convolution (ReLU after), output channels in branch order.
    entry: PackedConv,
    /// The trunk activation's plane the entry takes.
    input: Plane,
    /// Each branch's width (its share of the entry's output channels) and blocks.
    branches: Vec<(usize, Vec<CpuBlock>)>,
}

impl CpuBranches {
    /// `entry`'s output channels are the branches' widths in order; `branches` pairs each width
    /// with the blocks that follow (packed for the entry's output plane).
    pub fn new(entry: PackedConv, input: Plane, branches: Vec<(usize, Vec<CpuBlock>)>) -> Result<Self> {
        let widths: usize = branches.iter().map(|(w, _)| w).sum();
        if widths != entry.out_channels() {
            return Err(Error::InvalidArchitecture {
                reason: format!("branches of {widths} channels on an entry giving {}", entry.out_channels()),
            });
        }
        Ok(CpuBranches { entry, input, branches })
    }

    /// Branches in the group.
    pub(crate) fn len(&self) -> usize {
        self.branches.len()
    }

    /// Bytes of packed weights held.
    pub fn weight_bytes(&self) -> u64 {
        let blocks = self.branches.iter().flat_map(|(_, b)| b).map(CpuBlock::weight_bytes);
        self.entry.weight_bytes() + blocks.sum::<u64>()
    }

    /// Each branch's pooled features `(batch, width)` on the trunk activation `(x, plane,
    /// channels)` of `pass.batch` images (NHWC).
    pub fn features(&self, (x, p, c): (Vec<f32>, Plane, usize), pass: &Pass) -> Result<Vec<Vec<f32>>> {
        if p != self.input || c != self.entry.in_channels() {
            return Err(Error::InvalidArchitecture {
                reason: format!(
                    "branches for {}x{}x{} activations on a trunk giving {}x{}x{c}",
                    self.entry.in_channels(),
                    self.input.height,
                    self.input.width,
                    p.height,
                    p.width
                ),
            });
        }
        // The pass carries no masks, so site numbers only switch the ReLU on.
        let (all, ep) = pass.conv(&self.entry, &x, p, None, Some(0));
        let (pixels, total) = (pass.batch * ep.height * ep.width, self.entry.out_channels());
        let offsets: Vec<usize> =
            self.branches.iter().scan(0, |o, (w, _)| Some(std::mem::replace(o, *o + w))).collect();
        let branch = |(offset, (width, blocks)): (usize, &(usize, Vec<CpuBlock>)), pass: &Pass| {
            let mut own = Vec::with_capacity(pixels * width);
            for px in all.chunks_exact(total) {
                own.extend_from_slice(&px[offset..][..*width]);
            }
            let (y, yp, yc) = pass.blocks(blocks, (own, ep, *width), 0, None)?;
            Ok(average_pool(&y, pass.batch, yp.height * yp.width, yc))
        };
        let each = offsets.into_iter().zip(&self.branches);
        match pass.threads {
            // A small batch: a branch's convolutions are too small to split into tiles worth a
            // fork-join each; the branches themselves run in parallel instead.
            Threads::Tiles if self.branches.len() > 1 => {
                let own = Pass::plain(pass.batch, Threads::Caller);
                each.collect::<Vec<_>>().into_par_iter().map(|b| branch(b, &own)).collect()
            }
            _ => each.map(|b| branch(b, pass)).collect(),
        }
    }
}
