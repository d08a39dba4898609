//! Blob bytes held in memory rather than mapped: the parser reads header, table and trailer in
//! place and so needs the 8-byte alignment a mapping always has and a `Vec<u8>` does not promise.

/// An owned copy of some bytes on an 8-byte boundary.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into a fresh buffer that starts on an 8-byte boundary.
    pub fn new(bytes: &[u8]) -> AlignedBytes {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes { words, len: bytes.len() }
    }

    /// `len` zero bytes on an 8-byte boundary, to be filled in place (a blob read from a file
    /// straight into the buffer the parser takes: one copy in memory, not two).
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes { words: vec![0u64; len.div_ceil(8)], len }
    }

    /// The bytes (exactly as many as given to [`AlignedBytes::new`]), 8-byte aligned.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// The bytes, to fill in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..self.len]
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_bytes_on_an_8_byte_boundary() {
        for n in [0, 1, 7, 8, 9, 100] {
            let src: Vec<u8> = (0..n as u8).collect();
            let a = super::AlignedBytes::new(&src);
            assert_eq!(a.bytes(), &src[..]);
            assert_eq!(a.bytes().as_ptr() as usize % 8, 0);
            let mut z = super::AlignedBytes::zeroed(n);
            z.bytes_mut().copy_from_slice(&src);
            assert_eq!((z.bytes(), z.len()), (&src[..], n));
        }
    }
}
