//! The fixed 128-byte trailer: content hash and optional signature.

use bytemuck::{Pod, Zeroable};

/// Size of the trailer in bytes; it is the last part of the file.
pub const TRAILER_LEN: usize = 128;
/// The trailer's last 8 bytes (and the file's), `CLSMEND1` in ASCII.
pub const END_MAGIC: [u8; 8] = *b"CLSMEND1";

/// The trailer as stored on disk ([`TRAILER_LEN`] bytes at `trailer_offset`, little-endian).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Trailer {
    /// BLAKE3 of every byte before the trailer.
    pub content_hash: [u8; 32],
    /// Ed25519 over `SIGNATURE_DOMAIN || content_hash`; zero when unsigned.
    pub signature: [u8; 64],
    /// First 8 bytes of BLAKE3 of the signer's public key; zero when unsigned.
    pub key_id: [u8; 8],
    /// 1 = signed, 0 = unsigned.
    pub signed: u32,
    /// Reserved; must be zero.
    pub reserved: [u8; 12],
    /// [`END_MAGIC`], `CLSMEND1`: a missing one means a truncated or appended-to file.
    pub end_magic: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<Trailer>() == TRAILER_LEN);
