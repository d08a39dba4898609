//! Training augmentation on 8-bit CHW images: random crop from a zero-padded image (pad = size/8,
//! i.e. 4 pixels at 32x32 as in He et al.) and random horizontal flip.

use rand::Rng;

/// Writes an augmented copy of `src` (C x H x W) into `dst`.
pub fn crop_flip(src: &[u8], dst: &mut [u8], c: usize, h: usize, w: usize, flip_allowed: bool, rng: &mut impl Rng) {
    let pad = (h.min(w) / 8) as i64;
    let dy = rng.random_range(-pad..=pad) as isize;
    let dx = rng.random_range(-pad..=pad) as isize;
    let flip = flip_allowed && rng.random_bool(0.5);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let sy = y as isize + dy;
                let sx0 = if flip { (w - 1 - x) as isize } else { x as isize };
                let sx = sx0 + dx;
                let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                    src[(ch * h + sy as usize) * w + sx as usize]
                } else {
                    0
                };
                dst[(ch * h + y) * w + x] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crops_are_shifted_copies_and_flips_mirror() {
        let (c, h, w) = (1, 8, 8);
        let src: Vec<u8> = (0..64).map(|i| i as u8 + 1).collect();
        let mut dst = vec![0; 64];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seen_flip = false;
        for _ in 0..50 {
            crop_flip(&src, &mut dst, c, h, w, true, &mut rng);
            // Every non-zero output pixel is a source pixel from the same row offset pattern:
            // a crop never invents values.
            assert!(dst.iter().all(|&v| v == 0 || src.contains(&v)));
            // pad = 1 at size 8: at most one border row and column are zero.
            assert!(dst.iter().filter(|&&v| v == 0).count() <= 15);
            let row: Vec<u8> = dst[3 * 8..4 * 8].iter().cloned().filter(|&v| v != 0).collect();
            if row.windows(2).all(|p| p[0] > p[1]) && row.len() > 1 {
                seen_flip = true;
            }
        }
        assert!(seen_flip, "some crops are flipped");
        // Without flips, rows stay increasing.
        crop_flip(&src, &mut dst, c, h, w, false, &mut rng);
        let row: Vec<u8> = dst[3 * 8..4 * 8].iter().cloned().filter(|&v| v != 0).collect();
        assert!(row.windows(2).all(|p| p[0] < p[1]));
    }
}
