//! Which nodes a class module keeps. A node is one (channel, y, x) position of one ReLU site of
//! the base network (see [`crate::model::network::ReluSite`]); a module keeps a node when its mask bit is
//! set, and inference multiplies every ReLU output by its site's mask.

use crate::model::network::ReluSite;
use crate::Error;
use crate::Result;

/// The kept nodes of one ReLU site, one bit per node in (channel, y, x) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMask {
    /// Channels of the site.
    pub channels: usize,
    /// Rows of the site.
    pub height: usize,
    /// Columns of the site.
    pub width: usize,
    bits: Vec<u64>,
}

impl SiteMask {
    fn with(channels: usize, height: usize, width: usize, fill: bool) -> Self {
        let n = channels * height * width;
        let mut bits = vec![if fill { u64::MAX } else { 0 }; n.div_ceil(64)];
        if fill && !n.is_multiple_of(64) {
            // Bits past the end stay clear so counts and equality only see real nodes.
            *bits.last_mut().expect("n > 0") = (1u64 << (n % 64)) - 1;
        }
        SiteMask { channels, height, width, bits }
    }

    /// Every node kept.
    pub fn ones(site: &ReluSite) -> Self {
        Self::with(site.channels, site.height, site.width, true)
    }

    /// No node kept.
    pub fn zeros(site: &ReluSite) -> Self {
        Self::with(site.channels, site.height, site.width, false)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the site has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether node `i` (in (channel, y, x) order) is kept.
    pub fn get(&self, i: usize) -> bool {
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// Keeps or drops node `i`.
    pub fn set(&mut self, i: usize, keep: bool) {
        let (w, b) = (i / 64, i % 64);
        if keep {
            self.bits[w] |= 1 << b;
        } else {
            self.bits[w] &= !(1 << b);
        }
    }

    /// Number of kept nodes.
    pub fn count_kept(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether every node is kept (a site a group need not mask).
    pub fn all_kept(&self) -> bool {
        self.count_kept() == self.len()
    }

    /// 0 / 1 per node, widened to the activations' type for multiplying them.
    pub fn to_u8(&self) -> Vec<u8> {
        (0..self.len()).map(|i| u8::from(self.get(i))).collect()
    }

    /// Packed little-endian bits (node i = bit i % 8 of byte i / 8), the on-disk form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.bits.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(self.len().div_ceil(8));
        out
    }

    /// Inverse of [`Self::to_bytes`] for a site of the given shape; padding bits must be zero.
    pub fn from_bytes(site: &ReluSite, bytes: &[u8]) -> Result<Self> {
        // The length is checked before anything is allocated from the (untrusted) site shape.
        let n = site.channels.checked_mul(site.height).and_then(|v| v.checked_mul(site.width)).unwrap_or(usize::MAX);
        if n == usize::MAX || bytes.len() != n.div_ceil(8) {
            return Err(Error::BadMask {
                site: site.name.clone(),
                reason: format!("{} bytes, expected {}", bytes.len(), n.div_ceil(8)),
            });
        }
        if !n.is_multiple_of(8) && bytes[bytes.len() - 1] >> (n % 8) != 0 {
            return Err(Error::BadMask { site: site.name.clone(), reason: "bits set past its last node".into() });
        }
        let mut m = Self::zeros(site);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            m.bits[i] = u64::from_le_bytes(word);
        }
        Ok(m)
    }

    /// Whether the mask has the shape of `site`.
    pub fn matches(&self, site: &ReluSite) -> bool {
        (self.channels, self.height, self.width) == (site.channels, site.height, site.width)
    }
}

/// The kept nodes of every ReLU site of a base network, in site order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMask {
    /// One mask per ReLU site, in forward order.
    pub sites: Vec<SiteMask>,
}

impl NodeMask {
    /// Keeps every node: a module with this mask computes exactly what the base computes.
    pub fn ones(sites: &[ReluSite]) -> Self {
        NodeMask { sites: sites.iter().map(SiteMask::ones).collect() }
    }

    /// Nodes of the base network.
    pub fn total_nodes(&self) -> usize {
        self.sites.iter().map(SiteMask::len).sum()
    }

    /// Bytes the bits of every site take in memory.
    pub fn bit_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.len().div_ceil(64) as u64 * 8).sum()
    }

    /// Nodes the module keeps.
    pub fn kept_nodes(&self) -> usize {
        self.sites.iter().map(SiteMask::count_kept).sum()
    }

    /// Fraction of the base's nodes that the module keeps.
    pub fn kept_fraction(&self) -> f64 {
        self.kept_nodes() as f64 / self.total_nodes().max(1) as f64
    }

    /// Whether the mask fits a network with these sites.
    pub fn matches(&self, sites: &[ReluSite]) -> bool {
        self.sites.len() == sites.len() && self.sites.iter().zip(sites).all(|(m, s)| m.matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(c: usize, h: usize, w: usize) -> ReluSite {
        ReluSite { name: "s".into(), channels: c, height: h, width: w }
    }

    #[test]
    fn bits_round_trip_and_count() {
        for shape in [(1, 1, 1), (3, 5, 7), (16, 8, 8), (2, 3, 3)] {
            let s = site(shape.0, shape.1, shape.2);
            let mut m = SiteMask::zeros(&s);
            for i in (0..m.len()).step_by(3) {
                m.set(i, true);
            }
            assert_eq!(m.count_kept(), m.len().div_ceil(3));
            let back = SiteMask::from_bytes(&s, &m.to_bytes()).unwrap();
            assert_eq!(back, m);
            assert_eq!(SiteMask::ones(&s).count_kept(), m.len());
            assert!(SiteMask::ones(&s).all_kept());
            assert_eq!(m.to_u8().iter().filter(|&&v| v == 1).count(), m.count_kept());
        }
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        let s = site(1, 3, 3); // 9 nodes -> 2 bytes
        assert!(SiteMask::from_bytes(&s, &[0xff]).is_err());
        assert!(SiteMask::from_bytes(&s, &[0xff, 0x01]).is_ok());
        assert!(SiteMask::from_bytes(&s, &[0xff, 0x02]).is_err(), "bit past the last node");
    }
}
