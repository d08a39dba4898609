//! The fixed 128-byte trailer: content hash and optional signature.

use bytemuck::{Pod, Zeroable};

pub const TRAILER_LEN: usize = 128;
pub const END_MAGIC: [u8; 8] = *b"CLSMEND1";

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
    pub reserved: [u8; 12],
    pub end_magic: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<Trailer>() == TRAILER_LEN);
