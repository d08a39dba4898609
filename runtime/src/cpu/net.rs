//! A ResNet on the CPU path: NHWC activations through packed convolutions whose epilogues carry
//! the bias, the residual add, the ReLU and the modules' node masks (the ImageNet stem's
//! max-pool after its ReLU), then the global average pool. A forward of a stacked batch (k modules x B images) masks each module's
//! slice at every site in the same pass. Anything else that wants to see a site (decomposition's
//! node counting) gets a [`SiteVisitor`] call with the activation after the epilogue.

use rayon::prelude::*;

use super::branches::CpuBranches;
use super::conv::{Epilogue, PackedConv, Plane, StackedMask, Threads};
use super::pool::{average_pool, max_pool_3x3_s2};
use super::recycled;
use super::small_batch::{PassKind, SmallBatchPlan};
use crate::Error;
use crate::Result;

/// A block's shortcut on the CPU path.
#[derive(Debug, Clone)]
pub enum CpuShortcut {
    Identity,
    /// Option A: every `stride`-th pixel, `pad` zero channels on each side.
    SubsamplePad {
        stride: usize,
        pad: usize,
    },
    Projection(PackedConv),
}

/// A residual block: its convolutions in order (a ReLU site after each, the last after the
/// shortcut's add), as [`crate::model::layers::Block`].
#[derive(Debug, Clone)]
pub struct CpuBlock {
    pub convs: Vec<PackedConv>,
    pub shortcut: CpuShortcut,
}

impl CpuBlock {
    /// Bytes of packed weights the block holds.
    pub fn weight_bytes(&self) -> u64 {
        let shortcut = match &self.shortcut {
            CpuShortcut::Projection(c) => c.weight_bytes(),
            _ => 0,
        };
        self.convs.iter().map(PackedConv::weight_bytes).sum::<u64>() + shortcut
    }

    /// Channels the block takes.
    pub fn in_channels(&self) -> usize {
        self.convs[0].in_channels()
    }
}

#[derive(Debug, Clone)]
pub struct CpuNet {
    pub stem: PackedConv,
    /// Whether the stem's 3x3 stride-2 max-pool follows its ReLU (the ImageNet stem).
    pub stem_pool: bool,
    pub blocks: Vec<CpuBlock>,
    pub input: Plane,
    /// How batches too small to slice use the cores, measured on the first of each kind.
    pub small_batch: SmallBatchPlan,
}

/// Node masks of k modules for every site: `Some(k * H*W*C bytes, NHWC per module)` where some
/// module drops a node, `None` where all keep every node.
#[derive(Debug)]
pub struct SiteMasks {
    pub sites: Vec<Option<Vec<u8>>>,
    pub modules: usize,
}

/// Sees (and may change) each site's activation, NHWC `[batch, height, width, channels]`.
pub trait SiteVisitor {
    fn visit(&mut self, site: usize, activation: &mut [f32], shape: [usize; 4]) -> Result<()>;
}

/// Where a run of blocks starts: the network's input, or the activation before its first block.
enum Resume<'a> {
    Input(&'a [f32]),
    Activation { x: Vec<f32>, plane: Plane, channels: usize },
}

/// Images a thread runs through the whole network at a time when a batch is split across
/// threads: a stage-1 activation of a 32x32 image is 64 KiB, so a slice's few live activations
/// and their padded copies stay in one core's L2 cache.
const SLICE: usize = 4;

/// Floats a slice's largest activation may take (4 MiB): fewer images a slice where one image's
/// is larger. At 224x224 one image's stem output is already 3 MiB, and the slices in flight
/// (one a thread) then hold one image each: a batch's activation memory is bounded by the
/// threads, not by the batch (tests/activation_memory.rs).
const SLICE_FLOATS: usize = 1 << 20;

impl CpuNet {
    /// The ReLU site of block `block`'s first convolution (the stem's is 0); of the block past
    /// the last, the number of sites.
    fn first_site(&self, block: usize) -> usize {
        1 + self.blocks[..block].iter().map(|b| b.convs.len()).sum::<usize>()
    }

    /// Bytes of packed weights the network holds.
    pub fn weight_bytes(&self) -> u64 {
        self.stem.weight_bytes() + self.blocks.iter().map(CpuBlock::weight_bytes).sum::<u64>()
    }

    /// That the network has `blocks` blocks to run a trunk through.
    fn check_trunk(&self, blocks: usize) -> Result<()> {
        if blocks > self.blocks.len() {
            return Err(Error::Misuse {
                what: format!("a trunk of {blocks} blocks of a network of {}", self.blocks.len()),
            });
        }
        Ok(())
    }

    /// Images per parallel slice of a batch: up to [`SLICE`] and [`SLICE_FLOATS`] of activation,
    /// at least two slices per thread; 0 when the batch is too small to split (it then runs
    /// whole, tiles in parallel).
    fn slice_len(&self, batch: usize) -> usize {
        let fit = (SLICE_FLOATS / self.largest_activation().max(1)).clamp(1, SLICE);
        fit.min(batch / (2 * rayon::current_num_threads().max(1)))
    }

    /// Floats of the largest activation of one image: the stem's output or a convolution's.
    fn largest_activation(&self) -> usize {
        let mut p = self.stem.out_plane(self.input);
        let mut largest = p.height * p.width * self.stem.out_channels();
        if self.stem_pool {
            p = super::pool::max_pooled(p);
        }
        for block in &self.blocks {
            for conv in &block.convs {
                p = conv.out_plane(p);
                largest = largest.max(p.height * p.width * conv.out_channels());
            }
        }
        largest
    }

    /// `run(images, count, first, threads)` over `x` (`per_image` floats an image; `first` the
    /// index of the part's first image): for a batch large enough, on slices of it in parallel,
    /// each run on one thread (its activations stay in that core's cache); else once on the whole
    /// batch, on one core or each convolution's work across the cores, as this network's
    /// [`SmallBatchPlan`] found faster for passes of `kind`. The parts in batch order.
    fn sliced<T: Send>(
        &self,
        kind: PassKind,
        x: &[f32],
        batch: usize,
        per_image: usize,
        run: impl Fn(&[f32], usize, usize, Threads) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        match self.slice_len(batch) {
            0 => Ok(vec![self.small_batch.run(kind, |threads| run(x, batch, 0, threads))?]),
            slice => x
                .par_chunks(slice * per_image)
                .enumerate()
                .map(|(i, xs)| run(xs, xs.len() / per_image, i * slice, Threads::Caller))
                .collect(),
        }
    }

    /// Floats of one input image, after checking that `x` holds `batch` of them.
    fn check_input(&self, x: &[f32], batch: usize) -> Result<usize> {
        let per_image = self.input.height * self.input.width * self.stem.in_channels();
        if x.len() != batch * per_image {
            return Err(Error::InputShape {
                expected: (self.stem.in_channels(), self.input.height, self.input.width),
                found: vec![x.len()],
            });
        }
        Ok(per_image)
    }

    /// Pooled features `(batch, channels)` of NHWC input `x` (normalised). A batch large enough
    /// to give every thread slices runs as slices in parallel, each convolution on one thread;
    /// a small batch (or one a visitor watches) runs whole, each convolution's tiles in parallel.
    pub fn features(
        &self,
        x: &[f32],
        batch: usize,
        masks: Option<&SiteMasks>,
        visitor: Option<&mut dyn SiteVisitor>,
    ) -> Result<Vec<f32>> {
        if let Some(m) = masks {
            if m.modules == 0 || !batch.is_multiple_of(m.modules) {
                let expected = (self.stem.in_channels(), self.input.height, self.input.width);
                return Err(Error::InputShape { expected, found: vec![batch] });
            }
        }
        let per_image = self.check_input(x, batch)?;
        if visitor.is_some() {
            // A visitor sees each site's activation of the whole batch at once.
            return self.forward_slice(x, batch, 0, batch, masks, visitor, Threads::Tiles);
        }
        let feats = self.sliced(PassKind::Features, x, batch, per_image, |xs, n, first, threads| {
            self.forward_slice(xs, n, first, batch, masks, None, threads)
        })?;
        Ok(feats.concat())
    }

    /// Pooled features `(k*B, channels)` of k mask modules on the B NHWC images `x`,
    /// module-major: the stem, and every block before the first one with a masked site, run once
    /// for the B images (they compute the same for every module); that activation is copied k
    /// times (each copy masked by its module where the stem's site is the one masked) and the
    /// rest of the network runs on the k*B stacked images, each slice masked in the epilogues.
    pub fn masked_features(&self, x: &[f32], images: usize, masks: &SiteMasks) -> Result<Vec<f32>> {
        let k = masks.modules;
        if k == 0 || masks.sites.len() != self.first_site(self.blocks.len()) {
            return Err(Error::Misuse {
                what: format!(
                    "masks of {k} modules over {} sites for a network of {} blocks",
                    masks.sites.len(),
                    self.blocks.len()
                ),
            });
        }
        let per_image = self.check_input(x, images)?;
        let masked = |site: usize| masks.sites[site].is_some();
        if masked(0) && self.stem_pool {
            // The stem's site lies before its max-pool: nothing after it is shared.
            return self.features(&x.repeat(k), k * images, Some(masks), None);
        }
        let shared = if masked(0) {
            0
        } else {
            let block_masked = |i: usize| (self.first_site(i)..self.first_site(i + 1)).any(masked);
            (0..self.blocks.len()).take_while(|&i| !block_masked(i)).count()
        };
        let parts = self.sliced(PassKind::Trunk, x, images, per_image, |xs, n, _, threads| {
            self.run_blocks(xs, n, 0, n, None, None, threads, shared)
        })?;
        let (plane, channels) = (parts[0].1, parts[0].2);
        let once: Vec<f32> = parts.into_iter().flat_map(|(a, _, _)| a).collect();
        let per = plane.height * plane.width * channels;
        let mut stacked = once.repeat(k);
        if shared == 0 {
            // Where the stem's site is masked, its copies differ from the first block on.
            if let Some(m) = &masks.sites[0] {
                for (copy, image) in stacked.chunks_exact_mut(per).enumerate() {
                    let keep = &m[(copy / images.max(1)) * per..][..per];
                    image.iter_mut().zip(keep).for_each(|(v, &b)| *v *= f32::from(b));
                }
            }
        }
        let total = k * images;
        let feats = self.sliced(PassKind::Features, &stacked, total, per, |xs, n, first, threads| {
            let from = Resume::Activation { x: xs.to_vec(), plane, channels };
            let (out, p, c) =
                self.run_range(from, n, first, total, Some(masks), None, threads, shared..self.blocks.len())?;
            let pooled = average_pool(&out, n, p.height * p.width, c);
            recycled::give(out);
            Ok(pooled)
        })?;
        Ok(feats.concat())
    }

    /// The stem and the first `blocks` blocks on NHWC input `x` of `batch` images: the
    /// activation there (NHWC, after its ReLU), its plane and channels. The trunk a compact
    /// module's branch starts from. Slices of the batch run in parallel when it is large enough,
    /// as in [`CpuNet::features`].
    pub fn trunk(&self, x: &[f32], batch: usize, blocks: usize) -> Result<(Vec<f32>, Plane, usize)> {
        self.check_trunk(blocks)?;
        let per_image = self.check_input(x, batch)?;
        let parts = self.sliced(PassKind::Trunk, x, batch, per_image, |xs, n, _, threads| {
            self.run_blocks(xs, n, 0, n, None, None, threads, blocks)
        })?;
        let (plane, channels) = (parts[0].1, parts[0].2);
        Ok((parts.into_iter().flat_map(|(a, _, _)| a).collect(), plane, channels))
    }

    /// The trunk's activation after the first `blocks` blocks (NHWC, its plane and channels, as
    /// [`CpuNet::trunk`] gives it) and the pooled features `(batch, channels)` of the whole
    /// network, in one pass: the rest of the network continues from the trunk's activation.
    /// What a compact decomposition caches for every training image. Slices of the batch run in
    /// parallel when it is large enough, as in [`CpuNet::features`].
    pub fn trunk_and_features(
        &self,
        x: &[f32],
        batch: usize,
        blocks: usize,
    ) -> Result<(Vec<f32>, Plane, usize, Vec<f32>)> {
        self.check_trunk(blocks)?;
        let per_image = self.check_input(x, batch)?;
        let run =
            |xs: &[f32], n: usize, _first: usize, threads: Threads| -> Result<(Vec<f32>, Plane, usize, Vec<f32>)> {
                let (act, plane, channels) = self.run_blocks(xs, n, 0, n, None, None, threads, blocks)?;
                let from = Resume::Activation { x: act.clone(), plane, channels };
                let (out, p, c) = self.run_range(from, n, 0, n, None, None, threads, blocks..self.blocks.len())?;
                Ok((act, plane, channels, average_pool(&out, n, p.height * p.width, c)))
            };
        let parts = self.sliced(PassKind::TrunkAndFeatures, x, batch, per_image, run)?;
        let (plane, channels) = (parts[0].1, parts[0].2);
        let (acts, feats): (Vec<_>, Vec<_>) = parts.into_iter().map(|(a, _, _, f)| (a, f)).unzip();
        Ok((acts.concat(), plane, channels, feats.concat()))
    }

    /// Pooled features of compact modules' `branches` (whose input is this network's activation
    /// after its first `trunk_blocks` blocks) on NHWC input `x`: the trunk once per image, then
    /// the branches on it; one `(batch, width)` block of rows per branch. A large batch runs as
    /// slices in parallel, a slice's trunk and branches on one thread (its trunk activation stays
    /// in that core's cache); a small one runs whole, each convolution's tiles in parallel.
    pub fn branched_features(
        &self,
        x: &[f32],
        batch: usize,
        trunk_blocks: usize,
        branches: &CpuBranches,
    ) -> Result<Vec<Vec<f32>>> {
        self.check_trunk(trunk_blocks)?;
        let per_image = self.check_input(x, batch)?;
        let run = |xs: &[f32], n: usize, _first: usize, threads: Threads| -> Result<Vec<Vec<f32>>> {
            let trunk = self.run_blocks(xs, n, 0, n, None, None, threads, trunk_blocks)?;
            branches.features(trunk, &Pass::plain(n, threads))
        };
        let per_slice = self.sliced(PassKind::Branched, x, batch, per_image, run)?;
        Ok((0..branches.len()).map(|b| per_slice.iter().flat_map(|s| s[b].iter().copied()).collect()).collect())
    }

    /// The forward of images `first..first + batch` of a stacked batch of `total` images.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_slice(
        &self,
        x: &[f32],
        batch: usize,
        first: usize,
        total: usize,
        masks: Option<&SiteMasks>,
        visitor: Option<&mut dyn SiteVisitor>,
        threads: Threads,
    ) -> Result<Vec<f32>> {
        let (x, p, c) = self.run_blocks(x, batch, first, total, masks, visitor, threads, self.blocks.len())?;
        let pooled = average_pool(&x, batch, p.height * p.width, c);
        recycled::give(x);
        Ok(pooled)
    }

    /// The stem and the first `n_blocks` blocks of images `first..first + batch` of a stacked
    /// batch of `total` images: the last activation (NHWC), its plane and channels.
    #[allow(clippy::too_many_arguments)]
    fn run_blocks(
        &self,
        x: &[f32],
        batch: usize,
        first: usize,
        total: usize,
        masks: Option<&SiteMasks>,
        visitor: Option<&mut dyn SiteVisitor>,
        threads: Threads,
        n_blocks: usize,
    ) -> Result<(Vec<f32>, Plane, usize)> {
        self.run_range(Resume::Input(x), batch, first, total, masks, visitor, threads, 0..n_blocks)
    }

    /// Blocks `blocks` of images `first..first + batch` of a stacked batch of `total` images,
    /// from the network's input (the stem first; `blocks` must then start at 0) or from the
    /// activation before `blocks.start`: the last activation (NHWC), its plane and channels.
    #[allow(clippy::too_many_arguments)]
    fn run_range(
        &self,
        from: Resume,
        batch: usize,
        first: usize,
        total: usize,
        masks: Option<&SiteMasks>,
        mut visitor: Option<&mut dyn SiteVisitor>,
        threads: Threads,
        blocks: std::ops::Range<usize>,
    ) -> Result<(Vec<f32>, Plane, usize)> {
        let pass = Pass { batch, first, total, masks, threads };
        let (x, p, c, site) = match from {
            Resume::Input(x) => {
                let (mut x, p) = pass.conv(&self.stem, x, self.input, None, Some(0));
                let c = self.stem.out_channels();
                pass.visit(&mut visitor, 0, &mut x, p, c)?;
                if self.stem_pool {
                    let pooled = max_pool_3x3_s2(&x, batch, p, c, pass.threads);
                    recycled::give(std::mem::replace(&mut x, pooled));
                    (x, super::pool::max_pooled(p), c, 1)
                } else {
                    (x, p, c, 1)
                }
            }
            Resume::Activation { x, plane, channels } => (x, plane, channels, self.first_site(blocks.start)),
        };
        pass.blocks(&self.blocks[blocks], (x, p, c), site, visitor)
    }
}

/// What the layers of one pass share: which images of a stacked batch it runs, the modules'
/// masks over that batch, and how each convolution uses the threads.
pub(crate) struct Pass<'a> {
    /// Images in this pass.
    pub batch: usize,
    /// Its first image's index in the stacked batch of `total`.
    pub first: usize,
    pub total: usize,
    pub masks: Option<&'a SiteMasks>,
    pub threads: Threads,
}

impl Pass<'_> {
    /// A pass over `batch` images of their own (no stacked modules, no masks).
    pub(crate) fn plain(batch: usize, threads: Threads) -> Self {
        Pass { batch, first: 0, total: batch, masks: None, threads }
    }

    /// The masks of ReLU site `site`, where some module drops a node there.
    fn mask(&self, site: usize) -> Option<StackedMask<'_>> {
        let m = self.masks?;
        m.sites.get(site).and_then(Option::as_deref).map(|masks| StackedMask {
            masks,
            images_per_module: self.total / m.modules,
            first_image: self.first,
        })
    }

    /// Convolution `conv` of `x` (plane `p`), `+ residual`, ending ReLU site `site` (its ReLU and
    /// masks) unless `None`: the output and its plane.
    pub(crate) fn conv(
        &self,
        conv: &PackedConv,
        x: &[f32],
        p: Plane,
        residual: Option<&[f32]>,
        site: Option<usize>,
    ) -> (Vec<f32>, Plane) {
        let op = conv.out_plane(p);
        // Every float is written by the convolution.
        let mut out = recycled::take(self.batch * op.height * op.width * conv.out_channels());
        let e = Epilogue { residual, relu: site.is_some(), mask: site.and_then(|s| self.mask(s)) };
        conv.forward(x, self.batch, p, &e, &mut out, self.threads);
        (out, op)
    }

    fn visit(
        &self,
        visitor: &mut Option<&mut dyn SiteVisitor>,
        site: usize,
        act: &mut [f32],
        p: Plane,
        c: usize,
    ) -> Result<()> {
        match visitor.as_deref_mut() {
            Some(v) => v.visit(site, act, [self.batch, p.height, p.width, c]),
            None => Ok(()),
        }
    }

    /// `blocks` from activation `(x, plane, channels)`, whose first ReLU site is `site`: the
    /// last activation (NHWC), its plane and channels.
    pub(crate) fn blocks(
        &self,
        blocks: &[CpuBlock],
        (mut x, mut p, mut c): (Vec<f32>, Plane, usize),
        mut site: usize,
        mut visitor: Option<&mut dyn SiteVisitor>,
    ) -> Result<(Vec<f32>, Plane, usize)> {
        for b in blocks {
            let (last, inner) = b.convs.split_last().expect("a block has convolutions");
            let (mut h, mut hp) = (None::<Vec<f32>>, p);
            for conv in inner {
                let (mut y, yp) = self.conv(conv, h.as_deref().unwrap_or(&x), hp, None, Some(site));
                self.visit(&mut visitor, site, &mut y, yp, conv.out_channels())?;
                if let Some(old) = h.replace(y) {
                    recycled::give(old);
                }
                (hp, site) = (yp, site + 1);
            }
            let short = match &b.shortcut {
                CpuShortcut::Identity => None,
                CpuShortcut::SubsamplePad { stride, pad } => {
                    Some(subsample_pad(&x, self.batch, p, b.in_channels(), *stride, *pad))
                }
                CpuShortcut::Projection(conv) => Some(self.conv(conv, &x, p, None, None).0),
            };
            let residual = short.as_deref().unwrap_or(&x);
            let (out, op) = self.conv(last, h.as_deref().unwrap_or(&x), hp, Some(residual), Some(site));
            // The block's input and intermediates become later layers' outputs.
            recycled::give(std::mem::replace(&mut x, out));
            if let Some(h) = h {
                recycled::give(h);
            }
            if let Some(s) = short {
                recycled::give(s);
            }
            p = op;
            self.visit(&mut visitor, site, &mut x, p, last.out_channels())?;
            site += 1;
            c = last.out_channels();
        }
        Ok((x, p, c))
    }
}

/// Option A's shortcut in NHWC: `out[b, y, x, pad + c] = x[b, s*y, s*x, c]`, zero elsewhere.
fn subsample_pad(x: &[f32], batch: usize, p: Plane, c: usize, s: usize, pad: usize) -> Vec<f32> {
    let (ho, wo, co) = (p.height.div_ceil(s), p.width.div_ceil(s), c + 2 * pad);
    let mut out = vec![0f32; batch * ho * wo * co];
    for b in 0..batch {
        for y in 0..ho {
            for xx in 0..wo {
                let src = &x[((b * p.height + y * s) * p.width + xx * s) * c..][..c];
                out[((b * ho + y) * wo + xx) * co + pad..][..c].copy_from_slice(src);
            }
        }
    }
    out
}

/// NCHW -> NHWC.
pub fn to_nhwc(x: &[f32], batch: usize, c: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..batch {
        for ch in 0..c {
            for (i, v) in x[(b * c + ch) * pixels..][..pixels].iter().enumerate() {
                out[(b * pixels + i) * c + ch] = *v;
            }
        }
    }
    out
}

/// NHWC -> NCHW.
pub fn to_nchw(x: &[f32], batch: usize, c: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..batch {
        for i in 0..pixels {
            for ch in 0..c {
                out[(b * c + ch) * pixels + i] = x[(b * pixels + i) * c + ch];
            }
        }
    }
    out
}
